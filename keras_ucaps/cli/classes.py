"""keras-ucaps classes: write a class registry (names, labels, radii)."""

from __future__ import annotations

from pathlib import Path

import click

from keras_ucaps.cli.common import reports_input_errors


@click.command("classes")
@click.argument("entries", nargs=-1, required=True, metavar="NAME=RADIUS...")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Registry file to write (JSON).")
@reports_input_errors
def classes_command(entries, out):
    """Write a class registry: each NAME=RADIUS (Å) gets labels 1, 2, ... in order.

    Example: keras-ucaps classes proteasome=60 ribosome=130 --out classes.json
    """
    from keras_ucaps.classes import ClassRegistry
    from keras_ucaps.errors import InputError

    radii = {}
    for entry in entries:
        name, sep, radius = entry.partition("=")
        try:
            value = float(radius)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise InputError(entry, "expected NAME=RADIUS with the radius in Å, e.g. ribosome=130")
        if name.strip() in radii:
            raise InputError(entry, f"class {name.strip()} is given twice")
        if not 0 < value < float("inf"):
            raise InputError(entry, "the radius must be a positive number of Å")
        radii[name.strip()] = value
    registry = ClassRegistry.from_radii(radii, source="command line")
    registry.save(out)
    click.echo(f"wrote {out}: {registry}")
