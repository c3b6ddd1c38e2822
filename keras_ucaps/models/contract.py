"""What a model's output at one voxel depends on, and how whole-tomogram prediction must tile for it.

Each architecture states its own :class:`TileContract` (``model.tile_contract(patch_size)``); the
tiler reads it and never looks at class names. Two kinds of model:

- **local** (the UNet without normalisation or with batch normalisation, which is an affine map at
  inference): an output voxel depends on the input within ``radius`` voxels. Tiles whose trusted
  centres lie ``radius`` voxels from their faces reproduce one-pass prediction; tiles of any size may
  be used and are blended with a raised-cosine window.
- **whole input** (UCaps and the UNet with ``normalization="instance"``: instance normalisation takes
  each channel's mean and variance over the whole input): every output voxel depends on every input
  voxel, so an output is only defined together with the input it was computed on. Prediction runs on
  fixed tiles of one side (``WHOLE_INPUT_TILE``, or the training patch if larger; chosen by held-out
  F1, benchmarks/RESULTS.md), laid out the same way whatever the tomogram's size, and each voxel takes its
  value from exactly one tile — the one it lies deepest inside — so every output is the model's output
  on one context of one fixed size and no output depends on the tomogram's size.

:func:`measure_context` measures what an output depends on the way stardist measures a receptive
field (perturb one input voxel, see which outputs move); the tests check every architecture's stated
contract against it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# The fixed tile side of whole-input models, measured on shrec-ucaps: 32³ (its training patch) scored
# macro F1 0.435, 96³ 0.520, 128³ 0.527 on simulated seed 98 (benchmarks/tile_context.py).
WHOLE_INPUT_TILE = 128


def whole_input_tile(patch_size: int, multiple: int) -> int:
    """The default tile side of a whole-input model trained on ``patch_size`` patches."""
    return max(WHOLE_INPUT_TILE, int(patch_size) // multiple * multiple)


@dataclasses.dataclass(frozen=True)
class TileContract:
    """How a model must be tiled.

    Attributes:
        radius: voxels an output sees into its input through its convolutions (an upper bound).
        multiple: input sides must be multiples of this (the pooling grid).
        whole_input: normalisation couples every output to the whole input.
        tile: with ``whole_input``, the fixed tile side prediction uses by default (its context).
        default_tile: without it, the longest tile side used by default.
    """

    radius: int
    multiple: int
    whole_input: bool
    tile: int | None = None
    default_tile: int = 160

    def __post_init__(self):
        if self.whole_input and (self.tile is None or self.tile % self.multiple):
            raise ValueError(f"a whole-input model needs a tile side that is a multiple of {self.multiple}, "
                             f"got {self.tile}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TileContract:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


def measure_context(model, side: int, seed: int = 0) -> tuple[int, bool]:
    """(radius, whole_input) measured by perturbing the centre voxel of a ``side``³ random input.

    ``radius`` is the largest distance (voxels, along any axis) from the centre at which an output
    moved; ``whole_input`` is True when some output moved in each of the eight 2³ corner blocks, i.e.
    the change reached the far ends of the input whatever the side (a block, not one voxel, so that a
    corner whose ReLUs happen to be off does not hide the coupling).
    """
    x = np.random.default_rng(seed).normal(size=(1, side, side, side, 1)).astype(np.float32)
    bumped = x.copy()
    centre = side // 2
    bumped[0, centre, centre, centre, 0] += 1000.0  # large, so a whole-input coupling shows above rounding

    def probabilities(v):
        out = model(v, training=False)
        return np.asarray(out["probabilities"] if isinstance(out, dict) else out, dtype=np.float64)[0]

    moved = np.abs(probabilities(bumped) - probabilities(x)).max(axis=-1) > 1e-7
    where = np.argwhere(moved)
    radius = int(np.abs(where - centre).max()) if len(where) else 0
    ends = (slice(0, 2), slice(side - 2, side))
    corners = [moved[z, y, x_].any() for z in ends for y in ends for x_ in ends]
    return radius, bool(all(corners))
