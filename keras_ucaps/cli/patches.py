"""keras-ucaps patches: cut training patches into an HDF5 patch store."""

from __future__ import annotations

from pathlib import Path

import click

from keras_ucaps.cli.common import (
    FINITE_FLOAT,
    SEED,
    FiniteFloat,
    copick_options,
    reports_input_errors,
    voxel_size_option,
)


@click.command()
@click.option("--tomogram", "tomograms", multiple=True, type=click.Path(path_type=Path),
              help="A tomogram (repeat for several).")
@click.option("--particles", "tables", multiple=True, type=click.Path(path_type=Path),
              help="Its particle table (one per --tomogram, or one table naming every tomogram).")
@click.option("--labels", "label_maps", multiple=True, type=click.Path(path_type=Path),
              help="Label maps to use instead of spheres from the particle tables (one per --tomogram).")
@click.option("--simulation", "simulation", type=click.Path(path_type=Path),
              help="A folder written by `keras-ucaps simulate`: takes every tomogram in it, its particles "
                   "and classes.json.")
@click.option("--negatives", "negative_tables", multiple=True, type=click.Path(path_type=Path),
              help="Objects that are not particles of the task (other proteins, gold, contamination; any class "
                   "names, any table format): background patches are centred on each, so the model sees what it "
                   "must not pick. One table per --tomogram, or one naming every tomogram.")
@click.option("--simulation-negatives", is_flag=True,
              help="With --simulation: each tomogram's unlabelled crowding particles (NAME_distractors.csv) "
                   "and, where it was simulated with context, points on its membranes, filaments, gold, "
                   "contamination and edge (NAME_context.csv) are its negatives.")
@click.option("--per-negative", default=1, show_default=True, type=click.IntRange(1, 1000),
              help="Background patches around each negative (each with its own jitter).")
@click.option("--classes", "classes_path", type=click.Path(path_type=Path),
              help="Class registry (JSON); the task is its class list.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Patch store to write (HDF5).")
@click.option("--patch-size", default=64, show_default=True, type=click.Choice(["32", "48", "64"]),
              help="Patch side in voxels (smaller patches help tiny particles).")
@click.option("--per-particle", default=1, show_default=True, type=click.IntRange(1, 1000),
              help="Patches around each particle (each with its own jitter).")
@click.option("--jitter", default=1 / 3, show_default=True, type=FINITE_FLOAT,
              help="Random offset of patch centres, as a fraction of the patch side.")
@click.option("--background-fraction", default=0.2, show_default=True, type=FiniteFloat(0, 100),
              help="Random background patches, per particle patch.")
@click.option("--validation-fraction", default=0.2, show_default=True, type=FiniteFloat(0.05, 0.5),
              help="Share of tomograms held out (or of the x extent, with one tomogram).")
@click.option("--radius-scale", default=1.0, show_default=True, type=FiniteFloat(0, 10, min_open=True),
              help="Multiply class radii for the sphere labels.")
@click.option("--normalization", default="robust", show_default=True, type=click.Choice(["robust", "zscore"]),
              help="How each tomogram is normalised (prediction does the same): robust subtracts a smooth "
                   "background fitted to block medians (outlier blocks such as carbon or gold left out) and "
                   "divides by the robust standard deviation, clipping at ±8; zscore uses the tomogram's mean "
                   "and standard deviation (as before).")
