"""Stream patches from the HDF5 store into training: tf.data under TensorFlow, a Keras
``PyDataset`` under any other backend, both over one definition of the samples.

:class:`PatchStream` defines them: which patches an epoch visits (:func:`epoch_order`),
their augmentation (:mod:`keras_ucaps.data.augment`, drawn from a generator seeded by the
run's seed, the epoch and the position, so it does not depend on who reads the patch) and
their targets, in numpy. :func:`make_dataset` (tf.data: readers interleave, each opening the
h5py file inside its generator) and :class:`PatchBatches` (``keras.utils.PyDataset``, for
JAX or PyTorch, without TensorFlow) batch the same sequence: for the same seed they yield the
same batches. Patches arrive normalised with their whole tomogram's statistics
(the store does it), which is exactly how prediction normalises a tomogram before
tiling it: so a tiled prediction equals a one-pass prediction. Targets are made per
model output by the targets the model names (``model.training_targets()``:
:mod:`keras_ucaps.data.targets`); the pipeline knows no architecture.
"""

from __future__ import annotations

import dataclasses
import json
import os

import keras
import numpy as np

from keras_ucaps.classes import ClassRegistry


@dataclasses.dataclass(frozen=True)
class StoreInfo:
    """What a patch store says about itself."""

    path: str
    classes: ClassRegistry
    voxel_size: float
    patch_size: int
    tomograms: list[str]
    split: np.ndarray
    tomogram: np.ndarray
    class_voxels: np.ndarray
    patch_class: np.ndarray | None = None  # the label each patch was centred on, -1 background
    normalization: str = "tomogram z-score"  # how the patches were normalised (prediction does the same)

    def indices(self, part: int) -> np.ndarray:
        return np.flatnonzero(self.split == part)


def read_store_info(path: str | os.PathLike) -> StoreInfo:
    import h5py

    from keras_ucaps.errors import InputError

    if not os.path.isfile(path):
        raise InputError(path, "no such file")
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in ("images", "labels", "split", "tomogram") if k not in f]
            if missing:
                raise InputError(path, f"not a keras-ucaps patch store (no {', '.join(missing)})")
            try:
                info = StoreInfo(
                    path=str(path),
                    classes=ClassRegistry.from_dict(json.loads(f.attrs["classes"]), str(path)),
                    voxel_size=float(f.attrs["voxel_size"]),
                    patch_size=int(f.attrs["patch_size"]),
                    tomograms=json.loads(f.attrs["tomograms"]),
                    split=f["split"][()],
                    tomogram=f["tomogram"][()],
                    class_voxels=np.asarray(json.loads(f.attrs["class_voxels"]), dtype=np.float64),
                    patch_class=f["class"][()] if "class" in f else None,
                    normalization=str(f.attrs.get("normalization", "tomogram z-score")),
                )
                images, labels = f["images"].shape, f["labels"].shape
            except (KeyError, TypeError, ValueError) as err:  # attributes missing or not what we wrote
                raise InputError(path, f"damaged patch store ({type(err).__name__}: {err})") from None
    except OSError as err:
        raise InputError(path, f"not a readable HDF5 file ({err})") from None
    n = len(info.split)
    size = info.patch_size
    if (images[0] != n or labels[0] != n or len(info.tomogram) != n
            or (info.patch_class is not None and len(info.patch_class) != n) or images[1:4] != (size,) * 3
            or labels[1:4] != (size,) * 3):
        raise InputError(path, f"damaged patch store: images {images}, labels {labels} and {n} split entries of "
                               f"{size}³ patches do not agree")
    if not (0 < info.voxel_size < float("inf")) or len(info.class_voxels) != info.classes.num_classes:
        raise InputError(path, "damaged patch store: voxel size or class counts are not what patches writes")
    return info


