"""RELION / Warp STAR particle tables (read and written with ``starfile``).

RELION 4 and Warp: ``rlnCoordinateX/Y/Z`` are pixels of the tomogram named by
``rlnTomoName`` (Warp's ``rlnMicrographName`` is accepted, its ``.tomostar``
suffix removed). Where the optics table states ``rlnTomoTiltSeriesPixelSize``
(RELION 4/5 tomography), they are tilt-series pixels of that size and are
scaled to tomogram voxels of ``--voxel-size`` (RELION's and copick's reading).
Warp's template matching writes coordinates as fractions (0-1) of the
tomogram's size: a table whose coordinates all lie in [0, 1] is scaled by the
tomogram size, or refused when no size is known.

RELION 5: ``rlnCenteredCoordinateX/Y/ZAngst`` are Å from the tomogram's
centre. RELION's ``TomogramSet`` puts the centre at half the bin-1 size in
tilt-series pixels (``rlnTomoSizeX/Y/Z / 2 × rlnTomoTiltSeriesPixelSize`` Å, read
from ``tomograms.star`` when given; copick's ``read_relion_tomograms`` does the
same); without it, at ``size / 2`` voxels of the tomogram (a size that may be
fractional: 4000 px binned by 8.12065 is 492.57 voxels, not 493)::

    x_angst = (x_voxel - size_x / 2) * voxel_size

Refined particles: ``rlnOriginX/Y/ZAngst`` (Å) or RELION 3's ``rlnOriginX/Y/Z``
(pixels) are subtracted from the coordinate after rotation by the
sub-tomogram matrix, and ``rlnTomoSubtomogramRot/Tilt/Psi`` compose with the
particle angles as A = A_subtomogram · A_particle (RELION's
``ParticleSet::getPosition`` and ``getMatrix3x3``; copick's
``relion_rows_to_poses``).

Angles are ``rlnAngleRot/Tilt/Psi`` (ZYZ, degrees). The class is
``rlnClassNumber`` (mapped to names through the class registry) and, for a
lossless round trip, ``ucapsClassName``; the score is
``rlnAutopickFigureOfMerit``. Unknown labels are kept by RELION. STAR has no
"unknown": in a table where only some particles have angles or scores, the
others are written as 0 (RELION's reading of a missing angle). RELION 4 output
carries an optics table with ``rlnTomoTiltSeriesPixelSize`` = the voxel size.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from keras_ucaps.errors import InputError
from keras_ucaps.io.atomic import atomic_path
from keras_ucaps.io.formats.common import (
    FormatContext,
    class_names,
    class_numbers,
    float_column,
    matrix_to_zyz,
    require_columns,
)
from keras_ucaps.io.particles import ParticleTable

ABSOLUTE = ("rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ")
CENTRED = ("rlnCenteredCoordinateXAngst", "rlnCenteredCoordinateYAngst", "rlnCenteredCoordinateZAngst")
ANGLES = ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")
CLASS_NUMBER = "rlnClassNumber"
CLASS_NAME = "ucapsClassName"
SCORE = "rlnAutopickFigureOfMerit"
SUBTOMOGRAM_ANGLES = ("rlnTomoSubtomogramRot", "rlnTomoSubtomogramTilt", "rlnTomoSubtomogramPsi")
ORIGINS_ANGST = ("rlnOriginXAngst", "rlnOriginYAngst", "rlnOriginZAngst")
ORIGINS_PIXELS = ("rlnOriginX", "rlnOriginY", "rlnOriginZ")
TILT_SERIES_PIXEL_SIZE = "rlnTomoTiltSeriesPixelSize"
TOMO = "rlnTomoName"
STRING_COLUMNS = (TOMO, CLASS_NAME, "rlnMicrographName")
# STAR values that would read as syntax unless quoted.
_NEEDS_QUOTES = re.compile(r"^(_|#|\$|'|\"|data_|loop_|save_|stop_|global_)|\s", re.IGNORECASE)


def read(path: Path, context: FormatContext) -> ParticleTable:
    """Read RELION 4, RELION 5 or Warp particles; the coordinate columns tell which."""
    frame, optics = _particle_block(path)
    n = len(frame)
    tomo = _tomo_names(frame, path)
    sub = _matrices(frame, SUBTOMOGRAM_ANGLES, path)
    if all(c in frame for c in ABSOLUTE):
        coords, pixel_size = _absolute_coordinates(frame, optics, tomo, path, context)
        coords = coords - _origin_shift(frame, sub, pixel_size, path)
    elif all(c in frame for c in CENTRED):
        angst = np.stack([float_column(frame[c], path, c) for c in CENTRED], axis=1)
        voxel_size = context.need_voxel_size(path, "RELION 5")
        centres = np.stack([_centre_angst(context, t, voxel_size, path) for t in tomo]) if n else np.zeros((0, 3))
        coords = (angst + centres) / voxel_size - _origin_shift(frame, sub, voxel_size, path)
    else:
        raise InputError(path, f"STAR table is missing coordinate columns {', '.join(ABSOLUTE)} "
                               f"(RELION 4/Warp) or {', '.join(CENTRED)} (RELION 5)")
    angles = np.full((n, 3), np.nan)
    if any(c in frame for c in ANGLES):
        for i, c in enumerate(ANGLES):
            if c in frame:
                angles[:, i] = float_column(frame[c], path, c, allow_nan=True)
        known = np.isfinite(angles).all(axis=1)
        if sub is not None and known.any():
            particle = Rotation.from_euler("ZYZ", angles[known], degrees=True).inv().as_matrix()
            angles[known] = matrix_to_zyz(sub[known] @ particle, invert=True)
    score = float_column(frame[SCORE], path, SCORE, allow_nan=True) if SCORE in frame else None
    if CLASS_NAME in frame:
        names = frame[CLASS_NAME].astype(str).tolist()
    elif CLASS_NUMBER in frame:
        numbers = float_column(frame[CLASS_NUMBER], path, CLASS_NUMBER)
        if (numbers != np.round(numbers)).any():
            raise InputError(path, f"column {CLASS_NUMBER} holds a value that is not a whole number")
        names = class_names(numbers.astype(int), context.classes)
    elif context.default_class is not None:
        names = [context.default_class] * n
    else:
        raise InputError(path, f"STAR table is missing column {CLASS_NUMBER} (or give a default class)")
    return ParticleTable.from_columns(coords, names, tomo, angles, score)


def _absolute_coordinates(frame, optics, tomo, path, context: FormatContext) -> tuple[np.ndarray, float | None]:
    """rlnCoordinateX/Y/Z in tomogram voxels, and the Å per voxel they are in (None where unknown)."""
    n = len(frame)
    pixels = np.stack([float_column(frame[c], path, c) for c in ABSOLUTE], axis=1) if n else np.zeros((0, 3))
    tilt_series = _tilt_series_pixel_size(frame, optics, path)
    if tilt_series is not None:
        voxel_size = context.voxel_size if context.voxel_size else float(tilt_series[0])
        if context.voxel_size is None and not np.allclose(tilt_series, voxel_size):
            raise InputError(path, "optics groups state several tilt-series pixel sizes: give --voxel-size")
        return pixels * (tilt_series / voxel_size)[:, None], voxel_size
    if n and pixels.min() >= 0 and pixels.max() <= 1:
        # Warp's template matching: fractions of the tomogram's size
        if context.tomogram_size is None:
            raise InputError(path, "every coordinate lies within [0, 1], as in Warp's normalised coordinates: give "
                                   "the tomogram (--tomogram or --tomogram-size) to scale them to voxels")
        return pixels * np.stack([context.size_of(t, path, "Warp") for t in tomo]), context.voxel_size
    return pixels, context.voxel_size


def _tilt_series_pixel_size(frame, optics, path) -> np.ndarray | None:
    """Per-particle rlnTomoTiltSeriesPixelSize from the optics table, None where it states none."""
    if optics is None or len(optics) == 0 or TILT_SERIES_PIXEL_SIZE not in optics:
        return None
    sizes = float_column(optics[TILT_SERIES_PIXEL_SIZE], path, TILT_SERIES_PIXEL_SIZE)
    if (sizes <= 0).any():
        raise InputError(path, f"optics column {TILT_SERIES_PIXEL_SIZE} holds a size that is not positive")
    if len(optics) == 1:
        return np.full(len(frame), sizes[0])
    for key in ("rlnOpticsGroup", "rlnOpticsGroupName"):
        if key in frame and key in optics:
            lookup = dict(zip(optics[key].astype(str), sizes, strict=True))
            groups = frame[key].astype(str)
            missing = sorted(set(groups) - set(lookup))
            if missing:
                raise InputError(path, f"particles refer to optics group {missing[0]}, which the optics table lacks")
            return np.array([lookup[g] for g in groups])
    raise InputError(path, "the optics table has several groups and the particles do not say which is theirs")


def _matrices(frame, columns, path) -> np.ndarray | None:
    """RELION's Euler matrices (object → tomogram) of three angle columns, None where absent."""
    if not all(c in frame for c in columns):
        return None
    angles = np.stack([float_column(frame[c], path, c) for c in columns], axis=1)
    return Rotation.from_euler("ZYZ", angles, degrees=True).inv().as_matrix().reshape(-1, 3, 3)


