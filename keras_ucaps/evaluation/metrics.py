"""Voxel-level scores of probability maps."""

from __future__ import annotations

import numpy as np


def average_precision(probability: np.ndarray, truth: np.ndarray, bins: int = 1000) -> float:
    """Average precision of a probability map against a boolean truth mask.

    Voxels are ranked by probability in ``bins`` equal-width bins (exact up to
    ties within a bin, and fast on memory maps: one pass, no sort).
    """
    edges = np.linspace(0.0, 1.0, bins + 1)
    positives = np.zeros(bins)
    totals = np.zeros(bins)
    step = max(1, (32 * 2**20) // max(1, probability[0].nbytes))
    for z in range(0, probability.shape[0], step):
        p = np.asarray(probability[z:z + step], dtype=np.float32).ravel()
        t = np.asarray(truth[z:z + step]).ravel().astype(bool)
        index = np.clip(np.digitize(p, edges) - 1, 0, bins - 1)
        totals += np.bincount(index, minlength=bins)
        positives += np.bincount(index, weights=t, minlength=bins)
    n_positive = positives.sum()
    if n_positive == 0:
        return float("nan")
    # Descending thresholds: cumulate from the highest bin down.
    tp = np.cumsum(positives[::-1])
    predicted = np.cumsum(totals[::-1])
    precision = np.where(predicted > 0, tp / np.maximum(predicted, 1), 1.0)
    recall = tp / n_positive
    previous = np.concatenate([[0.0], recall[:-1]])
    return float(np.sum((recall - previous) * precision))
