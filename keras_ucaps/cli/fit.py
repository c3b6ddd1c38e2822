"""keras-ucaps fit: train a 3D-UCaps or 3D-UNet on a patch store."""

from __future__ import annotations

import json
from pathlib import Path

import click

from keras_ucaps.cli.common import SEED, FiniteFloat, reports_input_errors


def _starting_points() -> tuple[str, str]:
    from keras_ucaps.pretrained import STARTING_POINTS

    return STARTING_POINTS["unet"], STARTING_POINTS["ucaps"]


@click.command()
@click.option("--model", "architecture", type=click.Choice(["ucaps", "unet"]), default="ucaps", show_default=True)
@click.option("--data", type=click.Path(path_type=Path),
              help="Patch store from `keras-ucaps patches` (with --resume: the run's own unless given).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Run folder (e.g. runs/NAME).")
@click.option("--epochs", default=100, show_default=True, type=click.IntRange(min=1))
@click.option("--batch-size", default=2, show_default=True, type=click.IntRange(1, 1024))
@click.option("--lr", "learning_rate", default=1e-4, show_default=True, type=FiniteFloat(0, 1, min_open=True))
@click.option("--patience", default=10, show_default=True, type=click.IntRange(min=1),
              help="Epochs without validation improvement before stopping (the rate halves after a third).")
@click.option("--mixed-precision", default="auto", show_default=True,
              type=click.Choice(["auto", "bf16", "fp16", "off"]),
              help="auto: float16 on GPU; on CPU bfloat16 where it has AMX (3x faster), else float32.")
@click.option("--steps-per-epoch", default=None, type=click.IntRange(min=1),
              help="Training batches per epoch (default: one pass over the training patches).")
@click.option("--validation-steps", default=None, type=click.IntRange(min=1),
              help="Validation batches per epoch (default: all validation patches).")
@click.option("--levels", default=None, type=click.Choice(["2", "3"]), help="UCaps encoder levels (default 3).")
@click.option("--encoder-kernel-size", default=None, type=click.Choice(["3", "5"]),
              help="UCaps capsule kernel (default 3; 5 is the paper's ablation).")
@click.option("--dilation", is_flag=True, help="UCaps: dilate the feature extractor (the paper's ablation).")
@click.option("--capsule-init", default=None, type=click.Choice(["reference", "unit"]),
              help="UCaps: how the capsule layers' vote kernels start: unit (default: each capsule's "
                   "input-dependent part of unit length; learns faster) or reference (Glorot, the reference "
                   "code's: the capsules start dominated by their bias).")
@click.option("--normalization", default=None, type=click.Choice(["batch", "instance"]),
              help="UNet: normalise after each 3³ convolution (default: none, as DeepFinder).")
@click.option("--filters", default=None, metavar="F1,F2,F3",
              help="UNet: channels of its three levels (default 32,48,64, DeepFinder's); narrower trains faster.")
@click.option("--reconstruction", default="mse", show_default=True, type=click.Choice(["mse", "bce"]),
              help="UCaps reconstruction loss.")
@click.option("--balance-classes", is_flag=True,
              help="Draw training patches so every particle class is seen equally often (background keeps its "
                   "share): for a small or rare class.")
@click.option("--augment-imaging", is_flag=True,
              help="Also augment what differs between microscopes, each with probability 1/2: anisotropic "
                   "scale 0.9-1.1, blur (sigma 0.3-1 voxel), added noise (sigma 0.05-0.3), gain 0.8-1.25 and "
                   "offset ±0.2.")
@click.option("--folds", default=None, type=click.IntRange(2, 100),
              help="K-fold cross-validation by tomogram: K runs in OUT/fold_K, then the mean and spread.")
@click.option("--init-weights", default=None, metavar="MODEL",
              help="Start from this trained model's weights: a bundled model, a run folder or a .keras file "
                   "(default: the bundled starting point of --model, see --from-scratch). The run takes its "
                   "architecture and options; its class head starts afresh where the store's classes are not the "
                   "model's.")
@click.option("--from-scratch", is_flag=True,
              help="Start from random weights. Without it (and without --init-weights) a new run fine-tunes "
                   "the bundled starting point of --model (unet: {}, ucaps: {}), unless the architecture "
                   "options given build another network.".format(*_starting_points()))
@click.option("--save-every", default=None, type=click.IntRange(min=1), metavar="N",
              help="Also keep the model of every N-th epoch, in OUT/epochs/NN/ (a folder that --model and "
                   "--init-weights take): for learning curves, or to go back to an earlier epoch.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last completed epoch.")
