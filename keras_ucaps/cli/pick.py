"""keras-ucaps pick: particle tables from predicted label and probability maps."""

from __future__ import annotations

from pathlib import Path

import click

from keras_ucaps.cli.common import reports_input_errors, table_format_choice


@click.command()
@click.argument("label_maps", nargs=-1, required=True, type=click.Path(path_type=Path),
                metavar="TOMO.mrc... | NAME_labels.mrc...")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Particle table to write (any format).")
@click.option("--format", "table_format", type=table_format_choice, help="Table format (default: from the suffix).")
@click.option("--classes", "classes_path", type=click.Path(path_type=Path),
              help="Class registry (default: classes.json beside the maps, as predict writes it).")
@click.option("--min-size", "min_sizes", multiple=True, metavar="CLASS=VOXELS",
              help="Smallest component kept for a class (default: a fifth of its sphere's volume).")
@click.option("--suppress", default=0.5, show_default=True, type=click.FloatRange(min=0),
              help="Merge picks of a class closer than this fraction of its radius.")
@click.option("--thresholds", "thresholds_path", type=click.Path(path_type=Path),
              help="thresholds.json from `keras-ucaps evaluate --model`: drop picks scoring below their class's.")
@click.option("--model", "model", default=None,
              help="For tomograms: a run folder, .keras file or bundled model name (default: the bundled default).")
@click.option("--maps", "maps_dir", default=None, type=click.Path(path_type=Path),
              help="For tomograms: keep the predicted maps in this folder (default: discard them).")
@reports_input_errors
def pick(label_maps, out, table_format, classes_path, min_sizes, suppress, thresholds_path=None, model=None,
         maps_dir=None):
    """Pick particles from tomograms, or from label maps written by `keras-ucaps predict`.

    Given tomograms, it predicts them first with --model (a bundled model by
    default) and applies the model's thresholds.json. Each NAME_labels.mrc is
    read with the NAME_prob_CLASS.mrc maps beside it (for probability-weighted
    centres and scores, when present).
    """
    if not all(Path(p).name.endswith("_labels.mrc") for p in label_maps):
        return _pick_tomograms(label_maps, out, table_format, min_sizes, suppress, model, maps_dir)
    from keras_ucaps.classes import ClassRegistry
    from keras_ucaps.errors import InputError
    from keras_ucaps.io import FormatContext, ParticleTable, write_particles

    classes = ClassRegistry.load(classes_path or Path(label_maps[0]).parent / "classes.json")
    sizes = {}
    for entry in min_sizes:
        name, _, value = entry.partition("=")
        if name not in classes or not value.isdigit():
            raise InputError(entry, f"expected CLASS=VOXELS with a class of {', '.join(classes.names)}")
        sizes[name] = int(value)
    tables, shapes, voxel_size = [], {}, None
    for path in label_maps:
        table, shape, voxel_size = pick_from_maps(path, classes, sizes, suppress)
        tables.append(table)
        shapes[table_name(path)] = shape[::-1]
    table = ParticleTable.concat(tables)
    if thresholds_path is not None:
        table = apply_thresholds(table, thresholds_path)
    write_particles(table, out, table_format, FormatContext(voxel_size=voxel_size, tomogram_size=shapes,
                                                            classes=classes))
    counts = table.counts()
    summary = ", ".join(f"{c} {counts.get(c, 0)}" for c in classes.names)
    click.echo(f"wrote {out}: {len(table)} particles ({summary})" + ("" if len(table) else
                                                                     " — no particles found"))


def _pick_tomograms(tomograms, out, table_format, min_sizes, suppress, model, maps_dir):
    """Predict each tomogram with ``model``, then pick, with the model's thresholds."""
    import shutil
    import tempfile

    from keras_ucaps.inference.predict import load_model, predict_tomogram

    if model is None or not Path(model).exists():
        from keras_ucaps.pretrained import pretrained_run

        model = pretrained_run(model)
    model = Path(model)
    loaded = load_model(model)
    if maps_dir is None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".keras-ucaps-maps-", dir=Path(out).parent))
    else:
        scratch = Path(maps_dir)
    try:
        for tomogram in tomograms:
            predict_tomogram(loaded, tomogram, scratch)
        thresholds = run_thresholds(model)
        click.get_current_context().invoke(
            pick, label_maps=[scratch / f"{Path(t).stem}_labels.mrc" for t in tomograms], out=out,
            table_format=table_format, classes_path=scratch / "classes.json", min_sizes=min_sizes, suppress=suppress,
            thresholds_path=thresholds)
    finally:
        if maps_dir is None:
            shutil.rmtree(scratch, ignore_errors=True)


def run_thresholds(run: Path | None) -> Path | None:
    """A run folder's thresholds.json, when it has one."""
    path = run / "thresholds.json" if run is not None else None
    return path if path is not None and path.is_file() else None


def apply_thresholds(table, path: Path):
    """Keep the picks scoring at least their class's threshold (picks without a score are kept)."""
    import numpy as np

    from keras_ucaps.errors import InputError
    from keras_ucaps.io.jsonfile import read_json

    payload = read_json(path)
    if not isinstance(payload, dict) or not isinstance(payload.get("thresholds"), dict):
        raise InputError(path, "not a thresholds file (no 'thresholds' mapping)")
    limits = np.array([payload["thresholds"].get(name, 0.0) for name in table.class_name], dtype=float)
    return table[~(table.score < limits)]


def table_name(label_map: Path) -> str:
    return Path(label_map).name.removesuffix(".mrc").removesuffix("_labels")


def pick_from_maps(label_map: Path, classes, min_sizes: dict, suppress: float):
    """Pick one tomogram's particles from its label map and the probability maps beside it."""
    import numpy as np

    from keras_ucaps.errors import InputError
    from keras_ucaps.io import read_volume
    from keras_ucaps.picking.cluster import pick_particles

    labels = read_volume(label_map)
    if labels.voxel_size is None:
        raise InputError(label_map, "label map has no voxel size")
    unknown = sorted({int(v) for v in np.unique(labels.data)} - {0, *(c.label for c in classes.classes)})
    if unknown:
        raise InputError(label_map, f"holds labels {unknown} that the class registry does not know")
    name = table_name(label_map)
    probabilities = {}
    for c in classes.classes:
        path = Path(label_map).parent / f"{name}_prob_{c.name}.mrc"
        if path.is_file():
            prob = read_volume(path)
            if prob.shape != labels.shape:
                raise InputError(path, f"probability map {prob.shape} does not match the label map {labels.shape}")
            probabilities[c.name] = prob.data
    table = pick_particles(labels.data, classes, labels.voxel_size, probabilities=probabilities,
                           min_size=min_sizes, suppress=suppress, tomo=name)
    return table, labels.shape, labels.voxel_size
