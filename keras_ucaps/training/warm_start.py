"""Fine-tuning: a new training run that starts from a trained model's weights (``fit --init-weights MODEL``).

The source is a bundled model's name (``shrec-ucaps``), a run folder or a ``.keras`` file, as ``predict`` takes
them (:func:`keras_ucaps.models.loading.load_trained`). The run takes the source's architecture and
options (an option given that disagrees is an error) and copies every layer's weights, except where the patch
store's particle classes are not the source's (the same names in the same order): then the layers whose weight
shapes follow the number of classes (the class head: the UNet's last 1³ convolution, UCaps' class capsules and
what reads them) start afresh. Which layers those are is measured on the model, by building it once more with
one class more, not listed by architecture.

The source's picking settings (its ``thresholds.json`` or, without one, its metadata's: the fit radius and density
weight its merged blobs are split with and, for the same classes, its thresholds) go into the run's
``thresholds.json`` with ``from`` naming the source, so that ``pick --model RUN`` picks as the source did until
``evaluate --model RUN`` tunes them for the run.

A store normalised otherwise than the source's training patches is refused: its weights would see inputs on
another scale. A store at another voxel size is allowed, with a warning (the weights learned particle sizes in
voxels of the source's size).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path

import numpy as np

from keras_ucaps.errors import InputError, KerasUcapsWarning

# Constructor arguments of a model's config that are not architecture options.
NOT_OPTIONS = ("name", "trainable", "num_classes", "dtype", "metadata")


@dataclasses.dataclass
class Source:
    """A trained model to start from, and what its config.json says about its training data."""

    given: str  # as the run records it: a bundled name, or an absolute path
    architecture: str
    options: dict  # the architecture options to build the run's model with
    model: object
    classes: list[str]  # particle class names in label order
    normalization: str
    voxel_size: float
    picking: dict | None = None  # its thresholds.json, if any

    def has_classes(self, classes: list[str]) -> bool:
        """Whether ``classes`` (names in label order) are the source's."""
        return self.classes == list(classes)


def recorded_name(name_or_path: str | os.PathLike) -> str:
    """How a run records its source: an existing path made absolute, else the bundled model's name."""
    return os.path.abspath(name_or_path) if Path(name_or_path).exists() else str(name_or_path)


def read_source(name_or_path: str | os.PathLike) -> Source:
    """The trained model ``name_or_path`` (bundled name, run folder or .keras file), checked like predict's."""
    from keras_ucaps.models import ARCHITECTURES
    from keras_ucaps.models.loading import load_trained

    loaded = load_trained(name_or_path)
    model = loaded.model
    architecture = next((name for name, cls in ARCHITECTURES.items() if type(model) is cls), None)
    if architecture is None:
        raise InputError(name_or_path, f"a {type(model).__name__}: fit starts from a UCaps3D or UNet3D only")
    options = {k: v for k, v in model.get_config().items() if k not in NOT_OPTIONS}
    return Source(given=recorded_name(name_or_path), architecture=architecture, options=options, model=model,
                  classes=loaded.classes.names, normalization=loaded.normalization, voxel_size=loaded.voxel_size,
                  picking=loaded.picking)


def default_start(architecture: str, options: dict) -> tuple[str | None, str]:
    """The bundled model a new run of ``architecture`` starts from when the user names none, and why (a line for
    the user): ``pretrained.STARTING_POINTS``'s, unless ``options`` (architecture options the user gave) build
    another network, which then trains from scratch. Read from the bundled run's config.json: no model loaded."""
    from keras_ucaps.io.jsonfile import read_json
    from keras_ucaps.pretrained import STARTING_POINTS, pretrained_run

    name = STARTING_POINTS.get(architecture)
    if name is None:
        return None, f"training from scratch: no bundled {architecture} to start from"
    theirs = read_json(pretrained_run(name) / "config.json")["model"]
    mismatch = {k: v for k, v in options.items() if theirs.get(k) != v}
    if mismatch:
        given = ", ".join(f"--{k.replace('_', '-')} {_option_text(v)}".rstrip() for k, v in mismatch.items())
        return None, f"training from scratch: {given} is not the architecture of {name}, the default start"
    return name, (f"fine-tuning from {name} (the default start for a new {architecture} run; --from-scratch "
                  "trains from random weights)")


