"""Particles from label maps: connected components, weighted centroids, duplicates removed.

Per class, the voxels labelled with it form connected components (26-connected).
A component smaller than ``min_size`` voxels is dropped (default: a fifth of the
volume of the class's sphere, at least 2 voxels: noise specks are smaller than any particle).
A component no larger than 1.5 spheres becomes one particle at its
probability-weighted centroid (plain centroid without a probability map), scored
by its mean probability. A larger one holds touching particles (crowded large
complexes merge into one blob): it is split at the local maxima of the class
probability smoothed over a third of the radius, at least one radius apart;
each voxel of the blob goes to its nearest maximum, and each pick is scored by
the mean probability of its voxels: one score for both kinds of pick, so one
threshold per class means the same for both.
Picks of one class closer than ``suppress`` × radius are merged, the
higher-scored one kept. Connected components were chosen over mean-shift
clustering because their cost is one pass over the map (DeepFinder's MeanShift
takes longer than its network on large maps).
"""

from __future__ import annotations

import numpy as np

from keras_ucaps.classes import ClassRegistry
from keras_ucaps.io.particles import ParticleTable


def default_min_size(radius_voxels: float) -> int:
    return max(2, int(0.2 * 4 / 3 * np.pi * radius_voxels**3))


def pick_particles(
    labels: np.ndarray,
    classes: ClassRegistry,
    voxel_size: float,
    *,
    probabilities: dict[str, np.ndarray] | None = None,
    min_size: dict[str, int] | None = None,
    suppress: float = 0.5,
    tomo: str = "",
) -> ParticleTable:
    """Pick the particles of every class in a (z, y, x) label map.

    Parameters
    ----------
    labels : numpy.ndarray
        Argmax label map, 0 background.
    classes : ClassRegistry
        Label ids and radii.
    voxel_size : float
        Å per voxel (radii are in Å).
    probabilities : dict, optional
        Class name → (z, y, x) probability map, for weighted centroids and scores.
    min_size : dict, optional
        Class name → minimum component size in voxels.
    suppress : float
        Merge picks of a class closer than this fraction of its radius.
    tomo : str
        Tomogram name written into the table.
    """
    from scipy import ndimage

    tables = []
    structure = np.ones((3, 3, 3), dtype=bool)
    for cls in classes.classes:
        mask = labels == cls.label
        if not mask.any():
            continue
        radius = cls.radius / voxel_size
        smallest = (min_size or {}).get(cls.name, default_min_size(radius))
        components, count = ndimage.label(mask, structure=structure)
        index = np.arange(1, count + 1)
        sizes = ndimage.sum_labels(mask, components, index)
        keep = index[sizes >= smallest]
        if len(keep) == 0:
            continue
        prob = (probabilities or {}).get(cls.name)
        weight = np.asarray(prob, dtype=np.float32) if prob is not None else mask.astype(np.float32)
        sphere = 4 / 3 * np.pi * radius**3
        whole = keep[sizes[keep - 1] <= 1.5 * sphere]
        merged = keep[sizes[keep - 1] > 1.5 * sphere]
        centres = np.array(ndimage.center_of_mass(weight, components, whole)).reshape(-1, 3)  # z, y, x
        scores = ndimage.mean(weight, components, whole) if prob is not None else np.full(len(whole), np.nan)
        if len(merged):
            peak_centres, peak_scores = _split_at_peaks(weight, components, merged, radius, prob is not None)
            centres = np.concatenate([centres, peak_centres])
            scores = np.concatenate([np.asarray(scores, dtype=float), peak_scores])
        table = ParticleTable.from_columns(centres[:, ::-1], cls.name, tomo, score=np.asarray(scores, dtype=float))
        tables.append(suppress_duplicates(table, suppress * radius))
    return ParticleTable.concat(tables)


def _split_at_peaks(weight, components, merged, radius, scored):
    """Local maxima of the smoothed weight inside the ``merged`` components, at least a radius apart."""
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(weight, sigma=max(1.0, radius / 3))
    size = 2 * int(round(radius)) + 1
    inside = np.isin(components, merged)
    peaks = inside & (smooth == ndimage.maximum_filter(smooth, size=size)) & (smooth > 0)
    zyx = np.argwhere(peaks).astype(np.float64)
    scores = np.full(len(zyx), np.nan)
    if not scored or not len(zyx):
        return zyx, scores
    from scipy.spatial import cKDTree

    owners = components[tuple(zyx.T.astype(int))]
    boxes = ndimage.find_objects(components)
    for component in np.unique(owners):
        members = np.flatnonzero(owners == component)
        box = boxes[component - 1]
        local = components[box] == component
        voxels = np.argwhere(local) + [s.start for s in box]
        nearest = cKDTree(zyx[members]).query(voxels)[1]
        values = weight[box][local]
        scores[members] = np.bincount(nearest, values, len(members)) / np.maximum(
            np.bincount(nearest, minlength=len(members)), 1)
    return zyx, scores


def suppress_duplicates(table: ParticleTable, distance: float) -> ParticleTable:
    """Keep, among picks closer than ``distance`` voxels, the best-scored (greedy, by score)."""
    if len(table) < 2 or distance <= 0:
        return table
    from scipy.spatial import cKDTree

    order = np.argsort(-np.nan_to_num(table.score, nan=0.0), kind="stable")
    tree = cKDTree(table.coords)
    taken = np.zeros(len(table), dtype=bool)
    keep = []
    for i in order:
        if taken[i]:
            continue
        keep.append(i)
        taken[tree.query_ball_point(table.coords[i], distance)] = True
    return table[np.sort(np.array(keep))]
