"""DeepFinder object lists (XML): ``<objlist><object .../></objlist>``.

Each ``object`` has ``tomo_idx``, ``class_label``, ``x``, ``y``, ``z`` (voxels)
and, when known, ``phi``, ``psi``, ``the``: DeepFinder's ZXZ Euler angles
(degrees), read as the intrinsic rotation Z(phi)·X(the)·Z(psi) and converted
to and from our ZYZ (rot, tilt, psi) through the rotation they describe.
Class labels map to names through the class registry. For a lossless round
trip we also write ``tomo_name``, ``class_name`` and ``score`` attributes,
which DeepFinder ignores; without them, a tomogram is named by its index and
``cluster_size`` is read as the score.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from keras_ucaps.errors import InputError
from keras_ucaps.io.atomic import atomic_path
from keras_ucaps.io.formats.common import FormatContext, class_names, class_numbers, convert_euler
from keras_ucaps.io.particles import ParticleTable

NAME = "deepfinder"
REQUIRED = ("tomo_idx", "class_label", "x", "y", "z")


def zyz_to_zxz(angles: np.ndarray) -> np.ndarray:
    """(rot, tilt, psi) ZYZ → (phi, the, psi) ZXZ, degrees, same rotation."""
    return convert_euler(angles, "ZYZ", "ZXZ")


def zxz_to_zyz(angles: np.ndarray) -> np.ndarray:
    """(phi, the, psi) ZXZ → (rot, tilt, psi) ZYZ, degrees, same rotation."""
    return convert_euler(angles, "ZXZ", "ZYZ")


def read(path: Path, context: FormatContext) -> ParticleTable:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise InputError(path, f"not a readable XML file ({err})") from None
    objects = root.findall("object") if root.tag == "objlist" else []
    if root.tag != "objlist":
        raise InputError(path, f"not a DeepFinder object list (root element <{root.tag}>, expected <objlist>)")
    n = len(objects)
    coords, zxz, score = np.zeros((n, 3)), np.full((n, 3), np.nan), np.full(n, np.nan)
    tomo, labels, names = [], [], []
    for i, obj in enumerate(objects):
        missing = [a for a in REQUIRED if a not in obj.attrib]
        if missing:
            raise InputError(path, f"object {i + 1} is missing attribute(s) {', '.join(missing)}")
        coords[i] = [_number(obj, a, path, i) for a in "xyz"]
        zxz[i] = [_number(obj, a, path, i, optional=True) for a in ("phi", "the", "psi")]
        score[i] = _number(obj, "score", path, i, optional=True)
        if np.isnan(score[i]):
            score[i] = _number(obj, "cluster_size", path, i, optional=True)
        tomo.append(obj.get("tomo_name", obj.get("tomo_idx")))
        labels.append(int(_number(obj, "class_label", path, i)))
        names.append(obj.get("class_name"))
    if not all(np.isfinite(coords).ravel()):
        raise InputError(path, "coordinates hold NaN or infinite values")
    registry_names = class_names(labels, context.classes)
    names = [n if n is not None else r for n, r in zip(names, registry_names, strict=True)]
    angles = np.full((n, 3), np.nan)
    known = np.isfinite(zxz).all(axis=1)
    if known.any():
        angles[known] = zxz_to_zyz(zxz[known])
    return ParticleTable.from_columns(coords, names, tomo, angles, score)


def write(table: ParticleTable, path: Path, context: FormatContext) -> None:
    labels = class_numbers(table, context.classes, path)
    tomos = table.tomograms
    if all(t.isdigit() for t in tomos):
        tomo_idx = {t: int(t) for t in tomos}
    else:
        tomo_idx = {t: i for i, t in enumerate(sorted(tomos))}
    known = np.isfinite(table.angles).all(axis=1)
    zxz = np.full((len(table), 3), np.nan)
    if known.any():
        zxz[known] = zyz_to_zxz(table.angles[known])
    root = ET.Element("objlist")
    for i in range(len(table)):
        obj = ET.SubElement(root, "object")
        obj.set("tomo_idx", str(tomo_idx[table.tomo[i]]))
        obj.set("obj_id", str(i))
        obj.set("class_label", str(int(labels[i])))
        for j, axis in enumerate("xyz"):
            obj.set(axis, repr(float(table.coords[i, j])))
        if known[i]:
            for value, name in zip(zxz[i], ("phi", "the", "psi"), strict=True):
                obj.set(name, repr(float(value)))
        if np.isfinite(table.score[i]):
            obj.set("score", repr(float(table.score[i])))
        obj.set("tomo_name", table.tomo[i])
        obj.set("class_name", table.class_name[i])
    ET.indent(root)
    with atomic_path(path) as tmp:
        ET.ElementTree(root).write(tmp, encoding="utf-8", xml_declaration=True)


def _number(obj, name: str, path: Path, row: int, optional: bool = False) -> float:
    value = obj.get(name)
    if value is None or (optional and value in ("None", "nan", "")):
        if optional:
            return np.nan
        raise InputError(path, f"object {row + 1} has no {name}")
    try:
        return float(value)
    except ValueError:
        raise InputError(path, f"object {row + 1}: {name}={value!r} is not a number") from None
