"""keras-ucaps targets: sphere label maps from a particle table."""

from __future__ import annotations

from pathlib import Path

import click

from keras_ucaps.cli.common import FiniteFloat, reports_input_errors, table_format_choice, voxel_size_option


@click.command()
@click.argument("table_path", metavar="TABLE", type=click.Path(path_type=Path))
@click.option("--tomogram", required=True, type=click.Path(path_type=Path),
              help="The tomogram the particles lie in: gives the label map's shape, voxel size and origin.")
@click.option("--classes", "classes_path", required=True, type=click.Path(path_type=Path),
              help="Class registry (JSON): label ids and radii in Å.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Label map to write (MRC or HDF5).")
@click.option("--tomo", default=None, help="Which tomogram of the table (default: the only one, or TOMOGRAM's stem).")
@click.option("--format", "table_format", type=table_format_choice, help="Table format (default: from the suffix).")
@click.option("--radius-scale", default=1.0, show_default=True, type=FiniteFloat(0, 10, min_open=True),
              help="Multiply every class radius.")
@voxel_size_option
@reports_input_errors
def targets(table_path, tomogram, classes_path, out, tomo, table_format, radius_scale, voxel_size):
    """Write a sphere label map for the particles of TABLE.

    Each particle becomes a ball of its class's radius holding its class label
    (background 0). Overlapping balls split at the nearest centre; balls
    crossing the border are clipped; centres outside the volume are an error.
    """
    from keras_ucaps.classes import ClassRegistry
    from keras_ucaps.cli.common import choose_tomogram, resolve_voxel_size
    from keras_ucaps.data.targets import sphere_targets
    from keras_ucaps.io import FormatContext, read_particles, write_volume
    from keras_ucaps.io.mrc import read_volume

    volume = read_volume(tomogram, mmap=True)
    voxel_size = resolve_voxel_size(volume.voxel_size, voxel_size, tomogram)
    classes = ClassRegistry.load(classes_path)
    context = FormatContext(voxel_size=voxel_size, tomogram_size=volume.shape[::-1], classes=classes)
    table = read_particles(table_path, table_format, context)
    table = table.where(tomo=choose_tomogram(table, tomo, tomogram, table_path))
    labels = sphere_targets(table, volume.shape, classes, voxel_size, radius_scale=radius_scale,
                            source=str(table_path))
    write_volume(out, labels, voxel_size, origin=volume.origin, start=volume.start, dtype="int8")
    counts = {c.name: int((labels == c.label).sum()) for c in classes.classes}
    click.echo(f"wrote {out}: {len(table)} particles, voxels per class {counts}")
