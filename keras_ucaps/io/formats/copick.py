"""copick picks (JSON): one file per tomogram ("run") and class ("object").

A picks file holds ``pickable_object_name``, ``run_name``, ``user_id``,
``session_id``, ``trust_orientation`` and ``points``: each with ``location``
{x, y, z} in Å from the tomogram's first voxel (voxel i at i × voxel size), an
optional 4×4 ``transformation_`` (object → tomogram; its translation is a shift
in Å added to the location), an ``instance_id`` and a ``score``. The rotation
part is ``Rotation.from_euler("ZYZ", (rot, tilt, psi), degrees=True).inv()``,
which is RELION's Euler matrix (copick's ``relion_rows_to_poses``).

Reading: ``trust_orientation: false`` means the matrices are placeholders, so
the angles are unknown; in such a file a score of exactly 1.0 on every point that
also carries a matrix is copick's default for manual picks and is read as unknown too (our own
files leave out the matrix of a particle without angles, so their scores of 1.0 stay). A file without
``run_name`` belongs to the run its folder names in copick's layout, else to a
run named after the file. A matrix that is not a rotation, a malformed matrix,
location or score is an error naming the file and the point.

A path ending in ``.json`` is one picks file (one tomogram, one class). Any
other path is a folder laid out as copick does:
``FOLDER/ExperimentRuns/RUN/Picks/USER_SESSION_OBJECT.json``; copick splits the
file name at ``_``, so object names may hold neither ``_`` nor spaces: such
class names are mapped as copick's ``sanitize_name`` does (``large_ribosome`` →
``large-ribosome``), with a warning. A folder is written whole: every file is
staged first and moved in only when all were written, and picks that an
earlier write of ours (user ``keras-ucaps``, session ``0``) left in it and this
one does not rewrite are removed; other users' picks stay.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path

import numpy as np

from keras_ucaps.errors import InputError, KerasUcapsWarning
from keras_ucaps.io.atomic import check_output, current_umask, scratch_folder
from keras_ucaps.io.formats.common import FormatContext, matrix_to_zyz
from keras_ucaps.io.jsonfile import read_json, write_json
from keras_ucaps.io.particles import ParticleTable

NAME = "copick"
USER_ID = "keras-ucaps"
SESSION_ID = "0"


def read(path: Path, context: FormatContext) -> ParticleTable:
    voxel_size = context.need_voxel_size(path, "copick")
    path = Path(path)
    if path.is_dir():
        tables = []
        for f in sorted(path.rglob("*.json")):
            payload = read_json(f)
            if _is_picks(payload) or f.parent.name == "Picks":
                tables.append(_read_file(f, payload, voxel_size))
        if not tables:
            raise InputError(path, "folder holds no copick picks files")
        return ParticleTable.concat(tables)
    return _read_file(path, read_json(path), voxel_size)


def write(table: ParticleTable, path: Path, context: FormatContext) -> None:
    voxel_size = context.need_voxel_size(path, "copick")
    path = Path(path)
    objects = copick_names(table.classes, path)
    groups = [(t, c) for t in table.tomograms for c in table.classes if len(table.where(tomo=t, class_name=c))]
    if path.suffix.lower() == ".json":
        if len(groups) > 1:
            raise InputError(
                path, f"a copick .json file holds one tomogram and one class, the table has {len(groups)} pairs: "
                "give a folder instead"
            )
        tomo, class_name = groups[0] if groups else ("", "")
        payload = _payload(table.where(tomo=tomo, class_name=class_name), voxel_size, tomo,
                           objects.get(class_name, class_name))
        write_json(path, payload, indent=1)
        return
    files = {
        Path("ExperimentRuns", tomo, "Picks", f"{USER_ID}_{SESSION_ID}_{objects[c]}.json"):
            _payload(table.where(tomo=tomo, class_name=c), voxel_size, tomo, objects[c])
        for tomo, c in groups
    }
    _write_folder(path, files)


def copick_names(classes, path) -> dict[str, str]:
    """copick object name of each class: copick's sanitize_name rule (no ``_``, spaces or path characters)."""
    names = {c: re.sub(r'[<>:"/\\|?*\x00-\x1F\x7F\s_]', "-", c).strip("-") for c in classes}
    for c, name in names.items():
        if not name:
            raise InputError(path, f"class name {c!r} has no character that copick allows in an object name")
        if name != c:
            warnings.warn(f"{path}: copick object names allow no '_', spaces or path characters: class {c} → {name}",
                          KerasUcapsWarning, stacklevel=3)
    clashes = sorted({n for n in names.values() if list(names.values()).count(n) > 1})
    if clashes:
        raise InputError(path, f"classes {sorted(c for c in names if names[c] == clashes[0])} all become copick "
                               f"object {clashes[0]!r}: rename them")
    return names


