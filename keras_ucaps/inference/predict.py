"""Predict per-class probability maps over whole tomograms.

A tomogram is normalised as the model's training patches were (its metadata's
``normalization``, :mod:`keras_ucaps.data.normalization`), cut into overlapping
tiles (see :mod:`keras_ucaps.inference.tiling`), run through the model in batches,
and blended into sums on disk that are read and written a tile at a time
(:class:`TileSums`); the maps are then written a slab of planes at a time, or
gathered in memory (:func:`predict_in_memory`). Memory holds a batch of tiles or
one slab of every class, whatever the tomogram's size (docs/large-tomograms.md).
Outputs, in ``OUT``, each with the input's voxel size and origin:

- ``NAME_prob_CLASS.mrc``: float16 probability of each particle class;
- ``NAME_labels.mrc``: int8 argmax label map (0 background);
- ``classes.json``: the model's class registry (for ``pick``).

A tomogram at another voxel size than the model's is resampled to the model's
(on disk, axis by axis), predicted, and its maps resampled back onto the input's
grid, with a warning.
"""
from __future__ import annotations

import collections
import contextlib
import os
import shutil
import tempfile
import warnings
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from keras_ucaps.data.normalization import ZSCORE, Normalization, measure
from keras_ucaps.errors import InputError, KerasUcapsWarning
from keras_ucaps.io.atomic import check_output, first_missing, remove_stale_scratch, scratch_folder
from keras_ucaps.io.diskarray import DiskArray, slabs
from keras_ucaps.io.mrc import Volume, read_volume, resolve_voxel_size
from keras_ucaps.models.loading import LoadedModel
from keras_ucaps.models.metadata import ModelMetadata

VOXEL_SIZE_TOLERANCE = 0.01


def load_remote(address: str, model_name: str, version: int | None = None,
                concurrency: int | None = None) -> LoadedModel:
    """A model served by TF Serving, described by its exported config; ``concurrency`` requests in flight."""
    from keras_ucaps.serving.client import DEFAULT_CONCURRENCY, RemoteModel, ServingClient

    remote = RemoteModel(ServingClient(address, model_name, version), concurrency or DEFAULT_CONCURRENCY)
    config = remote.config
    metadata = ModelMetadata.from_dict({"normalization": ZSCORE, "patch_size": remote.tile, **config},
                                       f"{address}/{model_name}")
    return LoadedModel(remote, metadata, remote.contract, config.get("picking"))


def predict_volume(
    model,
    data,
    num_classes: int,
    *,
    tile: int,
    margin: int,
    batch_size: int = 1,
    scratch: str | os.PathLike | None = None,
    progress: bool = False,
    fixed_tiles: bool = False,
    blend: bool = True,
) -> TileSums:
    """Blended probabilities, (z, y, x, class) float32, of a normalised (z, y, x) volume.

    ``tile`` is the longest tile side; per axis the fewest tiles of one length
    are used (see :func:`keras_ucaps.inference.tiling.axis_layout`), or with
    ``fixed_tiles`` all of side ``tile``; tiles are blended, or (``blend=False``) each voxel taken
    from the one tile that owns it (see :mod:`keras_ucaps.inference.tiling`). The weighted sums are
    kept on disk in ``scratch`` (a temporary folder by default) and read back a region at a time
    (:class:`TileSums`): memory holds a batch of tiles, whatever the volume's size.
    """
    from keras_ucaps.inference.tiling import count_tiles, tiles

    shape = tuple(int(n) for n in data.shape)
    multiple = int(getattr(model, "patch_multiple", 1))
    layout = dict(tile=tile, margin=margin, multiple=multiple, fixed=fixed_tiles)
    forward = compiled_forward(model)
    if scratch is not None:
        Path(scratch).mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".keras-ucaps-{os.getpid()}-", dir=scratch))
    sums = TileSums(scratch / "sums.npy", shape, num_classes)
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
            sums.add(s, p, w)
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
    return sums


