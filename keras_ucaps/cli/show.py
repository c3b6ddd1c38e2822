"""keras-ucaps show: a PNG of orthogonal slices with particles circled."""

from __future__ import annotations

from pathlib import Path

import click

from keras_ucaps.cli.common import reports_input_errors, table_format_choice, voxel_size_option


@click.command()
@click.argument("tomogram", type=click.Path(path_type=Path))
@click.option("--picks", "picks_path", type=click.Path(path_type=Path), help="Particle table to circle.")
@click.option("--classes", "classes_path", type=click.Path(path_type=Path),
              help="Class registry (JSON) giving radii; default: classes.json beside the tomogram, if any.")
@click.option("--out", type=click.Path(path_type=Path), help="PNG to write (default: TOMOGRAM with .png).")
@click.option("--at", "centre", nargs=3, type=int, default=None, metavar="X Y Z",
              help="Where the slices cross, in voxels (default: the centre).")
@click.option("--thickness", default=5, show_default=True, type=click.IntRange(min=1),
              help="Voxels averaged into each slice.")
@click.option("--tomo", default=None, help="Which tomogram of the table (default: the only one, or TOMOGRAM's stem).")
@click.option("--format", "table_format", type=table_format_choice, help="Table format (default: from the suffix).")
@voxel_size_option
@reports_input_errors
def show(tomogram, picks_path, classes_path, out, centre, thickness, tomo, table_format, voxel_size):
    """Write a PNG of TOMOGRAM's xy, xz and yz slices, with picks circled per class."""
    from keras_ucaps.classes import ClassRegistry
    from keras_ucaps.cli.common import choose_tomogram, resolve_voxel_size
    from keras_ucaps.errors import InputError
    from keras_ucaps.evaluation.slices import render_slices
    from keras_ucaps.io import FormatContext, read_particles
    from keras_ucaps.io.mrc import read_volume

    volume = read_volume(tomogram, mmap=True)
    if centre is not None:
        size = volume.shape[::-1]
        if any(not 0 <= c < n for c, n in zip(centre, size, strict=True)):
            raise InputError("--at", f"{' '.join(map(str, centre))} lies outside the {'×'.join(map(str, size))} "
                                     "(x×y×z) volume")
    picks = radii = None
    if classes_path is None and (tomogram.parent / "classes.json").is_file():
        classes_path = tomogram.parent / "classes.json"
    classes = ClassRegistry.load(classes_path) if classes_path else None
    if picks_path is not None:
        vs = resolve_voxel_size(volume.voxel_size, voxel_size, tomogram)
        table = read_particles(picks_path, table_format, FormatContext(voxel_size=vs, tomogram_size=volume.shape[::-1],
                                                                       classes=classes))
        picks = table.where(tomo=choose_tomogram(table, tomo, tomogram, picks_path))
        if classes is not None:
            radii = {c.name: classes.radius_voxels(c.name, vs) for c in classes.classes}
    out = out or tomogram.with_suffix(".png")
    render_slices(volume.data, out, picks=picks, radii=radii, centre_xyz=centre, thickness=thickness)
    click.echo(f"wrote {out}" + (f" with {len(picks)} particles circled" if picks is not None else ""))
