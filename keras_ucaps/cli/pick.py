"""keras-ucaps pick: particle tables from predicted label and probability maps."""

from __future__ import annotations

from pathlib import Path

import click

from keras_ucaps.cli.common import FiniteFloat, copick_options, reports_input_errors, table_format_choice
from keras_ucaps.picking.thresholds import read_thresholds


@click.command()
@click.argument("label_maps", nargs=-1, type=click.Path(path_type=Path),
                metavar="TOMO.mrc... | NAME_labels.mrc...")
@click.option("--out", default=None, type=click.Path(path_type=Path),
              help="Particle table to write (any format); optional with --copick.")
@click.option("--format", "table_format", type=table_format_choice, help="Table format (default: from the suffix).")
@click.option("--classes", "classes_path", type=click.Path(path_type=Path),
              help="Class registry (default: classes.json beside the maps, as predict writes it).")
@click.option("--min-size", "min_sizes", multiple=True, metavar="CLASS=VOXELS",
              help="Smallest component kept for a class (default: a fifth of its sphere's volume).")
@click.option("--suppress", default=0.5, show_default=True, type=FiniteFloat(min=0),
              help="Merge picks of a class closer than this fraction of its radius.")
@click.option("--thresholds", "thresholds_path", type=click.Path(path_type=Path),
              help="thresholds.json from `keras-ucaps evaluate --model`: drop picks scoring below their class's.")
@click.option("--fit-radius", default=None, type=FiniteFloat(min=0.2, max=1.5),
              help="Split merged blobs at the best-fitting balls of this fraction of the class radius (default: "
                   "the thresholds file's fit_radius, else 1).")
@click.option("--density-weight", default=None, type=FiniteFloat(min=0),
              help="Split merged blobs by the tomogram's density too, with this weight beside the probability "
                   "(default: the thresholds file's density_weight, else 0: the probability alone).")
@click.option("--tomogram", "tomograms", multiple=True, type=click.Path(path_type=Path), metavar="TOMO.mrc",
              help="For label maps: the tomogram NAME.mrc that NAME_labels.mrc was predicted from (repeat per "
                   "map), which a density weight needs.")
@click.option("--model", "model", default=None,
              help="For tomograms: a run folder, .keras file or bundled model name (default: the bundled default).")
@click.option("--maps", "maps_dir", default=None, type=click.Path(path_type=Path),
              help="For tomograms: keep the predicted maps in this folder (default: discard them).")
@click.option("--tta", is_flag=True,
              help="For tomograms: predict with test-time augmentation (8 axis flips averaged; 8× the time).")
@copick_options
@click.option("--session-id", "copick_session", default=None,
              help="With --copick: the session of user keras-ucaps to write the picks as (default: a new one).")
@reports_input_errors
def pick(label_maps, out, table_format, classes_path, min_sizes, suppress, thresholds_path=None, fit_radius=None,
         density_weight=None, tomograms=(), model=None, maps_dir=None, tta=False, copick_config=None, copick_runs=(),
         copick_voxel_spacing=None, copick_tomo_type="wbp", copick_session=None, volumes=None, picking=None):
    """Pick particles from tomograms, or from label maps written by `keras-ucaps predict`.

    Given tomograms, it predicts them first with --model (a bundled model by
    default) and applies the model's thresholds.json. Each NAME_labels.mrc is
    read with the NAME_prob_CLASS.mrc maps beside it (for probability-weighted
    centres and scores, when present). With --copick CONFIG it predicts the
    project's runs (or picks from label maps named after runs) and writes the
    picks into the project as a session of user keras-ucaps.
    """
    from keras_ucaps.cli.common import open_copick
    from keras_ucaps.errors import InputError

    # ``volumes`` (name → tomogram file or volume) and ``picking`` (the model's picking settings) are for
    # `predict --pick`, which has the tomograms and the model in hand.
    project, runs = open_copick(copick_config, copick_runs, copick_voxel_spacing, copick_tomo_type)
    if project is None and out is None:
        raise InputError("--out", "give the particle table to write (or --copick to write into a project)")
    if project is None and copick_session is not None:
        raise InputError("--session-id", "applies with --copick only")
    if not label_maps and project is None:
        raise InputError("TOMO.mrc", "give tomograms or label maps (or --copick)")
    maps = all(Path(p).name.endswith("_labels.mrc") for p in label_maps) and label_maps
    if maps and tta:
        raise InputError("--tta", "applies when picking from tomograms (it changes the prediction)")
    if tomograms and not maps:
        raise InputError("--tomogram", "applies when picking from label maps (tomograms given are predicted)")
    if not maps and label_maps and project is not None:
        raise InputError("--copick", "takes the tomograms from the project: give label maps or nothing")
    if maps:
        table, classes, voxel_size, shapes = _pick_maps(label_maps, classes_path, min_sizes, suppress,
                                                        thresholds_path, fit_radius, density_weight,
                                                        {**_tomograms_by_name(tomograms, label_maps),
                                                         **(volumes or {})}, picking)
    else:
        sources = [(Path(t).stem, t) for t in label_maps] + [(r, None) for r in runs]
        table, classes, voxel_size, shapes = _pick_tomograms(sources, project, min_sizes, suppress, model, maps_dir,
                                                             out, tta, fit_radius, density_weight)
    if out is not None:
        from keras_ucaps.io import FormatContext, write_particles

        write_particles(table, out, table_format, FormatContext(voxel_size=voxel_size, tomogram_size=shapes,
                                                                classes=classes))
    counts = table.counts()
    summary = ", ".join(f"{c} {counts.get(c, 0)}" for c in classes.names)
    where = [str(out)] if out is not None else []
    if project is not None:
        unknown = sorted(set(table.tomograms) - set(project.run_names()))
        if unknown:
            raise InputError(label_maps[0] if label_maps else copick_config,
                             f"maps of {unknown[0]!r}, which is not a run of {copick_config}")
        session = copick_session or project.new_session_id()
        project.write_particles(table, session)
        where.append(f"{copick_config} (user keras-ucaps, session {session})")
    click.echo(f"wrote {' and '.join(where)}: {len(table)} particles ({summary})"
               + ("" if len(table) else " — no particles found"))


