"""keras-ucaps evaluate: score picked particles against the truth."""

from __future__ import annotations

import json
from pathlib import Path

import click

from keras_ucaps.cli.common import reports_input_errors, voxel_size_option


@click.command()
@click.argument("truth", type=click.Path(path_type=Path))
@click.argument("predicted", type=click.Path(path_type=Path))
@click.option("--classes", "classes_path", type=click.Path(path_type=Path),
              help="Class registry with radii (default: classes.json beside PREDICTED, else beside TRUTH).")
@voxel_size_option
@click.option("--tolerance", default=0.5, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="A pick hits a true particle within this fraction of the class radius.")
@click.option("--beta", default=1.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Also report F-beta (the CZII challenge used 4).")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Also write the scores as JSON.")
@reports_input_errors
def evaluate(truth, predicted, classes_path, voxel_size, tolerance, beta, json_path):
    """Match PREDICTED particles to TRUTH one-to-one per tomogram and class; print precision, recall, F1."""
    from keras_ucaps.classes import ClassRegistry
    from keras_ucaps.errors import InputError
    from keras_ucaps.evaluation.matching import evaluate_tables
    from keras_ucaps.io import FormatContext, read_particles
    from keras_ucaps.io.atomic import atomic_path

    if classes_path is None:
        for candidate in (predicted.parent / "classes.json", truth.parent / "classes.json"):
            if candidate.is_file():
                classes_path = candidate
                break
        else:
            raise InputError("--classes", "give the class registry (no classes.json beside the tables)")
    if voxel_size is None:
        raise InputError("--voxel-size", "give the voxel size (Å) the coordinates are in")
    classes = ClassRegistry.load(classes_path)
    context = FormatContext(voxel_size=voxel_size, classes=classes)
    truth_table = read_particles(truth, context=context)
    predicted_table = read_particles(predicted, context=context)
    classes.check_names(truth_table.class_name, str(truth))
    classes.check_names(predicted_table.class_name, str(predicted))
    scores = evaluate_tables(truth_table, predicted_table, classes, voxel_size, tolerance, beta)
    fb = f"f{beta:g}"
    header = f"{'class':>12} {'TP':>6} {'FP':>6} {'FN':>6} {'precision':>9} {'recall':>7} {'F1':>6}"
    header += f" {('F' + format(beta, 'g')):>6}" if beta != 1 else ""
    click.echo(header)
    for name, s in [*scores["classes"].items(), ("micro", scores["micro"])]:
        line = (f"{name:>12} {s['tp']:6d} {s['fp']:6d} {s['fn']:6d} {s['precision']:9.3f} {s['recall']:7.3f} "
                f"{s['f1']:6.3f}")
        click.echo(line + (f" {s[fb]:6.3f}" if beta != 1 else ""))
    m = scores["macro"]
    click.echo(f"{'macro':>12} {'':>6} {'':>6} {'':>6} {m['precision']:9.3f} {m['recall']:7.3f} {m['f1']:6.3f}")
    if json_path:
        with atomic_path(json_path) as tmp:
            tmp.write_text(json.dumps(scores, indent=2) + "\n")
