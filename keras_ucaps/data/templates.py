"""Density maps of particles ("templates") for the simulator.

The package bundles 14 maps at 10 Å/voxel (from polnet, Apache-2.0; see
``keras_ucaps/resources/templates/NOTICE``); users can pass their own MRC maps,
which are resampled to the tomogram's voxel size. A template is centred on its
particle (the centroid of the voxels above 0.1 × max) and scaled to a maximum
of 1. Its radius is that of the sphere with the same radius of gyration as the
particle's mask, in Å.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from importlib import resources
from pathlib import Path

import numpy as np

from keras_ucaps.errors import InputError

MASK_THRESHOLD = 0.1
BUNDLED_VOXEL_SIZE = 10.0


def bundled_names() -> list[str]:
    folder = resources.files("keras_ucaps") / "resources" / "templates"
    return sorted(p.name.removesuffix(".mrc.gz") for p in folder.iterdir() if p.name.endswith(".mrc.gz"))


@dataclasses.dataclass(frozen=True)
class Template:
    """A particle's density, centred and scaled to max 1.

    Attributes
    ----------
    name : str
        Bundled map name (e.g. ``"4v94"``) or the user file's stem.
    density : numpy.ndarray
        (z, y, x) cube with the particle's centroid at its centre voxel.
    voxel_size : float
        Å per voxel.
    radius : float
        Equivalent radius in Å (same radius of gyration as the mask).
    """

    name: str
    density: np.ndarray
    voxel_size: float
    radius: float

    @property
    def mask(self) -> np.ndarray:
        return self.density > MASK_THRESHOLD

    def rotated(self, rotation) -> np.ndarray:
        """The density rotated by a scipy ``Rotation`` acting on (x, y, z) about
        the particle's centre; same cube size."""
        from scipy import ndimage

        flip = np.eye(3)[::-1]  # (x, y, z) <-> (z, y, x)
        matrix_zyx = flip @ rotation.as_matrix() @ flip
        centre = (np.asarray(self.density.shape) - 1) / 2
        inverse = matrix_zyx.T
        return ndimage.affine_transform(
            self.density, inverse, offset=centre - inverse @ centre, order=1, mode="constant", cval=0.0
        )


def load_template(name_or_path: str | os.PathLike, voxel_size: float = BUNDLED_VOXEL_SIZE) -> Template:
    """A bundled template by name, or a user's MRC map by path, at ``voxel_size`` Å."""
    key = str(name_or_path)
    if key in bundled_names():
        return _load(key, None, float(voxel_size))
    path = Path(name_or_path)
    if not path.exists():
        raise InputError(key, f"neither a bundled template ({', '.join(bundled_names())}) nor an existing file")
    return _load(path.stem.removesuffix(".mrc"), str(path.resolve()), float(voxel_size))


@functools.lru_cache(maxsize=64)
def _load(name: str, path: str | None, voxel_size: float) -> Template:
    from scipy import ndimage

    from keras_ucaps.io.mrc import read_volume

    if path is None:
        with resources.as_file(resources.files("keras_ucaps") / "resources" / "templates" / f"{name}.mrc.gz") as p:
            volume = read_volume(p, mmap=False)
        source = name
    else:
        volume = read_volume(path, mmap=False)
        source = path
    if volume.voxel_size is None:
        raise InputError(source, "template map has no voxel size in its header")
    density = np.asarray(volume.data, dtype=np.float32)
    if density.max() <= 0:
        raise InputError(source, "template map has no positive density")
    # The particle's radius is measured on the map's own grid: measured on a resampled one it moved by a few
    # per cent between the voxel sizes `simulate --randomize` draws, and one folder's tomograms disagreed.
    native = _centred_cube(np.clip(density / density.max(), 0, None))
    radius = _radius(native, volume.voxel_size)
    if abs(volume.voxel_size - voxel_size) > 1e-3:
        factor = volume.voxel_size / voxel_size
        if min(density.shape) * factor < 3 or max(density.shape) * factor > 1024:
            raise InputError("--voxel-size", f"{voxel_size:g} Å per voxel makes the {volume.voxel_size:g} Å map "
                                             f"{source} {factor * max(density.shape):.3g} voxels across: out of reach")
        density = ndimage.zoom(density, factor, order=1)
        density = _centred_cube(np.clip(density / density.max(), 0, None))
    else:
        density = native
    density.setflags(write=False)
    return Template(name=name, density=density, voxel_size=voxel_size, radius=round(radius, 1))


def _radius(density: np.ndarray, voxel_size: float) -> float:
    """The radius in Å of the sphere with the gyration radius of the map's mask (density > MASK_THRESHOLD of its
    maximum, which is 1)."""
    coords = np.stack(np.nonzero(density > MASK_THRESHOLD), axis=1).astype(np.float64)
    gyration = np.sqrt(((coords - coords.mean(axis=0)) ** 2).sum(axis=1).mean())
    return float(np.sqrt(5.0 / 3.0) * gyration * voxel_size)


def _centred_cube(density: np.ndarray) -> np.ndarray:
    """Shift the particle's centroid to the centre of an odd cube that holds it
    under any rotation."""
    from scipy import ndimage

    mask = density > MASK_THRESHOLD
    coords = np.stack(np.nonzero(mask), axis=1)
    centroid = coords.mean(axis=0)
    reach = np.sqrt(((coords - centroid) ** 2).sum(axis=1)).max()
    half = int(np.ceil(reach)) + 2
    side = 2 * half + 1
    offset = centroid - half  # output voxel o samples input o + offset
    cube = ndimage.affine_transform(density, np.eye(3), offset=offset, output_shape=(side,) * 3, order=1)
    return cube.astype(np.float32)
