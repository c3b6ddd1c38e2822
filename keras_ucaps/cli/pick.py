"""keras-ucaps pick: particle tables from predicted label and probability maps."""

from __future__ import annotations

from pathlib import Path

import click

from keras_ucaps.cli.common import copick_options, reports_input_errors, table_format_choice
from keras_ucaps.picking.thresholds import read_thresholds, run_thresholds


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
@click.option("--suppress", default=0.5, show_default=True, type=click.FloatRange(min=0),
              help="Merge picks of a class closer than this fraction of its radius.")
@click.option("--thresholds", "thresholds_path", type=click.Path(path_type=Path),
              help="thresholds.json from `keras-ucaps evaluate --model`: drop picks scoring below their class's.")
@click.option("--fit-radius", default=None, type=click.FloatRange(min=0.2, max=1.5),
              help="Split merged blobs at the best-fitting balls of this fraction of the class radius (default: "
                   "the thresholds file's fit_radius, else 1).")
@click.option("--density-weight", default=None, type=click.FloatRange(min=0),
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
         copick_voxel_spacing=None, copick_tomo_type="wbp", copick_session=None, volumes=None):
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

    # ``volumes`` (name → tomogram file or volume) is for `predict --pick`, which has the tomograms in hand.
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
                                                         **(volumes or {})})
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

    names = {table_name(p) for p in label_maps}
    found = {}
    for path in tomograms:
        if Path(path).stem not in names:
            raise InputError(path, f"no label map {Path(path).stem}_labels.mrc among those given to pick from")
        found[Path(path).stem] = path
    return found


def _pick_maps(label_maps, classes_path, min_sizes, suppress, thresholds_path, fit_radius=None,
               density_weight=None, tomograms=None):
    """Picks from label maps (and the probability maps beside them); ``fit_radius`` and ``density_weight`` None:
    the thresholds file's, else 1 and 0; ``tomograms``: name → tomogram file or volume, for a density weight."""
    from keras_ucaps.classes import ClassRegistry
    from keras_ucaps.errors import InputError
    from keras_ucaps.io import ParticleTable

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
    tuned = read_thresholds(thresholds_path) if thresholds_path is not None else {}
    if fit_radius is None:
        fit_radius = tuned.get("fit_radius", 1.0)
    if density_weight is None:
        density_weight = tuned.get("density_weight", 0.0)
    tables, shapes, voxel_size = [], {}, None
    for path in label_maps:
        table, shape, voxel_size = pick_from_maps(path, classes, sizes, suppress, fit_radius, density_weight,
                                                  (tomograms or {}).get(table_name(path)))
        tables.append(table)
        shapes[table_name(path)] = shape[::-1]
    table = ParticleTable.concat(tables)
    if tuned:
        table = _kept_above(table, tuned["thresholds"])
    return table, classes, voxel_size, shapes


def _pick_tomograms(sources, project, min_sizes, suppress, model, maps_dir, out, tta=False, fit_radius=None,
                    density_weight=None):
    """Predict each tomogram (NAME, path) — or copick run (NAME, None) — with ``model``, then pick with its
    thresholds."""
    import contextlib
    import tempfile

    from keras_ucaps.inference.predict import load_model, predict_tomogram
    from keras_ucaps.pretrained import model_path

    model = model_path(model)
    loaded = load_model(model)
    from keras_ucaps.io.atomic import scratch_folder

    parent = Path(out).parent if out is not None else Path(tempfile.gettempdir())
    folder = (scratch_folder(parent, ".keras-ucaps-maps-") if maps_dir is None
              else contextlib.nullcontext(Path(maps_dir)))
    with folder as scratch:
        volumes = {}
        for name, path in sources:
            volumes[name] = path if path is not None else project.volume(name)
            predict_tomogram(loaded, volumes[name], scratch, name=name, tta=tta)
        return _pick_maps([scratch / f"{name}_labels.mrc" for name, _ in sources], scratch / "classes.json",
                          min_sizes, suppress, run_thresholds(model), fit_radius, density_weight, volumes)


