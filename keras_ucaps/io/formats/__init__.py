"""Particle-table formats: pick one by name or by the file's suffix.

=============  ==========  ==============================================
name           suffix      what
=============  ==========  ==============================================
``csv``        .csv        our CSV, voxels
``relion4``    .star       RELION 4 / Warp STAR, voxels (read: any STAR)
``relion5``    (.star)     RELION 5 STAR, Å from the tomogram centre
``deepfinder`` .xml        DeepFinder object list, voxels
``copick``     .json, dir  copick picks, Å
=============  ==========  ==============================================
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

from keras_ucaps.errors import InputError
from keras_ucaps.io.formats import copick, csv, deepfinder_xml, star
from keras_ucaps.io.formats.common import FormatContext
from keras_ucaps.io.particles import ParticleTable


@dataclasses.dataclass(frozen=True)
class TableFormat:
    name: str
    suffixes: tuple[str, ...]
    read: Callable[[Path, FormatContext], ParticleTable]
    write: Callable[[ParticleTable, Path, FormatContext], None]


FORMATS = {
    f.name: f
    for f in (
        TableFormat("csv", (".csv",), csv.read, csv.write),
        TableFormat("relion4", (".star",), star.read, star.write_relion4),
        TableFormat("relion5", (), star.read, star.write_relion5),
        TableFormat("deepfinder", (".xml",), deepfinder_xml.read, deepfinder_xml.write),
        TableFormat("copick", (".json",), copick.read, copick.write),
    )
}


def format_for(path: str | os.PathLike, name: str | None = None) -> TableFormat:
    """The format called ``name``, else the one the path's suffix names.

    A path without a suffix (or an existing folder) is a copick folder.
    """
    if name is not None:
        if name not in FORMATS:
            raise InputError(name, f"unknown table format (known: {', '.join(FORMATS)})")
        return FORMATS[name]
    path = Path(path)
    suffix = path.suffix.lower()
    if path.is_dir() or not suffix:
        return FORMATS["copick"]
    for fmt in FORMATS.values():
        if suffix in fmt.suffixes:
            return fmt
    raise InputError(path, f"cannot tell the table format from suffix '{suffix}' (use .csv, .star, .xml, .json)")


def read_particles(
    path: str | os.PathLike, fmt: str | None = None, context: FormatContext | None = None
) -> ParticleTable:
    """Read a particle table; the format comes from ``fmt`` or the suffix."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file")
    return format_for(path, fmt).read(path, context or FormatContext())


def write_particles(
    table: ParticleTable, path: str | os.PathLike, fmt: str | None = None, context: FormatContext | None = None
) -> Path:
    """Write a particle table atomically; the format comes from ``fmt`` or the suffix."""
    path = Path(path)
    format_for(path, fmt).write(table, path, context or FormatContext())
    return path


__all__ = ["FORMATS", "FormatContext", "TableFormat", "format_for", "read_particles", "write_particles"]
