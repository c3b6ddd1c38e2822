"""What a trained model needs to be used, carried inside the model's own saved config.

A ``.keras`` file of a keras-ucaps model holds, beside its architecture and weights, a ``metadata`` entry:

- ``classes``: the class registry (names, labels, radii in Å) its outputs follow, label 0 being background;
- ``voxel_size``: the voxel size in Å of the tomograms it was trained on (others are resampled to it);
- ``normalization``: how its training patches were normalised (:mod:`keras_ucaps.data.normalization`);
  prediction normalises tomograms the same way;
- ``patch_size``: the side of its training patches, which sets how prediction tiles the tomogram
  (:mod:`keras_ucaps.models.contract`);
- ``picking``: how its probability maps are turned into particles — per-class score thresholds, the fit
  radius and density weight that split merged blobs (:mod:`keras_ucaps.picking.thresholds`), or None.

``fit`` writes it into every model it saves, so a ``.keras`` file alone is self-describing; a file without
it (saved by keras-ucaps before 2026-12) is read with the ``config.json`` of its run folder, and refused
without one rather than guessed.
"""

from __future__ import annotations

import dataclasses
import math

from keras_ucaps.classes import ClassRegistry
from keras_ucaps.data.normalization import METHODS
from keras_ucaps.errors import InputError

METADATA_VERSION = 1


@dataclasses.dataclass(frozen=True)
class ModelMetadata:
    """What a model needs to be used: its classes, voxel size (Å), normalisation, training patch side and
    picking settings (a thresholds.json payload, or None)."""

    classes: ClassRegistry
    voxel_size: float
    normalization: str
    patch_size: int
    picking: dict | None = None

    def to_dict(self) -> dict:
        return {"version": METADATA_VERSION, "classes": self.classes.to_dict(), "voxel_size": self.voxel_size,
                "normalization": self.normalization, "patch_size": self.patch_size, "picking": self.picking}

    @classmethod
    def from_dict(cls, payload: dict, source: str = "model metadata") -> ModelMetadata:
        """Checked: each field present and sensible, else an :class:`InputError` naming ``source``."""
        if not isinstance(payload, dict):
            raise InputError(source, "model metadata is not a mapping")
        missing = [k for k in ("classes", "voxel_size", "normalization", "patch_size") if payload.get(k) is None]
        if missing:
            raise InputError(source, f"model metadata lacks {', '.join(missing)}")
        if payload.get("version", METADATA_VERSION) > METADATA_VERSION:
            raise InputError(source, f"model metadata version {payload['version']} is newer than this keras-ucaps "
                                     f"reads ({METADATA_VERSION}): upgrade keras-ucaps")
        classes = ClassRegistry.from_dict(payload["classes"], source)
        voxel_size, patch_size = payload["voxel_size"], payload["patch_size"]
        if isinstance(voxel_size, bool) or not isinstance(voxel_size, int | float) or not (
                0 < voxel_size < math.inf):
            raise InputError(source, f"voxel_size {voxel_size!r} is not a size in Å")
        if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1:
            raise InputError(source, f"patch_size {patch_size!r} is not a number of voxels")
        if payload["normalization"] not in METHODS.values():
            raise InputError(source, f"unknown normalization {payload['normalization']!r} (this keras-ucaps knows "
                                     f"{', '.join(sorted(METHODS.values()))})")
        picking = payload.get("picking")
        if picking is not None and not isinstance(picking, dict):
            raise InputError(source, "model metadata's picking settings are not a mapping")
        return cls(classes, float(voxel_size), payload["normalization"], int(patch_size), picking)

    def replace(self, **changes) -> ModelMetadata:
        return dataclasses.replace(self, **changes)
