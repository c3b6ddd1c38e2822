"""What every particle-table format handler shares.

A handler module has ``NAME``, ``read(path, context) -> ParticleTable`` and
``write(table, path, context)``. The context carries what some formats need
beyond the table: the voxel size (Å, for formats in Å), the tomogram size (for
RELION 5's centred coordinates) and the class registry (for formats that store
class numbers instead of names).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from keras_ucaps.errors import InputError
from keras_ucaps.io.particles import ParticleTable

if TYPE_CHECKING:
    from keras_ucaps.classes import ClassRegistry


@dataclasses.dataclass
class FormatContext:
    """Facts a format may need that the table itself does not hold.

    Attributes
    ----------
    voxel_size : float, optional
        Å per voxel of the tomograms the coordinates refer to.
    tomogram_size : tuple of float or mapping, optional
        (x, y, z) size in voxels, for all tomograms, or per tomogram name; may be
        fractional (a bin-1 size divided by a binning factor).
    tomogram_centres : mapping, optional
        Per tomogram name, its centre in Å (x, y, z) as RELION places it (from a
        RELION 5 ``tomograms.star``); preferred to ``tomogram_size`` for RELION 5.
    classes : ClassRegistry, optional
        Maps class names to the numbers some formats store.
    default_class : str, optional
        Class of every particle in a file that names no class.
    voxel_size_from : str, optional
        The file that was to give the voxel size (a tomogram), named when it gives none.
    """

    voxel_size: float | None = None
    tomogram_size: tuple[float, float, float] | Mapping[str, tuple[float, float, float]] | None = None
    tomogram_centres: Mapping[str, tuple[float, float, float]] | None = None
    classes: ClassRegistry | None = None
    default_class: str | None = None
    voxel_size_from: str | None = None

    def need_voxel_size(self, path, fmt: str) -> float:
        if self.voxel_size is None or not self.voxel_size > 0:
            if self.voxel_size_from is not None:  # the tomogram meant to give it has none: it is at fault
                raise InputError(self.voxel_size_from, f"no voxel size in the header, and {fmt} coordinates are in "
                                                       "Å: give --voxel-size")
            raise InputError(path, f"{fmt} coordinates are in Å: give the voxel size (--voxel-size)")
        return float(self.voxel_size)

    def size_of(self, tomo: str, path, fmt: str) -> np.ndarray:
        size = self.tomogram_size
        if isinstance(size, Mapping):
            size = size.get(tomo)
        if size is None:
            raise InputError(
                path, f"{fmt} coordinates are relative to the tomogram's size: give it (--tomogram, --tomogram-size"
                + (" or --tomograms-star)" if fmt == "RELION 5" else ")")
            )
        return np.asarray(size, dtype=np.float64)


def class_numbers(table: ParticleTable, classes: ClassRegistry | None, path) -> np.ndarray:
    """Class number of each row: the registry's label, else the name if it is a
    positive integer, else the rank of the name among the sorted names (1..K)."""
    names = table.class_name
    if classes is not None:
        classes.check_names(names, str(path))
        return np.array([classes.label(n) for n in names], dtype=np.int64)
    if all(n.isdigit() and int(n) > 0 for n in names):
        return names.astype(np.int64)
    ranks = {n: i + 1 for i, n in enumerate(sorted(set(names.tolist())))}
    return np.array([ranks[n] for n in names], dtype=np.int64)


def class_names(numbers, classes: ClassRegistry | None) -> list[str]:
    """Names for stored class numbers: the registry's, else the number as text."""
    numbers = [int(n) for n in numbers]
    if classes is None:
        return [str(n) for n in numbers]
    return [classes.name(n) for n in numbers]


def require_columns(columns, required, path, what: str) -> None:
    missing = [c for c in required if c not in columns]
    if missing:
        raise InputError(path, f"{what} is missing column(s) {', '.join(missing)}")


def float_column(values, path, name: str, allow_nan: bool = False) -> np.ndarray:
    try:
        out = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(path, f"column {name} holds values that are not numbers") from None
    bad = ~np.isfinite(out) if not allow_nan else np.isinf(out)
    if bad.any():
        raise InputError(path, f"column {name} holds {'NaN or ' if not allow_nan else ''}infinite values "
                               f"(row {int(np.argmax(bad)) + 1})")
    return out


def convert_euler(angles: np.ndarray, source: str, target: str, invert: bool = False) -> np.ndarray:
    """Euler angles (degrees, scipy axis strings) of the same rotation in another
    convention. At gimbal lock (tilt 0 or 180°) the split between the first and
    third angle is arbitrary; the rotation is exact either way."""
    from scipy.spatial.transform import Rotation

    rotation = Rotation.from_euler(source, angles, degrees=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Gimbal lock")
        return (rotation.inv() if invert else rotation).as_euler(target, degrees=True)


def matrix_to_zyz(matrix: np.ndarray, invert: bool = False) -> np.ndarray:
    """ZYZ Euler angles (degrees) of a 3×3 rotation matrix (or of its inverse)."""
    from scipy.spatial.transform import Rotation

    rotation = Rotation.from_matrix(matrix)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Gimbal lock")
        return (rotation.inv() if invert else rotation).as_euler("ZYZ", degrees=True)