class TileSums:
    """Weighted sums of tile predictions and the sum of their weights, on disk as one (z, y, x, class + 1)
    :class:`~keras_ucaps.io.diskarray.DiskArray` (channels last, as the model gives them, so a tile's region
    is a few pages per row). Indexing it (basic indexing over z, y, x) gives the blended probabilities
    there, (…, class) float32; its ``shape`` is that of the probabilities."""

    def __init__(self, path: Path, shape: tuple[int, int, int], num_classes: int):
        self.sums = DiskArray(path, (*shape, num_classes + 1), np.float32)
        self.shape = (*shape, num_classes)

    def add(self, region, probabilities: np.ndarray, weights: np.ndarray) -> None:
        self.sums.add(region, np.concatenate([probabilities * weights[..., None], weights[..., None]], axis=-1))

    def __getitem__(self, region) -> np.ndarray:
        block = self.sums[region]
        return block[..., :-1] / np.maximum(block[..., -1:], 1e-12)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        data = self[...]
        return data if dtype is None else data.astype(dtype, copy=False)

    def remove(self) -> None:
        """Delete the file and the temporary folder that holds it."""
        shutil.rmtree(self.sums.path.parent, ignore_errors=True)


def compiled_forward(model):
    """The model's inference call, traced once per tile shape where the backend can.

    Under TensorFlow a traced call runs about 15 % faster than an eager one and
    needs about half the memory (oneDNN fuses convolution, bias and ReLU); other
    backends and served models are called as they are.
    """
    import keras

    if hasattr(model, "client") or keras.backend.backend() != "tensorflow":
        return lambda x: model(x, training=False)
    forward = _FORWARDS.get(model)
    if forward is None:  # one traced function per model, so a process that predicts many times traces once
        import tensorflow as tf

        forward = _FORWARDS[model] = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    return forward


_FORWARDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


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
    volume, tomogram = _as_volume(tomogram, name)
    name = name or tomogram.stem
    vs = resolve_voxel_size(volume.voxel_size, voxel_size, tomogram)
    out = Path(out)
    final = {c.name: out / f"{name}_prob_{c.name}.mrc" for c in loaded.classes.classes}
    final["labels"], final["classes"] = out / f"{name}_labels.mrc", out / "classes.json"
    layout = _tiling(loaded, volume, vs, tomogram, tile, margin)  # checked before any file is touched
    check_output(out, folder=True)  # a file, a link (dangling too) or a device where the folder is to be
    for path in final.values():  # before any work: a path we could not write
        check_output(path)
    made = first_missing(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        return _predict_into(loaded, volume, vs, layout, final, out, tta=tta, batch_size=batch_size,
                             progress=progress)
    except OSError as err:  # a full or read-only disk under the maps or their scratch
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
        raise InputError(out, f"cannot be written ({err.strerror or type(err).__name__})") from None
    except BaseException:
        if made is not None:  # the folders made for it go again: the file system is as it was
            shutil.rmtree(made, ignore_errors=True)
        raise


def _predict_into(loaded, volume, vs, layout, final, out, *, tta, batch_size, progress) -> dict[str, Path]:
    remove_stale_scratch(out)
    with scratch_folder(out) as staging:
        probabilities = _predict_on_disk(loaded, volume, vs, staging, layout, tta=tta, batch_size=batch_size,
                                         progress=progress)
        _write_maps(probabilities, volume, vs, {k: staging / p.name for k, p in final.items() if k != "classes"},
                    loaded.classes)
        loaded.classes.save(staging / final["classes"].name)
        # Swap in: the old label map goes first and the new one comes last, so an interrupted swap leaves no
        # label map to pick from, never one beside another model's probability maps.
        final["labels"].unlink(missing_ok=True)
        for key, path in final.items():
            if key != "labels":
                os.replace(staging / path.name, path)
        os.replace(staging / final["labels"].name, final["labels"])
    return final


def predict_in_memory(
    loaded: LoadedModel,
    tomogram: str | os.PathLike | Volume,
    *,
    tta: bool = False,
    tile: int | None = None,
    margin: int | None = None,
    batch_size: int = 1,
    voxel_size: float | None = None,
    progress: bool = False,
    scratch: str | os.PathLike | None = None,
) -> tuple[np.ndarray, float]:
    """The probabilities of one tomogram on its own grid, (z, y, x, class) float32 with background first, and
    its voxel size (Å). Tiles are blended on disk in ``scratch`` (a temporary folder by default) as for
    :func:`predict_tomogram`; memory holds the result, 4 × (classes + 1) bytes a voxel."""
    volume, tomogram = _as_volume(tomogram, None)
    vs = resolve_voxel_size(volume.voxel_size, voxel_size, tomogram)
    layout = _tiling(loaded, volume, vs, tomogram, tile, margin)
    if scratch is not None:
        Path(scratch).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".keras-ucaps-", dir=scratch) as staging:
        probabilities = _predict_on_disk(loaded, volume, vs, Path(staging), layout, tta=tta, batch_size=batch_size,
                                         progress=progress)
        shape = volume.shape
        result = np.empty((*shape, loaded.classes.num_classes), dtype=np.float32)
        for a, b in slabs(shape[0], 2 * result.shape[-1] * shape[1] * shape[2] * 4):
            result[a:b] = onto_tomogram_grid(probabilities, a, b, shape)
    return result, vs


