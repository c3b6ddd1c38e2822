"""Predict per-class probability maps over whole tomograms.

A tomogram is z-scored with its own mean and standard deviation (as training
patches were), cut into overlapping tiles (see :mod:`keras_ucaps.inference.tiling`),
run through the model in batches, and blended into memory-mapped accumulators
on disk, so a 200×512×512 tomogram needs a few GB of RAM at most. Outputs, in
``OUT``, each with the input's voxel size and origin:

- ``NAME_prob_CLASS.mrc``: float16 probability of each particle class;
- ``NAME_labels.mrc``: int8 argmax label map (0 background);
- ``classes.json``: the model's class registry (for ``pick``).

A tomogram at another voxel size than the model's is resampled to the model's,
predicted, and its maps resampled back onto the input's grid, with a warning.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import shutil
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from keras_ucaps.classes import ClassRegistry
from keras_ucaps.data.normalization import tomogram_statistics
from keras_ucaps.errors import InputError, KerasUcapsWarning
from keras_ucaps.io.atomic import check_output, remove_stale_scratch, scratch_folder
from keras_ucaps.io.mrc import Volume, read_volume, resolve_voxel_size, write_volume
from keras_ucaps.models.contract import TileContract

VOXEL_SIZE_TOLERANCE = 0.01


@dataclasses.dataclass
class LoadedModel:
    """A model, what config.json says about it, and how it must be tiled."""

    model: object
    classes: ClassRegistry
    voxel_size: float | None
    patch_size: int
    contract: TileContract


def load_remote(address: str, model_name: str, version: int | None = None,
                concurrency: int | None = None) -> LoadedModel:
    """A model served by TF Serving, described by its exported config; ``concurrency`` requests in flight."""
    from keras_ucaps.serving.client import DEFAULT_CONCURRENCY, RemoteModel, ServingClient

    remote = RemoteModel(ServingClient(address, model_name, version), concurrency or DEFAULT_CONCURRENCY)
    config = remote.config
    classes = ClassRegistry.from_dict(config["classes"], f"{address}/{model_name}")
    return LoadedModel(remote, classes, config.get("voxel_size"), remote.tile, remote.contract)


def load_model(path: str | os.PathLike) -> LoadedModel:
    """A run folder (config.json + weights_best.keras) or a .keras file (with a
    config.json beside it, if any)."""
    import keras

    import keras_ucaps  # noqa: F401  (registers our objects)

    path = Path(path)
    if path.is_dir():
        weights, config_path = path / "weights_best.keras", path / "config.json"
        if not weights.is_file():
            raise InputError(path, "run folder holds no weights_best.keras (has training finished an epoch?)")
    else:
        weights, config_path = path, path.parent / "config.json"
        if not weights.is_file():
            raise InputError(path, "no such file")
    import zipfile

    if not zipfile.is_zipfile(weights):
        raise InputError(weights, "truncated or not a .keras file (a .keras file is a zip archive)")
    try:
        model = keras.saving.load_model(weights, compile=False)
    except Exception as err:  # keras raises many kinds for a file that is not a model
        raise InputError(weights, f"not a loadable Keras model ({type(err).__name__}: {err})") from None
    if not hasattr(model, "tile_contract"):
        raise InputError(weights, f"a {type(model).__name__}, not a keras-ucaps model (UCaps3D or UNet3D)")
    outputs = int(model.get_config()["num_classes"])
    if config_path.is_file():
        from keras_ucaps.io.jsonfile import read_json

        config = read_json(config_path)
        if not isinstance(config, dict) or "classes" not in config:
            raise InputError(config_path, "not a run's config.json (no 'classes')")
        classes = ClassRegistry.from_dict(config["classes"], str(config_path))
        if classes.num_classes != outputs:
            raise InputError(config_path, f"names {classes.num_classes - 1} classes, but the model in {weights.name} "
                                          f"predicts {outputs - 1}: the config belongs to another model")
        try:
            patch_size = int(config.get("patch_size", 64))
            voxel_size = config.get("voxel_size")
            voxel_size = None if voxel_size is None else float(voxel_size)
        except (TypeError, ValueError):
            raise InputError(config_path, "patch_size and voxel_size must be numbers") from None
        if voxel_size is not None and not (0 < voxel_size < float("inf")):
            raise InputError(config_path, f"voxel_size {voxel_size} is not a size in Å")
        return LoadedModel(model, classes, voxel_size, patch_size, model.tile_contract(patch_size))
    classes = ClassRegistry.from_radii({f"class_{i}": 1.0 for i in range(1, outputs)}, source=str(weights))
    return LoadedModel(model, classes, None, 64, model.tile_contract(64))


def predict_volume(
    model,
    data: np.ndarray,
    num_classes: int,
    *,
    tile: int,
    margin: int,
    batch_size: int = 1,
    scratch: str | os.PathLike | None = None,
    progress: bool = False,
    fixed_tiles: bool = False,
    blend: bool = True,
) -> np.ndarray:
    """Blended probabilities (C, z, y, x) float32 for a normalised (z, y, x) volume.

    ``tile`` is the longest tile side; per axis the fewest tiles of one length
    are used (see :func:`keras_ucaps.inference.tiling.axis_layout`), or with
    ``fixed_tiles`` all of side ``tile``; tiles are blended, or (``blend=False``) each voxel taken
    from the one tile that owns it (see :mod:`keras_ucaps.inference.tiling`). The result is a
    read-only memory map in ``scratch`` (a temporary folder by default).
    """
    from keras_ucaps.inference.tiling import count_tiles, tiles

    shape = data.shape
    multiple = int(getattr(model, "patch_multiple", 1))
    layout = dict(tile=tile, margin=margin, multiple=multiple, fixed=fixed_tiles)
    forward = compiled_forward(model)
    if scratch is not None:
        Path(scratch).mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".keras-ucaps-{os.getpid()}-", dir=scratch))
    sums = np.lib.format.open_memmap(scratch / "sums.npy", mode="w+", dtype=np.float32, shape=(num_classes, *shape))
    weights = np.lib.format.open_memmap(scratch / "weights.npy", mode="w+", dtype=np.float32, shape=shape)
    bar = None
    if progress:
        import keras

        bar = keras.utils.Progbar(count_tiles(shape, **layout), unit_name="tile")
    # A served model takes several requests in flight (its `concurrency`); results are added in the
    # order the tiles were sent, so the sums are exactly those of sequential prediction.
    concurrency = int(getattr(model, "concurrency", 1))
    pool = ThreadPoolExecutor(concurrency) if concurrency > 1 else None
    pending: collections.deque = collections.deque()
    batch = []

    def accumulate(items, out):
        probabilities = np.asarray(out["probabilities"] if isinstance(out, dict) else out, dtype=np.float32)
        for (s, w), p in zip(items, probabilities, strict=True):
            sums[(slice(None), *s)] += np.moveaxis(p, -1, 0) * w
            weights[s] += w
        if bar is not None:
            bar.add(len(items))

    def flush():
        x = np.stack([np.asarray(data[s], dtype=np.float32) for s, _ in batch])[..., None]
        if pool is None:
            accumulate(list(batch), forward(x))
        else:
            pending.append((list(batch), pool.submit(forward, x)))
            while len(pending) >= concurrency:
                items, result = pending.popleft()
                accumulate(items, result.result())
        batch.clear()

    try:
        for item in tiles(shape, **layout, blend=blend):
            batch.append(item)
            if len(batch) == batch_size:
                flush()
        if batch:
            flush()
        while pending:
            items, result = pending.popleft()
            accumulate(items, result.result())
    finally:
        if pool is not None:
            for _, result in pending:
                result.cancel()
            pool.shutdown(wait=True)
    for z in range(shape[0]):
        sums[:, z] /= np.maximum(weights[z], 1e-12)
    sums.flush()
    return sums


def compiled_forward(model):
    """The model's inference call, traced once per tile shape where the backend can.

    Under TensorFlow a traced call runs about 15 % faster than an eager one and
    needs about half the memory (oneDNN fuses convolution, bias and ReLU); other
    backends and served models are called as they are.
    """
    import keras

    if hasattr(model, "client") or keras.backend.backend() != "tensorflow":
        return lambda x: model(x, training=False)
    import tensorflow as tf

    return tf.function(lambda x: model(x, training=False), reduce_retracing=True)


# Test-time augmentation: the flips of the three axes. Each keeps the missing wedge where it is (the wedge is
# symmetric about every axis of the spectrum), unlike 90° turns, which would move the tilt axis.
TTA_FLIPS = ((), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2))


def predict_tomogram(
    loaded: LoadedModel,
    tomogram: str | os.PathLike | Volume,
    out: str | os.PathLike,
    *,
    name: str | None = None,
    tta: bool = False,
    tile: int | None = None,
    margin: int | None = None,
    batch_size: int = 1,
    voxel_size: float | None = None,
    progress: bool = False,
) -> dict[str, Path]:
    """Predict one tomogram (a file, or a volume read elsewhere and its ``name``) and write its probability maps
    and label map into ``out`` as NAME_prob_CLASS.mrc and NAME_labels.mrc. ``tta``: average the predictions of
    the eight axis flips (:data:`TTA_FLIPS`), eight times the cost."""
    from keras_ucaps.inference.resample import fourier_resample

    if isinstance(tomogram, Volume):
        volume, tomogram = tomogram, Path(str(tomogram.path or name))
    else:
        tomogram = Path(tomogram)
        volume = read_volume(tomogram)
    name = name or tomogram.stem
    vs = resolve_voxel_size(volume.voxel_size, voxel_size, tomogram)
    data = volume.data
    rescale = loaded.voxel_size is not None and abs(vs / loaded.voxel_size - 1) > VOXEL_SIZE_TOLERANCE
    if rescale:
        factor = vs / loaded.voxel_size
        warnings.warn(f"{tomogram}: voxel size {vs:g} Å differs from the model's {loaded.voxel_size:g} Å; "
                      f"resampling by {factor:.3f} for prediction", KerasUcapsWarning, stacklevel=2)
        data = fourier_resample(data, tuple(max(1, round(n * factor)) for n in data.shape))
    contract = loaded.contract
    multiple = contract.multiple
    remote = hasattr(loaded.model, "client")
    if remote:  # a served model takes tiles of its exported side only
        if tile not in (None, loaded.model.tile):
            raise InputError("--tile", f"the served model takes {loaded.model.tile}³ tiles only")
        tile = loaded.model.tile
    # A whole-input model's outputs depend on their whole tile: tiles of one fixed side (its context),
    # laid out from the origin whatever the volume's size, each voxel owned by one tile.
    tile = tile or (contract.tile if contract.whole_input else max(contract.default_tile, loaded.patch_size))
    fixed = remote or contract.whole_input
    if remote and any(n < tile for n in data.shape):
        raise InputError(tomogram, f"volume {data.shape} is smaller than the served model's {tile}³ tile")
    if any(n < multiple for n in data.shape) or tile < multiple:
        raise InputError(tomogram, f"volume {data.shape} is smaller than one {multiple}-voxel tile")
    if margin is None:
        margin = min(contract.radius, tile // 8)
    out = Path(out)
    final = {c.name: out / f"{name}_prob_{c.name}.mrc" for c in loaded.classes.classes}
    final["labels"], final["classes"] = out / f"{name}_labels.mrc", out / "classes.json"
    for path in final.values():  # before any work: a path we could not write
        check_output(path)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_scratch(out)
    with scratch_folder(out) as staging:
        mean, std = tomogram_statistics(data)
        num_classes = loaded.classes.num_classes
        flips = TTA_FLIPS if tta else ((),)
        for axes in flips:
            view = np.flip(data, axes) if axes else data
            predicted = predict_volume(loaded.model, _Normalised(view, mean, std), num_classes, tile=tile,
                                       margin=margin, batch_size=batch_size, scratch=staging,
                                       progress=progress, fixed_tiles=fixed, blend=not contract.whole_input)
            if len(flips) == 1:
                probabilities = predicted
                break
            if axes == ():  # a new .npy memmap starts as zeros
                probabilities = np.lib.format.open_memmap(staging / "tta.npy", mode="w+", dtype=np.float32,
                                                          shape=predicted.shape)
            for c in range(num_classes):  # one channel at a time, flipped back
                probabilities[c] += np.flip(np.asarray(predicted[c]), axes) / len(flips)
            scratch = Path(predicted.filename).parent
            del predicted
            shutil.rmtree(scratch, ignore_errors=True)
        # One channel at a time back onto the tomogram's grid, for its map and for a running argmax: memory
        # holds the label map, the best probability so far and one channel, whatever the number of classes.
        labels = np.zeros(volume.shape, dtype=np.int8)
        best = np.full(volume.shape, -np.inf, dtype=np.float32) if rescale else None
        names = {c.label: c.name for c in loaded.classes.classes}
        for label in range(num_classes):
            channel = _resize(probabilities[label], volume.shape) if rescale else probabilities[label]
            if label in names:
                write_volume(staging / final[names[label]].name, channel, vs, origin=volume.origin,
                             start=volume.start, dtype="float16")
            if rescale:
                better = channel > best
                labels[better] = label
                np.maximum(best, channel, out=best)
                del better
            del channel
        if not rescale:
            for z in range(volume.shape[0]):
                labels[z] = np.argmax(probabilities[:, z], axis=0)
        del best
        write_volume(staging / final["labels"].name, labels, vs, origin=volume.origin, start=volume.start,
                     dtype="int8")
        loaded.classes.save(staging / final["classes"].name)
        del probabilities
        # Swap in: the old label map goes first and the new one comes last, so an interrupted swap leaves no
        # label map to pick from, never one beside another model's probability maps.
        final["labels"].unlink(missing_ok=True)
        for key, path in final.items():
            if key != "labels":
                os.replace(staging / path.name, path)
        os.replace(staging / final["labels"].name, final["labels"])
    return final


class _Normalised:
    """A lazily z-scored view of a (possibly memory-mapped) volume."""

    def __init__(self, data, mean, std):
        self.data, self.mean, self.std = data, mean, std
        self.shape = data.shape

    def __getitem__(self, item):
        return (np.asarray(self.data[item], dtype=np.float32) - self.mean) / self.std


def _resize(channel: np.ndarray, shape) -> np.ndarray:
    """A map predicted on a Fourier-resampled grid, back onto the tomogram's grid (linear interpolation).

    ``fourier_resample`` puts sample j of an M-voxel axis at position j × N / M of the N-voxel original
    (first voxels aligned), so original voxel i lies at i × M / N on the resampled grid: the same mapping back,
    not ``ndimage.zoom``'s, which aligns the last voxels too and drifts by up to a voxel at the far end.
    """
    from scipy import ndimage

    scale = [s / t for t, s in zip(shape, channel.shape, strict=True)]
    return ndimage.affine_transform(np.asarray(channel, dtype=np.float32), scale, output_shape=tuple(shape),
                                    order=1, mode="nearest")
