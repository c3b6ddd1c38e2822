"""Stream patches from the HDF5 store into training with tf.data.

h5py files are opened inside the generators (one handle per reader, so readers
never share state), and several readers interleave. Patches arrive z-scored
with their whole tomogram's mean and standard deviation (the store does it),
which is exactly how prediction normalises a tomogram before tiling it: so a
tiled prediction equals a one-pass prediction. Targets are packed per model output:

- ``probabilities``: the label patch (z, y, x), uint8;
- ``reconstruction`` (UCaps): the z-scored image and a foreground mask, (z, y, x, 2);
- ``capsule_lengths`` (UCaps): which classes each final capsule's block of
  (2**levels)³ voxels holds, (z', y', x', C) multi-hot; background is present
  only in blocks without any particle voxel. (Sampling one voxel per block, as
  before, missed most 9-voxel particles: the tiny class's capsules then learnt
  late.)
"""

from __future__ import annotations

import dataclasses
import json
import os

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
                )
                images, labels = f["images"].shape, f["labels"].shape
            except (KeyError, TypeError, ValueError) as err:  # attributes missing or not what we wrote
                raise InputError(path, f"damaged patch store ({type(err).__name__}: {err})") from None
    except OSError as err:
        raise InputError(path, f"not a readable HDF5 file ({err})") from None
    n = len(info.split)
    size = info.patch_size
    if (images[0] != n or labels[0] != n or len(info.tomogram) != n or images[1:4] != (size,) * 3
            or labels[1:4] != (size,) * 3):
        raise InputError(path, f"damaged patch store: images {images}, labels {labels} and {n} split entries of "
                               f"{size}³ patches do not agree")
    if not (0 < info.voxel_size < float("inf")) or len(info.class_voxels) != info.classes.num_classes:
        raise InputError(path, "damaged patch store: voxel size or class counts are not what patches writes")
    return info


def block_presence(labels, stride: int, num_classes: int):
    """(z/s, y/s, x/s, C) float32: 1 where class c occurs in the s³ block, background where no particle does."""
    import tensorflow as tf

    d, h, w = (tf.shape(labels)[i] // stride for i in range(3))
    onehot = tf.one_hot(tf.cast(labels, tf.int32), num_classes, dtype=tf.float32)
    blocks = tf.reshape(onehot, [d, stride, h, stride, w, stride, num_classes])
    present = tf.reduce_max(blocks, axis=[1, 3, 5])
    particle = tf.reduce_max(present[..., 1:], axis=-1, keepdims=True)
    return tf.concat([1.0 - particle, present[..., 1:]], axis=-1)


def make_dataset(
    info: StoreInfo,
    indices: np.ndarray,
    *,
    batch_size: int,
    outputs: tuple[str, ...] = ("probabilities",),
    capsule_stride: int = 8,
    shuffle: bool = True,
    augment: bool = True,
    repeat: bool = True,
    readers: int = 2,
    seed: int = 0,
):
    """A tf.data pipeline of (image, targets) batches from the patches ``indices``.

    Each epoch visits every patch once (shuffled); ``repeat`` loops forever.
    """
    import h5py
    import tensorflow as tf

    from keras_ucaps.data.augment import augment as augment_fn

    indices = np.asarray(indices, dtype=np.int64)
    num_classes = info.classes.num_classes
    size = info.patch_size
    path = info.path
    readers = max(1, min(readers, len(indices)))

    def reader(shard: int, epoch_seed: int):
        order = np.random.default_rng(epoch_seed).permutation(indices) if shuffle else indices
        with h5py.File(path, "r") as f:
            images, labels = f["images"], f["labels"]
            for i in order[shard::readers]:
                yield images[i], labels[i]

    signature = (tf.TensorSpec((size, size, size), tf.float16), tf.TensorSpec((size, size, size), tf.uint8))

    def epoch(epoch_index):
        shards = tf.data.Dataset.range(readers)
        return shards.interleave(
            lambda shard: tf.data.Dataset.from_generator(
                reader, output_signature=signature, args=(shard, epoch_index + seed * 100003)),
            cycle_length=readers, num_parallel_calls=tf.data.AUTOTUNE, deterministic=not shuffle,
        )

    epochs = tf.data.Dataset.range(2**62 if repeat else 1)
    ds = epochs.flat_map(epoch)
    if shuffle:
        ds = ds.shuffle(max(8, 4 * batch_size), seed=seed)
    ds = ds.enumerate()

    def prepare(step, pair):
        image, labels = pair
        image = tf.cast(image, tf.float32)
        if augment:
            image, labels = augment_fn(image, labels, tf.stack([tf.cast(seed, tf.int64), step]))
        targets = {"probabilities": labels}
        if "reconstruction" in outputs:
            targets["reconstruction"] = tf.stack([image, tf.cast(labels > 0, tf.float32)], axis=-1)
        if "capsule_lengths" in outputs:
            targets["capsule_lengths"] = block_presence(labels, capsule_stride, num_classes)
        return image[..., None], targets

    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=repeat).prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    # Patches come from a generator, not files: workers of a cluster split the batches.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)