@click.option("--seed", default=0, show_default=True, type=SEED)
@reports_input_errors
def fit(architecture, data, out, epochs, batch_size, learning_rate, patience, mixed_precision, steps_per_epoch,
        validation_steps, levels, encoder_kernel_size, dilation, capsule_init, normalization, filters, reconstruction,
        balance_classes, augment_imaging, folds, init_weights, resume, seed, save_every=None, from_scratch=False):
    """Train a model; writes weights_best.keras, weights_last.keras, config.json, history.csv and logs/ into OUT."""
    import numpy as np

    from keras_ucaps.errors import InputError
    from keras_ucaps.training.fit import FitSettings, write_json
    from keras_ucaps.training.fit import fit as run_fit

    if data is None and not resume:
        raise InputError("--data", "missing: give the patch store from `keras-ucaps patches`")
    if from_scratch and init_weights is not None:
        raise InputError("--from-scratch", "and --init-weights ask for two different starts: give one")
    if from_scratch and resume:
        _check_resumed_from_scratch(out)
    context = click.get_current_context()
    source = None  # read once here, handed to the fit
    if init_weights is not None:
        from keras_ucaps.training.warm_start import read_source, recorded_name

        init_weights = recorded_name(init_weights)
        source = read_source(init_weights)
        if context.get_parameter_source("architecture") != click.core.ParameterSource.COMMANDLINE:
            architecture = source.architecture  # the options below are checked against it
    given_options = {"levels": int(levels) if levels else None,
                     "encoder_kernel_size": int(encoder_kernel_size) if encoder_kernel_size else None,
                     "dilation": dilation or None, "capsule_init": capsule_init, "normalization": normalization,
                     "filters": filters}
    options = {k: v for k, v in given_options.items() if v is not None}
    from keras_ucaps.models import ARCHITECTURES

    for name in options:  # each architecture says which options it takes
        if name not in ARCHITECTURES[architecture].option_names():
            owners = [a for a, cls in ARCHITECTURES.items() if name in cls.option_names()]
            raise InputError("--" + name.replace("_", "-"), f"applies to --model {' or '.join(owners)} only")
    if filters:
        try:
            widths = [int(f) for f in filters.split(",")]
        except ValueError:
            widths = []
        if len(widths) != 3 or min(widths) < 1:
            raise InputError("--filters", f"expected three positive channel counts, e.g. 32,48,64, got {filters!r}")
        options["filters"] = widths
    if init_weights is None and not from_scratch and not resume:
        from keras_ucaps.training.warm_start import default_start, read_source

        init_weights, why = default_start(architecture, options)
        click.echo(why)
        if init_weights is not None:
            source = read_source(init_weights)
    settings = FitSettings(model=architecture, data=str(data or ""), out=str(out), epochs=epochs, batch_size=batch_size,
                           learning_rate=learning_rate, patience=patience, mixed_precision=mixed_precision,
                           steps_per_epoch=steps_per_epoch, validation_steps=validation_steps, seed=seed,
                           model_options=options, reconstruction=reconstruction, balance_classes=balance_classes,
                           augment_imaging=augment_imaging, init_weights=init_weights, save_every=save_every)
    names = {"architecture": "model"}
    given = frozenset(names.get(p, p) for p in context.params
                      if context.get_parameter_source(p) == click.core.ParameterSource.COMMANDLINE
                      and names.get(p, p) in FitSettings.__dataclass_fields__)
    if options and resume:
        given = given | {"model_options"}
    if folds is None:
        best = run_fit(settings, resume=resume, given=given, source=source)
        click.echo(f"best epoch {best.get('epoch')}: " + _format(best))
        return
    results = []
    from keras_ucaps.io.atomic import first_missing

    made = None if resume else first_missing(out)
    for k in range(folds):
        fold_settings = FitSettings(**{**settings.__dict__, "out": str(out / f"fold_{k}"), "folds": folds, "fold": k})
        resume_fold = resume and (out / f"fold_{k}" / "config.json").exists()
        try:
            results.append(run_fit(fold_settings, resume=resume_fold, given=given, source=source))
        except (InputError, OSError):
            if k == 0 and made is not None:  # refused before any fold trained: leave no folder behind
                import shutil

                shutil.rmtree(made, ignore_errors=True)
            raise
        click.echo(f"fold {k}: best epoch {results[-1].get('epoch')}: " + _format(results[-1]))
    keys = sorted({k for r in results for k in r if k.startswith("val_")})
    summary = {k: {"mean": float(np.mean([r[k] for r in results])), "std": float(np.std([r[k] for r in results]))}
               for k in keys}
    write_json(out / "folds.json", {"folds": folds, "per_fold": results, "summary": summary})
    click.echo(f"{folds}-fold cross-validation (mean ± std over folds):")
    for k, v in summary.items():
        click.echo(f"  {k}: {v['mean']:.4f} ± {v['std']:.4f}")
    click.echo(json.dumps({"summary": str(out / "folds.json")}))


def _check_resumed_from_scratch(out: Path) -> None:
    """``--from-scratch --resume`` continues a run begun from scratch; one begun from a model is refused."""
    from keras_ucaps.errors import InputError
    from keras_ucaps.io.jsonfile import read_json

    config = out / "config.json"
    if not config.is_file():
        return  # the fit says there is nothing to resume
    settings = read_json(config)
    start = settings.get("fit", {}).get("init_weights") if isinstance(settings, dict) else None
    if start is not None:
        raise InputError("--from-scratch", f"the run in {out} started from {start}: a resumed run keeps its start")


def _format(logs: dict) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in sorted(logs.items()) if k.startswith("val_"))
