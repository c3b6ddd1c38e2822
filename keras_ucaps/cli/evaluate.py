"""keras-ucaps evaluate: score picked particles against the truth."""

from __future__ import annotations

from pathlib import Path

import click

from keras_ucaps.cli.common import FiniteFloat, reports_input_errors, voxel_size_option


@click.command()
@click.argument("truth", type=click.Path(path_type=Path))
@click.argument("predicted", type=click.Path(path_type=Path))
@click.option("--classes", "classes_path", type=click.Path(path_type=Path),
              help="Class registry with radii (default: classes.json beside PREDICTED, else beside TRUTH).")
@voxel_size_option
@click.option("--tolerance", default=0.5, show_default=True, type=FiniteFloat(min=0, min_open=True),
              help="A pick hits a true particle within this fraction of the class radius.")
@click.option("--beta", default=1.0, show_default=True, type=FiniteFloat(min=0, min_open=True),
              help="Also report F-beta (the CZII challenge used 4).")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Also write the scores as JSON.")
@click.option("--truth-labels", type=click.Path(path_type=Path),
              help="True label map of the (single) tomogram: adds SHREC-style scoring (a pick hits a particle "
                   "when inside its mask) and, with --predictions, voxel-level scores.")
@click.option("--predictions", "predictions_dir", type=click.Path(path_type=Path),
              help="Folder written by `keras-ucaps predict` for this tomogram: voxel-level average precision per "
                   "class and the TP/FP/FN overlay.")
@click.option("--tomogram", type=click.Path(path_type=Path), help="The tomogram, as the report's background.")
@click.option("--report", "report_path", type=click.Path(path_type=Path), help="Write a PNG report.")
@click.option("--model", "model_dir", type=click.Path(path_type=Path),
              help="Run folder of the model that picked: the threshold per class (the middle of its F1 "
                   "plateau) goes to its thresholds.json.")
@click.option("--fit-radius", default=None, type=FiniteFloat(min=0.2, max=1.5),
              help="With --model: the `pick --fit-radius` the picks were made with, recorded in thresholds.json "
                   "for `pick` to use (default: the one the file already records, else none: 1).")
@click.option("--density-weight", default=None, type=FiniteFloat(min=0),
              help="With --model: the `pick --density-weight` the picks were made with, recorded in "
                   "thresholds.json for `pick` to use (default: the one the file already records, else none: 0).")
@click.option("--false-picks", "false_picks_path", type=click.Path(path_type=Path),
              help="Write the picks that match no true particle (any table format, by suffix): give them to "
                   "`patches --negatives` so that the next `fit` learns what not to pick.")
@click.option("--strict", is_flag=True,
              help="Fail (exit 2) instead of warning when the tables cannot be compared: tomograms named "
                   "differently, a truth label map that does not fit the truth table.")
