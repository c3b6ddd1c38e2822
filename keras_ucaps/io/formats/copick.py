"""copick picks (JSON): one file per tomogram ("run") and class ("object").

A picks file holds ``pickable_object_name``, ``run_name``, ``user_id``,
``session_id`` and ``points``: each with ``location`` {x, y, z} in Å from the
tomogram's first voxel (voxel i at i × voxel size), an optional 4×4
``transformation_`` and a ``score``. The rotation part of ``transformation_`` is
``Rotation.from_euler("ZYZ", (rot, tilt, psi), degrees=True).inv()`` (RELION's
angles rotate particle onto reference; copick's matrix maps object onto
tomogram). Points with unknown angles carry no ``transformation_``.

A path ending in ``.json`` is one picks file (one tomogram, one class). Any
other path is a folder laid out as copick does:
``FOLDER/ExperimentRuns/RUN/Picks/USER_SESSION_OBJECT.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from keras_ucaps.errors import InputError
from keras_ucaps.io.atomic import atomic_path
from keras_ucaps.io.formats.common import FormatContext, matrix_to_zyz
from keras_ucaps.io.jsonfile import read_json
from keras_ucaps.io.particles import ParticleTable

NAME = "copick"
USER_ID = "keras-ucaps"
SESSION_ID = "0"


def read(path: Path, context: FormatContext) -> ParticleTable:
    voxel_size = context.need_voxel_size(path, "copick")
    path = Path(path)
    if path.is_dir():
        files = sorted(path.rglob("*.json"))
        tables = [_read_file(f, voxel_size) for f in files if _is_picks(f)]
        if not tables:
            raise InputError(path, "folder holds no copick picks files")
        return ParticleTable.concat(tables)
    return _read_file(path, voxel_size)


def write(table: ParticleTable, path: Path, context: FormatContext) -> None:
    voxel_size = context.need_voxel_size(path, "copick")
    path = Path(path)
    groups = [(t, c) for t in table.tomograms for c in table.classes if len(table.where(tomo=t, class_name=c))]
    if path.suffix.lower() == ".json":
        if len(groups) > 1:
            raise InputError(
                path, f"a copick .json file holds one tomogram and one class, the table has {len(groups)} pairs: "
                "give a folder instead"
            )
        groups = groups or [("", "")]
        _write_file(table, path, voxel_size, *groups[0])
        return
    for tomo, class_name in groups:
        out = path / "ExperimentRuns" / tomo / "Picks" / f"{USER_ID}_{SESSION_ID}_{class_name}.json"
        _write_file(table.where(tomo=tomo, class_name=class_name), out, voxel_size, tomo, class_name)


def _is_picks(path: Path) -> bool:
    try:
        payload = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return False
    return isinstance(payload, dict) and "points" in payload and "pickable_object_name" in payload


def _read_file(path: Path, voxel_size: float) -> ParticleTable:
    payload = read_json(path)
    for key in ("pickable_object_name", "points"):
        if not isinstance(payload, dict) or key not in payload:
            raise InputError(path, f"copick picks file is missing '{key}'")
    points = payload["points"] or []
    n = len(points)
    coords, angles, score = np.zeros((n, 3)), np.full((n, 3), np.nan), np.full(n, np.nan)
    for i, point in enumerate(points):
        try:
            location = point["location"]
            coords[i] = [float(location[a]) for a in "xyz"]
        except (KeyError, TypeError, ValueError):
            raise InputError(path, f"point {i + 1} has no numeric location x, y, z") from None
        matrix = point.get("transformation_")
        if matrix is not None:
            matrix = np.asarray(matrix, dtype=np.float64)
            if matrix.shape != (4, 4):
                raise InputError(path, f"point {i + 1}: transformation_ is not 4×4")
            coords[i] += matrix[:3, 3]
            angles[i] = matrix_to_zyz(matrix[:3, :3], invert=True)
        if point.get("score") is not None:
            score[i] = float(point["score"])
    if not np.isfinite(coords).all():
        raise InputError(path, "point locations hold NaN or infinite values")
    run = payload.get("run_name") or path.parent.parent.name or path.stem
    return ParticleTable.from_columns(coords / voxel_size, payload["pickable_object_name"], run, angles, score)


def _write_file(table: ParticleTable, path: Path, voxel_size: float, tomo: str, class_name: str) -> None:
    from scipy.spatial.transform import Rotation

    points = []
    for i in range(len(table)):
        x, y, z = (table.coords[i] * voxel_size).tolist()
        point = {"location": {"x": x, "y": y, "z": z}, "instance_id": 0}
        if np.isfinite(table.angles[i]).all():
            matrix = np.eye(4)
            matrix[:3, :3] = Rotation.from_euler("ZYZ", table.angles[i], degrees=True).inv().as_matrix()
            point["transformation_"] = matrix.tolist()
        if np.isfinite(table.score[i]):
            point["score"] = float(table.score[i])
        points.append(point)
    payload = {
        "pickable_object_name": class_name,
        "user_id": USER_ID,
        "session_id": SESSION_ID,
        "run_name": tomo,
        "voxel_spacing": voxel_size,
        "unit": "angstrom",
        "points": points,
        "trust_orientation": bool(table.has_angles),
    }
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=1) + "\n")
