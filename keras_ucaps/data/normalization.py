"""How a tomogram is normalised, the same for cutting training patches and for prediction.

Two methods, named in patch stores and run configs (``normalization``):

- ``"robust"`` (the default for new patch stores): a smooth background (a polynomial of degree two in z, y
  and x, fitted to block medians with outlier blocks rejected) is subtracted, the result is divided by the
  robust standard deviation (1.4826 × the median absolute deviation over the blocks that were kept) and
  clipped to ±8. Gradients in ice thickness, gold beads, carbon edges and empty regions therefore shift
  neither the level nor the scale of the region with particles.
- ``"tomogram z-score"`` (stores and runs made before, and ``patches --normalization zscore``): the
  tomogram's own mean and standard deviation.

Statistics are measured once per tomogram, reading it in slabs (memory maps and on-disk arrays are never
read whole), and applied to any region from its position in the tomogram, so that a tile, a patch and
the whole volume see the same values.
"""

from __future__ import annotations

import dataclasses

import numpy as np

ROBUST = "robust"
ZSCORE = "tomogram z-score"
METHODS = {"robust": ROBUST, "zscore": ZSCORE}  # CLI choice -> the name stores and configs record
CLIP = 8.0  # robust standard deviations
SAMPLES = 2_000_000  # voxels, at most, that measure the scale


@dataclasses.dataclass(frozen=True)
class Normalization:
    """What to subtract and divide by, for one tomogram.

    ``method``: ``"robust"`` or ``"tomogram z-score"``. ``shape``: the tomogram's (z, y, x) shape, which
    the background's coordinates refer to. ``degree``: the background polynomial's degree along z, y
    and x. ``background``: its coefficients (:func:`_terms` order; one, the mean, for the z-score).
    ``scale``: the divisor.
    ``clip``: the bound of normalised values, or None.
    """

    method: str
    shape: tuple[int, int, int]
    degree: tuple[int, int, int]
    background: tuple[float, ...]
    scale: float
    clip: float | None = None

    def apply(self, block: np.ndarray, region: tuple[slice, slice, slice]) -> np.ndarray:
        """Normalise ``block``, the voxels of ``region`` (slices with explicit or default bounds) of the tomogram."""
        out = np.asarray(block, dtype=np.float32)
        if not any(self.degree):
            out = (out - np.float32(self.background[0])) / np.float32(self.scale)
        else:
            axes = [_axis_coordinates(n, s) for n, s in zip(self.shape, region, strict=True)]
            out = (out - _evaluate(self.background, self.degree, *axes)) / np.float32(self.scale)
        if self.clip is not None:
            np.clip(out, -self.clip, self.clip, out=out)
        return out

    def to_dict(self) -> dict:
        return {"method": self.method, "shape": list(self.shape), "degree": list(self.degree),
                "background": list(self.background), "scale": self.scale, "clip": self.clip}

    @classmethod
    def from_dict(cls, payload) -> Normalization:
        if isinstance(payload, list | tuple):  # stores written before: [mean, std]
            return cls(ZSCORE, (0, 0, 0), (0, 0, 0), (float(payload[0]),), float(payload[1]))
        return cls(payload["method"], tuple(payload["shape"]), tuple(payload["degree"]), tuple(payload["background"]),
                   payload["scale"], payload.get("clip"))


def measure(data, method: str = ROBUST) -> Normalization:
    """The normalisation of ``data`` (z, y, x; an array, a memory map or a DiskArray) by ``method``."""
    shape = tuple(int(n) for n in data.shape)
    if method == ZSCORE:
        mean, std = tomogram_statistics(data)
        return Normalization(ZSCORE, shape, (0, 0, 0), (mean,), std)
    if method != ROBUST:
        raise ValueError(f"unknown normalisation {method!r}")
    edges = [_block_edges(n) for n in shape]
    medians, stride, sample = _block_medians(data, edges)
    centres = [(e[:-1] + e[1:] - 1) / 2 for e in edges]
    uz, uy, ux = (_coordinates(c, n) for c, n in zip(centres, shape, strict=True))
    degree = _degree(medians.shape)
    design = np.stack([np.broadcast_to(t, medians.shape).ravel() for t in _terms(uz, uy, ux, degree)], axis=1)
    values = medians.ravel()
    kept = _initial_inliers(values)
    for _ in range(5):
        coefficients = np.linalg.lstsq(design[kept], values[kept], rcond=None)[0]
        residual = values - design @ coefficients
        spread = _robust_std(residual[kept])
        now = np.abs(residual - np.median(residual[kept])) <= 3.5 * spread + 1e-6
        if now.sum() < design.shape[1] or np.array_equal(now, kept):
            break
        kept = now
    # The scale: over a regular subsample of voxels in the blocks kept, after removing the background.
    sample_axes = [_axis_coordinates(n, slice(None, None, stride)) for n in shape]
    residual = sample - _evaluate(coefficients, degree, *sample_axes)
    block_of = [np.searchsorted(e, np.arange(0, n, stride), side="right") - 1
                for e, n in zip(edges, shape, strict=True)]
    kept_blocks = kept.reshape(medians.shape)
    in_kept = kept_blocks[np.ix_(*block_of)]
    inside = residual[in_kept]
    offset = float(np.median(inside))
    scale = _robust_std(inside) or float(np.std(inside)) or 1.0
    coefficients = coefficients.copy()
    coefficients[0] += offset
    return Normalization(ROBUST, shape, degree, tuple(float(c) for c in coefficients), float(scale), CLIP)