def _tomograms_by_name(tomograms, label_maps) -> dict:
    """``--tomogram`` files by the name of the label map they belong to (NAME.mrc for NAME_labels.mrc)."""
    from keras_ucaps.errors import InputError
    from keras_ucaps.picking.maps import table_name

    names = {table_name(p) for p in label_maps}
    found = {}
    for path in tomograms:
        if Path(path).stem not in names:
            raise InputError(path, f"no label map {Path(path).stem}_labels.mrc among those given to pick from")
        found[Path(path).stem] = path
    return found


def _pick_maps(label_maps, classes_path, min_sizes, suppress, thresholds_path, fit_radius=None,
               density_weight=None, tomograms=None, picking=None):
    """Picks from label maps (and the probability maps beside them), with the thresholds file's settings (or
    ``picking``, a thresholds payload) unless ``fit_radius`` or ``density_weight`` are given; ``tomograms``:
    name → tomogram file or volume, for a density weight."""
    from keras_ucaps.classes import ClassRegistry
    from keras_ucaps.errors import InputError
    from keras_ucaps.io import ParticleTable
    from keras_ucaps.picking.maps import PickingSettings, pick_from_maps, table_name

    for path in label_maps:  # the maps named first: a missing one, not the registry beside it
        if not Path(path).is_file():
            raise InputError(path, "no such file" if not Path(path).exists() else "not a file")
    beside = Path(label_maps[0]).parent / "classes.json"
    classes = ClassRegistry.load(classes_path or beside)
    if classes_path is not None and beside.is_file() and Path(classes_path).resolve() != beside.resolve():
        written = ClassRegistry.load(beside)
        if written.to_dict() != classes.to_dict():
            raise InputError(classes_path, f"disagrees with {beside}, which predict wrote with the maps "
                                           f"({', '.join(f'{c.label}={c.name}' for c in written.classes)})")
    sizes = {}
    for entry in min_sizes:
        name, _, value = entry.partition("=")
        if name not in classes or not value.isdigit():
            raise InputError(entry, f"expected CLASS=VOXELS with a class of {', '.join(classes.names)}")
        sizes[name] = int(value)
    if thresholds_path is not None:
        picking = read_thresholds(thresholds_path)
    settings = PickingSettings.from_payload(picking, fit_radius=fit_radius, density_weight=density_weight,
                                            suppress=suppress, min_sizes=sizes)
    tables, shapes, voxel_size = [], {}, None
    for path in label_maps:
        table, shape, voxel_size = pick_from_maps(path, classes, settings, (tomograms or {}).get(table_name(path)))
        tables.append(table)
        shapes[table_name(path)] = shape[::-1]
    return ParticleTable.concat(tables), classes, voxel_size, shapes


def _pick_tomograms(sources, project, min_sizes, suppress, model, maps_dir, out, tta=False, fit_radius=None,
                    density_weight=None):
    """Predict each tomogram (NAME, path) — or copick run (NAME, None) — with ``model``, then pick with its
    picking settings."""
    import contextlib
    import tempfile

    from keras_ucaps.inference.predict import predict_tomogram
    from keras_ucaps.io.atomic import scratch_folder
    from keras_ucaps.models.loading import load_trained

    loaded = load_trained(model)
    parent = Path(out).parent if out is not None else Path(tempfile.gettempdir())
    folder = (scratch_folder(parent, ".keras-ucaps-maps-") if maps_dir is None
              else contextlib.nullcontext(Path(maps_dir)))
    with folder as scratch:
        volumes = {}
        for name, path in sources:
            volumes[name] = path if path is not None else project.volume(name)
            predict_tomogram(loaded, volumes[name], scratch, name=name, tta=tta)
        return _pick_maps([scratch / f"{name}_labels.mrc" for name, _ in sources], scratch / "classes.json",
                          min_sizes, suppress, None, fit_radius, density_weight, volumes, loaded.picking)
