"""How a tomogram is normalised, the same for cutting training patches and for prediction.

A tomogram is z-scored with its own mean and standard deviation (``tomogram z-score`` in run configs and
patch stores), computed in slabs so that memory-mapped volumes are never read whole.
"""

from __future__ import annotations

import numpy as np


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
