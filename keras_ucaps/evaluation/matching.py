"""One-to-one matching of predicted particles to true ones.

Per tomogram and class, predictions and truths are paired by the Hungarian
algorithm on their distances; a pair counts as a hit when the distance is at
most ``tolerance`` × the class radius (default 0.5, as in the CZII cryo-ET
challenge). Unpaired predictions are false positives, unpaired truths false
negatives.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from keras_ucaps.classes import ClassRegistry
from keras_ucaps.io.particles import ParticleTable


@dataclasses.dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __iadd__(self, other: Counts) -> Counts:
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        return self

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    def f_beta(self, beta: float = 1.0) -> float:
        p, r = self.precision, self.recall
        return (1 + beta**2) * p * r / (beta**2 * p + r) if p + r else 0.0

    def as_dict(self, beta: float) -> dict:
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "precision": self.precision, "recall": self.recall,
                "f1": self.f_beta(1.0), f"f{beta:g}": self.f_beta(beta)}


def match(truth: np.ndarray, predicted: np.ndarray, max_distance: float) -> tuple[np.ndarray, np.ndarray]:
    """Hungarian pairs (truth index, prediction index) within ``max_distance``."""
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    if len(truth) == 0 or len(predicted) == 0:
        return np.zeros(0, int), np.zeros(0, int)
    distance = cdist(truth, predicted)
    cost = np.where(distance <= max_distance, distance, 1e9)
    rows, cols = linear_sum_assignment(cost)
    good = distance[rows, cols] <= max_distance
    return rows[good], cols[good]


def evaluate_tables(truth: ParticleTable, predicted: ParticleTable, classes: ClassRegistry, voxel_size: float,
                    tolerance: float = 0.5, beta: float = 1.0) -> dict:
    """Per-class and averaged TP, FP, FN, precision, recall, F1 and F-beta over all tomograms."""
    per_class = {c.name: Counts() for c in classes.classes}
    per_tomogram = {}
    for tomo in sorted(set(truth.tomograms) | set(predicted.tomograms)):
        per_tomogram[tomo] = {}
        for cls in classes.classes:
            t = truth.where(tomo=tomo, class_name=cls.name).coords
            p = predicted.where(tomo=tomo, class_name=cls.name).coords
            rows, _ = match(t, p, tolerance * cls.radius / voxel_size)
            counts = Counts(tp=len(rows), fp=len(p) - len(rows), fn=len(t) - len(rows))
            per_class[cls.name] += counts
            per_tomogram[tomo][cls.name] = counts.as_dict(beta)
    total = Counts()
    for counts in per_class.values():
        total += counts
    classes_out = {name: c.as_dict(beta) for name, c in per_class.items()}
    macro = {k: float(np.mean([v[k] for v in classes_out.values()])) for k in ("precision", "recall", "f1")}
    return {"classes": classes_out, "micro": total.as_dict(beta), "macro": macro, "tomograms": per_tomogram,
            "tolerance": tolerance, "beta": beta}
