"""CSV particle tables: one row per particle, coordinates in voxels.

Columns: ``tomo, class_name, x, y, z`` and, when known, ``rot, tilt, psi``
(ZYZ, degrees), ``score`` and ``instance_id`` (copick's instance, written when
any is set). ``tomo`` may be left out; it then defaults to
the file's stem; ``class_name`` may be left out when a default class is given.
Extra columns are ignored.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from keras_ucaps.errors import InputError
from keras_ucaps.io.atomic import atomic_path
from keras_ucaps.io.formats.common import FormatContext, float_column, require_columns
from keras_ucaps.io.particles import ParticleTable

NAME = "csv"
ANGLES = ("rot", "tilt", "psi")


def read(path: Path, context: FormatContext) -> ParticleTable:
    import pandas as pd

    try:
        # Everything as text, no "NA" guessing: a tomogram may be called "NULL" or "nan".
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise InputError(path, f"not a readable CSV table ({str(err).splitlines()[0]})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    _check_row_lengths(path)
    if "class_name" not in frame and context.default_class is not None:
        frame["class_name"] = context.default_class
    require_columns(frame.columns, ("class_name", "x", "y", "z"), path, "CSV table")
    n = len(frame)
    coords = np.stack([float_column(frame[c], path, c) for c in "xyz"], axis=1) if n else np.zeros((0, 3))
    angles = np.full((n, 3), np.nan)
    for i, c in enumerate(ANGLES):
        if c in frame:
            angles[:, i] = float_column(frame[c].replace("", "nan"), path, c, allow_nan=True)
    score = float_column(frame["score"].replace("", "nan"), path, "score", allow_nan=True) if "score" in frame else None
    tomo = frame["tomo"].tolist() if "tomo" in frame else Path(path).stem
    instance = None
    if "instance_id" in frame:
        instance = float_column(frame["instance_id"].replace("", "0"), path, "instance_id")
        if (instance != np.round(instance)).any():
            raise InputError(path, "column instance_id holds a value that is not a whole number")
    if (frame["class_name"] == "").any():
        raise InputError(path, f"column class_name is empty in row {int((frame['class_name'] == '').argmax()) + 1}")
    return ParticleTable.from_columns(coords, frame["class_name"].tolist(), tomo, angles, score, instance)


def _check_row_lengths(path: Path) -> None:
    """Refuse a row with fewer fields than the header (pandas pads it with empty values)."""
    import csv as stdlib_csv

    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        rows = (r for r in stdlib_csv.reader(f) if r)
        header = next(rows, [])
        for number, row in enumerate(rows, start=1):
            if len(row) < len(header):
                raise InputError(path, f"row {number} has {len(row)} values, the header names {len(header)} "
                                       "columns (a cut-off file?)")


def write(table: ParticleTable, path: Path, context: FormatContext) -> None:
    import pandas as pd

    columns = {"tomo": table.tomo, "class_name": table.class_name}
    for i, c in enumerate("xyz"):
        columns[c] = table.coords[:, i]
    if table.has_angles:
        for i, c in enumerate(ANGLES):
            columns[c] = table.angles[:, i]
    if table.has_scores:
        columns["score"] = table.score
    if table.instance.any():
        columns["instance_id"] = table.instance
    with atomic_path(path) as tmp:
        pd.DataFrame(columns).to_csv(tmp, index=False)
