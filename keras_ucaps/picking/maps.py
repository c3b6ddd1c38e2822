"""Particle tables from predicted maps, in memory or on disk, with a model's picking settings.

``predict`` writes, per tomogram NAME, ``NAME_labels.mrc`` (argmax, 0 background) and ``NAME_prob_CLASS.mrc``
(each class's probability) beside ``classes.json``; :func:`pick_from_maps` reads them a slab at a time,
:func:`pick_from_arrays` takes the same maps as arrays. Both pick with
:func:`keras_ucaps.picking.cluster.pick_particles` and keep the picks that score at least their class's
threshold (:class:`PickingSettings`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from keras_ucaps.classes import ClassRegistry
from keras_ucaps.errors import InputError
from keras_ucaps.io.particles import ParticleTable
from keras_ucaps.picking.cluster import FIT_RADIUS


@dataclasses.dataclass(frozen=True)
class PickingSettings:
    """How maps become picks.

    Attributes:
        thresholds: class name → the least score a pick of that class keeps (classes not named keep all).
        fit_radius: merged blobs are split at balls of this fraction of the class radius.
        density_weight: weight of the tomogram's density beside the probability when blobs are split (0: none).
        suppress: picks of a class closer than this fraction of its radius are merged.
        min_sizes: class name → smallest component kept, in voxels (default: a fifth of the class's sphere).
    """

    thresholds: dict = dataclasses.field(default_factory=dict)
    fit_radius: float = FIT_RADIUS
    density_weight: float = 0.0
    suppress: float = 0.5
    min_sizes: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def from_payload(cls, payload: dict | None, **overrides) -> PickingSettings:
        """Settings from a thresholds.json payload (None: the defaults); ``overrides`` that are not None win."""
        payload = payload or {}
        settings = cls(thresholds=dict(payload.get("thresholds", {})),
                       fit_radius=payload.get("fit_radius", FIT_RADIUS),
                       density_weight=payload.get("density_weight", 0.0))
        return dataclasses.replace(settings, **{k: v for k, v in overrides.items() if v is not None})


def kept_above(table: ParticleTable, thresholds: dict) -> ParticleTable:
    """The picks scoring at least their class's threshold (picks without a score, and classes without a
    threshold, are kept)."""
    limits = np.array([thresholds.get(name, 0.0) for name in table.class_name], dtype=float)
    return table[~(table.score < limits)]


def pick_from_arrays(labels, probabilities: dict, classes: ClassRegistry, voxel_size: float,
                     settings: PickingSettings, *, tomogram=None, name: str = "") -> ParticleTable:
    """Picks from a (z, y, x) label map and class name → (z, y, x) probability maps (arrays or on-disk arrays),
    thresholded; ``tomogram``: the (z, y, x) volume they were predicted from, which a density weight needs."""
    from keras_ucaps.picking.cluster import pick_particles

    density = None
    if settings.density_weight > 0:
        density = _density(tomogram, labels, name, settings.density_weight)
    table = pick_particles(labels, classes, voxel_size, probabilities=probabilities, min_size=settings.min_sizes,
                           suppress=settings.suppress, tomo=name, fit_radius=settings.fit_radius, density=density,
                           density_weight=settings.density_weight)
    return kept_above(table, settings.thresholds)


def pick_from_maps(label_map: str | Path, classes: ClassRegistry, settings: PickingSettings,
                   tomogram=None) -> tuple[ParticleTable, tuple[int, int, int], float]:
    """One tomogram's picks from its label map file and the probability maps beside it; also its (z, y, x)
    shape and voxel size. ``tomogram``: the file or volume the maps were predicted from (for a density weight)."""
    from keras_ucaps.io import read_volume
    from keras_ucaps.io.diskarray import DiskArray

    labels = read_volume(label_map)
    if labels.voxel_size is None:
        raise InputError(label_map, "label map has no voxel size")
    present = set()
    step = max(1, (64 * 2**20) // max(1, labels.data[0].size))
    for z in range(0, labels.shape[0], step):  # a slab at a time: label maps can be larger than memory
        present.update(int(v) for v in np.unique(labels.data[z:z + step]))
    unknown = sorted(present - {0, *(c.label for c in classes.classes)})
    if unknown:
        raise InputError(label_map, f"holds labels {unknown} that the class registry does not know")
    name = table_name(label_map)
    probabilities = {}
    paths = {c.name: Path(label_map).parent / f"{name}_prob_{c.name}.mrc" for c in classes.classes}
    missing = [p for p in paths.values() if not p.is_file()]
    if missing and len(missing) < len(paths):  # all or none: a class without its map would be scored otherwise
        raise InputError(missing[0], "missing beside the other probability maps of "
                                     f"{Path(label_map).name} (predict again)")
    for c in classes.classes:
        path = paths[c.name]
        if path.is_file():
            prob = read_volume(path)
            if prob.shape != labels.shape:
                raise InputError(path, f"probability map {prob.shape} does not match the label map {labels.shape}")
            probabilities[c.name] = DiskArray.over(prob.data)  # read a slab at a time, not kept mapped
    if settings.density_weight > 0 and tomogram is None:
        raise _needs_tomogram(label_map, name, settings.density_weight)
    if settings.density_weight > 0:
        volume = read_volume(tomogram) if isinstance(tomogram, str | Path) else tomogram
        if tuple(volume.shape) != tuple(labels.shape):
            raise InputError(tomogram if isinstance(tomogram, str | Path) else label_map,
                             f"tomogram {tuple(volume.shape)} does not match the label map {labels.shape} "
                             f"of {Path(label_map).name}")
        tomogram = volume.data
    table = pick_from_arrays(labels.data, probabilities, classes, labels.voxel_size, settings, tomogram=tomogram,
                             name=name)
    return table, labels.shape, labels.voxel_size


def table_name(label_map: str | Path) -> str:
    """The tomogram's name in a particle table: NAME for NAME_labels.mrc."""
    return Path(label_map).name.removesuffix(".mrc").removesuffix("_labels")


def _needs_tomogram(source, name: str, weight: float) -> InputError:
    return InputError(source, f"density weight {weight:g} (from --density-weight or the thresholds file) needs the "
                              f"tomogram it was predicted from: give --tomogram {name or 'NAME'}.mrc, or "
                              f"--density-weight 0")


def _density(tomogram, labels, name: str, weight: float):
    from keras_ucaps.picking.density import ParticleDensity

    if tomogram is None:
        raise _needs_tomogram(f"{name}_labels.mrc" if name else "tomogram", name, weight)
    return ParticleDensity.measure(np.asarray(tomogram, dtype=np.float32), labels)
