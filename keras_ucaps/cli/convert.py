"""keras-ucaps convert: particle tables from any format to any other."""

from __future__ import annotations

from pathlib import Path

import click

from keras_ucaps.cli.common import FiniteFloat, reports_input_errors, table_format_choice, voxel_size_option


@click.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("destination", type=click.Path(path_type=Path))
@click.option("--from", "from_format", type=table_format_choice, help="Input format (default: from the suffix).")
@click.option("--to", "to_format", type=table_format_choice, help="Output format (default: from the suffix).")
@voxel_size_option
@click.option("--tomogram", type=click.Path(path_type=Path),
              help="A tomogram the coordinates refer to: gives its size (RELION 5) and voxel size.")
@click.option("--tomogram-size", nargs=3, type=FiniteFloat(min=0, min_open=True), default=None, metavar="X Y Z",
              help="Tomogram size in voxels (may be fractional: bin-1 size / binning), for RELION 5's centred "
                   "coordinates and Warp's fractional ones.")
@click.option("--tomograms-star", type=click.Path(path_type=Path),
              help="RELION 5 tomograms.star: each tomogram's centre (rlnTomoSizeX/Y/Z, rlnTomoTiltSeriesPixelSize) "
                   "and, with rlnTomoTomogramBinning, the voxel size.")
@click.option("--classes", "classes_path", type=click.Path(path_type=Path),
              help="Class registry (JSON) mapping class numbers to names.")
@click.option("--class-name", default=None, help="Class of every particle when the input names none.")
@reports_input_errors
def convert(source, destination, from_format, to_format, voxel_size, tomogram, tomogram_size, tomograms_star,
            classes_path, class_name):
    """Convert the particle table SOURCE into DESTINATION.

    Formats: csv (voxels), relion4 (RELION 4 / Warp STAR, voxels), relion5
    (RELION 5 STAR, Å from the tomogram centre), deepfinder (XML, voxels),
    copick (JSON picks in Å; a folder for several tomograms or classes).
    """
    from keras_ucaps.classes import ClassRegistry
    from keras_ucaps.cli.common import resolve_voxel_size
    from keras_ucaps.errors import InputError
    from keras_ucaps.io import FormatContext, read_particles, write_particles
    from keras_ucaps.io.formats.star import read_tomograms_star
    from keras_ucaps.io.mrc import read_volume

    centres = None
    if tomograms_star is not None:
        centres, voxel_sizes = read_tomograms_star(tomograms_star)
        stated = sorted(set(voxel_sizes.values()))
        if voxel_size is None and len(stated) == 1:
            voxel_size = stated[0]
        elif voxel_size is None and len(stated) > 1:
            raise InputError(tomograms_star, "tomograms of several voxel sizes: give --voxel-size")
        elif stated and not any(abs(s - voxel_size) <= 1e-3 * max(s, voxel_size) for s in stated):
            raise InputError(tomograms_star, f"states tomograms at {', '.join(f'{s:g}' for s in stated)} Å per voxel "
                                             f"(pixel size × binning), but --voxel-size is {voxel_size:g} Å: "
                                             "leave --voxel-size out, or give the one the file states")

    if tomogram is not None:
        volume = read_volume(tomogram, mmap=True, check_finite=False)
        if voxel_size is not None or volume.voxel_size is not None:
            voxel_size = resolve_voxel_size(volume.voxel_size, voxel_size, tomogram)
        if tomogram_size and any(abs(a - b) > 1e-6 for a, b in zip(tomogram_size, volume.shape[::-1], strict=True)):
            raise InputError("--tomogram-size", f"{' '.join(f'{v:g}' for v in tomogram_size)} differs from "
                                                f"{tomogram}'s {' '.join(str(v) for v in volume.shape[::-1])} (x y z)")
        tomogram_size = tomogram_size or tuple(volume.shape[::-1])
    context = FormatContext(
        voxel_size=voxel_size,
        tomogram_size=tuple(tomogram_size) if tomogram_size else None,
        tomogram_centres=centres,
        classes=ClassRegistry.load(classes_path) if classes_path else None,
        default_class=class_name,
        voxel_size_from=str(tomogram) if tomogram is not None and voxel_size is None else None,
    )
    table = read_particles(source, from_format, context)
    write_particles(table, destination, to_format, context)
    click.echo(f"wrote {len(table)} particles ({len(table.tomograms)} tomograms, "
               f"classes {', '.join(table.classes) or '-'}) to {destination}")
