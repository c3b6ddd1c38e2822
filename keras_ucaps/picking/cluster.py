"""Particles from label maps: connected components, weighted centroids, duplicates removed.

Per class, the voxels labelled with it form connected components (26-connected).
A component smaller than ``min_size`` voxels is dropped (default: a fifth of the
volume of the class's sphere, at least 2 voxels: noise specks are smaller than any particle).
A component no larger than 1.5 spheres becomes one particle at its
probability-weighted centroid (plain centroid without a probability map), scored
by its mean probability. A larger one holds touching particles (crowded large
complexes merge into one blob): it is split at the centres of the balls that
fit it best, the local maxima of the sum of (2 × probability − 1) over a ball
of the class's radius (maxima over a cube inside that ball): the matched filter of
the sphere targets the model was trained on, largest where a whole ball of high
probability sits (a Gaussian smoothing instead, as before 2026-12-02, lost the
centres of large particles that touch, whose probability is flat across the
blob: 4v94 picks 7.5 voxels off on average). Each voxel of the blob goes to its
nearest maximum, and each pick is scored by the mean probability of its voxels:
one score for both kinds of pick, so one threshold per class means the same for
both.
Where the probability is flat across crowded particles (UCaps' 4v94), the tomogram's own density can join
the fit (``density_weight``, :mod:`keras_ucaps.picking.density`): particles are denser than the gaps between
them.
Picks of one class closer than ``suppress`` × radius are merged, the
higher-scored one kept. Connected components were chosen over mean-shift
clustering because their cost is one pass over the map (DeepFinder's MeanShift
takes longer than its network on large maps).
"""

from __future__ import annotations

import numpy as np

from keras_ucaps.classes import ClassRegistry
from keras_ucaps.io.particles import ParticleTable
from keras_ucaps.picking.density import ParticleDensity

