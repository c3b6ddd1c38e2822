"""Cover a volume with overlapping tiles and blend their predictions without seams.

Along each axis the fewest tiles of at most ``tile`` voxels that overlap by
``2·margin`` are used, all of one length, the last one flush with the end (a
served model takes fixed-side tiles instead: those start every
``tile - 2·margin`` voxels). A tile's outputs are trusted only in its centre,
``margin`` voxels away from its faces, except where a face lies on the
volume's border. With a margin at least the network's receptive radius, a
trusted output equals what the network gives on the whole volume at once, so
the blended result equals one-pass prediction. Within the trusted centre each
tile is weighted by a raised-cosine window (highest in the middle), so where
the margin is smaller than the receptive field the tiles fade into each other
instead of meeting at a seam.
"""

from __future__ import annotations

import itertools

import numpy as np

FLOOR = 1e-3  # weights stay positive across the whole trusted region


def tile_starts(size: int, tile: int, margin: int) -> list[int]:
    """Start positions of fixed-side tiles covering [0, size) so every voxel is in a trusted centre."""
    if tile >= size:
        return [0]
    step = tile - 2 * margin
    if step < 1:
        raise ValueError(f"margin {margin} leaves no trusted centre in a tile of {tile}")
    starts = list(range(0, size - tile, step))
    starts.append(size - tile)
    return sorted(set(starts))


def axis_layout(size: int, tile: int, margin: int, multiple: int = 1) -> tuple[int, list[int], int]:
    """The fewest tiles of at most ``tile`` voxels covering one axis.

    Returns (length, starts, margin): every tile along the axis has the same
    length, a multiple of ``multiple`` no longer than ``tile`` or ``size``;
    tiles start on multiples of ``multiple`` (so pooling grids line up with a
    one-pass prediction's), the last flush with the end; neighbours overlap by
    at least ``2·margin`` so every voxel lies in some tile's trusted centre.
    Of the layouts with fewest tiles, the one with the shortest tiles wins:
    fewer, shorter tiles recompute less of the margins than fixed-side tiles
    stepped along the axis. On an axis too short for the requested margin the
    margin shrinks to a quarter of the tile.
    """
    limit = min(tile, size) // multiple * multiple
    if limit < multiple:
        raise ValueError(f"an axis of {size} voxels is shorter than one {multiple}-voxel tile")
    if limit == size:
        return size, [0], margin
    margin = min(margin, limit // 4)
    best = None
    for length in range(limit, multiple - 1, -multiple):
        step = (length - 2 * margin) // multiple * multiple
        if step < multiple:
            break
        count = 1 + -(-(size - length) // step)
        if best is None or count <= best[0]:
            best = (count, length, step)
    count, length, step = best
    starts = [i * step for i in range(count - 1)] + [size - length]
    return length, starts, margin


def window_1d(start: int, length: int, size: int, margin: int) -> np.ndarray:
    """Blending weights along one axis of a tile of ``length`` voxels starting at ``start``."""
    n = min(length, size)
    i = np.arange(n)
    trusted = np.ones(n, dtype=bool)
    if start > 0:
        trusted &= i >= margin
    if start + n < size:
        trusted &= i < n - margin
    raised_cosine = FLOOR + np.sin(np.pi * (i + 0.5) / n) ** 2
    return np.where(trusted, raised_cosine, 0.0).astype(np.float32)


def layouts(shape: tuple[int, int, int], tile: int, margin: int, multiple: int = 1, fixed: bool = False):
    """(length, starts, margin) per axis: :func:`axis_layout`, or fixed-side tiles (``fixed``: served models)."""
    if fixed:
        return [(min(tile, n), tile_starts(n, tile, margin), margin) for n in shape]
    return [axis_layout(n, tile, margin, multiple) for n in shape]


def tiles(shape: tuple[int, int, int], tile: int, margin: int, multiple: int = 1, fixed: bool = False):
    """Yield (slices, weights) for every tile of a (z, y, x) volume; all tiles have one shape."""
    per_axis = [[(slice(s, s + length), window_1d(s, length, size, m)) for s in starts]  # windows once per axis
                 for (length, starts, m), size in zip(layouts(shape, tile, margin, multiple, fixed), shape,
                                                      strict=True)]
    for (sz, wz), (sy, wy), (sx, wx) in itertools.product(*per_axis):
        yield (sz, sy, sx), wz[:, None, None] * wy[None, :, None] * wx[None, None, :]


def count_tiles(shape: tuple[int, int, int], tile: int, margin: int, multiple: int = 1, fixed: bool = False) -> int:
    return int(np.prod([len(starts) for _, starts, _ in layouts(shape, tile, margin, multiple, fixed)]))


def receptive_radius(model) -> int:
    """How far (voxels) an output voxel sees into its input, from the architecture.

    Each k³ convolution at scale s (voxels per feature voxel) adds (k − 1)/2 · s, each
    pooling or striding by 2 at scale s adds s / 2, each upsampling adds s.
    """
    return receptive_radius_of(type(model).__name__, model.get_config())


def receptive_radius_of(name: str, config: dict) -> int:
    """:func:`receptive_radius` from a model's class name and Keras config."""
    if name == "UNet3D":
        depth = len(config["filters"]) - 1
        radius = sum(2 * 2**level + 2**level / 2 for level in range(depth))  # two 3³ convs, then pool
        radius += config["bottom_convs"] * 2**depth
        radius += sum(2**level + 2 * 2**level for level in range(depth))  # upsample + 2³ conv, two 3³ convs
        return int(np.ceil(radius))
    if name == "UCaps3D":
        k = config["encoder_kernel_size"]
        dil = 2 if config["dilation"] else 1
        radius = 2 + 2 * dil + 2 * dil + 1  # three 5³ convs, primary capsules 3³
        scale = 1
        for _level in range(config["levels"]):
            radius += (k - 1) / 2 * scale  # stride-2 layer at the finer scale
            scale *= 2
            radius += (k - 1) / 2 * scale  # stride-1 layer at the coarser scale
        while scale > 1:  # transpose convolutions and 3³ decoder convolutions
            scale //= 2
            radius += 2 * scale
        return int(np.ceil(radius))
    raise ValueError(f"no receptive field known for {name}")
