"""Sphere label maps: the training targets made from a particle table.

Each particle becomes a ball of its class's radius, labelled with the class's
label id; background is 0. Where balls overlap, a voxel belongs to the nearest
particle centre (not to whichever was written last). Balls reaching past the
volume's border are clipped. Centres must lie inside the volume:
``-0.5 <= x < size_x - 0.5`` (voxel i's centre at i), and likewise for y and z.
"""

from __future__ import annotations

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
