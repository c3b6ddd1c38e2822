"""What the commands share: error reporting, voxel-size and table options.

Every command reports an :class:`~keras_ucaps.errors.InputError` as one line,
``Error: FILE: problem``, and exits with status 2.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from keras_ucaps.errors import InputError

EXIT_BAD_INPUT = 2


class FiniteFloat(click.FloatRange):
    """A float option's type: a finite number within the range given (click's FloatRange lets NaN through,
    since every comparison with NaN is false, and takes infinities)."""

    def convert(self, value, param, ctx):
        import math

        number = click.types.FloatParamType.convert(self, value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return super().convert(number, param, ctx)

    def _describe_range(self) -> str:
        return "finite" if self.min is None and self.max is None else super()._describe_range()


FINITE_FLOAT = FiniteFloat()


def reports_input_errors(command):
    """Turn InputError into a one-line message and exit status 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except InputError as err:
            click.echo(f"Error: {err}", err=True)
            sys.exit(EXIT_BAD_INPUT)

    return wrapper


# Seeds numpy and Keras both take (keras.utils.set_random_seed refuses 2**32 and above, numpy negative seeds).
SEED = click.IntRange(0, 2**32 - 1)

voxel_size_option = click.option(
    "--voxel-size",
    type=FiniteFloat(min=0, min_open=True),
    default=None,
    help="Å per voxel. Read from the tomogram's header when not given; must agree with it when both are.",
)

table_format_choice = click.Choice(["csv", "relion4", "relion5", "deepfinder", "copick"])


def resolve_voxel_size(header: float | None, option: float | None, source) -> float:
    """The voxel size to use, from a header and/or --voxel-size; they must agree (see keras_ucaps.io.mrc)."""
    from keras_ucaps.io.mrc import resolve_voxel_size as resolve  # imported late: --help stays instant

    return resolve(header, option, source)


def choose_tomogram(table, requested: str | None, volume_path: Path, table_path: Path) -> str:
    """Which tomogram of a table a volume is: --tomo, the only one, or the volume's stem."""
    names = table.tomograms
    if requested is not None:
        if requested not in names:
            raise InputError(table_path, f"holds no tomogram '{requested}' (it holds: {', '.join(names)})")
        return requested
    if len(names) <= 1:
        return names[0] if names else ""
    if volume_path.stem in names:
        return volume_path.stem
    raise InputError(table_path, f"holds tomograms {', '.join(names)}: choose one with --tomo")


def copick_options(command):
    """--copick CONFIG with --run, --voxel-spacing and --tomo-type: tomograms from a copick project."""
    options = [
        click.option("--copick", "copick_config", type=click.Path(path_type=Path), default=None,
                     help="A copick project's config JSON: read tomograms (and picks) from it "
                          "(pip install -e '.[copick]')."),
        click.option("--run", "copick_runs", multiple=True, metavar="RUN",
                     help="With --copick: a run to use (repeat; default: every run)."),
        click.option("--voxel-spacing", "copick_voxel_spacing", type=FiniteFloat(min=0, min_open=True),
                     default=None, help="With --copick: the voxel spacing (Å) whose tomograms to read."),
        click.option("--tomo-type", "copick_tomo_type", default="wbp", show_default=True,
                     help="With --copick: the tomogram type (reconstruction) to read."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def open_copick(config: Path | None, runs, voxel_spacing: float | None, tomo_type: str):
    """The copick project and its chosen runs, or (None, []) without --copick."""
    if config is None:
        if runs or voxel_spacing is not None:
            raise InputError("--run" if runs else "--voxel-spacing", "applies with --copick only")
        return None, []
    if voxel_spacing is None:
        raise InputError("--voxel-spacing", "give the voxel spacing (Å) of the copick tomograms to read")
    from keras_ucaps.io.copick_project import CopickProject

    project = CopickProject(config, voxel_spacing, tomo_type)
    return project, project.run_names(runs)
