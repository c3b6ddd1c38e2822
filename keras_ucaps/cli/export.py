"""keras-ucaps export: a SavedModel for TensorFlow Serving."""

from __future__ import annotations

from pathlib import Path

import click

from keras_ucaps.cli.common import reports_input_errors


@click.command()
@click.argument("run", metavar="RUN_OR_MODEL", type=click.Path(path_type=Path))
@click.option("--name", required=True, help="Model name under which TF Serving serves it.")
@click.option("--version", default=None, type=click.IntRange(min=1), help="Version number (default: the next).")
@click.option("--base", default="saved_models", show_default=True, type=click.Path(path_type=Path),
              help="TF Serving model base path.")
@click.option("--tile", default=None, type=click.IntRange(min=8, max=1024),
              help="Fixed input side D = H = W of the served model (default: the model's tile contract: 128 for "
                   "whole-input models, else 64 or the training patch).")
@reports_input_errors
def export(run, name, version, base, tile):
    """Export RUN_OR_MODEL to BASE/NAME/VERSION (saved_model.pb + variables/ + assets/config.json) and list it in
    BASE/models.config."""
    import os
    import sys

    from keras_ucaps.errors import InputError

    if "keras" not in sys.modules:  # a SavedModel needs TensorFlow, whatever backend trained the model
        os.environ["KERAS_BACKEND"] = "tensorflow"
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        raise InputError("export", "a SavedModel needs TensorFlow, which is not installed here: pip install "
                                   "tensorflow-cpu==2.21.0, or export the run folder on a machine that has it "
                                   "(runs trained under JAX export unchanged)") from None
    from keras_ucaps.pretrained import model_path
    from keras_ucaps.serving.export import export_saved_model

    run = model_path(run)
    target = export_saved_model(run, base, name, version, tile)
    click.echo(f"exported {target}; {base / 'models.config'} lists it")