def epoch_order(info: StoreInfo, indices: np.ndarray, seed: int, *, shuffle: bool = True,
                balance: bool = False) -> np.ndarray:
    """The patches one epoch visits, in order.

    Plain: every patch once, shuffled (or in order, ``shuffle=False``). ``balance``: as many draws as
    patches, with replacement, such that each particle class is drawn equally often and background
    patches keep their share of the store (a class with 40 patches is shown as often as one with 400;
    augmentation makes the repeats differ).
    """
    indices = np.asarray(indices, dtype=np.int64)
    rng = np.random.default_rng(seed)
    if not balance:
        return rng.permutation(indices) if shuffle else indices
    if info.patch_class is None:
        from keras_ucaps.errors import InputError

        raise InputError(info.path, "store does not record the class of each patch: make it again with "
                                    "`keras-ucaps patches` to balance classes")
    centred = info.patch_class[indices]
    particle = centred >= 0
    classes, counts = np.unique(centred[particle], return_counts=True)
    if len(classes) == 0:
        return rng.permutation(indices)
    share = np.zeros(len(indices))
    share[~particle] = 1.0 / len(indices)  # background keeps its fraction
    for label, count in zip(classes, counts, strict=True):
        share[centred == label] = particle.mean() / len(classes) / count
    return rng.choice(indices, size=len(indices), replace=True, p=share / share.sum())


class PatchStream:
    """The training samples of a patch store, in numpy: one definition for every pipeline.

    Args:
        info: the store.
        indices: the patches to draw from.
        targets: model output name → its target (:mod:`keras_ucaps.data.targets`), as
            ``model.training_targets()`` gives them (default: the class labels of ``probabilities``).
        shuffle, balance: how an epoch orders its patches (:func:`epoch_order`).
        augment: apply :func:`keras_ucaps.data.augment.augment`.
        imaging: also apply :func:`keras_ucaps.data.augment.imaging` (with ``augment``).
        seed: the run's seed.

    The stream is the patches of store-epoch 0, then of store-epoch 1, and so on; sample ``position`` of
    store-epoch ``e`` is :meth:`prepare` applied to :meth:`read` (e, position).
    """

    def __init__(self, info: StoreInfo, indices, *, targets: dict | None = None, shuffle: bool = True,
                 augment: bool = True, seed: int = 0, balance: bool = False, imaging: bool = False):
        from keras_ucaps.data.targets import LabelTarget

        self.info, self.indices = info, np.asarray(indices, dtype=np.int64)
        self.targets = dict(targets or {"probabilities": LabelTarget()})
        self.shuffle, self.augment, self.seed, self.balance = shuffle, augment, int(seed), balance
        self.imaging = imaging
        self._orders: dict[int, np.ndarray] = {}
        self._file = None

    def __len__(self) -> int:
        return len(self.indices)

    def order(self, epoch: int) -> np.ndarray:
        """The patches store-epoch ``epoch`` visits (the latest epoch's order is kept)."""
        order = self._orders.get(epoch)
        if order is None:
            order = epoch_order(self.info, self.indices, epoch + self.seed * 100003, shuffle=self.shuffle,
                                balance=self.balance)
            self._orders = {epoch: order}
        return order

    def read(self, epoch: int, position: int) -> tuple[np.ndarray, np.ndarray]:
        """The stored image and labels of sample ``position`` of store-epoch ``epoch``, from one file handle kept
        open (callers on several threads hold a lock)."""
        if self._file is None:
            import h5py

            self._file = h5py.File(self.info.path, "r")
        i = self.order(epoch)[position]
        return self._file["images"][i], self._file["labels"][i]

    def prepare(self, image: np.ndarray, labels: np.ndarray, epoch: int, position: int):
        """(image (z, y, x, 1) float32, targets) of one patch."""
        from keras_ucaps.data.augment import augment, imaging

        image = np.asarray(image, dtype=np.float32)
        if self.augment:
            rng = np.random.default_rng((self.seed, epoch, position))
            image, labels = augment(image, labels, rng)
            if self.imaging:
                image, labels = imaging(image, labels, rng)
        num_classes = self.info.classes.num_classes
        targets = {name: target.make(image, labels, num_classes) for name, target in self.targets.items()}
        return image[..., None], targets

    def epoch(self, epoch: int, shard: int = 0, shards: int = 1):
        """The samples of one store-epoch at positions shard, shard + shards, …, each file opened here."""
        import h5py

        order = self.order(epoch)
        with h5py.File(self.info.path, "r") as f:
            images, labels = f["images"], f["labels"]
            for position in range(shard, len(order), shards):
                i = order[position]
                yield self.prepare(images[i], labels[i], epoch, position)

    def signature(self):
        """tf.TensorSpec of a sample, for tf.data."""
        import tensorflow as tf

        size, num_classes = self.info.patch_size, self.info.classes.num_classes
        targets = {name: tf.TensorSpec(*target.spec(size, num_classes)) for name, target in self.targets.items()}
        return tf.TensorSpec((size,) * 3 + (1,), tf.float32), targets


