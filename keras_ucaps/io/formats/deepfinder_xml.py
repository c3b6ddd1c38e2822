"""DeepFinder object lists (XML): ``<objlist><object .../></objlist>``.

Each ``object`` has ``class_label``, ``x``, ``y``, ``z`` (voxels), usually
``tomo_idx`` (DeepFinder's ``Cluster`` step leaves it out; its reader treats it
as optional, and so do we: the tomogram is then named after the file) and, when
known, ``phi``, ``psi``, ``the``: Euler angles (degrees) in the TOM toolbox's
convention, which rotates a reference by Rz(psi)·Rx(the)·Rz(phi). That matrix
is RELION's Euler matrix of the particle, so our ZYZ (rot, tilt, psi) are the
intrinsic ZXZ rotation (-phi, -the, -psi) in ZYZ, as pytom-match-pick and
copick's TOM reader (``em_to_copick_transform``) convert them.
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
REQUIRED = ("class_label", "x", "y", "z")


def zyz_to_zxz(angles: np.ndarray) -> np.ndarray:
    """RELION (rot, tilt, psi) → TOM (phi, the, psi) of the same particle, degrees."""
    return -convert_euler(angles, "ZYZ", "ZXZ")


def zxz_to_zyz(angles: np.ndarray) -> np.ndarray:
    """TOM (phi, the, psi) → RELION (rot, tilt, psi) of the same particle, degrees."""
    return convert_euler(-np.asarray(angles, dtype=np.float64), "ZXZ", "ZYZ")


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
        tomo.append(obj.get("tomo_name", obj.get("tomo_idx", Path(path).stem)))
        label = _number(obj, "class_label", path, i)
        if label != int(label):
            raise InputError(path, f"object {i + 1}: class_label={obj.get('class_label')!r} is not a whole number")
        labels.append(int(label))
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
