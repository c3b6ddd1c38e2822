"""What a model's output at one voxel depends on, and how whole-tomogram prediction must tile for it.

Each architecture states its own :class:`TileContract` (``model.tile_contract(patch_size)``); the
tiler reads it and never looks at class names. Two kinds of model:

- **local** (the UNet without normalisation or with batch normalisation, which is an affine map at
  inference): an output voxel depends on the input within ``radius`` voxels. Tiles whose trusted
  centres lie ``radius`` voxels from their faces reproduce one-pass prediction; tiles of any size may
  be used and are blended with a raised-cosine window.
- **whole input** (UCaps and the UNet with ``normalization="instance"``: instance normalisation takes
  each channel's mean and variance over the whole input): every output voxel depends on every input
  voxel, so an output is only defined together with the input it was computed on. Training computed
  it on patches of ``patch_size``; prediction therefore runs on tiles of exactly that side, laid out
  the same way whatever the tomogram's size, and each voxel takes its value from exactly one tile —
  the one it lies deepest inside — so every output is the model's output on one training-sized
  context, as in training, and no output depends on the tomogram's size.

:func:`measure_context` measures what an output depends on the way stardist measures a receptive
field (perturb one input voxel, see which outputs move); the tests check every architecture's stated
contract against it.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class TileContract:
    """How a model must be tiled.

    Attributes:
        radius: voxels an output sees into its input through its convolutions (an upper bound).
        multiple: input sides must be multiples of this (the pooling grid).
        whole_input: normalisation couples every output to the whole input.
        tile: with ``whole_input``, the only tile side prediction uses (the training patch side).
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
    moved; ``whole_input`` is True when the outputs at all eight corners moved, i.e. the change
    reached the far ends of the input whatever the side.
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
    corners = [moved[z, y, x_] for z in (0, side - 1) for y in (0, side - 1) for x_ in (0, side - 1)]
    return radius, bool(all(corners))
