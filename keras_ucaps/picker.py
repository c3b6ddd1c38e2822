"""The Python API: a trained model with everything it needs to pick particles.

>>> import keras_ucaps
>>> picker = keras_ucaps.load("shrec-unet")            # a bundled model, a run folder or a .keras file
>>> picks = picker.pick("tomo.mrc")                    # doctest: +SKIP
>>> picks.coords[:3]                                   # x, y, z in voxels of tomo.mrc  # doctest: +SKIP
>>> maps = picker.predict(volume, voxel_size=10.0)     # a (z, y, x) numpy array  # doctest: +SKIP
>>> maps["1bxn"].shape, maps.labels.shape              # doctest: +SKIP

A volume is a path (MRC, HDF5 or OME-Zarr; its header gives the voxel size), a
:class:`~keras_ucaps.io.mrc.Volume`, or a (z, y, x) numpy array with ``voxel_size`` in Å. A tomogram at another
voxel size than the model's is resampled for prediction and its maps resampled back: maps and picks always
refer to the grid of the volume given. Coordinates in particle tables are x, y, z in voxels of that grid,
from the centre of the first voxel.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from keras_ucaps.classes import ClassRegistry
from keras_ucaps.errors import InputError
from keras_ucaps.io.mrc import Volume
from keras_ucaps.io.particles import ParticleTable
from keras_ucaps.models.loading import LoadedModel, load_trained
from keras_ucaps.picking.maps import PickingSettings


def load(model: str | os.PathLike | None = None) -> Picker:
    """A :class:`Picker` for ``model``: a bundled model's name (``keras_ucaps.pretrained.REGISTRY`` lists them;
    None: the default, ``shrec-unet``), a run folder written by ``keras-ucaps fit``, or a ``.keras`` file saved by
    it."""
    return Picker(load_trained(model))


@dataclasses.dataclass
class ProbabilityMaps:
    """Predicted maps of one tomogram on its own grid.

    Attributes:
        maps: class name → (z, y, x) probability (float32 in memory, float16 memory maps when read from disk).
        labels: (z, y, x) int8 argmax label map, 0 background, each class its registry label.
        classes: the class registry.
        voxel_size: Å per voxel of the tomogram's grid.
        name: the tomogram's name in particle tables.
        folder: where the maps are stored as MRC files (``keras-ucaps pick`` reads them), or None.
    """

    maps: dict
    labels: np.ndarray
    classes: ClassRegistry
    voxel_size: float
    name: str
    folder: Path | None = None

    def __getitem__(self, class_name: str):
        if class_name not in self.maps:
            raise KeyError(f"no class {class_name!r} (classes: {', '.join(self.maps)})")
        return self.maps[class_name]

    @classmethod
    def read(cls, folder, name: str) -> ProbabilityMaps:
        """The maps of tomogram ``name`` that ``keras-ucaps predict`` (or ``predict(out=folder)``) wrote into
        ``folder``, as memory maps, with the ``classes.json`` beside them."""
        from keras_ucaps.io import read_volume

        folder = Path(folder)
        classes = ClassRegistry.load(folder / "classes.json")
        labels = read_volume(folder / f"{name}_labels.mrc", mmap=True, check_finite=False)
        maps = {}
        for c in classes.classes:
            prob = read_volume(folder / f"{name}_prob_{c.name}.mrc", mmap=True, check_finite=False)
            if prob.shape != labels.shape:
                raise InputError(folder / f"{name}_prob_{c.name}.mrc", f"probability map {prob.shape} does not "
                                                                       f"match the label map {labels.shape}")
            maps[c.name] = prob.data
        return cls(maps, labels.data, classes, labels.voxel_size, name, folder)


class Picker:
    """A trained model and what it needs to be used: classes, voxel size, normalisation, tile contract and
    picking settings. Make one with :func:`load`.

    Attributes:
        model: the Keras model (``UNet3D`` or ``UCaps3D``).
        classes: its :class:`~keras_ucaps.classes.ClassRegistry` (names, labels, radii in Å).
        voxel_size: Å per voxel of its training data.
        normalization: how tomograms are normalised before prediction.
        contract: how prediction tiles a tomogram (:class:`~keras_ucaps.models.contract.TileContract`).
        settings: how maps become picks (:class:`~keras_ucaps.picking.maps.PickingSettings`): per-class score
            thresholds, fit radius, density weight. Replace it with ``dataclasses.replace`` to pick otherwise.
    """

    def __init__(self, loaded: LoadedModel, settings: PickingSettings | None = None):
        self.loaded = loaded
        self.settings = settings or PickingSettings.from_payload(loaded.picking)
        self.tolerance = float((loaded.picking or {}).get("tolerance", 0.5))

    model = property(lambda self: self.loaded.model)
    classes = property(lambda self: self.loaded.classes)
    voxel_size = property(lambda self: self.loaded.voxel_size)
    normalization = property(lambda self: self.loaded.normalization)
    contract = property(lambda self: self.loaded.contract)

    def __repr__(self) -> str:
        return (f"Picker({type(self.model).__name__}, classes {', '.join(self.classes.names)}, "
                f"{self.voxel_size:g} Å, from {self.loaded.path})")

    def predict(self, volume, *, voxel_size: float | None = None, name: str | None = None, out=None,
                tta: bool = False, tile: int | None = None, overlap: int | None = None, batch_size: int = 1,
                progress: bool = False) -> ProbabilityMaps:
        """Per-class probability maps and the label map of ``volume``.

        In memory by default (4 × (classes + 1) bytes a voxel while they are made); with ``out``, a folder,
        written there as ``keras-ucaps predict`` writes them (NAME_prob_CLASS.mrc, NAME_labels.mrc,
        classes.json) and returned as memory maps of those files: for tomograms larger than memory.
        ``tta``: average the eight axis flips (eight times the time); ``tile``: the longest tile side;
        ``overlap``: voxels trusted less at each tile face (default: the receptive radius, at most an eighth of a
        tile).
        """
        from keras_ucaps.inference.predict import predict_in_memory, predict_tomogram

        volume, name = _volume(volume, voxel_size, name)
        if out is not None:
            predict_tomogram(self.loaded, volume, out, name=name, tta=tta, tile=tile, margin=overlap,
                             batch_size=batch_size, progress=progress)
            return ProbabilityMaps.read(out, name)
        probabilities, vs = predict_in_memory(self.loaded, volume, tta=tta, tile=tile, margin=overlap,
                                              batch_size=batch_size, progress=progress)
        labels = np.argmax(probabilities, axis=-1).astype(np.int8)
        maps = {c.name: probabilities[..., c.label] for c in self.classes.classes}
        return ProbabilityMaps(maps, labels, self.classes, vs, name)

    def pick(self, volume, *, voxel_size: float | None = None, name: str | None = None, maps=None,
             **predict_options) -> ParticleTable:
        """The particles in ``volume``: x, y, z in voxels of its grid, class, score, tomogram ``name`` (default:
        the file's stem, else "tomogram"), picked with :attr:`settings`. ``maps``: its
        :class:`ProbabilityMaps` when predicted already; else it is predicted with ``predict_options``
        (:meth:`predict`'s ``out``, ``tta``, ``tile``, ``batch_size``, ``progress``)."""
        from keras_ucaps.picking.maps import pick_from_arrays

        volume, name = _volume(volume, voxel_size, name)
        if maps is None:
            maps = self.predict(volume, name=name, **predict_options)
        elif tuple(maps.labels.shape) != volume.shape:
            raise InputError("maps", f"maps of shape {tuple(maps.labels.shape)} do not fit the volume {volume.shape}")
        return pick_from_arrays(maps.labels, maps.maps, self.classes, maps.voxel_size, self.settings,
                                tomogram=volume.data, name=name)

    def evaluate(self, picks, truth, *, voxel_size: float | None = None, tolerance: float = 0.5,
                 beta: float = 1.0, sweep: bool = False) -> dict:
        """Precision, recall and F1 of ``picks`` against ``truth`` (particle tables, or files of any format
        keras-ucaps reads), matched one-to-one per tomogram and class within ``tolerance`` × the class radius.
        ``voxel_size``: Å per voxel of the grid their coordinates refer to (default: the model's). Returns
        ``{"classes": {name: {tp, fp, fn, precision, recall, f1}}, "micro": …, "macro": {precision, recall,
        f1}, "localisation": … (particles found whatever class the picks name), "tomograms": …}``; with
        ``sweep``, also ``thresholds``: per class the best F1 over score thresholds
        and the threshold ``tune`` would choose (as ``keras-ucaps evaluate`` prints them)."""
        from keras_ucaps.evaluation.matching import evaluate_tables, threshold_sweep

        voxel_size = voxel_size or self.voxel_size
        tables = self._tables(picks, truth, voxel_size)
        scores = evaluate_tables(tables[1], tables[0], self.classes, voxel_size, tolerance, beta)
        if sweep:
            scores["thresholds"] = threshold_sweep(tables[1], tables[0], self.classes, voxel_size, tolerance)
        return scores

    def false_picks(self, picks, truth, *, voxel_size: float | None = None, tolerance: float = 0.5) -> ParticleTable:
        """The picks :meth:`evaluate` counts false (matched to no true particle of their class), as a table:
        ``keras-ucaps patches --negatives`` takes it, so that the next ``fit`` learns what not to pick."""
        from keras_ucaps.evaluation.matching import false_picks

        voxel_size = voxel_size or self.voxel_size
        picks, truth = self._tables(picks, truth, voxel_size)
        return false_picks(truth, picks, self.classes, voxel_size, tolerance)

    def _tables(self, picks, truth, voxel_size: float) -> list[ParticleTable]:
        """``picks`` and ``truth`` as tables (files read at ``voxel_size``), their class names checked."""
        from keras_ucaps.io import FormatContext, read_particles

        context = FormatContext(voxel_size=voxel_size, classes=self.classes)
        tables = [t if isinstance(t, ParticleTable) else read_particles(t, context=context) for t in (picks, truth)]
        for table, source in zip(tables, ("picks", "truth"), strict=True):
            self.classes.check_names(table.class_name, source)
        return tables

    def tune(self, volumes, truths, *, voxel_size: float | None = None, tolerance: float = 0.5,
             **predict_options) -> dict:
        """Tune the per-class score thresholds on annotated tomograms, as ``keras-ucaps evaluate --model``
        does: each of ``volumes`` is picked without thresholds (with the other :attr:`settings`), the picks are
        pooled and matched to ``truths`` (tables or files, naming the tomograms as the volumes are named: by
        file stem), and each class gets the middle of its F1 plateau. Sets :attr:`settings`' thresholds and
        returns them; :meth:`save_settings` writes them beside a model."""
        from keras_ucaps.evaluation.matching import threshold_sweep
        from keras_ucaps.io import FormatContext, read_particles

        untuned = dataclasses.replace(self.settings, thresholds={})
        tables, sizes = [], set()
        for given in volumes:
            volume, name = _volume(given, voxel_size, None)
            maps = self.predict(volume, name=name, **predict_options)
            tables.append(Picker(self.loaded, untuned).pick(volume, name=name, maps=maps))
            sizes.add(round(maps.voxel_size, 3))
        if len(sizes) != 1:
            raise InputError("volumes", f"tomograms at several voxel sizes ({', '.join(map(str, sorted(sizes)))} Å): "
                                        "tune on tomograms of one voxel size")
        size = sizes.pop()
        context = FormatContext(voxel_size=size, classes=self.classes)
        truth = ParticleTable.concat([t if isinstance(t, ParticleTable) else read_particles(t, context=context)
                                      for t in truths])
        sweep = threshold_sweep(truth, ParticleTable.concat(tables), self.classes, size, tolerance)
        thresholds = {n: r["tuned_threshold"] for n, r in sweep.items() if r["tuned_threshold"] is not None}
        self.settings = dataclasses.replace(self.settings, thresholds=thresholds)
        self.tolerance = tolerance
        return thresholds

    def save_settings(self, folder) -> Path:
        """Write :attr:`settings` (thresholds, fit radius, density weight) into ``folder/thresholds.json``, which
        ``keras-ucaps pick --model FOLDER`` and :func:`load` read beside the folder's model."""
        from keras_ucaps.picking.thresholds import write_thresholds

        return write_thresholds(folder, {"tolerance": self.tolerance, "thresholds": dict(self.settings.thresholds),
                                         "fit_radius": self.settings.fit_radius,
                                         "density_weight": self.settings.density_weight})


def _volume(volume, voxel_size: float | None, name: str | None) -> tuple[Volume, str]:
    """A :class:`Volume` with a voxel size, and its name, from a path, a Volume or a (z, y, x) array."""
    from keras_ucaps.io import read_volume
    from keras_ucaps.io.mrc import resolve_voxel_size

    if isinstance(volume, str | os.PathLike):
        path = Path(volume)
        volume = read_volume(path)
        name = name or path.stem
    elif isinstance(volume, Volume):
        name = name or (Path(volume.path).stem if volume.path is not None else "tomogram")
    else:
        data = np.asarray(volume)
        if data.ndim != 3:
            raise InputError("volume", f"expected a (z, y, x) array, got shape {data.shape}")
        if voxel_size is None:
            raise InputError("voxel_size", "give the voxel size (Å) of a volume passed as an array")
        if not np.isfinite(data).all():
            raise InputError("volume", "holds NaN or Inf voxels")
        volume = Volume(data, None)
        name = name or "tomogram"
    vs = resolve_voxel_size(volume.voxel_size, voxel_size, volume.path or "volume")
    return dataclasses.replace(volume, voxel_size=vs), name