def _write_folder(path: Path, files: dict[Path, dict]) -> None:
    """Stage every file, then move them in together; remove our earlier picks that this write does not renew.
    Every destination is checked first, so a write that cannot complete changes nothing."""
    check_output(path, folder=True)
    for rel in files:
        check_output(path / rel)
    with scratch_folder(path.parent) as staging:
        for rel, payload in files.items():
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            (staging / rel).write_text(json.dumps(payload, indent=1) + "\n")
        if not path.exists():
            os.chmod(staging, 0o777 & ~current_umask())  # a temporary folder is made 0700
            os.rename(staging, path)
            return
        ours = set(path.glob(f"ExperimentRuns/*/Picks/{USER_ID}_{SESSION_ID}_*.json"))
        for rel in files:
            (path / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / rel, path / rel)
        for stale in ours - {path / rel for rel in files}:
            stale.unlink(missing_ok=True)


def _is_picks(payload) -> bool:
    return isinstance(payload, dict) and "points" in payload and "pickable_object_name" in payload


def _read_file(path: Path, payload, voxel_size: float) -> ParticleTable:
    for key in ("pickable_object_name", "points"):
        if not isinstance(payload, dict) or key not in payload:
            raise InputError(path, f"copick picks file is missing '{key}'")
    points = payload["points"] or []
    if not isinstance(points, list):
        raise InputError(path, "'points' is not a list")
    trusted = payload.get("trust_orientation", True) is not False
    n = len(points)
    coords, angles, score = np.zeros((n, 3)), np.full((n, 3), np.nan), np.full(n, np.nan)
    instance = np.zeros(n, dtype=np.int64)
    for i, point in enumerate(points):
        try:
            location = point["location"]
            coords[i] = [float(location[a]) for a in "xyz"]
        except (KeyError, TypeError, ValueError):
            raise InputError(path, f"point {i + 1} has no numeric location x, y, z") from None
        matrix = point.get("transformation_")
        if matrix is not None:
            matrix = _matrix(matrix, path, i)
            coords[i] += matrix[:3, 3]
            if trusted:
                angles[i] = matrix_to_zyz(matrix[:3, :3], invert=True)
        score[i] = _optional_number(point, "score", path, i)
        instance[i] = _optional_number(point, "instance_id", path, i, whole=True) if point.get(
            "instance_id") is not None else 0
    if not np.isfinite(coords).all():
        raise InputError(path, "point locations hold NaN or infinite values")
    with_matrices = all(isinstance(p, dict) and p.get("transformation_") is not None for p in points)
    score = unplaceholder_scores(score, trusted, with_matrices)
    run = payload.get("run_name")
    if not run:
        in_layout = path.parent.name == "Picks" and path.parent.parent.parent.name == "ExperimentRuns"
        run = path.parent.parent.name if in_layout else path.stem
    return ParticleTable.from_columns(coords / voxel_size, str(payload["pickable_object_name"]), str(run), angles,
                                      score, instance)


def unplaceholder_scores(scores: np.ndarray, trusted: bool, with_matrices: bool) -> np.ndarray:
    """Scores, or NaN where they are copick's defaults for a manual pick: ``trust_orientation`` false, a
    placeholder matrix on every point and a score of exactly 1.0 on every point."""
    if not trusted and with_matrices and len(scores) and (scores == 1.0).all():
        return np.full(len(scores), np.nan)
    return scores


def _matrix(value, path: Path, row: int) -> np.ndarray:
    try:
        matrix = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(path, f"point {row + 1}: transformation_ is not a 4×4 matrix of numbers") from None
    if matrix.shape != (4, 4) or not np.isfinite(matrix).all():
        raise InputError(path, f"point {row + 1}: transformation_ is not a 4×4 matrix of numbers")
    rotation = matrix[:3, :3]
    if not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-4) or np.linalg.det(rotation) < 0:
        raise InputError(path, f"point {row + 1}: transformation_ is not a rotation (its 3×3 part is not orthonormal "
                               "with determinant 1)")
    return matrix


def _optional_number(point: dict, key: str, path: Path, row: int, whole: bool = False) -> float:
    value = point.get(key)
    if value is None:
        return np.nan
    try:
        number = float(value)
        if isinstance(value, bool) or (whole and number != int(number)):
            raise ValueError
    except (TypeError, ValueError):
        raise InputError(path, f"point {row + 1}: {key} {value!r} is not a {'whole ' if whole else ''}number") from None
    return number


def _payload(table: ParticleTable, voxel_size: float, tomo: str, object_name: str) -> dict:
    from scipy.spatial.transform import Rotation

    points = []
    for i in range(len(table)):
        x, y, z = (table.coords[i] * voxel_size).tolist()
        point = {"location": {"x": x, "y": y, "z": z}, "instance_id": int(table.instance[i])}
        if np.isfinite(table.angles[i]).all():
            matrix = np.eye(4)
            matrix[:3, :3] = Rotation.from_euler("ZYZ", table.angles[i], degrees=True).inv().as_matrix()
            point["transformation_"] = matrix.tolist()
        if np.isfinite(table.score[i]):
            point["score"] = float(table.score[i])
        points.append(point)
    return {
        "pickable_object_name": object_name,
        "user_id": USER_ID,
        "session_id": SESSION_ID,
        "run_name": tomo,
        "voxel_spacing": voxel_size,
        "unit": "angstrom",
        "points": points,
        "trust_orientation": bool(table.has_angles),
    }
