"""keras-ucaps predict: probability maps over whole tomograms."""

from __future__ import annotations

from pathlib import Path

import click

from keras_ucaps.cli.common import copick_options, reports_input_errors, voxel_size_option


@click.command()
@click.argument("arguments", nargs=-1, required=True, metavar="[RUN_OR_MODEL] TOMO.mrc...")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder for the maps.")
@click.option("--tile", default=None, type=click.IntRange(8, 1024),
              help="Longest tile side in voxels (default: 160) for models whose outputs see a bounded "
                   "neighbourhood (the UNet); each axis gets the fewest tiles of one length. Models that normalise "
                   "over their whole input (UCaps, UNet with instance norm) take fixed tiles of this side "
                   "(default 128), each voxel from one tile.")
@click.option("--overlap", "margin", default=None, type=click.IntRange(0, 512),
              help="Voxels trusted less at each tile face (default: the receptive radius, at most an eighth of "
                   "a tile; for a local model, at least the receptive radius makes tiles equal one-pass "
                   "prediction).")
@click.option("--batch-size", default=1, show_default=True, type=click.IntRange(1, 1024), help="Tiles per batch.")
@click.option("--pick", "pick_out", default=None, type=click.Path(path_type=Path),
              help="Also pick particles into this table (any format), as `keras-ucaps pick` would, with the "
                   "run's thresholds.json when it has one.")
@click.option("--server", default=None, metavar="HOST:PORT",
              help="Predict on a TensorFlow Serving gRPC endpoint instead of a local model.")
@click.option("--model-name", default=None, help="The served model's name (with --server).")
@click.option("--model-version", default=None, type=click.IntRange(min=1), help="A served version (default: latest).")
@click.option("--concurrency", default=None, type=click.IntRange(1, 1024),
              help="With --server: tile requests in flight at once, so server-side batching has requests to batch "
                   "(default: 8, one batch of the exported batching.config). Results equal sequential prediction.")
@click.option("--tta", is_flag=True,
              help="Test-time augmentation: average the predictions of the 8 axis flips (they keep the missing "
                   "wedge in place); 8× the time.")
@voxel_size_option
@copick_options
@reports_input_errors
def predict(arguments, out, tile, margin, batch_size, pick_out, server, model_name, model_version, concurrency,
            tta, voxel_size, copick_config, copick_runs, copick_voxel_spacing, copick_tomo_type):
    """Predict per-class probability maps (float16 MRC) and a label map for each tomogram.

    keras-ucaps predict RUN_OR_MODEL TOMO.mrc... --out DIR, or, on a TF Serving
    endpoint, keras-ucaps predict --server HOST:8500 --model-name NAME TOMO.mrc... --out DIR.
    With --copick CONFIG the tomograms are the project's runs (maps named RUN_...).
    """
    import sys

    from keras_ucaps.cli.common import open_copick
    from keras_ucaps.errors import InputError
    from keras_ucaps.inference.predict import load_remote, predict_tomogram
    from keras_ucaps.serving.client import ServingError

    arguments = [Path(a) for a in arguments]
    project, runs = open_copick(copick_config, copick_runs, copick_voxel_spacing, copick_tomo_type)
    if project is not None and len(arguments) != (0 if server is not None else 1):
        raise InputError("--copick", "takes the tomograms from the project: give only the run folder or model")
    if server is not None:
        if model_name is None:
            raise InputError("--model-name", "give the served model's name with --server")
        tomograms = arguments
        try:
            loaded = load_remote(server, model_name, model_version, concurrency)
        except ServingError as err:
            raise InputError("--server", str(err)) from None
    else:
        if concurrency is not None:
            raise InputError("--concurrency", "applies to --server only (a local model runs one batch at a time)")
        for option, value in (("--model-name", model_name), ("--model-version", model_version)):
            if value is not None:
                raise InputError(option, "applies to --server only")
        if len(arguments) < 2 and project is None:
            raise InputError("RUN_OR_MODEL", "give a run folder or .keras file, then tomograms (or --server)")
        from keras_ucaps.models.loading import load_trained

        loaded, tomograms = load_trained(arguments[0]), arguments[1:]
    names = [Path(t).stem for t in tomograms] + runs
    # Every input and the table checked before the first tomogram is predicted: a bad second tomogram or table
    # path leaves no maps of the first behind.
    from keras_ucaps.io import read_volume
    from keras_ucaps.io.atomic import check_output

    if pick_out is not None:
        check_output(pick_out)
    for tomogram in tomograms:
        read_volume(tomogram, mmap=True, check_finite=False)
    volumes = {}  # name → the tomogram predicted, for `--pick` (a density weight reads it)
    for name, tomogram in [(Path(t).stem, t) for t in tomograms] + [(r, None) for r in runs]:
        source = volumes[name] = tomogram if tomogram is not None else project.volume(name)
        try:
            files = predict_tomogram(loaded, source, out, name=name, tile=tile, margin=margin, batch_size=batch_size,
                                     voxel_size=voxel_size, progress=sys.stdout.isatty(), tta=tta)
        except ServingError as err:  # a served model failed mid-way
            raise InputError("--server", str(err)) from None
        click.echo(f"{tomogram or name}: wrote " + ", ".join(str(p) for p in files.values()))
    if pick_out is not None:
        from keras_ucaps.cli.pick import pick

        click.get_current_context().invoke(pick, label_maps=[Path(out) / f"{n}_labels.mrc" for n in names],
                                           out=pick_out, table_format=None,
                                           classes_path=Path(out) / "classes.json", min_sizes=(), suppress=0.5,
                                           volumes=volumes, picking=loaded.picking)