@reports_input_errors
def evaluate(truth, predicted, classes_path, voxel_size, tolerance, beta, json_path, truth_labels, predictions_dir,
             tomogram, report_path, model_dir, strict, fit_radius=None, density_weight=None, false_picks_path=None):
    """Match PREDICTED particles to TRUTH one-to-one per tomogram and class; print precision, recall, F1.

    Also prints the class confusion matrix (localise first, then compare labels)
    and the best score threshold per class.
    """
    from keras_ucaps.classes import ClassRegistry
    from keras_ucaps.errors import InputError
    from keras_ucaps.evaluation.matching import evaluate_tables
    from keras_ucaps.io import FormatContext, read_particles
    from keras_ucaps.io.atomic import check_output
    from keras_ucaps.io.jsonfile import write_json

    for output in (report_path, json_path, false_picks_path):  # before any work or output: an unwritable path
        if output is not None:
            check_output(output)
    if model_dir is not None:
        check_output(Path(model_dir) / "thresholds.json")
    if fit_radius is not None and model_dir is None:
        raise InputError("--fit-radius", "applies with --model only")
    if density_weight is not None and model_dir is None:
        raise InputError("--density-weight", "applies with --model only")

    if classes_path is None:
        for candidate in (predicted.parent / "classes.json", truth.parent / "classes.json"):
            if candidate.is_file():
                classes_path = candidate
                break
        else:
            raise InputError("--classes", "give the class registry (no classes.json beside the tables)")
    from keras_ucaps.io import read_volume
    from keras_ucaps.io.mrc import resolve_voxel_size

    def doubt(source, problem):
        if strict:
            raise InputError(source, problem)
        click.echo(f"Warning: {source}: {problem}", err=True)

    volume = read_volume(tomogram, mmap=True, check_finite=False) if tomogram is not None else None
    if volume is not None:
        voxel_size = resolve_voxel_size(volume.voxel_size, voxel_size, tomogram)
    if voxel_size is None:
        raise InputError("--voxel-size", "give the voxel size (Å) the coordinates are in")
    classes = ClassRegistry.load(classes_path)
    context = FormatContext(voxel_size=voxel_size, classes=classes)
    truth_table = read_particles(truth, context=context)
    predicted_table = read_particles(predicted, context=context)
    classes.check_names(truth_table.class_name, str(truth))
    classes.check_names(predicted_table.class_name, str(predicted))
    common = set(truth_table.tomograms) & set(predicted_table.tomograms)
    if len(predicted_table) and not common:
        doubt(predicted, f"names tomograms {sorted(predicted_table.tomograms)[:3]}, the truth "
                         f"{sorted(truth_table.tomograms)[:3]}: no pick can match")
    elif set(predicted_table.tomograms) - set(truth_table.tomograms):
        doubt(predicted, f"picks in tomograms the truth does not hold: "
                         f"{sorted(set(predicted_table.tomograms) - set(truth_table.tomograms))[:3]}")
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
    found = scores["localisation"]
    click.echo(f"{'any class':>12} {found['tp']:6d} {found['fp']:6d} {found['fn']:6d} {found['precision']:9.3f} "
               f"{found['recall']:7.3f} {found['f1']:6.3f}  (localisation: a particle found, whatever its class)")

    from keras_ucaps.evaluation.matching import shrec_counts, threshold_sweep

    confusion = scores["confusion"]
    names = classes.names
    click.echo("\nconfusion (rows: truth, columns: picked as)")
    click.echo(f"{'':>12} " + " ".join(f"{n:>8}" for n in [*names, "missed"]))
    for t in names:
        click.echo(f"{t:>12} " + " ".join(f"{confusion['matrix'][t][p]:8d}" for p in [*names, "missed"]))
    click.echo(f"{'false':>12} " + " ".join(f"{confusion['false'][p]:8d}" for p in names))
    sweep = scores["thresholds"] = threshold_sweep(truth_table, predicted_table, classes, voxel_size, tolerance)
    click.echo("\nbest score threshold per class: " + ", ".join(
        f"{n} {r['best_threshold']:.3f} (F1 {r['best_f1']:.3f})" for n, r in sweep.items() if r["best_f1"] is not None)
        + "\nthreshold in the middle of the F1 plateau (what --model writes): " + ", ".join(
        f"{n} {r['tuned_threshold']:.3f} (F1 {r['tuned_f1']:.3f})" for n, r in sweep.items()
        if r["tuned_f1"] is not None)
        if any(r["best_f1"] is not None for r in sweep.values()) else "\nno scores to sweep")
    labels_true = labels_predicted = None
    if truth_labels is not None:
        true_map = read_volume(truth_labels)
        resolve_voxel_size(true_map.voxel_size, voxel_size, truth_labels)
        labels_true = true_map.data
        if volume is not None and labels_true.shape != volume.shape:
            raise InputError(truth_labels, f"label map {labels_true.shape} does not match the tomogram "
                                           f"{volume.shape}")
        _check_truth_map(labels_true, truth_table, classes, truth_labels, doubt)
        scores["shrec"] = shrec_counts(labels_true, predicted_table, classes)
        click.echo("SHREC-style (pick inside the particle's mask): " + ", ".join(
            f"{n} F1 {v['f1']:.3f}" for n, v in scores["shrec"].items()))
    if predictions_dir is not None:
        labels_predicted = _voxel_scores(scores, predictions_dir, truth_table, labels_true, classes, truth_labels)
    if model_dir is not None:
        thresholds = {n: r["tuned_threshold"] for n, r in sweep.items()}
        payload = {"tolerance": tolerance, "thresholds": thresholds}
        existing = Path(model_dir) / "thresholds.json"
        if existing.is_file() and (fit_radius is None or density_weight is None):
            from keras_ucaps.picking.thresholds import read_thresholds

            before = read_thresholds(existing)
            fit_radius = before.get("fit_radius") if fit_radius is None else fit_radius
            density_weight = before.get("density_weight") if density_weight is None else density_weight
        if fit_radius is not None:
            payload["fit_radius"] = fit_radius
        if density_weight is not None:
            payload["density_weight"] = density_weight
        from keras_ucaps.picking.thresholds import write_thresholds

        write_thresholds(model_dir, payload)
        click.echo(f"wrote {Path(model_dir) / 'thresholds.json'}")
    from keras_ucaps.io.atomic import atomic_group

    with atomic_group():  # the report, the JSON file and the false picks all, or none
        if false_picks_path is not None:
            from keras_ucaps.evaluation.matching import false_picks
            from keras_ucaps.io import write_particles

            wrong = false_picks(truth_table, predicted_table, classes, voxel_size, tolerance)
            write_particles(wrong, false_picks_path, context=context)
        if report_path is not None:
            from keras_ucaps.evaluation.report import render_report

            background = volume.data if volume is not None else None
            tomo = truth_table.tomograms[0] if truth_table.tomograms else ""
            render_report(report_path, tomogram=background, truth=truth_table.where(tomo=tomo),
                          predicted=predicted_table.where(tomo=tomo),
                          radii={c.name: classes.radius_voxels(c.name, voxel_size) for c in classes.classes},
                          sweep=sweep, true_labels=labels_true, predicted_labels=labels_predicted,
                          title=f"{tomo}: macro F1 {m['f1']:.3f}")
        if json_path:
            write_json(json_path, scores)
    if report_path is not None:
        click.echo(f"wrote {report_path}")
    if false_picks_path is not None:
        click.echo(f"wrote {len(wrong)} false picks to {false_picks_path}")


