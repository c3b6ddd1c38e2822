"""The particle table: where each particle is, what it is, and how sure we are.

One row per particle. Coordinates are x, y, z in voxels of the tomogram, with
voxel (0, 0, 0) centred at 0 and x the fastest array axis, so particle i lies in
``volume[round(z), round(y), round(x)]``. Euler angles are ZYZ in degrees
(RELION's rot, tilt, psi); NaN where unknown. Scores are NaN where unknown.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

import numpy as np


@dataclasses.dataclass(eq=False)
class ParticleTable:
    """Columns of a particle table, all of length N.

    Attributes
    ----------
    tomo : numpy.ndarray of str, shape (N,)
        Tomogram name of each particle.
    class_name : numpy.ndarray of str, shape (N,)
        Class name of each particle.
    coords : numpy.ndarray of float64, shape (N, 3)
        x, y, z in voxels.
    angles : numpy.ndarray of float64, shape (N, 3)
        rot, tilt, psi (ZYZ, degrees); NaN where unknown.
    score : numpy.ndarray of float64, shape (N,)
        Confidence of each pick; NaN where unknown.
    instance : numpy.ndarray of int64, shape (N,)
        Which instance (filament, membrane...) a particle belongs to, as copick's
        ``instance_id``; 0 where unassigned.
    """

    tomo: np.ndarray
    class_name: np.ndarray
    coords: np.ndarray
    angles: np.ndarray
    score: np.ndarray
    instance: np.ndarray | None = None

    def __post_init__(self):
        self.coords = np.asarray(self.coords, dtype=np.float64).reshape(-1, 3)
        n = len(self.coords)
        self.tomo = _strings(self.tomo, n)
        self.class_name = _strings(self.class_name, n)
        self.angles = np.asarray(self.angles, dtype=np.float64).reshape(n, 3)
        self.score = np.asarray(self.score, dtype=np.float64).reshape(n)
        self.instance = np.zeros(n, dtype=np.int64) if self.instance is None else (
            np.asarray(self.instance, dtype=np.int64).reshape(n))

    @classmethod
    def from_columns(
        cls,
        coords: np.ndarray | Sequence[Sequence[float]],
        class_name: str | Iterable[str],
        tomo: str | Iterable[str] = "",
        angles: np.ndarray | None = None,
        score: np.ndarray | Sequence[float] | None = None,
        instance: np.ndarray | Sequence[int] | None = None,
    ) -> ParticleTable:
        """Build a table; scalar ``class_name``/``tomo`` apply to every row."""
        coords = np.asarray(coords, dtype=np.float64).reshape(-1, 3)
        n = len(coords)
        return cls(
            tomo=[tomo] * n if isinstance(tomo, str) else list(tomo),
            class_name=[class_name] * n if isinstance(class_name, str) else list(class_name),
            coords=coords,
            angles=np.full((n, 3), np.nan) if angles is None else angles,
            score=np.full(n, np.nan) if score is None else score,
            instance=instance,
        )

    @classmethod
    def empty(cls) -> ParticleTable:
        return cls.from_columns(np.zeros((0, 3)), [], [])

    @classmethod
    def concat(cls, tables: Sequence[ParticleTable]) -> ParticleTable:
        if not tables:
            return cls.empty()
        return cls(
            tomo=np.concatenate([t.tomo for t in tables]),
            class_name=np.concatenate([t.class_name for t in tables]),
            coords=np.concatenate([t.coords for t in tables]),
            angles=np.concatenate([t.angles for t in tables]),
            score=np.concatenate([t.score for t in tables]),
            instance=np.concatenate([t.instance for t in tables]),
        )

    def __len__(self) -> int:
        return len(self.coords)

    def __getitem__(self, rows) -> ParticleTable:
        """Select rows with a boolean mask, an index array or a slice."""
        return ParticleTable(
            tomo=self.tomo[rows],
            class_name=self.class_name[rows],
            coords=self.coords[rows],
            angles=self.angles[rows],
            score=self.score[rows],
            instance=self.instance[rows],
        )

    def __repr__(self) -> str:
        return (
            f"ParticleTable({len(self)} particles, tomograms {self.tomograms}, "
            f"classes {self.counts()})"
        )

    def counts(self) -> dict[str, int]:
        """Number of particles of each class."""
        names, counts = np.unique(self.class_name, return_counts=True)
        return {str(n): int(c) for n, c in zip(names, counts, strict=True)}

    @property
    def has_angles(self) -> bool:
        return bool(np.isfinite(self.angles).any())

    @property
    def has_scores(self) -> bool:
        return bool(np.isfinite(self.score).any())

    @property
    def tomograms(self) -> list[str]:
        """Tomogram names in order of first appearance."""
        return list(dict.fromkeys(self.tomo.tolist()))

    @property
    def classes(self) -> list[str]:
        """Class names in order of first appearance."""
        return list(dict.fromkeys(self.class_name.tolist()))

    def where(self, *, tomo: str | None = None, class_name: str | None = None) -> ParticleTable:
        """Rows of one tomogram and/or one class."""
        keep = np.ones(len(self), dtype=bool)
        if tomo is not None:
            keep &= self.tomo == tomo
        if class_name is not None:
            keep &= self.class_name == class_name
        return self[keep]

    def replace(self, **changes) -> ParticleTable:
        return dataclasses.replace(self, **changes)

    def sorted(self) -> ParticleTable:
        """Rows ordered by tomogram, class, z, y, x (a canonical order for comparisons)."""
        order = np.lexsort((self.coords[:, 0], self.coords[:, 1], self.coords[:, 2], self.class_name, self.tomo))
        return self[order]


def _strings(values, n: int) -> np.ndarray:
    out = np.asarray([str(v) for v in values], dtype=object) if len(values) else np.zeros(0, dtype=object)
    if len(out) != n:
        raise ValueError(f"column of length {len(out)} for a table of {n} rows")
    return out.astype(str) if n else np.zeros(0, dtype="<U1")
