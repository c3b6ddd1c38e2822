"""Training targets: sphere label maps made from a particle table, and what each model output is trained
against (:class:`LabelTarget`, :class:`ImageAndForegroundTarget`, :class:`BlockPresenceTarget`).

Each particle becomes a ball of its class's radius, labelled with the class's
label id; background is 0. Where balls overlap, a voxel belongs to the nearest
particle centre (not to whichever was written last). Balls reaching past the
volume's border are clipped. Centres must lie inside the volume:
``-0.5 <= x < size_x - 0.5`` (voxel i's centre at i), and likewise for y and z.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from keras_ucaps.classes import ClassRegistry
from keras_ucaps.errors import InputError
from keras_ucaps.io.particles import ParticleTable


def check_inside(table: ParticleTable, shape_zyx: tuple[int, int, int], source: str) -> None:
    """Raise an InputError naming ``source`` if a centre lies outside the volume."""
    size_xyz = np.asarray(shape_zyx[::-1], dtype=np.float64)
    outside = ((table.coords < -0.5) | (table.coords >= size_xyz - 0.5)).any(axis=1)
    if outside.any():
        i = int(np.argmax(outside))
        x, y, z = table.coords[i]
        raise InputError(
            source,
            f"{int(outside.sum())} particle(s) lie outside the {shape_zyx[2]}×{shape_zyx[1]}×{shape_zyx[0]} (x×y×z) "
            f"volume, e.g. row {i + 1} at x={x:g}, y={y:g}, z={z:g}",
        )


def sphere_targets(
    table: ParticleTable,
    shape_zyx: tuple[int, int, int],
    classes: ClassRegistry,
    voxel_size: float,
    *,
    radius_scale: float = 1.0,
    source: str = "particle table",
) -> np.ndarray:
    """Paint each particle as a labelled ball; nearest centre wins overlaps.

    Parameters
    ----------
    table : ParticleTable
        Particles of one tomogram; x, y, z in voxels.
    shape_zyx : tuple of int
        Shape of the label map, (z, y, x).
    classes : ClassRegistry
        Label ids and radii (Å) of the classes.
    voxel_size : float
        Å per voxel, to turn radii into voxels.
    radius_scale : float
        Multiply every radius (DeepFinder often trains on smaller spheres).
    source : str
        Named in error messages (the table's file).

    Returns
    -------
    numpy.ndarray of uint8, shape (z, y, x)
        0 for background, the class label inside each ball.
    """
    classes.check_names(table.class_name, source)
    check_inside(table, shape_zyx, source)
    labels = np.zeros(shape_zyx, dtype=np.uint8)
    nearest = np.full(shape_zyx, np.inf, dtype=np.float32)
    shape = np.asarray(shape_zyx)
    for (x, y, z), name in zip(table.coords, table.class_name, strict=True):
        radius = classes.radius_voxels(name, voxel_size) * radius_scale
        centre = np.array([z, y, x])
        lo = np.maximum(np.floor(centre - radius).astype(int), 0)
        hi = np.minimum(np.ceil(centre + radius).astype(int) + 1, shape)
        if np.any(hi <= lo):
            continue
        box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        zz, yy, xx = np.ogrid[box]
        dist2 = ((zz - z) ** 2 + (yy - y) ** 2 + (xx - x) ** 2).astype(np.float32)
        wins = (dist2 <= radius**2) & (dist2 < nearest[box])
        labels[box][wins] = classes.label(name)
        nearest[box][wins] = dist2[wins]
    return labels


# --- Training targets: what each model output is trained against, made from a patch and its labels. ---
# An architecture names its targets (``model.training_targets()``); the pipeline makes them without knowing
# which model asked.


@dataclasses.dataclass(frozen=True)
class LabelTarget:
    """The label patch, (z, y, x) uint8: for per-voxel class probabilities."""

    def make(self, image: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
        return np.asarray(labels, dtype=np.uint8)

    def spec(self, patch_size: int, num_classes: int) -> tuple[tuple[int, ...], str]:
        return (patch_size,) * 3, "uint8"


@dataclasses.dataclass(frozen=True)
class ImageAndForegroundTarget:
    """The (augmented) image and its foreground mask, (z, y, x, 2) float32: for a reconstruction of the
    particles."""

    def make(self, image: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
        return np.stack([image, (labels > 0).astype(np.float32)], axis=-1)

    def spec(self, patch_size: int, num_classes: int) -> tuple[tuple[int, ...], str]:
        return (patch_size,) * 3 + (2,), "float32"


@dataclasses.dataclass(frozen=True)
class BlockPresenceTarget:
    """Which classes each ``stride``³ block holds, (z/s, y/s, x/s, C) multi-hot float32; background only
    where no particle voxel is (sampling one voxel per block missed most 9-voxel particles)."""

    stride: int

    def make(self, image: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
        return block_presence(labels, self.stride, num_classes)

    def spec(self, patch_size: int, num_classes: int) -> tuple[tuple[int, ...], str]:
        return (patch_size // self.stride,) * 3 + (num_classes,), "float32"


def block_presence(labels: np.ndarray, stride: int, num_classes: int) -> np.ndarray:
    """(z/s, y/s, x/s, C) float32: 1 where class c occurs in the s³ block, background where no particle does."""
    d, h, w = (n // stride for n in labels.shape)
    blocks = np.asarray(labels)[:d * stride, :h * stride, :w * stride].reshape(d, stride, h, stride, w, stride)
    blocks = blocks.transpose(0, 2, 4, 1, 3, 5).reshape(d, h, w, -1)
    present = np.zeros((d, h, w, num_classes), dtype=np.float32)
    for c in range(1, num_classes):
        present[..., c] = (blocks == c).any(axis=-1)
    present[..., 0] = 1.0 - present[..., 1:].max(axis=-1, initial=0.0)
    return present
