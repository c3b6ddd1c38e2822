"""Export a trained model as a SavedModel in TensorFlow Serving's layout.

``saved_models/NAME/VERSION/`` holds ``saved_model.pb``, ``variables/`` and
``assets/config.json`` (the run's config: classes, radii, voxel size, tile,
normalisation). Signatures:

- ``serving_default``: input ``tomogram_patch`` float32 [batch, D, H, W, 1]
  (D, H, W fixed: the export's tile), output ``probabilities`` [batch, D, H, W, C];
- ``metadata``: input ``request`` string [batch] (any values, one per answer), output
  ``config`` string [batch] (the config JSON, once per request row). Both signatures are
  batched on dimension 0, as TF Serving's batching session demands of every signature when
  ``--enable_batching`` is on (``batching/batching_util.h``, ``ComputeTensorBatchSize``: at
  least one input; ``batching/batching_session.cc``, ``SplitOutputTensors``: no 0-d output).

A version folder is written under a temporary name and renamed into place, so
TF Serving, polling the base path, never loads half of one. ``models.config``
(a ``model_config_list``) beside the models lists every exported model and is
rewritten on each export; ``batching.config`` sits beside it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import tensorflow as tf  # this module is imported by the export command only

from keras_ucaps.errors import InputError
from keras_ucaps.io.atomic import atomic_directory, atomic_path
from keras_ucaps.serving.batching import BATCHING_CONFIG

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+$")


def export_saved_model(run: str | os.PathLike, base: str | os.PathLike, name: str, version: int | None = None,
                       tile: int | None = None) -> Path:
    """Export ``run`` (a run folder or .keras file) to ``base/name/version``; returns that folder."""
    from keras_ucaps.models.loading import load_trained

    if not NAME_PATTERN.match(name) or not name.strip("."):
        raise InputError("--name", f"model names take letters, digits, '_', '.', '-' only, got {name!r}")
    loaded = load_trained(run)
    model = loaded.model
    contract = loaded.contract
    multiple = contract.multiple
    # A whole-input model's outputs depend on their tile: by default serve its contract's context side.
    tile = tile or (contract.tile if contract.whole_input else max(64, loaded.patch_size))
    if tile % multiple:
        raise InputError("--tile", f"must be a multiple of {multiple}, got {tile}")
    config = _config_of(loaded, tile)
    base = Path(base)
    existing = sorted(int(p.name) for p in (base / name).glob("*") if p.name.isdigit())
    version = version if version is not None else (existing[-1] + 1 if existing else 1)
    target = base / name / str(version)
    if target.exists():
        raise InputError(target, "this version exists already: choose another --version")
    try:
        with atomic_directory(target) as tmp, tempfile.TemporaryDirectory() as scratch:
            config_file = Path(scratch) / "config.json"  # the asset keeps this file name
            config_file.write_text(json.dumps(config, indent=2) + "\n")
            servable = Servable(model, str(config_file), tile)
            tf.saved_model.save(servable, str(tmp), signatures={
                "serving_default": servable.serve.get_concrete_function(),
                "metadata": servable.metadata.get_concrete_function(),
            })
    except FileExistsError:
        raise InputError(target, "another export wrote this version meanwhile: export again (it takes the next "
                                 "version) or choose --version") from None
    except tf.errors.OpError as err:  # TensorFlow's own writes: a full or read-only disk
        reason = " ".join(str(err.message).split()).rsplit(";", 1)[-1].strip() or type(err).__name__
        raise InputError(target, f"cannot be written ({reason})") from None
    try:
        write_models_config(base)
    except InputError:  # the list TF Serving reads could not be written: the version goes too
        shutil.rmtree(target, ignore_errors=True)
        raise
    return target


def _config_of(loaded, tile: int) -> dict:
    """What the served model's metadata signature answers: its metadata, tile and architecture."""
    model_config = {k: v for k, v in loaded.model.get_config().items() if k != "metadata"}
    return {**loaded.metadata.to_dict(), "picking": loaded.picking, "tile": tile,
            "model_class": type(loaded.model).__name__, "model_config": model_config,
            "patch_multiple": loaded.contract.multiple, "tile_contract": loaded.contract.to_dict(),
            "input": "tomogram_patch: float32 [batch, D, H, W, 1], the tomogram normalised by 'normalization' "
                     "(keras_ucaps.data.normalization: measured on the whole tomogram, applied per region)",
            "output": "probabilities: float32 [batch, D, H, W, C], C = classes + background (label 0)"}


class Servable(tf.Module):
    """What the SavedModel holds: the Keras model, its config asset and the two signatures."""

    def __init__(self, model, config_path: str, tile: int):
        super().__init__()
        self.model = model
        self.config = tf.saved_model.Asset(config_path)
        spec = tf.TensorSpec([None, tile, tile, tile, 1], tf.float32, name="tomogram_patch")
        self.serve = tf.function(self._serve, input_signature=[spec])
        self.metadata = tf.function(self._metadata, input_signature=[
            tf.TensorSpec([None], tf.string, name="request")])

    def _serve(self, tomogram_patch):
        out = self.model(tomogram_patch, training=False)
        probabilities = out["probabilities"] if isinstance(out, dict) else out
        return {"probabilities": tf.cast(probabilities, tf.float32)}

    def _metadata(self, request):
        return {"config": tf.fill(tf.shape(request), tf.io.read_file(self.config))}


def write_models_config(base: str | os.PathLike) -> Path:
    """Rewrite ``base/models.config`` listing every model folder under ``base``, and the batching file."""
    base = Path(base)
    names = sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")
                   and any(v.name.isdigit() for v in p.iterdir()))
    entries = "".join(
        f'  config {{\n    name: "{n}"\n    base_path: "/models/{n}"\n    model_platform: "tensorflow"\n'
        f"    model_version_policy {{ all {{}} }}\n  }}\n" for n in names)
    with atomic_path(base / "models.config") as tmp:
        tmp.write_text(f"model_config_list {{\n{entries}}}\n")
    with atomic_path(base / "batching.config") as tmp:
        tmp.write_text(BATCHING_CONFIG)
    return base / "models.config"