def _origin_shift(frame, sub, voxel_size: float | None, path) -> np.ndarray:
    """What refinement moved each particle by, in voxels: A_subtomogram · origin."""
    n = len(frame)
    if all(c in frame for c in ORIGINS_ANGST):
        origin = np.stack([float_column(frame[c], path, c) for c in ORIGINS_ANGST], axis=1)
        if not origin.any():
            return np.zeros((n, 3))
        if voxel_size is None:
            raise InputError(path, f"{ORIGINS_ANGST[0]} is in Å and the file states no pixel size: give --voxel-size")
        origin = origin / voxel_size
    elif all(c in frame for c in ORIGINS_PIXELS):
        origin = np.stack([float_column(frame[c], path, c) for c in ORIGINS_PIXELS], axis=1)
    else:
        return np.zeros((n, 3))
    return origin if sub is None else np.einsum("nij,nj->ni", sub, origin)


def _centre_angst(context: FormatContext, tomo: str, voxel_size: float, path) -> np.ndarray:
    if context.tomogram_centres is not None and tomo in context.tomogram_centres:
        return np.asarray(context.tomogram_centres[tomo], dtype=np.float64)
    return context.size_of(tomo, path, "RELION 5") / 2 * voxel_size


def read_tomograms_star(path: Path) -> tuple[dict[str, tuple[float, float, float]], dict[str, float]]:
    """Tomogram centres (Å) and voxel sizes (Å, where binning is stated) from a RELION tomograms.star."""
    import pandas as pd
    import starfile

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file")
    try:
        blocks = starfile.read(path, always_dict=True, parse_as_string=[TOMO])
    except Exception as err:  # starfile raises many kinds on malformed text
        raise InputError(path, f"not a readable STAR file ({type(err).__name__}: {err})") from None
    frame = blocks.get("global")
    if not isinstance(frame, pd.DataFrame):
        frame = next((b for b in blocks.values() if isinstance(b, pd.DataFrame)), None)
    required = (TOMO, "rlnTomoSizeX", "rlnTomoSizeY", "rlnTomoSizeZ", TILT_SERIES_PIXEL_SIZE)
    require_columns(frame.columns if frame is not None else (), required, path, "tomograms.star")
    size = np.stack([float_column(frame[c], path, c) for c in required[1:4]], axis=1)
    pixel = float_column(frame[TILT_SERIES_PIXEL_SIZE], path, TILT_SERIES_PIXEL_SIZE)
    names = frame[TOMO].astype(str).tolist()
    centres = {t: tuple((s / 2 * p).tolist()) for t, s, p in zip(names, size, pixel, strict=True)}
    voxel_sizes = {}
    if "rlnTomoTomogramBinning" in frame:
        binning = float_column(frame["rlnTomoTomogramBinning"], path, "rlnTomoTomogramBinning")
        voxel_sizes = {t: float(p * b) for t, p, b in zip(names, pixel, binning, strict=True)}
    return centres, voxel_sizes