def tomogram_statistics(data: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation, in slabs (works on memory maps)."""
    total = total_sq = 0.0
    step = max(1, (64 * 2**20) // max(1, data[0].nbytes))
    for z in range(0, data.shape[0], step):
        block = np.asarray(data[z:z + step], dtype=np.float64)
        total += block.sum()
        total_sq += np.square(block).sum()
    n = data.size
    mean = total / n
    return float(mean), float(np.sqrt(max(total_sq / n - mean * mean, 0.0))) or 1.0


def _block_edges(n: int) -> np.ndarray:
    """Block boundaries along one axis: blocks of about 32 voxels, at least 4 blocks where the axis has 32 voxels."""
    side = int(np.clip(n // 4, 8, 32))
    return np.linspace(0, n, max(1, round(n / side)) + 1).astype(int)


def _block_medians(data, edges) -> tuple[np.ndarray, int, np.ndarray]:
    """Median of every block (from every other voxel when blocks are 16 voxels or more) and a regular
    subsample of the voxels (every ``stride``-th along each axis, at most :data:`SAMPLES`), read a slab of
    blocks at a time."""
    shape = tuple(len(e) - 1 for e in edges)
    size = int(np.prod(data.shape))
    stride = max(1, int(np.ceil((size / SAMPLES) ** (1 / 3))))
    inner = 2 if min(int(np.min(np.diff(e))) for e in edges) >= 16 else 1
    medians = np.empty(shape, np.float64)
    samples = []
    for i in range(shape[0]):
        z0, z1 = int(edges[0][i]), int(edges[0][i + 1])
        slab = np.asarray(data[z0:z1], dtype=np.float32)
        for j in range(shape[1]):
            for k in range(shape[2]):
                block = slab[::inner, edges[1][j]:edges[1][j + 1]:inner, edges[2][k]:edges[2][k + 1]:inner]
                medians[i, j, k] = np.median(block)
        first = (-z0) % stride  # the subsample's planes are the multiples of stride
        samples.append(slab[first::stride, ::stride, ::stride])
    return medians, stride, np.concatenate(samples)


def _degree(blocks: tuple[int, ...]) -> tuple[int, int, int]:
    """Polynomial degree per axis: two where the axis has 4 blocks or more, one with 2 or 3, none with 1."""
    return tuple(2 if n >= 4 else 1 if n >= 2 else 0 for n in blocks)


def _coordinates(index: np.ndarray, n: int) -> np.ndarray:
    """Voxel index -> a coordinate in [-1, 1] across the tomogram's extent (well conditioned for the fit)."""
    return (2 * np.asarray(index, dtype=np.float64) + 1) / n - 1


def _axis_coordinates(n: int, region: slice) -> np.ndarray:
    return _coordinates(np.arange(n)[region], n)


def _terms(uz, uy, ux, degree) -> list:
    """The polynomial's terms on the grid uz × uy × ux, as broadcastable float arrays: 1, each axis to the
    power 1 up to its degree, and the products of two axes of degree two."""
    axes = (np.asarray(uz)[:, None, None], np.asarray(uy)[None, :, None], np.asarray(ux)[None, None, :])
    terms = [np.ones((1, 1, 1), axes[0].dtype)]
    for a, d in zip(axes, degree, strict=True):
        terms += [a ** p for p in range(1, d + 1)]
    quadratic = [a for a, d in zip(axes, degree, strict=True) if d == 2]
    terms += [quadratic[i] * quadratic[j] for i in range(len(quadratic)) for j in range(i + 1, len(quadratic))]
    return terms


def _evaluate(coefficients, degree, uz, uy, ux) -> np.ndarray:
    """The background polynomial on the grid uz × uy × ux, as float32 (z, y, x)."""
    terms = _terms(*(np.asarray(u, np.float32) for u in (uz, uy, ux)), degree)
    out = np.zeros((len(uz), len(uy), len(ux)), np.float32)
    for c, term in zip(coefficients, terms, strict=True):
        out += np.float32(c) * term
    return out


def _initial_inliers(values: np.ndarray) -> np.ndarray:
    """Blocks whose median is not far from the others' (wide enough for a strong gradient)."""
    spread = _robust_std(values)
    return np.abs(values - np.median(values)) <= 5 * spread + 1e-6


def _robust_std(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(1.4826 * np.median(np.abs(values - np.median(values))))
