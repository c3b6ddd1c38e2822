"""The evaluation report as a PNG: picks on a slice, a voxel overlay, precision-recall curves."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from keras_ucaps.evaluation.slices import slab_mean, stretch
from keras_ucaps.io.atomic import atomic_path
from keras_ucaps.io.particles import ParticleTable


def render_report(
    path: str | os.PathLike,
    *,
    tomogram: np.ndarray | None,
    truth: ParticleTable,
    predicted: ParticleTable,
    radii: dict[str, float],
    sweep: dict,
    true_labels: np.ndarray | None = None,
    predicted_labels: np.ndarray | None = None,
    title: str = "",
) -> Path:
    """Three panels: the central xy slab with true particles circled and picks crossed;
    voxel-level true positives (green), false positives (red) and false negatives (blue)
    of the predicted against the true label map; precision-recall curves per class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle

    fig, axes = plt.subplots(1, 3, figsize=(15, 5.2), dpi=120)
    colours = {c: plt.get_cmap("tab10")(i % 10) for i, c in enumerate(radii)}
    ref = tomogram if tomogram is not None else true_labels
    if ref is not None:
        nz = ref.shape[0]
        cz = nz // 2
        thickness = 5
        if tomogram is not None:
            axes[0].imshow(stretch(slab_mean(tomogram, 0, cz, thickness)), cmap="gray")
        for (x, y, z), name in zip(truth.coords, truth.class_name, strict=True):
            r = radii.get(name, 6.0)
            if abs(z - cz) < r:
                axes[0].add_patch(Circle((x, y), np.sqrt(r * r - (z - cz) ** 2), fill=False, lw=0.8,
                                         edgecolor=colours.get(name, "w")))
        near = np.abs(predicted.coords[:, 2] - cz) < np.array([radii.get(n, 6.0) for n in predicted.class_name])
        for name in radii:
            sel = near & (predicted.class_name == name)
            axes[0].scatter(predicted.coords[sel, 0], predicted.coords[sel, 1], marker="x", s=12, lw=0.8,
                            color=colours[name], label=name)
        axes[0].set_xlim(-0.5, ref.shape[2] - 0.5)
        axes[0].set_ylim(ref.shape[1] - 0.5, -0.5)
        axes[0].set_title(f"z = {cz}: truth ○, picks ×", fontsize=9)
        axes[0].legend(fontsize=7, loc="upper right")
    if true_labels is not None and predicted_labels is not None:
        cz = true_labels.shape[0] // 2
        t, p = np.asarray(true_labels[cz]) > 0, np.asarray(predicted_labels[cz]) > 0
        same = np.asarray(true_labels[cz]) == np.asarray(predicted_labels[cz])
        overlay = np.zeros((*t.shape, 3))
        overlay[t & p & same] = (0.1, 0.8, 0.1)
        overlay[p & ~(t & same)] = (0.9, 0.1, 0.1)
        overlay[t & ~(p & same)] = (0.1, 0.3, 0.95)
        axes[1].imshow(overlay)
        axes[1].set_title("voxels: TP green, FP red, FN blue", fontsize=9)
    else:
        axes[1].text(0.5, 0.5, "no label maps given", ha="center", va="center")
    for name, result in sweep.items():
        curve = result.get("curve") or []
        if curve:
            axes[2].plot([c["recall"] for c in curve], [c["precision"] for c in curve], "-o", ms=2,
                         color=colours.get(name), label=f"{name} (best F1 {result['best_f1']:.2f} at "
                                                        f"{result['best_threshold']:.2f})")
    axes[2].set_xlim(0, 1.02)
    axes[2].set_ylim(0, 1.02)
    axes[2].set_xlabel("recall")
    axes[2].set_ylabel("precision")
    axes[2].legend(fontsize=7, loc="lower left")
    axes[2].set_title("picks above each score threshold", fontsize=9)
    for ax in axes[:2]:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
