"""Cellular context for the simulator: what a tomogram of a cell holds besides the particles of the task.

Structures (drawn before the particles, which are then placed where no structure is, so that particles lie
beside membranes and filaments but never inside them):

- membranes: vesicles (spherical shells) and curved sheets (shells of a sphere larger than the volume), with a
  lipid bilayer's profile across the surface: two dense leaflets (head groups) :data:`LEAFLET_SEPARATION` Å
  apart, each a Gaussian of standard deviation :data:`LEAFLET_SIGMA` Å;
- filaments: actin-like rods (7 nm across, density modulated every 5.5 nm along the rod, as actin's subunits)
  and microtubule-like hollow tubes (25 nm across, 17 nm inside, 13 protofilament ridges); straight, random
  lengths and directions;
- gold fiducials: beads 5–15 nm across, :data:`GOLD_DENSITY` × a protein's peak density, mostly at the ice's
  surfaces (the faces of the particle slab), as beads applied to the grid lie; they are part of the density
  that is projected, so weighted back-projection draws their streaks;
- ice contamination: irregular blobs (unions of spheres) at the slab's faces;
- an edge over part of the field: carbon (a dense region) or the end of a lamella (vacuum: less dense than
  ice), through the whole depth, beyond a straight line across (x, y).

Densities are in units of a particle template's peak (templates are scaled to a maximum of 1) and are contrast
against the ice, so vacuum is negative. Coordinates are voxels; arrays (z, y, x); sizes are given in Å and
converted with the tomogram's voxel size. Imaging effects of the scene (an ice-thickness gradient, residual
tilt-series alignment errors, dose accumulation) are settings of :class:`ContextSettings` applied by the
simulator's imaging step (:mod:`keras_ucaps.data.tilt_series`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from keras_ucaps.errors import InputError

# Label of each kind in NAME_context.mrc (0: none) and its class name in NAME_context.csv.
KINDS = ("membrane", "actin", "microtubule", "gold", "contamination", "carbon", "vacuum")
EDGES = ("carbon", "lamella")

LEAFLET_SEPARATION = 40.0  # Å between the two leaflets' peaks
LEAFLET_SIGMA = 7.0  # Å, each leaflet's Gaussian
LEAFLET_DENSITY = 0.6
ACTIN_RADIUS, ACTIN_REPEAT, ACTIN_DENSITY = 35.0, 55.0, 0.6  # Å, Å
TUBE_OUTER, TUBE_INNER, TUBE_DENSITY, TUBE_PROTOFILAMENTS = 125.0, 85.0, 0.6, 13
GOLD_DENSITY = 10.0
CONTAMINATION_DENSITY = 1.0
CARBON_DENSITY, VACUUM_DENSITY = 1.5, -1.0
MASK_LEVEL = 0.1  # a structure's mask: where its density's magnitude exceeds this

# What `simulate --context` draws for a tomogram (counts per 128×256×256 voxels at 10 Å, scaled with the
# volume's area in x and y; uniform between the bounds unless said).
CONTEXT_RANGES = {
    "vesicles": (0, 4),
    "sheets": (0, 2),
    "actin": (0, 8),
    "microtubules": (0, 2),
    "gold": (0, 8),
    "contamination": (0, 2),
    "edge": (None, None, "carbon", "lamella"),  # one of; None half the time
    "edge_fraction": (0.1, 0.3),
    "ice_gradient": (1.0, 2.0),
    "alignment_shift": (0.1, 1.0),
    "alignment_rotation": (0.0, 0.5),
    "dose_b_factor": (0.0, 8.0),
}
VESICLE_RADIUS = (150.0, 500.0)  # Å
SHEET_RADIUS = (1.5, 4.0)  # × the volume's largest side
FILAMENT_LENGTH = (500.0, 4000.0)  # Å
GOLD_RADIUS = (25.0, 75.0)  # Å
CONTAMINATION_RADIUS = (80.0, 250.0)  # Å, each of its spheres
REFERENCE_AREA = 256 * 256  # voxels in (y, x) that CONTEXT_RANGES' counts are for


@dataclasses.dataclass
class ContextSettings:
    """How much cellular context a simulated tomogram holds, and the imaging effects of a real scene.

    Attributes
    ----------
    vesicles, sheets : int
        Membrane vesicles (radius 15–50 nm) and curved membrane sheets.
    actin, microtubules : int
        Actin-like rods and microtubule-like tubes (lengths 50–400 nm, clipped by the volume).
    gold : int
        Gold fiducial beads (5–15 nm across).
    contamination : int
        Ice contamination blobs at the ice's surfaces.
    edge : {None, "carbon", "lamella"}
        A dense carbon region or a lamella's end (vacuum) over ``edge_fraction`` of the field.
    edge_fraction : float
        Share of the (x, y) field beyond the edge.
    ice_gradient : float
        Ratio of the noise's standard deviation at the thickest ice to that at the thinnest, across the field
        along a random direction (1: even ice).
    alignment_shift : float
        Standard deviation in voxels of each tilt's residual alignment error (a random shift in y and u).
    alignment_rotation : float
        Standard deviation in degrees of each tilt's residual in-plane rotation.
    dose_b_factor : float
        Å² added to the B-factor per tilt in acquisition order (dose-symmetric: 0°, then outward alternating
        sides), as radiation damage accumulates.
    """

    vesicles: int = 0
    sheets: int = 0
    actin: int = 0
    microtubules: int = 0
    gold: int = 0
    contamination: int = 0
    edge: str | None = None
    edge_fraction: float = 0.2
    ice_gradient: float = 1.0
    alignment_shift: float = 0.0
    alignment_rotation: float = 0.0
    dose_b_factor: float = 0.0

    def __post_init__(self):
        for name in ("vesicles", "sheets", "actin", "microtubules", "gold", "contamination"):
            if int(getattr(self, name)) < 0:
                raise InputError("--" + name, f"must be 0 or more, got {getattr(self, name)}")
            setattr(self, name, int(getattr(self, name)))
        if self.edge not in (None, *EDGES):
            raise InputError("--edge", f"unknown edge '{self.edge}' (choose {', '.join(EDGES)})")
        checks = {"edge_fraction": (0.0, 0.9), "ice_gradient": (1.0, 10.0), "alignment_shift": (0.0, 5.0),
                  "alignment_rotation": (0.0, 5.0), "dose_b_factor": (0.0, 100.0)}
        for name, (lo, hi) in checks.items():
            value = getattr(self, name)
            if not lo <= value <= hi:  # NaN fails too
                raise InputError("--" + name.replace("_", "-"), f"must lie in [{lo:g}, {hi:g}], got {value}")

    @property
    def has_structures(self) -> bool:
        return bool(self.vesicles or self.sheets or self.actin or self.microtubules or self.gold
                    or self.contamination or self.edge)

    @property
    def has_imaging(self) -> bool:
        return self.ice_gradient != 1.0 or bool(self.alignment_shift or self.alignment_rotation
                                                or self.dose_b_factor)


def drawn_context(seed: int, shape: Sequence[int], tilt_series: bool = True, **fixed) -> ContextSettings:
    """Context settings drawn from :data:`CONTEXT_RANGES` by a generator seeded with ``seed``; counts scale with
    the (y, x) area of ``shape``. ``fixed`` values are kept instead of drawn. Without a tilt series
    (``tilt_series=False``) no alignment error or dose is drawn: the fast mode has no tilts to apply them to."""
    rng = np.random.default_rng([seed, 2718])
    r = CONTEXT_RANGES
    area = shape[1] * shape[2] / REFERENCE_AREA
    values = {name: int(rng.integers(r[name][0], int(np.ceil(r[name][1] * area)) + 1))
              for name in ("vesicles", "sheets", "actin", "microtubules", "gold", "contamination")}
    values["edge"] = r["edge"][int(rng.integers(len(r["edge"])))]
    for name in ("edge_fraction", "ice_gradient", "alignment_shift", "alignment_rotation", "dose_b_factor"):
        values[name] = round(float(rng.uniform(*r[name])), 4)
    if not tilt_series:
        values.update(alignment_shift=0.0, alignment_rotation=0.0, dose_b_factor=0.0)
    values.update(fixed)
    return ContextSettings(**values)


@dataclasses.dataclass
class Context:
    """The drawn scene: density, a label map of kinds (0 none, i + 1 for KINDS[i]) and each structure's
    geometry (voxels: centres x, y, z; radii; axes)."""

    density: np.ndarray
    labels: np.ndarray
    structures: list[dict]

    @property
    def occupied(self) -> np.ndarray:
        return self.labels > 0


def draw(settings: ContextSettings, shape: Sequence[int], voxel_size: float, slab: tuple[int, int],
         rng: np.random.Generator) -> Context:
    """Draw and render the structures of ``settings`` in a volume of ``shape`` (z, y, x) at ``voxel_size`` Å.

    Membranes and filaments may cross each other (as in a cell's crowded cytoplasm, drawn independently); gold
    and contamination are placed where no structure is yet (retried, skipped after 50 tries: recorded)."""
    shape = tuple(int(n) for n in shape)
    density = np.zeros(shape, np.float32)
    labels = np.zeros(shape, np.uint8)
    structures = []
    z0, z1 = slab

    def add(kind, box, part, record, mask=None):
        mask = np.abs(part) > MASK_LEVEL if mask is None else mask
        density[box] += part
        labels[box][mask] = KINDS.index(kind) + 1
        if mask.any():
            structures.append({"kind": kind, **record})

    if settings.edge:
        kind = "carbon" if settings.edge == "carbon" else "vacuum"
        part, record = _edge(shape, settings.edge_fraction, CARBON_DENSITY if kind == "carbon" else VACUUM_DENSITY,
                             rng)
        add(kind, (slice(None),) * 3, part, record)
    for _ in range(settings.sheets):
        radius = float(rng.uniform(*SHEET_RADIUS)) * max(shape)
        point = np.array([rng.uniform(0, shape[2]), rng.uniform(0, shape[1]), rng.uniform(z0, z1)])
        normal = _unit(rng.normal(size=3))
        centre = point - radius * normal
        box, part, mask = _shell(shape, centre, radius, voxel_size)
        add("membrane", box, part, {"shape": "sheet", "centre": _r(centre), "radius": round(radius, 2)}, mask)
    for _ in range(settings.vesicles):
        radius = float(rng.uniform(*VESICLE_RADIUS)) / voxel_size
        reach = radius + (LEAFLET_SEPARATION / 2 + 3 * LEAFLET_SIGMA) / voxel_size
        lo, hi = reach, shape[0] - reach  # inside the depth when it fits, else centred
        z = rng.uniform(lo, hi) if hi > lo else shape[0] / 2
        centre = np.array([rng.uniform(0, shape[2]), rng.uniform(0, shape[1]), z])
        box, part, mask = _shell(shape, centre, radius, voxel_size)
        add("membrane", box, part, {"shape": "vesicle", "centre": _r(centre), "radius": round(radius, 2)}, mask)
    for kind, count in (("actin", settings.actin), ("microtubule", settings.microtubules)):
        for _ in range(count):
            length = float(rng.uniform(*FILAMENT_LENGTH)) / voxel_size
            middle = np.array([rng.uniform(0, shape[2]), rng.uniform(0, shape[1]), rng.uniform(z0, z1)])
            axis = _unit(rng.normal(size=3))
            axis[2] *= 0.5  # filaments in a thin lamella lie closer to its plane than a uniform direction would
            axis = _unit(axis)
            start, end = middle - axis * length / 2, middle + axis * length / 2
            box, part = _filament(shape, start, end, kind, voxel_size)
            add(kind, box, part, {"start": _r(start), "end": _r(end)})
    for kind, count in (("gold", settings.gold), ("contamination", settings.contamination)):
        for _ in range(count):
            for _ in range(50):
                centre = np.array([rng.uniform(0, shape[2]), rng.uniform(0, shape[1]), 0.0])
                face = z0 if rng.random() < 0.5 else z1 - 1
                if kind == "gold":
                    radius = float(rng.uniform(*GOLD_RADIUS)) / voxel_size
                    inside = rng.random() < 0.25  # a quarter anywhere in the slab, the rest at its faces
                    centre[2] = rng.uniform(z0, z1) if inside else face + rng.normal(0, 1)
                    box, part = _balls(shape, [centre], [radius], GOLD_DENSITY)
                    record = {"centre": _r(centre), "radius": round(radius, 2)}
                else:
                    centre[2] = face
                    n = int(rng.integers(3, 7))
                    radii = rng.uniform(*CONTAMINATION_RADIUS, size=n) / voxel_size
                    centres = centre + rng.normal(0, 1, size=(n, 3)) * radii.mean() * np.array([1.0, 1.0, 0.4])
                    box, part = _balls(shape, centres, radii, CONTAMINATION_DENSITY)
                    record = {"centre": _r(centre), "radii": [round(float(r), 2) for r in radii],
                              "centres": [_r(c) for c in centres]}
                if box is not None and not labels[box][np.abs(part) > MASK_LEVEL].any():
                    add(kind, box, part, record)
                    break
            else:
                structures.append({"kind": kind, "skipped": "no free place after 50 tries"})
    return Context(density=density, labels=labels, structures=structures)


def surface_points(labels: np.ndarray, spacing: int, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """Points (x, y, z voxels) on the boundary of each kind's region, about ``spacing`` voxels apart (one per
    occupied cell of a ``spacing`` grid, drawn at random): where a model must learn not to pick."""
    from scipy import ndimage

    points, names = [], []
    for label, kind in enumerate(KINDS, start=1):
        mask = labels == label
        if not mask.any():
            continue
        boundary = mask & ~ndimage.binary_erosion(mask)
        zyx = np.argwhere(boundary)
        zyx = zyx[rng.permutation(len(zyx))]
        _, first = np.unique(zyx // spacing, axis=0, return_index=True)
        chosen = zyx[np.sort(first)]
        points.append(chosen[:, ::-1].astype(np.float64))
        names += [kind] * len(chosen)
    if not points:
        return np.zeros((0, 3)), []
    return np.concatenate(points), names


def dose_order(angles_deg: np.ndarray) -> np.ndarray:
    """Each tilt's place in a dose-symmetric acquisition: the tilt nearest 0° first, then outward, alternating
    sides (the positive side first at each step)."""
    angles = np.asarray(angles_deg, dtype=np.float64)
    keys = np.lexsort((-np.sign(angles), np.round(np.abs(angles), 6)))
    order = np.empty(len(angles), np.int64)
    order[keys] = np.arange(len(angles))
    return order


def ice_noise_scale(shape_yx: Sequence[int], ratio: float, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """A (y, x) map of the noise's standard deviation relative to the mean ice: ``ratio`` between its two ends
    along a random direction (geometric mean 1), log-linear across the field; and what was drawn."""
    angle = float(rng.uniform(0, 2 * np.pi))
    ny, nx = shape_yx
    y, x = np.meshgrid(np.linspace(-0.5, 0.5, ny), np.linspace(-0.5, 0.5, nx), indexing="ij")
    along = x * np.cos(angle) + y * np.sin(angle)
    along /= max(float(np.ptp(along)), 1e-12)
    scale = np.exp(np.log(ratio) * along).astype(np.float32)
    return scale, {"ice_gradient_direction_deg": round(np.rad2deg(angle), 2)}


def misalign(series: np.ndarray, shifts: np.ndarray, rotations_deg: np.ndarray) -> np.ndarray:
    """Each (y, u) image of ``series`` turned by its in-plane rotation about the image's centre and shifted by its
    (dy, du) in voxels (cubic interpolation; edges continued): a tilt series' residual alignment error."""
    from scipy import ndimage

    out = np.empty_like(series)
    centre = (np.asarray(series.shape[1:]) - 1) / 2
    for t, image in enumerate(series):
        a = np.deg2rad(rotations_deg[t])
        matrix = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        # output o samples input matrix @ (o - centre - shift) + centre
        offset = centre - matrix @ (centre + shifts[t])
        out[t] = ndimage.affine_transform(image, matrix, offset=offset, order=3, mode="nearest")
    return out


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-12)


