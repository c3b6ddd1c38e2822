"""A copick project as a source of tomograms and particles, and a place to write picks.

copick (``pip install -e '.[copick]'``) describes a project by a config JSON:
runs (one tomogram each, at several voxel spacings and reconstruction types,
stored as OME-Zarr) and picks per object, user and session. This module reads
tomograms and picks through copick's own API and writes picks back as a session
of user ``keras-ucaps``: each run's picks are prepared before anything is
stored, and when storing one fails the run's picks of that session are deleted
and what the session held before is stored again, so a run holds all of a write
or none of it. The session replaces whatever that user and session held in the
run (no stale objects stay).

Coordinates: copick locations are Å from the first voxel; a pick's position is
its location plus the translation of its transform (``full_positions``); its
rotation is RELION's Euler matrix (see ``keras_ucaps.io.formats.copick``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from keras_ucaps.errors import InputError
from keras_ucaps.io.formats.common import matrix_to_zyz
from keras_ucaps.io.formats.copick import USER_ID, copick_names, unplaceholder_scores
from keras_ucaps.io.mrc import Volume, read_ome_zarr
from keras_ucaps.io.particles import ParticleTable

INSTALL_HINT = "needs copick: pip install -e '.[copick]'"


class CopickProject:
    """Runs of a copick project at one voxel spacing and tomogram type.

    Parameters
    ----------
    config : path-like
        The project's config JSON.
    voxel_spacing : float
        Which voxel spacing (Å) of each run to read.
    tomo_type : str
        Which reconstruction (e.g. ``wbp``, ``denoised``) to read.
    """

    def __init__(self, config: str | Path, voxel_spacing: float, tomo_type: str):
        try:
            import copick
        except ImportError:
            raise InputError("--copick", INSTALL_HINT) from None
        self.config = Path(config)
        if not self.config.is_file():
            raise InputError(self.config, "no such file")
        try:
            self.root = copick.from_file(str(self.config))
        except Exception as err:  # copick raises pydantic, JSON and OS errors alike
            raise InputError(self.config, f"not a readable copick config ({type(err).__name__}: "
                                          f"{str(err).splitlines()[0]})") from None
        self.voxel_spacing = float(voxel_spacing)
        self.tomo_type = tomo_type

    def run_names(self, requested: Sequence[str] = ()) -> list[str]:
        """The runs asked for (all runs when none are), each checked to exist."""
        names = [r.name for r in self.root.runs]
        unknown = [r for r in requested if r not in names]
        if unknown:
            raise InputError("--run", f"{self.config} has no run {unknown[0]!r} (runs: {', '.join(names) or 'none'})")
        chosen = list(requested) or names
        if not chosen:
            raise InputError(self.config, "the project has no runs")
        return chosen

    def volume(self, run_name: str) -> Volume:
        """The run's tomogram at this voxel spacing and type, read through copick's zarr store."""
        where = f"{self.config}: run {run_name}"
        run = self.root.get_run(run_name)
        spacing = run.get_voxel_spacing(self.voxel_spacing) if run is not None else None
        if spacing is None:
            found = sorted(v.voxel_size for v in run.voxel_spacings) if run is not None else []
            raise InputError(where, f"has no voxel spacing {self.voxel_spacing:g} Å (has {found or 'none'}): "
                                    "use --voxel-spacing")
        tomogram = spacing.get_tomogram(self.tomo_type)
        if tomogram is None:
            types = sorted(t.tomo_type for t in spacing.tomograms)
            raise InputError(where, f"has no tomogram of type {self.tomo_type!r} at {self.voxel_spacing:g} Å "
                                    f"(has {types or 'none'}): use --tomo-type")
        volume = read_ome_zarr(tomogram.zarr(), source=f"{where} ({self.tomo_type})")
        if volume.voxel_size is None or abs(volume.voxel_size / spacing.voxel_size - 1) > 1e-3:
            volume.voxel_size = float(spacing.voxel_size)  # the project's statement wins over missing metadata
        return volume

    def particles(self, run_name: str, class_names: Sequence[str], user_id: str | None,
                  session_id: str | None) -> ParticleTable:
        """The run's picks of these classes (copick object names) by one user and session."""
        run = self.root.get_run(run_name)
        objects = copick_names(class_names, self.config)
        tables = []
        for class_name in class_names:
            for picks in run.get_picks(object_name=objects[class_name], user_id=user_id, session_id=session_id):
                tables.append(self._table(picks, run_name, class_name))
        if not tables:
            raise InputError(f"{self.config}: run {run_name}",
                             f"no picks of {', '.join(objects.values())} by user {user_id or 'any'}, session "
                             f"{session_id or 'any'} (see --user-id, --session-id)")
        return ParticleTable.concat(tables)

    def _table(self, picks, run_name: str, class_name: str) -> ParticleTable:
        positions = picks.full_positions()
        _, transforms = picks.numpy()
        n = len(positions)
        angles = np.full((n, 3), np.nan)
        trusted = picks.meta.trust_orientation is not False
        if n and trusted:
            angles = matrix_to_zyz(transforms[:, :3, :3], invert=True).reshape(n, 3)
        scores = unplaceholder_scores(picks.scores(), trusted, with_matrices=True)  # copick stores a matrix always
        return ParticleTable.from_columns(np.asarray(positions).reshape(n, 3) / self.voxel_spacing, class_name,
                                          run_name, angles, scores, picks.instance_ids())

    def new_session_id(self) -> str:
        """A session number that user keras-ucaps has not used in any run."""
        used = {p.session_id for run in self.root.runs for p in run.get_picks(user_id=USER_ID)}
        numbers = [int(s) for s in used if str(s).isdigit()]
        return str(max(numbers, default=-1) + 1)

    def write_particles(self, table: ParticleTable, session_id: str) -> dict[str, int]:
        """Store each run's picks as session ``session_id`` of user keras-ucaps; a run gets all or nothing."""
        from scipy.spatial.transform import Rotation

        known = {o.name for o in self.root.pickable_objects}
        objects = copick_names(table.classes, self.config)
        missing = sorted({objects[c] for c in table.classes} - known)
        if missing:
            raise InputError(self.config, f"the project has no pickable object {missing[0]!r} (objects: "
                                          f"{', '.join(sorted(known))}): add it to the config")
        counts = {}
        for run_name in table.tomograms:
            run = self.root.get_run(run_name)
            if run is None:
                raise InputError(self.config, f"has no run {run_name!r} for the picks of tomogram {run_name}")
        for run_name in table.tomograms:
            run = self.root.get_run(run_name)
            rows = table.where(tomo=run_name)
            staged = []
            for class_name in rows.classes:
                part = rows.where(class_name=class_name)
                transforms = np.tile(np.eye(4), (len(part), 1, 1))
                trusted = bool(np.isfinite(part.angles).all()) and len(part) > 0
                if trusted:
                    transforms[:, :3, :3] = Rotation.from_euler("ZYZ", part.angles, degrees=True).inv().as_matrix()
                scores = np.where(np.isfinite(part.score), part.score, 1.0)
                staged.append((objects[class_name], part.coords * self.voxel_spacing, transforms,
                               part.instance, scores, trusted))
            old = {p.pickable_object_name: _snapshot(p) for p in run.get_picks(user_id=USER_ID, session_id=session_id)}
            try:
                for obj, *content in staged:
                    _store(run, obj, session_id, *content)
            except BaseException:
                run.delete_picks(user_id=USER_ID, session_id=session_id)
                for obj, content in old.items():  # put back what this session held before
                    _store(run, obj, session_id, *content)
                raise
            for obj in set(old) - {obj for obj, *_ in staged}:
                run.delete_picks(object_name=obj, user_id=USER_ID, session_id=session_id)
            counts[run_name] = len(rows)
        return counts


def _snapshot(picks) -> tuple:
    positions, transforms = picks.numpy()
    return positions, transforms, picks.instance_ids(), picks.scores(), picks.meta.trust_orientation is not False


def _store(run, obj: str, session_id: str, positions, transforms, instances, scores, trusted: bool) -> None:
    picks = run.new_picks(obj, session_id, USER_ID, exist_ok=True)
    picks.meta.trust_orientation = trusted
    picks.from_numpy(positions, transforms, instances, scores)