# The ball fitted to a merged blob has ``fit_radius`` × the class radius (default 1). Where particles crowd, a
# network's probability is highest at their cores and lower at their edges than in the gaps it paints between
# them, and a ball of the whole radius leans into the gaps: a smaller one does better there. Crowding is the
# data's, so the fraction is tuned per model with its thresholds (thresholds.json's fit_radius). 4v94 F1 before
# thresholds, shrec-unet on its tuning tomogram (seed 98), by fraction: 0.5 0.648, 0.6 0.775, 2/3 0.775, 0.7
# 0.767, 0.75 0.734, 0.8 0.703, 0.9 0.658, 1 0.595 (held out, seed 99: 0.662 -> 0.771 at 2/3); but invitro-unet's
# well-separated ribosomes (4v4r) split in two at 2/3 in fast mode (F1 0.95 -> 0.81), the same at both on its
# tuning tomogram.
FIT_RADIUS = 1.0


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
    fit_radius: float = FIT_RADIUS,
    density: ParticleDensity | None = None,
    density_weight: float = 0.0,
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
    fit_radius : float
        Merged blobs (larger than 1.5 class spheres) are split at the balls of this fraction of the class
        radius that fit them best.
    density : ParticleDensity, optional
        The tomogram's density (:class:`keras_ucaps.picking.density.ParticleDensity`), needed when
        ``density_weight`` > 0.
    density_weight : float
        Weight of the density's ball mean (in units of its spread) beside the probability's ball fit when
        merged blobs are split; 0: the probability alone.
    """
    if density_weight > 0 and density is None:
        raise ValueError("density_weight > 0 needs the tomogram's density")
    from scipy import ndimage

    tables = []
    structure = np.ones((3, 3, 3), dtype=bool)
    for cls in classes.classes:
        mask = np.equal(labels, cls.label)
        if not mask.any():
            continue
        radius = cls.radius / voxel_size
        smallest = (min_size or {}).get(cls.name, default_min_size(radius))
        components = np.empty(mask.shape, dtype=np.int32)
        count = ndimage.label(mask, structure=structure, output=components)
        prob = (probabilities or {}).get(cls.name)
        # Per-component sums over the labelled voxels only (a few percent of the tomogram), never dense
        # float64 temporaries the size of the volume as ndimage's measurements make.
        where, values = _labelled_voxels(mask, prob)
        del mask
        owner = components.reshape(-1)[where]
        sizes = np.bincount(owner, minlength=count + 1)[1:]
        index = np.arange(1, count + 1)
        keep = index[sizes >= smallest]
        if len(keep) == 0:
            continue
        sphere = 4 / 3 * np.pi * radius**3
        whole = keep[sizes[keep - 1] <= 1.5 * sphere]
        merged = keep[sizes[keep - 1] > 1.5 * sphere]
        weights = np.bincount(owner, values, minlength=count + 1)
        zyx = np.unravel_index(where, labels.shape)
        centres = np.stack([np.bincount(owner, values * axis, minlength=count + 1)[whole] for axis in zyx], axis=1)
        centres = centres / weights[whole, None]  # z, y, x
        del zyx, where, owner
        scores = (weights[whole] / sizes[whole - 1] if prob is not None else np.full(len(whole), np.nan))
        if len(merged):
            peak_centres, peak_scores = _split_at_peaks(prob, labels, cls.label, components, merged, radius,
                                                        fit_radius, density if density_weight > 0 else None,
                                                        density_weight)
            centres = np.concatenate([centres, peak_centres])
            scores = np.concatenate([np.asarray(scores, dtype=float), peak_scores])
        del components
        table = ParticleTable.from_columns(centres[:, ::-1], cls.name, tomo, score=np.asarray(scores, dtype=float))
        tables.append(suppress_duplicates(table, suppress * radius))
    return ParticleTable.concat(tables)


def _labelled_voxels(mask: np.ndarray, prob) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices of the voxels in ``mask`` and their weights (probability, or 1), read a slab at a time
    from a possibly memory-mapped probability map."""
    where = np.flatnonzero(mask)
    if prob is None:
        return where, np.ones(len(where))
    plane = int(np.prod(mask.shape[1:]))
    values = np.empty(len(where), dtype=np.float64)
    bounds = np.searchsorted(where, np.arange(0, mask.shape[0] + 1) * plane)
    step = max(1, (64 * 2**20) // max(1, plane * 4))
    for z in range(0, mask.shape[0], step):
        top = min(mask.shape[0], z + step)
        lo, hi = bounds[z], bounds[top]
        slab = np.asarray(prob[z:top], dtype=np.float32).reshape(-1)
        values[lo:hi] = slab[where[lo:hi] - z * plane]
    return where, values


# Peaks are maxima over a cube of half-width radius / SEPARATION: with √3 the cube fits inside the ball of the
# radius, so two particles a radius apart (crowded sphere targets overlap) both keep their peaks; picks closer
# than ``suppress`` × radius are merged afterwards. Measured on crowded 4v94 blobs (shrec-unet, seed 99), 4v94
# F1 before thresholds: 1 (a radius-wide cube) 0.658, √3 0.667, 2 0.659.
SEPARATION = 3**0.5


def ball(radius: float) -> np.ndarray:
    """A (2n+1)³ float32 cube, 1 inside the ball of ``radius`` voxels about its centre voxel, n = ceil(radius)."""
    n = int(np.ceil(radius))
    grid = np.mgrid[-n:n + 1, -n:n + 1, -n:n + 1]
    return ((grid**2).sum(axis=0) <= radius**2).astype(np.float32)


def _split_at_peaks(prob, labels, label, components, merged, radius, fit_radius=FIT_RADIUS, density=None,
                    density_weight=0.0):
    """Centres of the balls that fit the ``merged`` components best and each one's score: the mean
    probability of the component's voxels nearest to it.

    The fit is the sum of (2 × weight − 1) over a ball of ``fit_radius`` × ``radius`` about each voxel (the
    weight is the probability map, or the class's mask): positive where most of a ball lies in the class,
    largest at the centre of a ball of high probability. With a ``density``, that sum is taken as a mean over
    the ball and ``density_weight`` × the density's ball mean in units of its spread is added: where the
    probability is flat across crowded particles, their density still peaks at their centres. It is computed
    in each component's bounding box widened by the ball's and the maximum filter's reach, which gives the same
    values there as over the whole map.
    """
    from scipy import ndimage
    from scipy.spatial import cKDTree

    kernel = ball(fit_radius * radius)
    size = 2 * int(round(radius / SEPARATION)) + 1
    reach = kernel.shape[0] // 2 + size // 2
    shape = labels.shape
    boxes = ndimage.find_objects(components, max_label=int(merged.max()))
    found_centres, found_scores = [], []
    for component in merged:
        box = boxes[component - 1]
        wide = tuple(slice(max(0, s.start - reach), min(n, s.stop + reach)) for s, n in zip(box, shape, strict=True))
        weight = (np.asarray(prob[wide], dtype=np.float32) if prob is not None
                  else np.equal(labels[wide], label).astype(np.float32))
        fit = _ball_fit(weight, kernel)
        if density is not None:  # the probability's mean over the ball beside the density's
            fit = fit / kernel.sum() + density_weight * density.ball_means(wide, kernel)
        local = components[wide] == component
        peaks = local & (fit == ndimage.maximum_filter(fit, size=size))
        del fit
        corner = np.array([s.start for s in wide])
        zyx = np.argwhere(peaks)
        scores = np.full(len(zyx), np.nan)
        if prob is not None and len(zyx):
            voxels = np.argwhere(local)
            nearest = cKDTree(zyx).query(voxels)[1]
            values = weight[local]
            scores = np.bincount(nearest, values, len(zyx)) / np.maximum(np.bincount(nearest, minlength=len(zyx)), 1)
        found_centres.append((zyx + corner).astype(np.float64))
        found_scores.append(scores)
    centres = np.concatenate(found_centres) if found_centres else np.zeros((0, 3))
    scores = np.concatenate(found_scores) if found_scores else np.zeros(0)
    order = np.lexsort(centres.T[::-1])  # raster order (z, then y, then x), as one pass over the map finds them
    return centres[order], scores[order]


def _ball_fit(weight: np.ndarray, kernel: np.ndarray, slab: int = 32) -> np.ndarray:
    """Sum of (2 × weight − 1) over ``kernel`` about each voxel, float32, by FFT a slab of z planes at a time
    (the FFT's temporaries stay a slab's size; the split's peak on a 200×512×512 one-blob map, 3.2 GB, is the
    voxel lists'); outside the array counts as background (weight 0)."""
    from scipy.signal import fftconvolve

    half = kernel.shape[0] // 2
    padded = np.pad(2 * weight - 1, half, constant_values=-1)
    fit = np.empty(weight.shape, dtype=np.float32)
    for z in range(0, weight.shape[0], slab):
        top = min(weight.shape[0], z + slab)
        fit[z:top] = fftconvolve(padded[z:top + 2 * half], kernel, mode="valid")
    return fit


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
