"""Loading a trained model with what it needs to be used: a bundled name, a run folder or a ``.keras`` file.

What a model needs (classes, voxel size, normalisation, training patch side) comes from the metadata in the
``.keras`` file itself (:mod:`keras_ucaps.models.metadata`); a file saved before models carried it is read with
the ``config.json`` of its run folder, and refused without one. Picking settings come from the run folder's
``thresholds.json`` when it has one (``keras-ucaps evaluate --model`` tunes it), else from the metadata.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
from pathlib import Path

from keras_ucaps.errors import InputError
from keras_ucaps.models.contract import TileContract
from keras_ucaps.models.metadata import ModelMetadata


@dataclasses.dataclass
class LoadedModel:
    """A model (a Keras model, or a served one), its metadata, how it must be tiled, and its picking settings
    (a thresholds.json payload, or None)."""

    model: object
    metadata: ModelMetadata
    contract: TileContract
    picking: dict | None = None
    path: Path | None = None  # the run folder or .keras file it was read from

    @property
    def classes(self):
        return self.metadata.classes

    @property
    def voxel_size(self) -> float:
        return self.metadata.voxel_size

    @property
    def patch_size(self) -> int:
        return self.metadata.patch_size

    @property
    def normalization(self) -> str:
        return self.metadata.normalization


def load_trained(name_or_path: str | os.PathLike | None) -> LoadedModel:
    """A bundled model's name (None: the default), a run folder (``weights_best.keras`` inside) or a ``.keras``
    file, with its metadata and picking settings; anything else is an :class:`InputError` naming it."""
    import keras

    import keras_ucaps  # noqa: F401  (registers our objects)
    from keras_ucaps.pretrained import model_path

    path = model_path(name_or_path)
    if path.is_dir():
        weights, folder = path / "weights_best.keras", path
        if not weights.is_file():
            raise InputError(path, "run folder holds no weights_best.keras (has training finished an epoch?)")
    else:
        weights, folder = path, path.parent
    if not zipfile.is_zipfile(weights):
        raise InputError(weights, "truncated or not a .keras file (a .keras file is a zip archive)")
    try:
        model = keras.saving.load_model(weights, compile=False)
    except InputError as err:  # metadata that does not check
        raise InputError(weights, err.problem) from None
    except Exception as err:  # keras raises many kinds for a file that is not a model
        raise InputError(weights, f"not a loadable Keras model ({type(err).__name__}: {err})") from None
    if not hasattr(model, "tile_contract"):
        raise InputError(weights, f"a {type(model).__name__}, not a keras-ucaps model (UCaps3D or UNet3D)")
    metadata = model.metadata
    if metadata is None:
        metadata = _metadata_from_run_config(folder / "config.json", weights)
        model.metadata = metadata
    outputs = int(model.num_classes)
    if metadata.classes.num_classes != outputs:
        raise InputError(weights, f"its metadata names {metadata.classes.num_classes - 1} classes, but the model "
                                  f"predicts {outputs - 1}")
    picking = metadata.picking
    thresholds = folder / "thresholds.json"
    if thresholds.is_file() and (path.is_dir() or weights.name == "weights_best.keras"):
        from keras_ucaps.picking.thresholds import read_thresholds

        picking = read_thresholds(thresholds)
    return LoadedModel(model, metadata, model.tile_contract(metadata.patch_size), picking, path)


def _metadata_from_run_config(config_path: Path, weights: Path) -> ModelMetadata:
    """The metadata of a model saved before models carried it, from its run's config.json."""
    from keras_ucaps.io.jsonfile import read_json

    if not config_path.is_file():
        raise InputError(weights, "carries no classes, voxel size or normalisation (saved by an older keras-ucaps) "
                                  "and has no run config.json beside it: give its run folder")
    config = read_json(config_path)
    if not isinstance(config, dict) or "classes" not in config:
        raise InputError(config_path, "not a run's config.json (no 'classes')")
    return ModelMetadata.from_dict({"classes": config["classes"], "voxel_size": config.get("voxel_size"),
                                    "normalization": config.get("normalization", "tomogram z-score"),
                                    "patch_size": config.get("patch_size", 64)}, str(config_path))