def write_relion4(table: ParticleTable, path: Path, context: FormatContext) -> None:
    frame = _common_columns(table, path, context)
    for i, c in enumerate(ABSOLUTE):
        frame[c] = table.coords[:, i]
    optics = None
    if context.voxel_size:
        # Coordinates in pixels of the stated size: RELION and copick read them as tilt-series pixels.
        frame["rlnOpticsGroup"] = np.ones(len(table), dtype=np.int64)
        optics = {"rlnOpticsGroup": [1], "rlnOpticsGroupName": ["opticsGroup1"],
                  TILT_SERIES_PIXEL_SIZE: [float(context.voxel_size)]}
    _write(frame, path, optics)


def write_relion5(table: ParticleTable, path: Path, context: FormatContext) -> None:
    voxel_size = context.need_voxel_size(path, "RELION 5")
    centres = (
        np.stack([_centre_angst(context, t, voxel_size, path) for t in table.tomo]) if len(table) else np.zeros((0, 3))
    )
    angst = table.coords * voxel_size - centres
    frame = _common_columns(table, path, context)
    for i, c in enumerate(CENTRED):
        frame[c] = angst[:, i]
    _write(frame, path)


def _common_columns(table: ParticleTable, path: Path, context: FormatContext) -> dict:
    frame = {TOMO: table.tomo}
    if table.has_angles:
        for i, c in enumerate(ANGLES):
            frame[c] = np.nan_to_num(table.angles[:, i], nan=0.0)
    frame[CLASS_NUMBER] = class_numbers(table, context.classes, path)
    frame[CLASS_NAME] = table.class_name
    if table.has_scores:
        frame[SCORE] = np.nan_to_num(table.score, nan=0.0)
    return frame