def apply_thresholds(table, path: Path):
    """Keep the picks scoring at least their class's threshold in thresholds file ``path`` (picks without a score
    are kept)."""
    return _kept_above(table, read_thresholds(path)["thresholds"])


def _kept_above(table, thresholds: dict):
    import numpy as np

    limits = np.array([thresholds.get(name, 0.0) for name in table.class_name], dtype=float)
    return table[~(table.score < limits)]


def table_name(label_map: Path) -> str:
    return Path(label_map).name.removesuffix(".mrc").removesuffix("_labels")


def pick_from_maps(label_map: Path, classes, min_sizes: dict, suppress: float, fit_radius: float = 1.0,
                   density_weight: float = 0.0, tomogram=None):
    """Pick one tomogram's particles from its label map and the probability maps beside it (and, with a density
    weight, from ``tomogram``: the file or volume the maps were predicted from)."""
    import numpy as np

    from keras_ucaps.errors import InputError
    from keras_ucaps.io import read_volume
    from keras_ucaps.io.diskarray import DiskArray
    from keras_ucaps.picking.cluster import pick_particles

    labels = read_volume(label_map)
    if labels.voxel_size is None:
        raise InputError(label_map, "label map has no voxel size")
    present = set()
    step = max(1, (64 * 2**20) // max(1, labels.data[0].size))
    for z in range(0, labels.shape[0], step):  # a slab at a time: label maps can be larger than memory
        present.update(int(v) for v in np.unique(labels.data[z:z + step]))
    unknown = sorted(present - {0, *(c.label for c in classes.classes)})
    if unknown:
        raise InputError(label_map, f"holds labels {unknown} that the class registry does not know")
    name = table_name(label_map)
    probabilities = {}
    paths = {c.name: Path(label_map).parent / f"{name}_prob_{c.name}.mrc" for c in classes.classes}
    missing = [p for p in paths.values() if not p.is_file()]
    if missing and len(missing) < len(paths):  # all or none: a class without its map would be scored otherwise
        raise InputError(missing[0], "missing beside the other probability maps of "
                                     f"{Path(label_map).name} (predict again)")
    for c in classes.classes:
        path = paths[c.name]
        if path.is_file():
            prob = read_volume(path)
            if prob.shape != labels.shape:
                raise InputError(path, f"probability map {prob.shape} does not match the label map {labels.shape}")
            probabilities[c.name] = DiskArray.over(prob.data)  # read a slab at a time, not kept mapped
    density = None
    if density_weight > 0:
        density = _density(tomogram, labels, label_map, density_weight)
    table = pick_particles(labels.data, classes, labels.voxel_size, probabilities=probabilities,
                           min_size=min_sizes, suppress=suppress, tomo=name, fit_radius=fit_radius,
                           density=density, density_weight=density_weight)
    return table, labels.shape, labels.voxel_size


def _density(tomogram, labels, label_map: Path, weight: float):
    """The density of the tomogram ``label_map`` was predicted from, checked against it."""
    import numpy as np

    from keras_ucaps.errors import InputError
    from keras_ucaps.io import read_volume
    from keras_ucaps.picking.density import ParticleDensity

    if tomogram is None:
        raise InputError(label_map, f"density weight {weight:g} (from --density-weight or the thresholds file) "
                                    f"needs the tomogram it was predicted from: give --tomogram "
                                    f"{table_name(label_map)}.mrc, or --density-weight 0")
    volume = read_volume(tomogram) if isinstance(tomogram, str | Path) else tomogram
    where = tomogram if isinstance(tomogram, str | Path) else label_map
    if tuple(volume.shape) != tuple(labels.shape):
        raise InputError(where, f"tomogram {tuple(volume.shape)} does not match the label map {labels.shape} "
                                f"of {Path(label_map).name}")
    return ParticleDensity.measure(np.asarray(volume.data, dtype=np.float32), labels.data)