def _r(v) -> list[float]:
    return [round(float(x), 2) for x in v]


def _grid(shape, lo, hi):
    """Box slices (z, y, x) for x y z bounds lo..hi clipped to the volume, and its voxels' x, y, z coordinates;
    None when the box is empty."""
    lo_zyx = np.maximum(np.floor(np.asarray(lo)[::-1]).astype(int), 0)
    hi_zyx = np.minimum(np.ceil(np.asarray(hi)[::-1]).astype(int) + 1, shape)
    if (hi_zyx <= lo_zyx).any():
        return None, None
    box = tuple(slice(a, b) for a, b in zip(lo_zyx, hi_zyx, strict=True))
    z, y, x = np.meshgrid(*(np.arange(a, b, dtype=np.float32) for a, b in zip(lo_zyx, hi_zyx, strict=True)),
                          indexing="ij")
    return box, (x, y, z)


def _shell(shape, centre, radius, voxel_size):
    """A bilayer on the sphere of ``radius`` voxels about ``centre`` (x, y, z): (box, density, mask); the mask
    holds both leaflets and the lipid tails between them."""
    h = LEAFLET_SEPARATION / 2 / voxel_size
    s = LEAFLET_SIGMA / voxel_size
    reach = radius + h + 4 * s
    box, coords = _grid(shape, centre - reach, centre + reach)
    if box is None:
        return (slice(0, 0),) * 3, np.zeros((0, 0, 0), np.float32), np.zeros((0, 0, 0), bool)
    x, y, z = coords
    d = np.sqrt((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2) - radius
    part = LEAFLET_DENSITY * (np.exp(-((d - h) ** 2) / (2 * s * s)) + np.exp(-((d + h) ** 2) / (2 * s * s)))
    return box, part.astype(np.float32), np.abs(d) <= h + 2 * s


def _filament(shape, start, end, kind, voxel_size):
    """An actin rod or a microtubule from ``start`` to ``end`` (x, y, z voxels): (box, density)."""
    outer = (ACTIN_RADIUS if kind == "actin" else TUBE_OUTER) / voxel_size
    reach = outer + 2
    box, coords = _grid(shape, np.minimum(start, end) - reach, np.maximum(start, end) + reach)
    if box is None:
        return (slice(0, 0),) * 3, np.zeros((0, 0, 0), np.float32)
    axis = (end - start) / np.linalg.norm(end - start)
    length = float(np.linalg.norm(end - start))
    rel = [c - np.float32(s0) for c, s0 in zip(coords, start, strict=True)]  # x, y, z from the start
    t = sum(np.float32(a) * r for a, r in zip(axis, rel, strict=True))
    along = np.clip(t, 0, length)
    radial = [r - along * np.float32(a) for r, a in zip(rel, axis, strict=True)]
    d = np.sqrt(sum(r * r for r in radial))
    edge = 0.5  # voxels of the soft edge
    if kind == "actin":
        body = 0.5 * (1 - np.tanh((d - outer) / edge))
        part = ACTIN_DENSITY * body * (1 + 0.25 * np.cos(2 * np.pi * along * voxel_size / ACTIN_REPEAT))
    else:
        inner = TUBE_INNER / voxel_size
        body = 0.25 * (1 - np.tanh((d - outer) / edge)) * (1 + np.tanh((d - inner) / edge))
        e1 = _unit(np.cross(axis, [1.0, 0.0, 0.0] if abs(axis[0]) < 0.9 else [0.0, 1.0, 0.0]))
        e2 = np.cross(axis, e1)
        phi = np.arctan2(sum(np.float32(a) * r for a, r in zip(e2, radial, strict=True)),
                         sum(np.float32(a) * r for a, r in zip(e1, radial, strict=True)))
        part = TUBE_DENSITY * body * (1 + 0.3 * np.cos(TUBE_PROTOFILAMENTS * phi))
    part[(t < -edge) | (t > length + edge)] = 0  # flat ends
    return box, part.astype(np.float32)


def _balls(shape, centres, radii, level):
    """The union of balls (centres x, y, z and radii in voxels) of density ``level`` with a soft edge; (box,
    density), box None when it lies outside the volume."""
    centres, radii = np.asarray(centres, float), np.asarray(radii, float)
    lo = (centres - radii[:, None]).min(axis=0) - 2
    hi = (centres + radii[:, None]).max(axis=0) + 2
    box, coords = _grid(shape, lo, hi)
    if box is None:
        return None, None
    x, y, z = coords
    inside = np.zeros(x.shape, np.float32)
    for c, r in zip(centres, radii, strict=True):
        d = np.sqrt((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2)
        inside = np.maximum(inside, 0.5 * (1 - np.tanh((d - r) / 0.5)))
    return box, (level * inside).astype(np.float32)


def _edge(shape, fraction, level, rng):
    """A region beyond a straight line across (x, y), ``fraction`` of the field, through the whole depth."""
    angle = float(rng.uniform(0, 2 * np.pi))
    ny, nx = shape[1:]
    y, x = np.meshgrid(np.arange(ny, dtype=np.float32), np.arange(nx, dtype=np.float32), indexing="ij")
    along = x * np.cos(angle) + y * np.sin(angle)
    line = float(np.quantile(along, 1 - fraction))
    region = 0.5 * (1 + np.tanh((along - line) / 1.5)).astype(np.float32)
    # a little texture: carbon films and lamella ends are not flat
    from scipy import ndimage

    texture = ndimage.gaussian_filter(rng.normal(size=(ny, nx)).astype(np.float32), 4)
    texture /= max(float(texture.std()), 1e-12)
    part = level * region * (1 + 0.1 * texture)
    record = {"angle_deg": round(np.rad2deg(angle), 2), "line": round(line, 2), "fraction": fraction,
              "normal_xy": _r([np.cos(angle), np.sin(angle)])}
    return np.broadcast_to(part, shape).astype(np.float32), record
