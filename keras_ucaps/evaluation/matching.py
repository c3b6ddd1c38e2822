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


def match(truth: np.ndarray, predicted: np.ndarray, max_distance: float,
          scale: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Hungarian pairs (truth index, prediction index) within ``max_distance``; with ``scale`` (one per true
    particle, e.g. its radius) distances are measured in units of it."""
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    if len(truth) == 0 or len(predicted) == 0:
        return np.zeros(0, int), np.zeros(0, int)
    distance = cdist(truth, predicted)
    if scale is not None:
        distance = distance / np.asarray(scale, dtype=float)[:, None]
    cost = np.where(distance <= max_distance, distance, 1e9)
    rows, cols = linear_sum_assignment(cost)
    good = distance[rows, cols] <= max_distance
    return rows[good], cols[good]


def evaluate_tables(truth: ParticleTable, predicted: ParticleTable, classes: ClassRegistry, voxel_size: float,
                    tolerance: float = 0.5, beta: float = 1.0) -> dict:
    """Per-class and averaged TP, FP, FN, precision, recall, F1 and F-beta over all tomograms, and
    ``localisation``: the same counts for finding particles whatever class a pick names (SHREC'19's localisation
    score; one to one, within ``tolerance`` × the true particle's radius) from ``confusion``, the
    :func:`confusion_matrix`."""
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
    confusion = confusion_matrix(truth, predicted, classes, voxel_size, tolerance)
    found = Counts(tp=sum(n for row in confusion["matrix"].values() for p, n in row.items() if p != "missed"),
                   fp=sum(confusion["false"].values()),
                   fn=sum(row["missed"] for row in confusion["matrix"].values()))
    return {"classes": classes_out, "micro": total.as_dict(beta), "macro": macro, "localisation": found.as_dict(beta),
            "confusion": confusion, "tomograms": per_tomogram, "tolerance": tolerance, "beta": beta}


def false_picks(truth: ParticleTable, predicted: ParticleTable, classes: ClassRegistry, voxel_size: float,
                tolerance: float = 0.5) -> ParticleTable:
    """The picks :func:`evaluate_tables` counts false: per tomogram and class, those left unmatched by the
    one-to-one matching within ``tolerance`` × the class radius (in the order of ``predicted``)."""
    false = np.zeros(len(predicted), bool)
    for tomo in predicted.tomograms:
        for cls in classes.classes:
            rows = np.flatnonzero((predicted.tomo == tomo) & (predicted.class_name == cls.name))
            t = truth.where(tomo=tomo, class_name=cls.name).coords
            _, matched = match(t, predicted.coords[rows], tolerance * cls.radius / voxel_size)
            false[np.delete(rows, matched)] = True
    return predicted[false]


def confusion_matrix(truth: ParticleTable, predicted: ParticleTable, classes: ClassRegistry, voxel_size: float,
                     tolerance: float = 0.5) -> dict:
    """Localise first, then compare labels.

    Per tomogram, predictions are matched one-to-one to true particles of any
    class within ``tolerance`` × the true particle's radius; each match adds to
    ``matrix[true class][predicted class]``; unmatched truths count as
    ``missed``, unmatched predictions as ``false`` picks of their class.
    """
    names = classes.names
    matrix = {t: {p: 0 for p in [*names, "missed"]} for t in names}
    false = {p: 0 for p in names}
    for tomo in sorted(set(truth.tomograms) | set(predicted.tomograms)):
        t, p = truth.where(tomo=tomo), predicted.where(tomo=tomo)
        matched_t, matched_p = np.zeros(len(t), bool), np.zeros(len(p), bool)
        radii = np.array([classes.radius_voxels(n, voxel_size) for n in t.class_name])
        rows, cols = match(t.coords, p.coords, tolerance, scale=radii)
        for r, c in zip(rows, cols, strict=True):
            matrix[t.class_name[r]][p.class_name[c]] += 1
        matched_t[rows], matched_p[cols] = True, True
        for name in t.class_name[~matched_t]:
            matrix[name]["missed"] += 1
        for name in p.class_name[~matched_p]:
            false[name] += 1
    return {"matrix": matrix, "false": false}


def shrec_counts(mask_labels: np.ndarray, predicted: ParticleTable, classes: ClassRegistry) -> dict:
    """SHREC-style scoring: a pick hits a particle when it falls inside that particle's
    mask (same class, each particle hit once, best-scored picks first).

    Particles are the connected components of each class in ``mask_labels`` (z, y, x).
    """
    from scipy import ndimage

    out = {}
    shape = np.asarray(mask_labels.shape)
    for cls in classes.classes:
        instances, count = ndimage.label(mask_labels == cls.label)
        picks = predicted.where(class_name=cls.name)
        order = np.argsort(-np.nan_to_num(picks.score, nan=0.0), kind="stable")
        hit = set()
        tp = 0
        for i in order:
            zyx = np.clip(np.round(picks.coords[i, ::-1]).astype(int), 0, shape - 1)
            instance = int(instances[tuple(zyx)])
            if instance and instance not in hit:
                hit.add(instance)
                tp += 1
        out[cls.name] = Counts(tp=tp, fp=len(picks) - tp, fn=count - tp).as_dict(1.0)
    return out


# Half-width of the window over which `evaluate --model` averages F1 before choosing a class's threshold:
# 2.5 % of the score scale ([0, 1] for our picks' mean probabilities).
PLATEAU = 0.025


def threshold_sweep(truth: ParticleTable, predicted: ParticleTable, classes: ClassRegistry, voxel_size: float,
                    tolerance: float = 0.5, steps: int = 50, plateau: float = PLATEAU) -> dict:
    """Per class: precision, recall and F1 of the picks scoring at least each threshold, the threshold with the
    best F1 (``best_threshold``, ``best_f1``: the oracle), and the threshold to tune with (``tuned_threshold``,
    F1 there ``tuned_f1``): the middle of the F1 plateau.

    The best F1 of one tuning tomogram often sits on a narrow spike at the edge of a cliff (its few
    highest-scoring false picks gone, its true ones not yet): a threshold chosen there loses much of a class's
    recall as soon as another tomogram's scores are a little lower (lower SNR, thicker ice). The tuned
    threshold instead maximises the F1 averaged over thresholds within ``plateau`` × the score scale (the
    scale is 1 for scores in [0, 1], else the scores' range) on a regular grid, so it stays inside the range
    of thresholds that all do well. A tuned threshold that keeps every pick of the tuning tomogram is the
    bottom of the score scale (0 for scores in [0, 1]): the tomogram's lowest score is no boundary that it
    showed, and another tomogram's true picks may well score lower.
    """
    out = {}
    for cls in classes.classes:
        picks = predicted.where(class_name=cls.name)
        truths = truth.where(class_name=cls.name)
        scores = picks.score[np.isfinite(picks.score)]
        if len(scores) == 0:
            out[cls.name] = {"best_threshold": 0.0, "best_f1": None, "tuned_threshold": 0.0, "tuned_f1": None,
                             "curve": []}
            continue

        def counts_at(threshold, picks=picks, truths=truths, cls=cls):  # matching is per class
            kept = picks[np.nan_to_num(picks.score, nan=1.0) >= threshold]
            return evaluate_tables(truths, kept, classes, voxel_size, tolerance)["classes"][cls.name]

        curve = []
        for threshold in np.unique(np.quantile(scores, np.linspace(0, 1, steps))):
            counts = counts_at(threshold)
            curve.append({"threshold": float(threshold), "precision": counts["precision"],
                          "recall": counts["recall"], "f1": counts["f1"]})
        best = max(curve, key=lambda c: (c["f1"], -c["threshold"]))
        lo, hi = float(scores.min()), float(scores.max())
        half = plateau * (1.0 if 0.0 <= lo and hi <= 1.0 else hi - lo)
        if half > 0 and hi > lo:
            grid = np.arange(lo, hi + half / 10, half / 5)
            f1 = np.array([counts_at(t)["f1"] for t in grid])
            smoothed = np.array([f1[np.abs(grid - t) <= half + 1e-12].mean() for t in grid])
            i = int(np.flatnonzero(smoothed == smoothed.max())[0])  # ties: the lowest threshold
            tuned, tuned_f1 = float(grid[i]), float(f1[i])
        else:
            tuned, tuned_f1 = best["threshold"], best["f1"]
        if tuned <= lo:  # it keeps every pick: none below was false, none is evidence against lower scores
            tuned = min(lo, 0.0)
        out[cls.name] = {"best_threshold": best["threshold"], "best_f1": best["f1"], "tuned_threshold": tuned,
                         "tuned_f1": tuned_f1, "curve": curve}
    return out
