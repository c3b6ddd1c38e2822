"""RELION / Warp STAR particle tables (read and written with ``starfile``).

RELION 4 and Warp: ``rlnCoordinateX/Y/Z`` are voxels of the tomogram named by
``rlnTomoName`` (Warp's ``rlnMicrographName`` is accepted, its ``.tomostar``
suffix removed).

RELION 5: ``rlnCenteredCoordinateX/Y/ZAngst`` are Å from the tomogram's
centre. keras-ucaps puts the centre at ``size / 2`` voxels along each axis
(voxel i's centre at i; for a 200-voxel axis the centre is voxel 100), as
pytom-match-pick and RELION 5's own importers do::

    x_angst = (x_voxel - size_x / 2) * voxel_size

Angles are ``rlnAngleRot/Tilt/Psi`` (ZYZ, degrees). The class is
``rlnClassNumber`` (mapped to names through the class registry) and, for a
lossless round trip, ``ucapsClassName``; the score is
``rlnAutopickFigureOfMerit``. Unknown labels are kept by RELION. STAR has no
"unknown": in a table where only some particles have angles or scores, the
others are written as 0 (RELION's reading of a missing angle).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from keras_ucaps.errors import InputError
from keras_ucaps.io.atomic import atomic_path
from keras_ucaps.io.formats.common import (
    FormatContext,
    class_names,
    class_numbers,
    float_column,
)
from keras_ucaps.io.particles import ParticleTable

ABSOLUTE = ("rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ")
CENTRED = ("rlnCenteredCoordinateXAngst", "rlnCenteredCoordinateYAngst", "rlnCenteredCoordinateZAngst")
ANGLES = ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")
CLASS_NUMBER = "rlnClassNumber"
CLASS_NAME = "ucapsClassName"
SCORE = "rlnAutopickFigureOfMerit"
TOMO = "rlnTomoName"
STRING_COLUMNS = (TOMO, CLASS_NAME, "rlnMicrographName")
# STAR values that would read as syntax unless quoted.
_NEEDS_QUOTES = re.compile(r"^(_|#|\$|'|\"|data_|loop_|save_|stop_|global_)|\s", re.IGNORECASE)


def read(path: Path, context: FormatContext) -> ParticleTable:
    """Read RELION 4, RELION 5 or Warp particles; the coordinate columns tell which."""
    frame = _particle_block(path)
    n = len(frame)
    tomo = _tomo_names(frame, path)
    if all(c in frame for c in ABSOLUTE):
        coords = np.stack([float_column(frame[c], path, c) for c in ABSOLUTE], axis=1)
    elif all(c in frame for c in CENTRED):
        voxel_size = context.need_voxel_size(path, "RELION 5")
        angst = np.stack([float_column(frame[c], path, c) for c in CENTRED], axis=1)
        centres = np.stack([context.size_of(t, path, "RELION 5") / 2 for t in tomo]) if n else np.zeros((0, 3))
        coords = angst / voxel_size + centres
    else:
        raise InputError(path, f"STAR table is missing coordinate columns {', '.join(ABSOLUTE)} "
                               f"(RELION 4/Warp) or {', '.join(CENTRED)} (RELION 5)")
    angles = np.full((n, 3), np.nan)
    for i, c in enumerate(ANGLES):
        if c in frame:
            angles[:, i] = float_column(frame[c], path, c, allow_nan=True)
    score = float_column(frame[SCORE], path, SCORE, allow_nan=True) if SCORE in frame else None
    if CLASS_NAME in frame:
        names = frame[CLASS_NAME].astype(str).tolist()
    elif CLASS_NUMBER in frame:
        names = class_names(float_column(frame[CLASS_NUMBER], path, CLASS_NUMBER).astype(int), context.classes)
    elif context.default_class is not None:
        names = [context.default_class] * n
    else:
        raise InputError(path, f"STAR table is missing column {CLASS_NUMBER} (or give a default class)")
    return ParticleTable.from_columns(coords, names, tomo, angles, score)


def write_relion4(table: ParticleTable, path: Path, context: FormatContext) -> None:
    frame = _common_columns(table, path, context)
    for i, c in enumerate(ABSOLUTE):
        frame[c] = table.coords[:, i]
    _write(frame, path)


def write_relion5(table: ParticleTable, path: Path, context: FormatContext) -> None:
    voxel_size = context.need_voxel_size(path, "RELION 5")
    centres = (
        np.stack([context.size_of(t, path, "RELION 5") / 2 for t in table.tomo]) if len(table) else np.zeros((0, 3))
    )
    angst = (table.coords - centres) * voxel_size
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


def _write(columns: dict, path: Path) -> None:
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
        starfile.write({"particles": frame}, tmp, overwrite=True, float_format="%.6f", quote_all_strings=quote)


def _particle_block(path: Path):
    import pandas as pd
    import starfile

    try:
        blocks = starfile.read(path, always_dict=True, parse_as_string=list(STRING_COLUMNS))
    except Exception as err:  # starfile raises many kinds on malformed text
        raise InputError(path, f"not a readable STAR file ({type(err).__name__}: {err})") from None
    frames = [b for b in blocks.values() if isinstance(b, pd.DataFrame)]
    for name in ("particles", ""):
        block = blocks.get(name)
        if isinstance(block, pd.DataFrame):
            return block
    for block in frames:
        if any(c in block for c in (*ABSOLUTE, *CENTRED)):
            return block
    raise InputError(path, "STAR file holds no particle table (no loop with coordinates)")


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
