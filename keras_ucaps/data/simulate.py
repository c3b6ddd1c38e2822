"""Synthetic cryo-electron tomograms with ground truth.

1. Particles of the chosen classes (and unlabelled distractors) get uniform
   random rotations and random positions inside a slab, without overlap (their
   rotated masks, density > 0.1 × max, share no voxel), until a target
   occupancy of the slab or a particle count is reached.
2. ``mode="tilt-series"``: project a tilt series about y, apply a per-tilt CTF,
   add noise at the requested SNR per projection, and reconstruct by weighted
   back-projection. ``mode="fast"``: missing wedge, CTF and noise applied in 3D
   Fourier space. With ``tomogram_snr`` the noise is scaled instead so that the
   reconstructed tomogram has that SNR over the particle slab (a thicker slab
   projects more signal, so at one SNR per projection its tomogram is noisier per
   voxel). The tomogram's SNR over the slab is measured and recorded either way.
3. The tomogram is normalised to zero mean and unit variance.

With cellular context (:class:`keras_ucaps.data.context.ContextSettings`: membranes, filaments, gold,
contamination, a carbon or lamella edge), the structures are drawn before step 1, particles are placed where they
are not, and their density is imaged with the particles' (the noise stays the level the particles alone set).
The context's imaging effects act in step 2: an uneven ice thickness scales the noise across the field, and in
tilt-series mode each tilt gets a residual alignment error and a B-factor that grows with the dose.

Ground truth: the particle table (x, y, z in voxels; ZYZ angles of the rotation
applied to the template, as ``scipy.spatial.transform.Rotation.from_euler("ZYZ",
angles, degrees=True)`` acting on (x, y, z)), the sphere label map and the
exact shape-mask label map (distractors stay background in both).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from keras_ucaps.classes import ClassRegistry
from keras_ucaps.data import context as cellular
from keras_ucaps.data.targets import sphere_targets
from keras_ucaps.data.templates import MASK_THRESHOLD, Template, load_template
from keras_ucaps.data.tilt_series import (
    Microscope,
    fast_image,
    fast_tomogram,
    image_series,
    reconstruct,
    tilt_angles,
)
from keras_ucaps.errors import InputError
from keras_ucaps.io import FormatContext, ParticleTable, write_particles, write_volume
from keras_ucaps.io.atomic import first_missing

PRESETS = {
    # The paper's three size classes: large (4D8Q, here yeast TRiC 4v94), medium (rubisco), tiny (3GL1).
    "shrec": {"classes": ["4v94", "1bxn", "3gl1"], "distractors": ["1qvr", "2cg9", "3d2f", "1s3x"]},
    # In-vitro proteasome + ribosome (the paper's experimental data).
    "invitro": {"classes": ["3j9i", "4v4r"], "distractors": []},
    # The 12 SHREC'19 classes (4cr2 and 4v94 stand in for 4b4t and 4d8q).
    "full": {
        "classes": ["1bxn", "1qvr", "1s3x", "1u6g", "2cg9", "3cf3", "3d2f", "3gl1", "3h84", "3qm1", "4cr2", "4v94"],
        "distractors": [],
    },
}
SIZES = {"small": (64, 128, 128), "medium": (128, 256, 256), "shrec": (200, 512, 512)}
MODES = ("tilt-series", "fast")


@dataclasses.dataclass
class SimulationSettings:
    """Everything that decides a simulated tomogram (saved beside it as JSON).

    Attributes
    ----------
    classes : list of str
        Labelled particle templates: bundled names or MRC paths.
    distractors : list of str
        Unlabelled templates placed as crowding.
    shape : tuple of int
        Tomogram shape (z, y, x) in voxels.
    voxel_size : float
        Å per voxel.
    slab_thickness : int, optional
        Thickness (z, voxels) of the centred slab holding the particles;
        default three quarters of the tomogram's depth.
    occupancy : float
        Fraction of the slab's voxels to cover with particles (0.1–0.3 is cell-like).
    max_particles : int, optional
        Stop after this many particles (labelled and distractors).
    distractor_fraction : float
        Share of placed particles that are distractors (when any are given).
    snr : float
        Signal-to-noise ratio (variance ratio) per projection (``mode="fast"``: in the volume).
    tomogram_snr : float, optional
        Instead of ``snr``: the SNR (variance ratio of the noise-free reconstruction to the reconstructed
        noise) of the tomogram over the particle slab.
    tilt_range : tuple of float
        First tilt, last tilt, step (degrees).
    voxel_size_scale : float
        Simulate at ``voxel_size × voxel_size_scale`` Å (templates, noise and all) and resample the result
        onto the ``shape`` grid at ``voxel_size``: as a microscope whose pixel size is off by that much.
    background : float
        Amplitude (in the tomogram's standard deviations) of a low-frequency background added at the end:
        a smooth random field and a linear gradient (ice thickness, uneven illumination).
    mode : {"tilt-series", "fast"}
    seed : int
    microscope : Microscope
    context : ContextSettings
        Cellular context (membranes, filaments, gold, contamination, an edge) and the imaging effects of a real
        scene; none by default.
    """

    classes: list[str]
    distractors: list[str] = dataclasses.field(default_factory=list)
    shape: tuple[int, int, int] = SIZES["shrec"]
    voxel_size: float = 10.0
    slab_thickness: int | None = None
    occupancy: float = 0.1
    max_particles: int | None = None
    distractor_fraction: float = 0.2
    snr: float = 0.1
    tomogram_snr: float | None = None
    voxel_size_scale: float = 1.0
    background: float = 0.0
    tilt_range: tuple[float, float, float] = (-60.0, 60.0, 3.0)
    mode: str = "tilt-series"
    seed: int = 0
    microscope: Microscope = dataclasses.field(default_factory=Microscope)
    context: cellular.ContextSettings = dataclasses.field(default_factory=cellular.ContextSettings)

    def __post_init__(self):
        if isinstance(self.context, dict):
            self.context = cellular.ContextSettings(**self.context)
        self.shape = tuple(int(n) for n in self.shape)
        if self.mode not in MODES:
            raise InputError("--mode", f"unknown mode '{self.mode}' (choose {', '.join(MODES)})")
        if not self.classes:
            raise InputError("--classes", "give at least one particle class")
        if not 0 < self.occupancy < 0.7:
            raise InputError("--occupancy", f"must lie in (0, 0.7), got {self.occupancy}")
        if not self.snr > 0:
            raise InputError("--snr", f"must be positive, got {self.snr}")
        if not 0.5 <= self.voxel_size_scale <= 2.0:
            raise InputError("--voxel-size", f"scale {self.voxel_size_scale} out of [0.5, 2]")
        if not self.background >= 0:
            raise InputError("--background", f"must be zero or positive, got {self.background}")
        if self.tomogram_snr is not None and not self.tomogram_snr > 0:
            raise InputError("--tomogram-snr", f"must be positive, got {self.tomogram_snr}")
        if len(self.shape) != 3 or min(self.shape) < 8:
            raise InputError("--shape", f"needs three sizes of at least 8 voxels, got {self.shape}")
        start, stop, step = self.tilt_range
        if not (-90 < start < stop < 90 and step > 0):
            raise InputError("--tilt-range", f"needs -90 < first < last < 90 and a step > 0, got {self.tilt_range}")

    @property
    def slab(self) -> tuple[int, int]:
        nz = self.shape[0]
        thickness = min(nz, self.slab_thickness or int(round(0.75 * nz)))
        start = (nz - thickness) // 2
        return start, start + thickness


@dataclasses.dataclass
class Simulation:
    """A simulated tomogram and its ground truth."""

    tomogram: np.ndarray
    density: np.ndarray
    sphere_labels: np.ndarray
    mask_labels: np.ndarray
    particles: ParticleTable
    distractors: ParticleTable
    classes: ClassRegistry
    settings: SimulationSettings
    tilt_series: np.ndarray | None = None
    clean_tilt_series: np.ndarray | None = None
    seconds: dict = dataclasses.field(default_factory=dict)
    measured: dict = dataclasses.field(default_factory=dict)  # tomogram_snr over the particle slab
    context_density: np.ndarray | None = None  # the context's noise-free density (None: no structures)
    context_labels: np.ndarray | None = None  # 0 none, i + 1 for context.KINDS[i]
    context_drawn: dict = dataclasses.field(default_factory=dict)  # structures and imaging effects as drawn


def settings_for_preset(preset: str, **overrides) -> SimulationSettings:
    if preset not in PRESETS:
        raise InputError("--preset", f"unknown preset '{preset}' (choose {', '.join(PRESETS)})")
    return SimulationSettings(**{**PRESETS[preset], **overrides})


def class_registry(templates: Sequence[Template]) -> ClassRegistry:
    """Classes named after their templates, labelled 1..K, with the templates' radii."""
    return ClassRegistry.from_radii({t.name: t.radius for t in templates}, source="simulation")


# What `simulate --randomize` draws for each tomogram, to cover real data rather than one microscope.
RANDOM_RANGES = {
    "snr": (0.03, 0.5),  # per projection, log-uniform
    "defocus_um": (1.5, 6.0),  # centre of the per-tilt underfocus range (± 0.5 µm)
    "b_factor": (50.0, 600.0),  # Å², envelope
    "tilt_max": (40.0, 70.0),  # each side of the tilt range, drawn separately (asymmetric wedges)
    "tilt_step": (2.0, 3.0, 4.0),  # degrees, one of
    "slab_fraction": (0.4, 0.95),  # particle slab thickness as a fraction of the depth
    "voxel_size_scale": (0.9, 1.1),  # simulated at this × the voxel size, resampled to it
    "background": (0.0, 1.5),  # low-frequency background amplitude, tomogram standard deviations
    "occupancy": (0.05, 0.3),  # crowding
}


def randomized(settings: SimulationSettings, seed: int) -> tuple[SimulationSettings, dict]:
    """``settings`` with SNR, defocus, B-factor, tilt range and step, slab thickness, voxel size, background
    and crowding drawn from :data:`RANDOM_RANGES` (a generator seeded by ``seed``); returns the settings
    and the drawn values."""
    rng = np.random.default_rng([seed, 1729])
    r = RANDOM_RANGES
    defocus = float(rng.uniform(*r["defocus_um"]))
    drawn = {
        "snr": float(np.exp(rng.uniform(*np.log(r["snr"])))),
        "defocus_um": [round(defocus - 0.5, 4), round(defocus + 0.5, 4)],
        "b_factor": float(rng.uniform(*r["b_factor"])),
        "tilt_range": [-float(rng.uniform(*r["tilt_max"])), float(rng.uniform(*r["tilt_max"])),
                       float(rng.choice(r["tilt_step"]))],
        "slab_thickness": max(4, int(round(rng.uniform(*r["slab_fraction"]) * settings.shape[0]))),
        "voxel_size_scale": float(rng.uniform(*r["voxel_size_scale"])),
        "background": float(rng.uniform(*r["background"])),
        "occupancy": float(rng.uniform(*r["occupancy"])),
    }
    microscope = dataclasses.replace(settings.microscope, defocus_range=tuple(drawn["defocus_um"]),
                                     b_factor=drawn["b_factor"])
    return dataclasses.replace(
        settings, snr=drawn["snr"], tomogram_snr=None, microscope=microscope, tilt_range=tuple(drawn["tilt_range"]),
        slab_thickness=drawn["slab_thickness"], voxel_size_scale=drawn["voxel_size_scale"],
        background=drawn["background"], occupancy=drawn["occupancy"]), drawn


def simulate(settings: SimulationSettings, name: str = "tomo") -> Simulation:
    """Simulate one tomogram (see the module docstring for the steps)."""
    if settings.voxel_size_scale != 1.0:
        return _at_another_voxel_size(settings, name)
    rng = np.random.default_rng(settings.seed)
    seconds = {}
    start = time.perf_counter()
    labelled = [load_template(c, settings.voxel_size) for c in settings.classes]
    crowd = [load_template(c, settings.voxel_size) for c in settings.distractors]
    classes = class_registry(labelled)
    scene = None
    if settings.context.has_structures:  # its own generator: particles without context are drawn as before
        scene = cellular.draw(settings.context, settings.shape, settings.voxel_size, settings.slab,
                              np.random.default_rng([settings.seed, 577]))
    density, mask_labels, particles, distractors = place_particles(
        settings, labelled, crowd, classes, rng, name, occupied=None if scene is None else scene.occupied)
    seconds["placement"] = time.perf_counter() - start

    start = time.perf_counter()
    series = clean = None
    snr = None if settings.tomogram_snr is not None else settings.snr  # None: unit noise, scaled below
    slab = slice(*settings.slab)
    effects = settings.context
    imaging_rng = np.random.default_rng([settings.seed, 991])
    drawn = {"structures": [] if scene is None else scene.structures}
    noise_scale = None
    if effects.ice_gradient != 1.0:
        noise_scale, ice = cellular.ice_noise_scale(settings.shape[1:], effects.ice_gradient, imaging_rng)
        drawn.update(ice)
    if settings.mode == "tilt-series":
        from keras_ucaps.data.tilt_series import project

        angles = tilt_angles(*settings.tilt_range)
        projections = project(density, angles)
        scene_projections = projections if scene is None else projections + project(scene.density, angles)
        if effects.alignment_shift or effects.alignment_rotation:
            shifts = imaging_rng.normal(0, effects.alignment_shift, size=(len(angles), 2))
            rotations = imaging_rng.normal(0, effects.alignment_rotation, size=len(angles))
            drawn["alignment_shifts_yu"] = np.round(shifts, 3).tolist()
            drawn["alignment_rotations_deg"] = np.round(rotations, 3).tolist()
            scene_projections = cellular.misalign(scene_projections, shifts, rotations)
            projections = cellular.misalign(projections, shifts, rotations) if scene is not None else scene_projections
        b_factors = None
        if effects.dose_b_factor:
            b_factors = settings.microscope.b_factor + effects.dose_b_factor * cellular.dose_order(angles)
            drawn["b_factors"] = np.round(b_factors, 2).tolist()
        series, clean, particles_clean, _ = image_series(
            scene_projections, settings.voxel_size, snr, settings.microscope, rng,
            reference=None if scene is None else projections, b_factors=b_factors,
            noise_scale=noise_scale)
        # Each y row is reconstructed from the same row of every tilt, and reconstruction is linear: signal and
        # noise measured on every k-th row (64 rows at least) cost a fraction of a second reconstruction.
        rows = slice(None, None, max(1, settings.shape[1] // 64))
        signal = reconstruct(particles_clean[:, rows], angles, settings.shape[0])
        noise = reconstruct(series[:, rows] - clean[:, rows], angles, settings.shape[0])
        if settings.tomogram_snr is not None:
            gain = np.float32(_gain(signal[slab], noise[slab], settings.tomogram_snr))
            series, noise = clean + (series - clean) * gain, noise * gain
        tomogram = reconstruct(series, angles, settings.shape[0])
    else:
        max_tilt = max(abs(settings.tilt_range[0]), abs(settings.tilt_range[1]))
        signal, noise = fast_tomogram(density, settings.voxel_size, snr or 1.0, max_tilt, settings.microscope, rng,
                                      noise_scale=noise_scale)
        if settings.tomogram_snr is not None:
            noise *= np.float32(_gain(signal[slab], noise[slab], settings.tomogram_snr))
        tomogram = signal + noise
        if scene is not None:
            tomogram += fast_image(scene.density, settings.voxel_size, max_tilt, settings.microscope)
    measured = {"tomogram_snr": float(signal[slab].var() / max(float(noise[slab].var()), 1e-20))}
    tomogram = _with_background(_zscore(tomogram), settings)
    seconds["imaging"] = time.perf_counter() - start

    sphere_labels = sphere_targets(particles, settings.shape, classes, settings.voxel_size, source="simulation")
    return Simulation(
        tomogram=tomogram,
        density=density,
        sphere_labels=sphere_labels,
        mask_labels=mask_labels,
        particles=particles,
        distractors=distractors,
        classes=classes,
        settings=settings,
        tilt_series=series,
        clean_tilt_series=clean,
        seconds=seconds,
        measured=measured,
        context_density=None if scene is None else scene.density,
        context_labels=None if scene is None else scene.labels,
        context_drawn=drawn if effects.has_structures or effects.has_imaging else {},
    )


def _gain(signal: np.ndarray, noise: np.ndarray, snr: float) -> float:
    """The factor on ``noise`` that makes var(signal) / var(noise) equal ``snr``."""
    return float(np.sqrt(signal.var() / snr / max(float(noise.var()), 1e-20)))


def _zscore(volume: np.ndarray) -> np.ndarray:
    return ((volume - volume.mean()) / max(float(volume.std()), 1e-12)).astype(np.float32)


def _with_background(tomogram: np.ndarray, settings: SimulationSettings) -> np.ndarray:
    """The tomogram plus ``settings.background`` × a unit-variance low-frequency field (a random field
    smoothed over a sixth of the largest side, and a linear gradient in a random direction), z-scored again."""
    if not settings.background:
        return tomogram
    from scipy import ndimage

    rng = np.random.default_rng([settings.seed, 31])
    field = ndimage.gaussian_filter(rng.normal(size=tomogram.shape), max(tomogram.shape) / 6, mode="wrap")
    field = (field - field.mean()) / max(field.std(), 1e-12)
    direction = rng.normal(size=3)
    axes = np.meshgrid(*(np.linspace(-1, 1, n) for n in tomogram.shape), indexing="ij")
    gradient = sum(d * a for d, a in zip(direction, axes, strict=True))
    gradient = (gradient - gradient.mean()) / max(gradient.std(), 1e-12)
    both = field + gradient
    return _zscore(tomogram + settings.background * both / both.std())


def _at_another_voxel_size(settings: SimulationSettings, name: str) -> Simulation:
    """Simulate at ``voxel_size × voxel_size_scale`` over the same physical extent, then bring every map onto
    the ``shape`` grid (Fourier resampling; labels by nearest voxel) and the particles into its voxels."""
    from scipy import ndimage

    from keras_ucaps.data.resample import fourier_resample

    scale = settings.voxel_size_scale
    inner_shape = tuple(max(8, int(round(n / scale))) for n in settings.shape)
    inner = dataclasses.replace(
        settings, voxel_size=settings.voxel_size * scale, shape=inner_shape, voxel_size_scale=1.0, background=0.0,
        slab_thickness=None if settings.slab_thickness is None else max(1, int(round(settings.slab_thickness / scale))))
    sim = simulate(inner, name)
    start = time.perf_counter()
    # Sample j of the target grid lies at j × inner / target of the simulated one (first voxels aligned).
    factor = np.array([t / i for t, i in zip(settings.shape, inner_shape, strict=True)])  # (z, y, x)
    tomogram = _with_background(_zscore(fourier_resample(sim.tomogram, settings.shape)), settings)
    density = fourier_resample(sim.density, settings.shape)
    masks = ndimage.affine_transform(sim.mask_labels, 1 / factor, output_shape=settings.shape, order=0, mode="nearest")
    particles = dataclasses.replace(sim.particles, coords=sim.particles.coords * factor[::-1])
    distractors = dataclasses.replace(sim.distractors, coords=sim.distractors.coords * factor[::-1])
    sphere_labels = sphere_targets(particles, settings.shape, sim.classes, settings.voxel_size, source="simulation")
    context = {}
    if sim.context_labels is not None:
        context = dict(
            context_density=fourier_resample(sim.context_density, settings.shape),
            context_labels=ndimage.affine_transform(sim.context_labels, 1 / factor, output_shape=settings.shape,
                                                    order=0, mode="nearest"),
            context_drawn={**sim.context_drawn,
                           "structures": [_scaled(s, factor[::-1]) for s in sim.context_drawn["structures"]]})
    seconds = {**sim.seconds, "resampling": time.perf_counter() - start}
    return dataclasses.replace(sim, tomogram=tomogram, density=density, sphere_labels=sphere_labels,
                               mask_labels=masks.astype(sim.mask_labels.dtype), particles=particles,
                               distractors=distractors, settings=settings, seconds=seconds, **context)


def _scaled(structure: dict, factor_xyz: np.ndarray) -> dict:
    """A context structure's geometry (x, y, z points and radii in voxels) on a grid ``factor_xyz`` finer."""
    out = dict(structure)
    for key in ("centre", "start", "end"):
        if key in out:
            out[key] = [round(float(v), 2) for v in np.asarray(out[key]) * factor_xyz]
    if "centres" in out:
        out["centres"] = [[round(float(v), 2) for v in np.asarray(c) * factor_xyz] for c in out["centres"]]
    mean = float(np.mean(factor_xyz))
    if "radius" in out:
        out["radius"] = round(out["radius"] * mean, 2)
    if "radii" in out:
        out["radii"] = [round(r * mean, 2) for r in out["radii"]]
    return out


def place_particles(
    settings: SimulationSettings,
    labelled: Sequence[Template],
    crowd: Sequence[Template],
    classes: ClassRegistry,
    rng: np.random.Generator,
    name: str,
    occupied: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, ParticleTable, ParticleTable]:
    """Place rotated templates without overlap (with each other and with ``occupied``, the voxels other
    structures hold); returns density, mask labels and tables.

    Classes take turns so that counts stay balanced; a template that fails to fit
    ``attempts`` times in a row is retired, and placement stops when the slab's
    occupancy or the particle count is reached, or no template fits any more.
    """
    from scipy.spatial.transform import Rotation

    shape = settings.shape
    z0, z1 = settings.slab
    slab_voxels = (z1 - z0) * shape[1] * shape[2]
    density = np.zeros(shape, dtype=np.float32)
    occupied = np.zeros(shape, dtype=bool) if occupied is None else occupied.copy()
    mask_labels = np.zeros(shape, dtype=np.uint8)
    rows = {"labelled": [], "crowd": []}
    active = [("labelled", t) for t in labelled]
    # Each labelled turn earns this much of a distractor turn: f / (1 - f) keeps the distractors' share at f.
    credit_per_turn = 0.0
    if crowd and settings.distractor_fraction > 0:
        credit_per_turn = settings.distractor_fraction / (1 - settings.distractor_fraction)
    crowd_credit = 0.0
    covered = 0
    attempts = 30
    failures = {id(t): 0 for t in (*labelled, *crowd)}
    turn = 0
    while active:
        if settings.max_particles is not None and len(rows["labelled"]) + len(rows["crowd"]) >= settings.max_particles:
            break
        if covered >= settings.occupancy * slab_voxels:
            break
        # A distractor turn comes in addition to the classes' turns: taken in place of one, it fell on the
        # same class every time when the class count is a multiple of the turns between distractors.
        live = [t for t in crowd if failures[id(t)] < attempts] if crowd_credit >= 1 else []
        if live:
            crowd_credit -= 1
            kind, template = "crowd", live[rng.integers(len(live))]
        else:
            kind, template = active[turn % len(active)]
            turn += 1
            crowd_credit += credit_per_turn
        rotation = Rotation.random(random_state=rng)
        particle = template.rotated(rotation)
        mask = particle > MASK_THRESHOLD
        placed = _try_positions(mask, occupied, shape, (z0, z1), rng, tries=10)
        if placed is None:
            failures[id(template)] += 1
            if failures[id(template)] >= attempts and kind == "labelled":
                active = [a for a in active if a[1] is not template]
            continue
        failures[id(template)] = 0
        box, inner, centre = placed
        density[box] += particle[inner]
        occupied[box] |= mask[inner]
        covered += int(mask[inner].sum())
        if kind == "labelled":
            mask_labels[box][mask[inner]] = classes.label(template.name)
        angles = rotation.as_euler("ZYZ", degrees=True)
        rows[kind].append((centre[::-1], template.name, angles))
    return density, mask_labels, _table(rows["labelled"], name), _table(rows["crowd"], name)


def _try_positions(mask, occupied, shape, slab, rng, tries):
    """A random centre inside the slab where ``mask`` overlaps nothing, or None.

    The particle's box may reach past the volume's x/y/z borders (it is
    clipped); its centre lies inside the slab.
    """
    half = np.asarray(mask.shape) // 2
    z0, z1 = slab
    for _ in range(tries):
        centre = np.array([rng.integers(z0, z1), rng.integers(0, shape[1]), rng.integers(0, shape[2])])
        lo = centre - half
        hi = lo + np.asarray(mask.shape)
        clip_lo = np.maximum(lo, [z0, 0, 0])
        clip_hi = np.minimum(hi, [z1, shape[1], shape[2]])
        box = tuple(slice(a, b) for a, b in zip(clip_lo, clip_hi, strict=True))
        inner = tuple(slice(a - l, b - l) for a, b, l in zip(clip_lo, clip_hi, lo, strict=True))
        # Keep the particle whole inside the slab: a mask cut by the slab's faces is rejected.
        if mask[inner].sum() < mask.sum() * (0.999 if (lo[0] < z0 or hi[0] > z1) else 0.0):
            continue
        if not (occupied[box] & mask[inner]).any():
            return box, inner, centre.astype(np.float64)
    return None


def _table(rows, name: str) -> ParticleTable:
    if not rows:
        return ParticleTable.empty()
    coords, names, angles = zip(*rows, strict=True)
    return ParticleTable.from_columns(np.array(coords), list(names), name, angles=np.array(angles))


# Radii of one class in two simulations of a folder may differ by this fraction (templates resampled to other
# voxel sizes by --randomize differ by a fraction of a voxel); the folder's classes.json keeps the first.
RADIUS_TOLERANCE = 0.05
# Points on context structures written for negatives: one per cell of this many voxels (a 32³ patch's reach).
CONTEXT_POINT_SPACING = 24


def claim_classes(out: Path, classes: ClassRegistry) -> Path:
    """``out/classes.json``: written when absent; when present (another simulation of the folder, perhaps running
    now) it must name the same classes with the same labels, and is kept.

    Every tomogram of a folder is read with its one classes.json (``patches --simulation``): one of other classes
    written over it would give the earlier tomograms' labels other names. Raises InputError naming the file.
    """
    out.mkdir(parents=True, exist_ok=True)
    path = out / "classes.json"
    with _folder_lock(out):
        if not path.is_file():
            return classes.save(path)
        existing = ClassRegistry.load(path)
        if [(c.name, c.label) for c in existing.classes] != [(c.name, c.label) for c in classes.classes]:
            have = ", ".join(f"{c.label} {c.name}" for c in existing.classes)
            want = ", ".join(f"{c.label} {c.name}" for c in classes.classes)
            raise InputError(path, f"this folder's tomograms have classes {have}; this simulation's are {want}: "
                                   "simulate into another --out")
        for theirs, mine in zip(existing.classes, classes.classes, strict=True):
            if abs(mine.radius - theirs.radius) > RADIUS_TOLERANCE * theirs.radius:
                raise InputError(path, f"class {mine.name} has radius {theirs.radius:g} Å in this folder, "
                                       f"{mine.radius:g} Å in this simulation: simulate into another --out")
        return path


@contextlib.contextmanager
def _folder_lock(folder: Path):
    """An exclusive lock on ``folder`` (flock on the directory itself, so nothing is left in it; none where the
    platform has no flock)."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def write_simulation(sim: Simulation, out: Path, name: str = "tomo", randomized: dict | None = None) -> dict[str, Path]:
    """Write a simulation's files into ``out`` (each atomically); returns them by role.

    ``NAME.mrc`` (tomogram), ``NAME_labels.mrc`` (spheres), ``NAME_masks.mrc``
    (shapes), ``NAME_particles.csv`` / ``.star`` (truth, voxels),
    ``NAME_distractors.csv``, ``classes.json`` and ``NAME_settings.json``; with cellular context also
    ``NAME_context.mrc`` (0 none, i + 1 for ``context.KINDS[i]``) and ``NAME_context.csv`` (points on the
    structures' surfaces, about :data:`CONTEXT_POINT_SPACING` voxels apart, named by kind: negatives for
    ``patches --simulation-negatives``).
    """
    out = Path(out)
    made = first_missing(out)
    new_registry = not (out / "classes.json").exists()
    files: dict[str, Path] = {}
    try:
        files["classes"] = claim_classes(out, sim.classes)  # first: a clash leaves the folder as it was
        _write_files(sim, out, name, randomized, files)
    except BaseException:
        # A failed write (a full disk) leaves the folder as it was: what this call wrote goes again.
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
        else:
            for role, path in files.items():
                if role != "classes":
                    path.unlink(missing_ok=True)
            if new_registry and not any(out.glob("*_settings.json")):
                (out / "classes.json").unlink(missing_ok=True)
        raise
    return files


def _write_files(sim: Simulation, out: Path, name: str, randomized: dict | None, files: dict[str, Path]) -> None:
    """Write a simulation's files, entering each into ``files`` once written."""
    from keras_ucaps.io.jsonfile import write_json

    vs = sim.settings.voxel_size
    files["tomogram"] = write_volume(out / f"{name}.mrc", sim.tomogram, vs)
    files["labels"] = write_volume(out / f"{name}_labels.mrc", sim.sphere_labels, vs, dtype="int8")
    files["masks"] = write_volume(out / f"{name}_masks.mrc", sim.mask_labels, vs, dtype="int8")
    files["particles"] = write_particles(sim.particles, out / f"{name}_particles.csv")
    files["star"] = write_particles(sim.particles, out / f"{name}_particles.star", "relion4",
                                    FormatContext(voxel_size=vs, classes=sim.classes))
    files["distractors"] = write_particles(sim.distractors, out / f"{name}_distractors.csv")
    if sim.context_labels is not None:
        files["context"] = write_volume(out / f"{name}_context.mrc", sim.context_labels, vs, dtype="int8")
        points, kinds = cellular.surface_points(sim.context_labels, CONTEXT_POINT_SPACING,
                                                np.random.default_rng([sim.settings.seed, 4099]))
        table = ParticleTable.from_columns(points, kinds, name) if len(kinds) else ParticleTable.empty()
        files["context_points"] = write_particles(table, out / f"{name}_context.csv")
    settings = dataclasses.asdict(sim.settings)
    settings["seconds"] = {k: round(v, 2) for k, v in sim.seconds.items()}
    settings["measured"] = {k: round(v, 5) for k, v in sim.measured.items()}
    if randomized is not None:  # what --randomize drew (also in the settings above)
        settings["randomized"] = randomized
    if sim.context_drawn:  # each context structure's geometry (voxels) and the imaging effects as drawn
        settings["context_drawn"] = sim.context_drawn
    files["settings"] = write_json(out / f"{name}_settings.json", settings)
