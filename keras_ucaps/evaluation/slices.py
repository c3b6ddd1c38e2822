"""Pictures of tomograms: orthogonal slab-averaged slices with particles circled.

Users look at pictures before they trust numbers. The figure shows the xy
plane (looking down z) with the xz plane below it and the yz plane to its
right, each averaged over a thin slab and contrast-stretched to the 1st–99th
percentile. A particle is circled in its class's colour where the slab cuts
its sphere, with the radius of that cut.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from keras_ucaps.io.atomic import atomic_path
from keras_ucaps.io.particles import ParticleTable

DEFAULT_RADIUS_VOXELS = 6.0


def slab_mean(volume: np.ndarray, axis: int, centre: int, thickness: int) -> np.ndarray:
    lo = max(0, centre - thickness // 2)
    hi = min(volume.shape[axis], lo + max(1, thickness))
    return np.take(volume, np.arange(lo, hi), axis=axis).mean(axis=axis)


def stretch(image: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(image, [1, 99])
    return np.clip((image - lo) / max(hi - lo, 1e-12), 0, 1)


def render_slices(
    volume: np.ndarray,
    path: str | os.PathLike,
    *,
    picks: ParticleTable | None = None,
    radii: dict[str, float] | None = None,
    centre_xyz: tuple[int, int, int] | None = None,
    thickness: int = 5,
    title: str = "",
) -> Path:
    """Write a PNG of the three orthogonal slices through ``centre_xyz``.

    Parameters
    ----------
    volume : numpy.ndarray
        (z, y, x) tomogram.
    picks : ParticleTable, optional
        Particles to circle (x, y, z in voxels).
    radii : dict, optional
        Radius in voxels of each class name (default 6 voxels).
    centre_xyz : tuple of int, optional
        Where the slices cross (default: the volume's centre).
    thickness : int
        Slab thickness in voxels averaged into each slice.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle

    nz, ny, nx = volume.shape
    cx, cy, cz = centre_xyz or (nx // 2, ny // 2, nz // 2)
    # Per view: the image, and which coordinate (0 x, 1 y, 2 z) runs along its columns, its rows and its depth.
    views = {
        "xy": (stretch(slab_mean(volume, 0, cz, thickness)), 0, 1, 2),
        "xz": (stretch(slab_mean(volume, 1, cy, thickness)), 0, 2, 1),
        "yz": (stretch(slab_mean(volume, 2, cx, thickness)).T, 2, 1, 0),
    }
    centre = (cx, cy, cz)
    names = "xyz"
    scale = 6.0 / max(nx + nz, ny + nz)
    fig = plt.figure(figsize=((nx + nz) * scale + 0.4, (ny + nz) * scale + 0.8), dpi=150)
    grid = fig.add_gridspec(2, 2, width_ratios=[nx, nz], height_ratios=[ny, nz], wspace=0.02, hspace=0.02)
    axes = {"xy": fig.add_subplot(grid[0, 0]), "yz": fig.add_subplot(grid[0, 1]), "xz": fig.add_subplot(grid[1, 0])}
    classes = picks.classes if picks is not None else []
    colours = {c: plt.get_cmap("tab10")(i % 10) for i, c in enumerate(classes)}
    for key, ax in axes.items():
        image, col_axis, row_axis, depth_axis = views[key]
        ax.imshow(image, cmap="gray", interpolation="nearest", origin="upper")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(names[col_axis], fontsize=7, labelpad=1)
        ax.set_ylabel(names[row_axis], fontsize=7, labelpad=1)
        if picks is None or not len(picks):
            continue
        for xyz, name in zip(picks.coords, picks.class_name, strict=True):
            r = (radii or {}).get(name, DEFAULT_RADIUS_VOXELS)
            d = abs(xyz[depth_axis] - centre[depth_axis])
            if d >= r:
                continue
            ax.add_patch(Circle((xyz[col_axis], xyz[row_axis]), np.sqrt(r * r - d * d), fill=False,
                                edgecolor=colours[name], linewidth=0.8))
    legend = fig.add_subplot(grid[1, 1])
    legend.axis("off")
    for i, c in enumerate(classes):
        legend.text(0.05, 0.9 - i * 0.13, f"○ {c}", color=colours[c], fontsize=7, transform=legend.transAxes)
    fig.suptitle(title or f"{nx}×{ny}×{nz} (x×y×z), slices at x={cx}, y={cy}, z={cz}, {thickness}-voxel slabs",
                 fontsize=7)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
