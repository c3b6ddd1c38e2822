"""The HDF5 patch store: training patches cut from tomograms, with their labels.

One file holds, for every patch, the tomogram voxels (float16, normalised as
``data.normalization`` says: by default a robust background and scale measured on
the whole tomogram), the label voxels (uint8),
the tomogram it came from, its centre (x, y, z voxels) and the class of the
particle it was centred on (-1 for a background patch), and whether it was
centred on a negative: an object that is not a particle of the task (another
protein, a gold bead), a background patch the model must learn not to pick.
Datasets are chunked
one patch per chunk (64³ for 64³ patches), images uncompressed and labels lzf:
random reads stay fast (gzip is ~40× slower). Each patch carries a split:
0 train, 1 validation.

Layout::

    /images     (N, P, P, P) float16
    /labels     (N, P, P, P) uint8
    /tomogram   (N,) int32   index into attrs["tomograms"]
    /centre     (N, 3) int32 x, y, z of the patch centre (voxels)
    /class      (N,) int16   label of the particle it was centred on, -1 background
    /negative   (N,) uint8   1 for a background patch centred on a negative (stores of before lack it)
    /split      (N,) uint8   0 train, 1 validation
    attrs: version, classes (registry JSON), voxel_size, patch_size,
           tomograms (JSON list of names), tomogram_stats (JSON {name: Normalization.to_dict()};
           [mean, std] in stores of before), normalization (its method), split_method,
           class_voxels (JSON, training voxels per label)

Validation is split by tomogram when there are two or more (about a fifth of
them, at least one); with a single tomogram, the last fifth along x is held
out and no patch crosses the border between the regions (a patch-wide gap).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence

import numpy as np

from keras_ucaps.classes import ClassRegistry
from keras_ucaps.data.normalization import METHODS, ROBUST, measure
from keras_ucaps.data.targets import check_inside
from keras_ucaps.errors import InputError
from keras_ucaps.io.atomic import atomic_path
from keras_ucaps.io.mrc import Volume
from keras_ucaps.io.particles import ParticleTable

STORE_VERSION = 1
PATCH_SIZES = (32, 48, 64)


@dataclasses.dataclass
class Source:
    """One tomogram, its particles (x, y, z voxels) and its label map (z, y, x); optionally its negatives
    (x, y, z voxels, any class names): objects that are not particles of the task, each given background
    patches centred on it."""

    name: str
    volume: Volume
    particles: ParticleTable
    labels: np.ndarray
    negatives: ParticleTable | None = None


@dataclasses.dataclass(frozen=True)
class PatchSettings:
    """How patches are cut.

    Attributes
    ----------
    patch_size : int
        Side of the cubic patches (64, 48 or 32 voxels; smaller helps tiny particles).
    jitter : float
        Random offset of the patch centre from the particle, up to this fraction of the patch side.
    per_particle : int
        Patches cut around each particle.
    background_fraction : float
        Extra random patches, as a fraction of the particle patches.
    per_negative : int
        Background patches cut around each of a source's negatives (with the same jitter).
    validation_fraction : float
        Share of tomograms (or of the single tomogram's x extent) held out.
    seed : int
    normalization : str
        ``"robust"`` or ``"tomogram z-score"`` (see :mod:`keras_ucaps.data.normalization`); prediction
        applies the same.
    """

    patch_size: int = 64
    jitter: float = 1 / 3
    per_particle: int = 1
    background_fraction: float = 0.2
    per_negative: int = 1
    validation_fraction: float = 0.2
    seed: int = 0
    normalization: str = ROBUST

    def __post_init__(self):
        if self.patch_size not in PATCH_SIZES:
            raise InputError("--patch-size", f"must be one of {PATCH_SIZES}, got {self.patch_size}")
        if not 0 <= self.jitter < 0.5:
            raise InputError("--jitter", f"must lie in [0, 0.5), got {self.jitter}")
        if self.per_negative < 0:
            raise InputError("--per-negative", f"must be at least 0, got {self.per_negative}")
        if self.normalization not in METHODS.values():
            raise InputError("--normalization", f"must be one of {sorted(METHODS.values())}, got {self.normalization}")


def build_patch_store(
    sources: Sequence[Source], classes: ClassRegistry, voxel_size: float, out: str | os.PathLike,
    settings: PatchSettings = PatchSettings(),
) -> dict:
    """Cut patches from ``sources`` and write them to the HDF5 file ``out`` (atomically).

    Returns a summary: patch counts per split and class.
    """
    import h5py

    rng = np.random.default_rng(settings.seed)
    size = settings.patch_size
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise InputError(names[0], "tomogram names must be distinct")
    for s in sources:
        if any(n < size for n in s.volume.shape):
            raise InputError(s.volume.path or s.name, f"tomogram {s.volume.shape} is smaller than a {size}³ patch")
    for s in sources:
        classes.check_names(s.particles.class_name, str(s.name))
        if s.negatives is not None:
            check_inside(s.negatives, s.volume.shape, f"{s.name}: negatives")
    plans = _plan(sources, settings, {c.name: c.label for c in classes.classes}, rng)
    if not plans:
        raise InputError(names[0], "no patches could be cut (no particles?)")
    n = len(plans)
    norms = {s.name: measure(s.volume.data, settings.normalization) for s in sources}
    class_voxels = np.zeros(classes.num_classes, dtype=np.int64)
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as f:
        chunk = (1, size, size, size)
        images = f.create_dataset("images", (n, size, size, size), dtype="float16", chunks=chunk)
        labels = f.create_dataset("labels", (n, size, size, size), dtype="uint8", chunks=chunk, compression="lzf")
        tomogram = np.zeros(n, np.int32)
        centres = np.zeros((n, 3), np.int32)
        klass = np.zeros(n, np.int16)
        split = np.zeros(n, np.uint8)
        negative = np.zeros(n, np.uint8)
        for i, (t, centre_xyz, label, part, on_negative) in enumerate(plans):
            src = sources[t]
            box = _box(centre_xyz, size)
            images[i] = norms[src.name].apply(src.volume.data[box], box).astype(np.float16)
            patch_labels = np.asarray(src.labels[box], dtype=np.uint8)
            labels[i] = patch_labels
            tomogram[i], centres[i], klass[i], split[i], negative[i] = t, centre_xyz, label, part, on_negative
            if part == 0:
                class_voxels += np.bincount(patch_labels.ravel(), minlength=classes.num_classes)[: classes.num_classes]
        f["tomogram"], f["centre"], f["class"], f["split"], f["negative"] = tomogram, centres, klass, split, negative
        f.attrs.update(
            version=STORE_VERSION,
            classes=json.dumps(classes.to_dict()),
            voxel_size=float(voxel_size),
            patch_size=size,
            tomograms=json.dumps(names),
            tomogram_stats=json.dumps({name: n.to_dict() for name, n in norms.items()}),
            normalization=settings.normalization,
            split_method="tomogram" if len(sources) > 1 else "region (last fifth along x)",
            class_voxels=json.dumps(class_voxels.tolist()),
            settings=json.dumps(dataclasses.asdict(settings)),
        )
    return summarize(out)


def _box(centre_xyz, size):
    x, y, z = (int(c) - size // 2 for c in centre_xyz)
    return slice(z, z + size), slice(y, y + size), slice(x, x + size)


def _plan(sources: Sequence[Source], settings: PatchSettings, label_ids: dict[str, int],
          rng) -> list[tuple[int, np.ndarray, int, int, bool]]:
    """(tomogram index, patch centre x y z, class label or -1, split, centred on a negative) for every patch.

    Negatives' patches are planned last, so a store without negatives draws what it drew before. Particles and
    negatives are taken in a canonical order (class, z, y, x), so the same picks give the same store whatever
    order their file lists them in (copick's picks come grouped by class, a CSV file's as it was written)."""
    size = settings.patch_size
    half = size // 2
    val_tomos = set()
    if len(sources) > 1:
        k = max(1, int(round(settings.validation_fraction * len(sources))))
        val_tomos = set(range(len(sources) - k, len(sources)))
    plans, negatives = [], []
    for t, src in enumerate(sources):
        nz, ny, nx = src.volume.shape
        lo = np.array([half, half, half])
        hi = np.array([nx - size + half, ny - size + half, nz - size + half])  # inclusive centre range, x y z
        regions = [(0, lo, hi)] if t not in val_tomos else [(1, lo, hi)]
        if len(sources) == 1:
            border = int(round(nx * (1 - settings.validation_fraction)))
            train_hi, val_lo = hi.copy(), lo.copy()
            train_hi[0] = min(hi[0], border - size + half - half)  # train patches end half a patch before the border
            val_lo[0] = max(lo[0], border + half)  # validation patches start half a patch after it
            regions = [(0, lo, train_hi), (1, val_lo, hi)]
            if train_hi[0] < lo[0] or val_lo[0] > hi[0]:
                raise InputError(src.volume.path or src.name, f"too narrow along x ({nx}) to hold out a validation "
                                                              f"region with {size}³ patches: give a second tomogram")
        particles = src.particles.sorted()
        for part, region_lo, region_hi in regions:
            region = (t, part, region_lo, region_hi)
            labels = [label_ids[c] for c in particles.class_name]
            n_particles = _around(plans, region, particles.coords, labels, settings.per_particle, False,
                                  settings, rng)
            n_background = int(round(settings.background_fraction * n_particles)) if n_particles else 0
            for _ in range(n_background):
                centre = np.array([rng.integers(a, b + 1) for a, b in zip(region_lo, region_hi, strict=True)])
                plans.append((t, centre, -1, part, False))
            if src.negatives is not None:
                negatives.append((region, src.negatives.sorted().coords))
    for region, coords in negatives:  # last: the other patches are drawn as without negatives
        _around(plans, region, coords, [-1] * len(coords), settings.per_negative, True, settings, rng)
    return plans


def _around(plans: list, region, coords, labels, repeats: int, on_negative: bool, settings: PatchSettings,
            rng) -> int:
    """Plan ``repeats`` jittered patches around each point of ``coords`` that lies in ``region`` (tomogram index,
    split, lowest and highest patch centre, x y z); returns how many were planned."""
    t, part, lo, hi = region
    size = settings.patch_size
    half = size // 2
    planned = 0
    for xyz, label in zip(coords, labels, strict=True):
        for _ in range(repeats):
            jitter = rng.uniform(-settings.jitter, settings.jitter, size=3) * size
            centre = np.round(xyz + jitter).astype(int)
            if np.any(np.round(xyz) < lo - half) or np.any(np.round(xyz) > hi + half):
                continue  # point outside this region
            plans.append((t, np.clip(centre, lo, hi), label, part, on_negative))
            planned += 1
    return planned


def summarize(path: str | os.PathLike) -> dict:
    """Patch counts per split and per centre class of a patch store."""
    import h5py

    with h5py.File(path, "r") as f:
        classes = ClassRegistry.from_dict(json.loads(f.attrs["classes"]), str(path))
        split, klass = f["split"][()], f["class"][()]
        negative = f["negative"][()] if "negative" in f else np.zeros_like(split)
        summary = {"patches": int(len(split)), "patch_size": int(f.attrs["patch_size"]),
                   "voxel_size": float(f.attrs["voxel_size"]), "split_method": str(f.attrs["split_method"])}
        for part, key in ((0, "train"), (1, "validation")):
            counts = {"background": int(((split == part) & (klass == -1)).sum())}
            if negative.any():
                counts["on negatives"] = int(((split == part) & (negative == 1)).sum())
            for c in classes.classes:
                counts[c.name] = int(((split == part) & (klass == c.label)).sum())
            summary[key] = counts
    return summary