def _option_text(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return "" if value is True else str(value)


def start_from(name_or_path: str | os.PathLike, info, source: Source | None = None) -> Source:
    """The source model (``source`` when the caller has read it already), checked against the patch store
    ``info`` (:func:`check_store`)."""
    source = source or read_source(name_or_path)
    check_store(source, info)
    return source


def settings_from_source(settings, source: Source, given: frozenset[str]):
    """``settings`` with the source's architecture and options; one the user gave that disagrees is an error."""
    if "model" in given and settings.model != source.architecture:
        raise InputError("--model", f"{settings.model} differs from --init-weights {source.given}, a "
                                    f"{source.architecture}: leave --model out, or start from a {settings.model}")
    mismatch = {k: v for k, v in settings.model_options.items() if source.options.get(k) != v}
    if mismatch:
        names = "/--".join(k.replace("_", "-") for k in mismatch)
        theirs = {k: source.options.get(k) for k in mismatch}
        raise InputError(f"--{names}", f"{mismatch!r} differs from --init-weights {source.given}'s {theirs!r}: "
                                       "a fine-tuned model keeps its architecture")
    return dataclasses.replace(settings, model=source.architecture, model_options=dict(source.options))


def check_store(source: Source, info) -> None:
    """Refuse a store normalised otherwise than the source's patches; warn when its voxel size differs."""
    if info.normalization != source.normalization:
        from keras_ucaps.data.normalization import METHODS

        option = next((k for k, v in METHODS.items() if v == source.normalization), source.normalization)
        raise InputError(info.path, f"patches normalised {info.normalization!r}, but {source.given}, the "
                                    f"model fit starts from, was trained on {source.normalization!r} ones: cut "
                                    f"them again with `keras-ucaps patches --normalization {option}`, or train "
                                    "--from-scratch")
    if info.voxel_size is not None and abs(info.voxel_size / source.voxel_size - 1) > 0.01:
        warnings.warn(f"{info.path}: patches at {info.voxel_size:g} Å per voxel, --init-weights {source.given} "
                      f"was trained at {source.voxel_size:g} Å: its particle sizes in voxels differ",
                      KerasUcapsWarning, stacklevel=2)


def picking_from_source(source: Source, classes: list[str]) -> dict | None:
    """The run's thresholds.json until it is tuned: the source's fit radius and density weight, its thresholds
    when ``classes`` are its own (else none: a new class head scores on another scale), and ``from``; None when
    the source has no thresholds.json."""
    if source.picking is None:
        return None
    thresholds = dict(source.picking["thresholds"]) if source.has_classes(classes) else {}
    return {**source.picking, "thresholds": thresholds, "from": source.given}


def class_dependent_layers(model) -> set[int]:
    """Indices (in ``model.layers``) of the layers whose weight shapes follow the number of classes: those that
    differ in the same model built with one class more."""
    config = model.get_config()
    more = type(model).from_config({**config, "num_classes": config["num_classes"] + 1})
    return {i for i, (a, b) in enumerate(zip(model.layers, more.layers, strict=True))
            if [tuple(w.shape) for w in a.weights] != [tuple(w.shape) for w in b.weights]}


def copy_weights(model, source: Source, classes: list[str]) -> list[str]:
    """Copy the source's weights into ``model``, layer by layer; returns the names of the layers started afresh
    (the class head, when ``classes`` are not the source's)."""
    fresh = set() if source.has_classes(classes) else class_dependent_layers(model)
    if len(model.layers) != len(source.model.layers):
        raise InputError(source.given, f"has {len(source.model.layers)} layers, the run's model "
                                       f"{len(model.layers)}: not the same architecture")
    for i, (mine, theirs) in enumerate(zip(model.layers, source.model.layers, strict=True)):
        if i in fresh:
            continue
        ours, weights = mine.get_weights(), theirs.get_weights()
        if [np.shape(w) for w in ours] != [np.shape(w) for w in weights]:
            raise InputError(source.given, f"layer {theirs.name}'s weights do not fit the run's {mine.name}: "
                                           "not the same architecture")
        mine.set_weights(weights)
    return [model.layers[i].name for i in sorted(fresh)]