def _as_volume(tomogram, name: str | None) -> tuple[Volume, Path]:
    """The volume and the path its messages name (a volume read elsewhere is named by its path, else ``name``)."""
    if isinstance(tomogram, Volume):
        return tomogram, Path(str(tomogram.path or name or "volume"))
    return read_volume(Path(tomogram)), Path(tomogram)


def _tiling(loaded: LoadedModel, volume: Volume, vs: float, tomogram: Path, tile: int | None,
            margin: int | None) -> dict:
    """How this tomogram is tiled for this model (its grid at the model's voxel size, tile side, margin,
    fixed tiles); a volume or tile the model cannot take is an :class:`InputError`."""
    grid = volume.shape
    rescale = loaded.voxel_size is not None and abs(vs / loaded.voxel_size - 1) > VOXEL_SIZE_TOLERANCE
    if rescale:
        factor = vs / loaded.voxel_size
        warnings.warn(f"{tomogram}: voxel size {vs:g} Å differs from the model's {loaded.voxel_size:g} Å; "
                      f"resampling by {factor:.3f} for prediction", KerasUcapsWarning, stacklevel=3)
        grid = tuple(max(1, round(n * factor)) for n in volume.shape)
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
    if remote and any(n < tile for n in grid):
        raise InputError(tomogram, f"volume {grid} is smaller than the served model's {tile}³ tile")
    if any(n < multiple for n in grid) or tile < multiple:
        raise InputError(tomogram, f"volume {grid} is smaller than one {multiple}-voxel tile")
    if margin is None:
        margin = min(contract.radius, tile // 8)
    return dict(grid=grid, rescale=rescale, tile=tile, margin=margin, fixed=fixed)


def _predict_on_disk(loaded: LoadedModel, volume: Volume, vs: float, staging: Path, layout: dict, *, tta: bool,
                     batch_size: int, progress: bool):
    """The blended probabilities on the model's grid, (z, y, x, class), as an on-disk array in ``staging``:
    everything the size of the tomogram lives there (the resampled tomogram, the sums, the TTA average)."""
    from keras_ucaps.data.resample import fourier_resample

    grid = layout["grid"]
    data = fourier_resample(volume.data, grid, scratch=staging) if layout["rescale"] else volume.data
    normalization = measure(data, loaded.normalization)
    num_classes = loaded.classes.num_classes
    flips = TTA_FLIPS if tta else ((),)
    for axes in flips:
        predicted = predict_volume(loaded.model, normalised_view(data, normalization, axes), num_classes,
                                   tile=layout["tile"], margin=layout["margin"], batch_size=batch_size,
                                   scratch=staging, progress=progress, fixed_tiles=layout["fixed"],
                                   blend=not loaded.contract.whole_input)
        if len(flips) == 1:
            return predicted
        if axes == ():  # a new .npy file starts as zeros
            probabilities = DiskArray(staging / "tta.npy", predicted.shape)
        for a, b in slabs(grid[0], int(np.prod(predicted.shape[1:])) * 4):
            probabilities.add(slice(a, b), _flipped_planes(predicted, a, b, axes) / len(flips))
        predicted.remove()
    return probabilities


def _flipped_planes(predicted, a: int, b: int, axes: tuple[int, ...]) -> np.ndarray:
    """Planes a..b of the prediction of a volume flipped along ``axes``, flipped back: (b - a, y, x, class)."""
    n = predicted.shape[0]
    block = predicted[n - b:n - a] if 0 in axes else predicted[a:b]
    return np.flip(block, axes) if axes else block


def _write_maps(probabilities, volume: Volume, voxel_size: float, paths: dict[str, Path], classes) -> None:
    """Each class's probability map (float16) and the argmax label map (int8) on the tomogram's grid, written
    a slab of planes at a time: memory holds one slab of every class, whatever the tomogram's size."""
    from keras_ucaps.io.mrc import volume_writer

    shape = volume.shape
    header = dict(origin=volume.origin, start=volume.start)
    with contextlib.ExitStack() as stack:
        writers = {c.label: stack.enter_context(volume_writer(paths[c.name], shape, voxel_size, dtype="float16",
                                                              **header))
                   for c in classes.classes}
        write_labels = stack.enter_context(volume_writer(paths["labels"], shape, voxel_size, dtype="int8", **header))
        for a, b in slabs(shape[0], 2 * probabilities.shape[-1] * shape[1] * shape[2] * 4):
            block = onto_tomogram_grid(probabilities, a, b, shape)
            for label, write in writers.items():
                write(block[..., label])
            write_labels(np.argmax(block, axis=-1).astype(np.int8))


def onto_tomogram_grid(probabilities, a: int, b: int, shape: tuple[int, int, int]) -> np.ndarray:
    """Planes a..b of the tomogram's ``shape`` grid, (b - a, y, x, class), from maps predicted on a
    Fourier-resampled grid (linear interpolation), reading only the planes they need.

    ``fourier_resample`` puts sample j of an M-voxel axis at position j × N / M of the N-voxel original
    (first voxels aligned), so original voxel i lies at i × M / N on the resampled grid: the same mapping back,
    not ``ndimage.zoom``'s, which aligns the last voxels too and drifts by up to a voxel at the far end.
    """
    from scipy import ndimage

    grid = tuple(int(n) for n in probabilities.shape[:3])
    if grid == tuple(shape):
        return np.asarray(probabilities[a:b], dtype=np.float32)
    scale = [m / n for n, m in zip(shape, grid, strict=True)]
    low = min(int(np.floor(a * scale[0])), grid[0] - 1)
    high = min(grid[0], int(np.floor((b - 1) * scale[0])) + 2)
    block = np.asarray(probabilities[low:high], dtype=np.float32)
    out = np.empty((b - a, shape[1], shape[2], block.shape[-1]), dtype=np.float32)
    for c in range(block.shape[-1]):
        out[..., c] = ndimage.affine_transform(np.ascontiguousarray(block[..., c]), scale,
                                               offset=(a * scale[0] - low, 0.0, 0.0),
                                               output_shape=out.shape[:3], order=1, mode="nearest")
    return out


class normalised_view:  # noqa: N801 (used like a function: normalised_view(data, normalization)[region])
    """A lazily normalised view of a (possibly memory-mapped or on-disk) volume, flipped along ``flip`` axes:
    ``view[region]`` is ``normalization.apply(data[region], region)``, a region read at a time."""

    def __init__(self, data, normalization: Normalization, flip: tuple[int, ...] = ()):
        self.data, self.normalization, self.flip = data, normalization, tuple(flip)
        self.shape = tuple(int(n) for n in data.shape)

    def __getitem__(self, region):
        region = tuple(slice(*s.indices(n)[:2]) for s, n in zip(region, self.shape, strict=True))
        if self.flip:  # the mirror region of the volume, flipped
            region = tuple(slice(n - s.stop, n - s.start) if axis in self.flip else s
                           for axis, (s, n) in enumerate(zip(region, self.shape, strict=True)))
            return np.flip(self.normalization.apply(self.data[region], region), self.flip)
        return self.normalization.apply(self.data[region], region)
