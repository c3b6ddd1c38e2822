"""Cover a volume with overlapping tiles and combine their predictions.

How a model must be tiled is its own :class:`~keras_ucaps.models.contract.TileContract`; this module
only lays tiles out and weights them, in one of two ways.

**Blending** (models whose outputs depend on a bounded neighbourhood):
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

**Ownership** (models whose outputs depend on their whole input, tiled with fixed-side tiles): each
voxel takes its value from exactly one tile, the one it lies deepest inside (farthest from a face
that is not on the volume's border; the earlier tile on a tie), so every output is the model's output
on one tile-sized context.
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


def ownership_1d(starts: list[int], length: int, size: int) -> list[np.ndarray]:
    """Per tile along one axis, 1 where the voxel belongs to that tile (its deepest), else 0."""
    i = np.arange(size)
    depth = []
    for s in starts:
        to_start = np.where(s == 0, size, i - s)  # a face on the volume's border does not count
        to_end = np.where(s + length >= size, size, s + length - 1 - i)
        inside = (i >= s) & (i < s + length)
        depth.append(np.where(inside, np.minimum(to_start, to_end), -1))
    owner = np.argmax(np.stack(depth), axis=0)  # first maximum: the earlier tile wins a tie
    return [(owner[s:s + min(length, size)] == k).astype(np.float32) for k, s in enumerate(starts)]


def layouts(shape: tuple[int, int, int], tile: int, margin: int, multiple: int = 1, fixed: bool = False):
    """(length, starts, margin) per axis: :func:`axis_layout`, or fixed-side tiles (``fixed``: served models)."""
    if fixed:  # an axis shorter than the tile gets the longest tile on the pooling grid that fits
        lengths = [min(tile, n if n <= tile and n % multiple == 0 else n // multiple * multiple) for n in shape]
        return [(length, tile_starts(n, length, margin), margin) for length, n in zip(lengths, shape, strict=True)]
    return [axis_layout(n, tile, margin, multiple) for n in shape]


def tiles(shape: tuple[int, int, int], tile: int, margin: int, multiple: int = 1, fixed: bool = False,
          blend: bool = True):
    """Yield (slices, weights) for every tile of a (z, y, x) volume; all tiles have one shape.

    ``blend``: raised-cosine weights over each tile's trusted centre; else ownership (0/1) weights.
    """
    per_axis = []
    for (length, starts, m), size in zip(layouts(shape, tile, margin, multiple, fixed), shape, strict=True):
        windows = ([window_1d(s, length, size, m) for s in starts] if blend  # windows once per axis
                   else ownership_1d(starts, length, size))
        per_axis.append([(slice(s, s + length), w) for s, w in zip(starts, windows, strict=True)])
    for (sz, wz), (sy, wy), (sx, wx) in itertools.product(*per_axis):
        yield (sz, sy, sx), wz[:, None, None] * wy[None, :, None] * wx[None, None, :]


def count_tiles(shape: tuple[int, int, int], tile: int, margin: int, multiple: int = 1, fixed: bool = False) -> int:
    return int(np.prod([len(starts) for _, starts, _ in layouts(shape, tile, margin, multiple, fixed)]))