def _write(columns: dict, path: Path, optics: dict | None = None) -> None:
    import pandas as pd
    import starfile

    frame = pd.DataFrame(columns)
    # Coordinates first, as RELION lists them.
    first = [c for c in (*ABSOLUTE, *CENTRED) if c in frame]
    frame = frame[[TOMO, *first, *[c for c in frame.columns if c not in first and c != TOMO]]]
    names = [str(v) for c in (TOMO, CLASS_NAME) for v in frame[c]]
    unreadable = sorted({v for v in names if v.lower().lstrip("+-") == "nan"})
    if unreadable:
        raise InputError(path, f"STAR readers take the name {unreadable[0]!r} for a missing value: rename it")
    quote = any(_NEEDS_QUOTES.search(v) or not v for v in names)
    with atomic_path(path) as tmp:
        blocks = {"particles": frame} if optics is None else {"optics": pd.DataFrame(optics), "particles": frame}
        starfile.write(blocks, tmp, overwrite=True, float_format="%.6f", quote_all_strings=quote)


def _particle_block(path: Path):
    import pandas as pd
    import starfile

    try:
        blocks = starfile.read(path, always_dict=True, parse_as_string=list(STRING_COLUMNS))
    except Exception as err:  # starfile raises many kinds on malformed text
        raise InputError(path, f"not a readable STAR file ({type(err).__name__}: {err})") from None
    optics = blocks.get("optics") if isinstance(blocks.get("optics"), pd.DataFrame) else None
    tables = [b for name, b in blocks.items() if isinstance(b, pd.DataFrame) and name != "optics"
              and any(c in b for c in (*ABSOLUTE, *CENTRED))]
    if not tables:
        raise InputError(path, "STAR file holds no particle table (no loop with coordinates)")
    # Several particle tables (one per tomogram, as some tools write them): all of them, in order.
    return (tables[0] if len(tables) == 1 else pd.concat(tables, ignore_index=True)), optics


def _tomo_names(frame, path: Path) -> list[str]:
    if TOMO in frame:
        return frame[TOMO].astype(str).tolist()
    if "rlnMicrographName" in frame:
        return [_strip_suffix(Path(str(n)).name) for n in frame["rlnMicrographName"]]
    return [Path(path).stem] * len(frame)


def _strip_suffix(name: str) -> str:
    for suffix in (".tomostar", ".mrc", ".rec", ".st"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name
