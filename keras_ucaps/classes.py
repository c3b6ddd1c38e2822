"""The class registry: particle class names, label ids and radii.

Label 0 is always background; particle classes are numbered from 1. Radii are
kept in Å (a property of the molecule) and converted to voxels for a given
voxel size. The registry is saved as JSON beside every dataset and model::

    {"version": 1,
     "classes": [{"name": "ribosome", "label": 1, "radius": 130.0}, ...]}
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from keras_ucaps.errors import InputError

REGISTRY_VERSION = 1
BACKGROUND = "background"
MAX_LABEL = 127  # label maps are int8 MRC files


@dataclasses.dataclass(frozen=True)
class ParticleClass:
    """One particle class: its name, label id (≥ 1) and radius in Å."""

    name: str
    label: int
    radius: float


class ClassRegistry:
    """Maps particle class names to label ids and radii.

    Parameters
    ----------
    classes : sequence of ParticleClass
        Distinct names, distinct labels ≥ 1, positive radii (Å).
    source : str, optional
        Where the registry came from, named in error messages.

    Example
    -------
    >>> reg = ClassRegistry.from_radii({"proteasome": 60.0, "ribosome": 130.0})
    >>> reg.label("ribosome"), reg.radius_voxels("ribosome", voxel_size=10.0)
    (2, 13.0)
    """

    def __init__(self, classes: Sequence[ParticleClass], source: str = "class registry"):
        self.source = source
        self.classes = tuple(sorted(classes, key=lambda c: c.label))
        names = [c.name for c in self.classes]
        labels = [c.label for c in self.classes]
        if len(set(names)) != len(names):
            raise InputError(source, f"duplicate class names in {names}")
        if len(set(labels)) != len(labels) or any(label < 1 for label in labels):
            raise InputError(source, f"class labels must be distinct and ≥ 1 (0 is background), got {labels}")
        if any(label > MAX_LABEL for label in labels):
            raise InputError(source, f"class label {max(labels)} does not fit a label map (int8: labels 1 to "
                                     f"{MAX_LABEL})")
        if BACKGROUND in names:
            raise InputError(source, f"'{BACKGROUND}' is reserved for label 0")
        for c in self.classes:
            if not (0 < c.radius < float("inf")):
                raise InputError(source, f"class '{c.name}' needs a positive radius in Å, got {c.radius}")
        self._by_name = {c.name: c for c in self.classes}
        self._by_label = {c.label: c for c in self.classes}

    # --- construction -------------------------------------------------
    @classmethod
    def from_radii(cls, radii: dict[str, float], source: str = "class registry") -> ClassRegistry:
        """Number classes 1..K in the order given, with radii in Å."""
        return cls([ParticleClass(n, i + 1, float(r)) for i, (n, r) in enumerate(radii.items())], source)

    @classmethod
    def from_dict(cls, payload: dict, source: str = "class registry") -> ClassRegistry:
        if not isinstance(payload, dict) or "classes" not in payload:
            raise InputError(source, "not a class registry (no 'classes' list)")
        version = payload.get("version", REGISTRY_VERSION)
        if version > REGISTRY_VERSION:
            raise InputError(source, f"registry version {version} is newer than this keras-ucaps ({REGISTRY_VERSION})")
        try:
            classes = [
                ParticleClass(str(c["name"]), int(c["label"]), float(c["radius"])) for c in payload["classes"]
            ]
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(source, f"each class needs name, label and radius (Å): {err}") from None
        return cls(classes, source)

    @classmethod
    def load(cls, path: str | os.PathLike) -> ClassRegistry:
        from keras_ucaps.io.jsonfile import read_json

        return cls.from_dict(read_json(path), str(path))

    def to_dict(self) -> dict:
        return {
            "version": REGISTRY_VERSION,
            "classes": [dataclasses.asdict(c) for c in self.classes],
        }

    def save(self, path: str | os.PathLike) -> Path:
        from keras_ucaps.io.jsonfile import write_json

        return write_json(path, self.to_dict())

    # --- queries ------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def num_classes(self) -> int:
        """Number of output channels of a model: particle classes plus background."""
        return len(self.classes) + 1

    def __len__(self) -> int:
        return len(self.classes)

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ClassRegistry) and self.classes == other.classes

    def __repr__(self) -> str:
        inner = ", ".join(f"{c.name}={c.label} ({c.radius:g} Å)" for c in self.classes)
        return f"ClassRegistry({inner})"

    def get(self, name: str) -> ParticleClass:
        try:
            return self._by_name[name]
        except KeyError:
            raise InputError(self.source, f"unknown class '{name}' (known: {', '.join(self.names)})") from None

    def label(self, name: str) -> int:
        return self.get(name).label

    def name(self, label: int) -> str:
        if label == 0:
            return BACKGROUND
        try:
            return self._by_label[int(label)].name
        except KeyError:
            raise InputError(self.source, f"unknown class label {label}") from None

    def radius_voxels(self, name: str, voxel_size: float) -> float:
        """Radius of class ``name`` in voxels of ``voxel_size`` Å."""
        return self.get(name).radius / float(voxel_size)

    def check_names(self, names: Iterable[str], source: str) -> None:
        """Raise an InputError naming ``source`` if any name is not registered."""
        unknown = sorted({str(n) for n in names} - set(self._by_name))
        if unknown:
            raise InputError(
                source, f"unknown class {', '.join(map(repr, unknown))} (known: {', '.join(self.names)})"
            )