def make_dataset(
    info: StoreInfo,
    indices: np.ndarray,
    *,
    batch_size: int,
    targets: dict | None = None,
    shuffle: bool = True,
    augment: bool = True,
    repeat: bool = True,
    readers: int = 2,
    seed: int = 0,
    balance: bool = False,
    imaging: bool = False,
):
    """A tf.data pipeline of (image, targets) batches of the :class:`PatchStream` over ``indices``.

    ``readers`` generators each read every ``readers``-th sample and are interleaved back into the stream's
    order; ``repeat`` loops over store-epochs forever (batches then run across their boundaries), else one
    pass with a last partial batch.
    """
    import tensorflow as tf

    stream = PatchStream(info, indices, targets=targets, shuffle=shuffle,
                         augment=augment, seed=seed, balance=balance, imaging=imaging)
    readers = max(1, min(readers, len(stream)))
    signature = stream.signature()

    def epoch(epoch_index):
        shards = tf.data.Dataset.range(readers)
        return shards.interleave(
            lambda shard: tf.data.Dataset.from_generator(stream.epoch, output_signature=signature,
                                                         args=(epoch_index, shard, readers)),
            cycle_length=readers, block_length=1, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    ds = tf.data.Dataset.range(2**62 if repeat else 1).flat_map(epoch)
    ds = ds.batch(batch_size, drop_remainder=repeat).prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    # Patches come from a generator, not files: workers of a cluster split the batches.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def patch_batches(info: StoreInfo, indices, *, batch_size: int, steps: int | None = None, repeat: bool = True,
                  workers: int = 2, **stream_options):
    """The backend-neutral pipeline: a :class:`PatchBatches` (``keras.utils.PyDataset``) of the same batches
    :func:`make_dataset` gives for the same arguments."""
    stream = PatchStream(info, indices, **stream_options)
    return PatchBatches(stream, batch_size, steps=steps, repeat=repeat, workers=workers)


class PatchBatches(keras.utils.PyDataset):
    """Batches of a :class:`PatchStream` as a ``keras.utils.PyDataset`` (any backend, no TensorFlow).

    With ``repeat``, ``steps`` batches per Keras epoch run through the stream continuously (as tf.data's
    repeated stream does): Keras epoch k, batch i holds stream samples ((k·steps + i)·batch_size …); else one
    pass over the patches, the last batch partial. ``workers`` threads prepare batches ahead.
    """

    def __init__(self, stream: PatchStream, batch_size: int, *, steps: int | None = None, repeat: bool = True,
                 workers: int = 2):
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=max(4, 2 * workers))
        self.stream, self.batch_size, self.repeat = stream, int(batch_size), repeat
        per_pass = len(stream) // self.batch_size if repeat else -(-len(stream) // self.batch_size)
        self.steps = int(steps or max(1, per_pass))
        self.keras_epoch = 0
        import threading

        self._lock = threading.Lock()  # h5py serialises reads anyway; one open file for every thread

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, index: int):
        start = ((self.keras_epoch * self.steps if self.repeat else 0) + index) * self.batch_size
        stop = start + self.batch_size if self.repeat else min(start + self.batch_size, len(self.stream))
        samples = []
        for position in range(start, stop):
            epoch, within = divmod(position, len(self.stream))
            with self._lock:
                image, label = self.stream.read(epoch, within)
            samples.append(self.stream.prepare(image, label, epoch, within))
        images = np.stack([s[0] for s in samples])
        targets = {k: np.stack([s[1][k] for s in samples]) for k in samples[0][1]}
        return images, targets

    def on_epoch_end(self) -> None:
        if self.repeat:
            self.keras_epoch += 1
