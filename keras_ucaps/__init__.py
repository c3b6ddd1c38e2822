"""keras-ucaps: find and classify macromolecules in cryo-electron tomograms.

>>> import keras_ucaps
>>> picks = keras_ucaps.load("shrec-unet").pick("tomo.mrc")  # doctest: +SKIP

``load`` returns a :class:`~keras_ucaps.picker.Picker`; ``UNet3D.from_preset`` and ``UCaps3D.from_preset``
give the bare Keras models of the bundled presets.

Importing this package is cheap: it does not import TensorFlow or Keras. Its
Keras layers and models register themselves with Keras (so that
``keras.saving.load_model`` can rebuild them) as soon as Keras is imported,
whether before or after ``import keras_ucaps``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys

__version__ = "0.1.0"

_KERAS_MODULES = ("keras_ucaps.layers", "keras_ucaps.models", "keras_ucaps.models.losses",
                  "keras_ucaps.training.metrics")
_LAZY = {"layers", "models", "io", "data", "classes"}
_API = {"load": "keras_ucaps.picker", "Picker": "keras_ucaps.picker", "ProbabilityMaps": "keras_ucaps.picker",
        "UNet3D": "keras_ucaps.models", "UCaps3D": "keras_ucaps.models"}


def register_keras_objects() -> None:
    """Import the modules that register our layers and models with Keras."""
    for name in _KERAS_MODULES:
        importlib.import_module(name)


class _RegisterAfterKeras(importlib.abc.MetaPathFinder):
    """Registers our Keras objects right after the ``keras`` package has executed.

    It stays installed until then: TensorFlow probes for Keras with
    ``importlib.util.find_spec("keras")`` before importing it.
    """

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "keras":
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            register_keras_objects()

        spec.loader.exec_module = exec_then_register
        return spec


def __getattr__(name):
    if name in _LAZY:
        return importlib.import_module(f"keras_ucaps.{name}")
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'keras_ucaps' has no attribute {name!r}")


if "keras" in sys.modules:
    register_keras_objects()
else:
    sys.meta_path.insert(0, _RegisterAfterKeras())