def _check_truth_map(labels, truth_table, classes, path, doubt) -> None:
    """The truth particles must lie in the map, and mostly on their own class's label."""
    import numpy as np

    from keras_ucaps.errors import InputError

    if not len(truth_table):
        return
    voxel = np.round(truth_table.coords[:, ::-1]).astype(int)  # (z, y, x)
    inside = ((voxel >= 0) & (voxel < np.array(labels.shape))).all(axis=1)
    if not inside.all():
        raise InputError(path, f"{int((~inside).sum())} truth particle(s) lie outside this {labels.shape[::-1]} "
                               "(x×y×z) label map: it belongs to another tomogram")
    found = labels[tuple(voxel.T)]
    expected = np.array([classes.label(n) for n in truth_table.class_name])
    agree = float(np.mean(found == expected))
    if agree < 0.5:
        doubt(path, f"only {agree:.0%} of the truth particles sit on their own class's label in it: is it "
                    "this tomogram's label map?")


def _voxel_scores(scores, predictions_dir, truth_table, labels_true, classes, truth_labels):
    """Voxel-level average precision per class from predict's probability maps."""
    from keras_ucaps.errors import InputError
    from keras_ucaps.evaluation.metrics import average_precision
    from keras_ucaps.io import read_volume

    if labels_true is None:
        raise InputError("--predictions", "voxel-level scores need the true label map (--truth-labels)")
    tomo = truth_table.tomograms[0] if truth_table.tomograms else Path(truth_labels).stem
    label_path = Path(predictions_dir) / f"{tomo}_labels.mrc"
    predicted = read_volume(label_path).data
    if predicted.shape != labels_true.shape:
        raise InputError(label_path, f"shape {predicted.shape} differs from the true labels {labels_true.shape}")
    scores["voxel_ap"] = {}
    for c in classes.classes:
        path = Path(predictions_dir) / f"{tomo}_prob_{c.name}.mrc"
        if path.is_file():
            prob = read_volume(path).data
            if prob.shape != labels_true.shape:
                raise InputError(path, f"shape {prob.shape} differs from the true labels {labels_true.shape}")
            scores["voxel_ap"][c.name] = average_precision(prob, labels_true == c.label)
    click.echo("voxel-level average precision: " + ", ".join(f"{n} {v:.3f}" for n, v in scores["voxel_ap"].items()))
    return predicted
