"""The tomogram's own density, for placing particles inside a merged blob of probability.

Where large particles crowd, a network may paint one flat blob of probability over them and the gaps between
them (the bundled ``shrec-ucaps``' 4v94 on its tuning tomogram: 59 picks for 93 particles, F1 0.49, though 98.9 %
of their centres lie inside the blob). The probability then says which class is there, not where each particle
sits; the tomogram still shows it: a particle is denser than the ice in the gaps. ``pick --density-weight W``
adds W × the density's mean over each fitted ball, in units of that mean's spread over the tomogram, to the
probability's ball fit (see :mod:`keras_ucaps.picking.cluster`).

The density is the tomogram normalised robustly (:func:`keras_ucaps.data.normalization.measure`, as patches and
prediction normalise it), its sign chosen so that particles are positive: whether protein is dark or bright
depends on the reconstruction software and on whether the user inverted it, so the sign is read off the data
(the labelled voxels' mean against the unlabelled ones').
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class ParticleDensity:
    """A (z, y, x) float32 density, normalised, positive in particles; ``sign`` is what the tomogram was
    multiplied by (−1 where protein was dark)."""

    values: np.ndarray
    sign: float
    _spreads: dict = dataclasses.field(default_factory=dict, repr=False)

    @classmethod
    def measure(cls, tomogram, labels: np.ndarray) -> ParticleDensity:
        """Normalise ``tomogram`` (z, y, x; same shape as the label map ``labels``, 0 background) and orient it
        by the labelled voxels."""
        from keras_ucaps.data.normalization import measure

        if tuple(tomogram.shape) != tuple(labels.shape):
            raise ValueError(f"tomogram {tuple(tomogram.shape)} does not match the label map {tuple(labels.shape)}")
        values = measure(tomogram).apply(np.asarray(tomogram), (slice(None),) * 3)
        inside = np.asarray(labels) > 0
        if not inside.any() or inside.all():
            return cls(values, 1.0)
        sign = -1.0 if values[inside].mean() < values[~inside].mean() else 1.0
        if sign < 0:
            np.negative(values, out=values)
        return cls(values, sign)

    def ball_means(self, region: tuple[slice, ...], kernel: np.ndarray) -> np.ndarray:
        """The density's mean over ``kernel`` (a ball, see :func:`cluster.ball`) about each voxel of
        ``region``, in units of that mean's spread over the tomogram's central half."""
        from scipy.signal import fftconvolve

        weights = kernel / kernel.sum()
        return fftconvolve(self.values[region], weights, mode="same") / self.spread(weights)

    def spread(self, weights: np.ndarray) -> float:
        """Standard deviation of the ball means over the central half of each axis (the tomogram's middle, where
        the sample is), cached per ball."""
        from scipy.signal import fftconvolve

        key = weights.shape[0], float(weights.max())
        if key not in self._spreads:
            k = weights.shape[0]
            middle = tuple(slice(n // 4, min(n, n // 4 + max(n // 2, k))) for n in self.values.shape)
            crop = self.values[middle]
            mode = "valid" if min(crop.shape) >= k else "same"
            self._spreads[key] = float(np.std(fftconvolve(crop, weights, mode=mode))) or 1.0
        return self._spreads[key]