@voxel_size_option
@click.option("--seed", default=0, show_default=True, type=SEED)
@copick_options
@click.option("--user-id", default=None, help="With --copick: whose picks are the training labels (default: anyone's).")
@click.option("--session-id", default=None, help="With --copick: which session's picks (default: any).")
@reports_input_errors
def patches(tomograms, tables, label_maps, simulation, negative_tables, simulation_negatives, per_negative,
            classes_path, out, patch_size, per_particle, jitter, background_fraction, validation_fraction,
            radius_scale, normalization, voxel_size, seed, copick_config, copick_runs, copick_voxel_spacing,
            copick_tomo_type, user_id, session_id):
    """Cut patches around particles (and of background) into one HDF5 file for `fit`.

    Validation patches come from separate tomograms when there are two or
    more, else from the last fifth of the tomogram along x, never from patches
    neighbouring training ones. With --negatives (or --simulation-negatives)
    background patches are also cut around objects the model must not pick.
    """
    from keras_ucaps.classes import ClassRegistry
    from keras_ucaps.cli.common import choose_tomogram, open_copick, resolve_voxel_size
    from keras_ucaps.data.normalization import METHODS
    from keras_ucaps.data.patches import PatchSettings, Source, build_patch_store
    from keras_ucaps.data.targets import check_inside, sphere_targets
    from keras_ucaps.errors import InputError
    from keras_ucaps.io import FormatContext, ParticleTable, read_particles, read_volume
    from keras_ucaps.io.mrc import read_label_map

    if simulation_negatives and simulation is None:
        raise InputError("--simulation-negatives", "applies with --simulation only")
    if simulation_negatives and negative_tables:
        raise InputError("--negatives", "give either --negatives or --simulation-negatives, not both")
    if simulation is not None:
        found = sorted(p for p in simulation.glob("*.mrc")
                       if (simulation / f"{p.stem}_particles.csv").is_file())
        if not found:
            raise InputError(simulation, "holds no simulated tomograms (NAME.mrc with NAME_particles.csv)")
        if simulation_negatives:
            if tomograms:
                raise InputError("--simulation-negatives", "takes the simulation's tomograms only: give no --tomogram")
            negative_tables = tuple(simulation / f"{p.stem}_distractors.csv" for p in found)
            for table_path in negative_tables:
                if not table_path.is_file():
                    raise InputError(table_path, "no such file: this simulation wrote no distractors table")
            context_tables = {p.stem: simulation / f"{p.stem}_context.csv" for p in found
                              if (simulation / f"{p.stem}_context.csv").is_file()}
        tomograms = tuple(tomograms) + tuple(found)
        tables = tuple(tables) + tuple(simulation / f"{p.stem}_particles.csv" for p in found)
        classes_path = classes_path or simulation / "classes.json"
    project, runs = open_copick(copick_config, copick_runs, copick_voxel_spacing, copick_tomo_type)
    if project is None and (user_id is not None or session_id is not None):
        raise InputError("--user-id" if user_id is not None else "--session-id", "applies with --copick only")
    if project is not None and (tomograms or tables or label_maps or negative_tables):
        raise InputError("--copick", "takes tomograms and picks from the project: give no --tomogram, --particles, "
                                     "--labels or --negatives")
    if not tomograms and project is None:
        raise InputError("--tomogram", "give at least one tomogram (or --simulation, or --copick)")
    if classes_path is None:
        raise InputError("--classes", "give the class registry (keras-ucaps classes NAME=RADIUS ... --out FILE)")
    if project is None and len(tables) not in (1, len(tomograms)):
        raise InputError("--particles", f"give one table per tomogram ({len(tomograms)}) or one for all")
    if label_maps and len(label_maps) != len(tomograms):
        raise InputError("--labels", f"give one label map per tomogram ({len(tomograms)})")
    if negative_tables and len(negative_tables) not in (1, len(tomograms)):
        raise InputError("--negatives", f"give one table per tomogram ({len(tomograms)}) or one for all")
    classes = ClassRegistry.load(classes_path)
    settings = PatchSettings(patch_size=int(patch_size), jitter=jitter, per_particle=per_particle,
                             background_fraction=background_fraction, per_negative=per_negative,
                             validation_fraction=validation_fraction, seed=seed,
                             normalization=METHODS[normalization])
    if not simulation_negatives:
        context_tables = {}
    sources, common_voxel_size = [], None
    for run in runs:
        volume = project.volume(run)
        vs = resolve_voxel_size(volume.voxel_size, voxel_size, volume.path)
        table = project.particles(run, classes.names, user_id, session_id)
        labels = sphere_targets(table, volume.shape, classes, vs, radius_scale=radius_scale,
                                source=f"{copick_config}: run {run}")
        sources.append(Source(name=run, volume=volume, particles=table, labels=labels))
        common_voxel_size = vs
    for i, tomo_path in enumerate(tomograms):
        volume = read_volume(tomo_path)
        vs = resolve_voxel_size(volume.voxel_size, voxel_size, tomo_path)
        if common_voxel_size is not None and abs(vs - common_voxel_size) > 1e-3 * vs:
            raise InputError(tomo_path, f"voxel size {vs:g} Å differs from the first tomogram's "
                                        f"{common_voxel_size:g} Å")
        common_voxel_size = vs
        table_path = tables[i if len(tables) > 1 else 0]
        table = read_particles(table_path, context=FormatContext(voxel_size=vs, tomogram_size=volume.shape[::-1],
                                                                 classes=classes))
        # one table for several tomograms must name each of them
        shared = len(tables) == 1 and len(tomograms) > 1
        table = table.where(tomo=choose_tomogram(table, tomo_path.stem if shared else None, tomo_path, table_path))
        if label_maps:
            labels = read_label_map(label_maps[i], classes)
            if labels.shape != volume.shape:
                raise InputError(label_maps[i], f"label map {labels.shape} does not match the tomogram {volume.shape}")
        else:
            labels = sphere_targets(table, volume.shape, classes, vs, radius_scale=radius_scale, source=str(table_path))
        negatives = None
        if negative_tables:
            negatives_path = negative_tables[i if len(negative_tables) > 1 else 0]
            # their classes do not matter: a table that names none (a class-less STAR file) is read as one class
            negatives = read_particles(negatives_path, context=FormatContext(
                voxel_size=vs, tomogram_size=volume.shape[::-1], default_class="negative"))
            if len(negative_tables) == 1 and len(tomograms) > 1:  # one table for all: a tomogram may have none
                negatives = negatives.where(tomo=tomo_path.stem)
            else:
                negatives = negatives.where(tomo=choose_tomogram(negatives, None, tomo_path, negatives_path))
            check_inside(negatives, volume.shape, str(negatives_path))
            if tomo_path.stem in context_tables:  # a simulation's context structures: negatives too
                context_path = context_tables[tomo_path.stem]
                on_context = read_particles(context_path, context=FormatContext(
                    voxel_size=vs, tomogram_size=volume.shape[::-1], default_class="negative"))
                check_inside(on_context, volume.shape, str(context_path))
                negatives = ParticleTable.concat([negatives, on_context.where(tomo=tomo_path.stem)])
        sources.append(Source(name=tomo_path.stem, volume=volume, particles=table, labels=labels,
                              negatives=negatives))
    summary = build_patch_store(sources, classes, common_voxel_size, out, settings)
    click.echo(f"wrote {out}: {summary['patches']} patches of {summary['patch_size']}³ at "
               f"{summary['voxel_size']:g} Å, validation by {summary['split_method']}")
    for key in ("train", "validation"):
        click.echo(f"  {key:>10}: " + ", ".join(f"{k} {v}" for k, v in summary[key].items()))
