"""keras-ucaps simulate: synthetic tomograms with ground truth."""

from __future__ import annotations

from pathlib import Path

import click

from keras_ucaps.cli.common import FINITE_FLOAT, SEED, FiniteFloat, reports_input_errors

SIZES = {"small": (64, 128, 128), "medium": (128, 256, 256), "shrec": (200, 512, 512)}


@click.command()
@click.option("--preset", type=click.Choice(["shrec", "invitro", "full"]), default="shrec", show_default=True,
              help="shrec: 4v94 (large), 1bxn (medium), 3gl1 (tiny) + distractors; invitro: proteasome 3j9i + "
                   "ribosome 4v4r; full: 12 SHREC'19-like classes.")
@click.option("--size", type=click.Choice(list(SIZES)), default="shrec", show_default=True,
              help="small 64×128×128, medium 128×256×256, shrec 200×512×512 (z×y×x).")
@click.option("--shape", nargs=3, type=click.IntRange(8, 4096), default=None, metavar="Z Y X",
              help="Tomogram shape in voxels; overrides --size.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder to write into.")
@click.option("--count", default=1, show_default=True, type=click.IntRange(min=1), help="Number of tomograms.")
@click.option("--name", default="tomo", show_default=True, help="Tomogram name (numbered when --count > 1).")
@click.option("--classes", "class_maps", default=None,
              help="Comma-separated particle maps replacing the preset's: bundled names or MRC files.")
@click.option("--distractors", default=None, help="Comma-separated unlabelled maps ('' for none).")
@click.option("--voxel-size", default=10.0, show_default=True, type=FiniteFloat(min=0, min_open=True),
              help="Å per voxel; maps are resampled to it.")
@click.option("--occupancy", default=0.1, show_default=True, type=FINITE_FLOAT,
              help="Fraction of the slab covered by particles.")
@click.option("--particles", "max_particles", default=None, type=click.IntRange(min=1),
              help="Stop after this many particles (distractors included).")
@click.option("--slab", "slab_thickness", default=None, type=click.IntRange(min=1),
              help="Slab thickness in voxels (default: 3/4 of the depth).")
@click.option("--snr", default=None, type=FINITE_FLOAT,
              help="Signal-to-noise ratio (variance ratio) per projection [default: 0.1]. A thicker slab projects "
                   "more signal, so at one --snr its tomogram is noisier per voxel.")
@click.option("--tomogram-snr", default=None, type=FINITE_FLOAT,
              help="Instead of --snr: the SNR of the reconstructed tomogram over the particle slab (equal "
                   "per-voxel noise whatever the thickness). Both are recorded in NAME_settings.json.")
@click.option("--tilt-range", nargs=3, type=FINITE_FLOAT, default=(-60.0, 60.0, 3.0), show_default=True,
              metavar="FIRST LAST STEP", help="Tilt angles in degrees.")
@click.option("--b-factor", default=200.0, show_default=True, type=FiniteFloat(0, 10000),
              help="CTF envelope exp(-B k²/4) in Å²: smaller is sharper, larger blurrier.")
@click.option("--defocus", nargs=2, type=FiniteFloat(0, 50, min_open=True), default=(2.0, 5.0),
              show_default=True, metavar="MIN MAX", help="Underfocus in µm, drawn per tilt.")
@click.option("--mode", type=click.Choice(["tilt-series", "fast"]), default="tilt-series", show_default=True,
              help="tilt-series: project, CTF, noise, weighted back-projection; fast: the same effects in 3D "
                   "Fourier space.")
@click.option("--randomize", is_flag=True,
              help="Draw per tomogram, for training sets that cover real data: SNR 0.03-0.5 per projection "
                   "(log-uniform), defocus 1.5-6 µm, B-factor 50-600 Å², each side of the tilt range 40-70° "
                   "with steps of 2-4°, slab 40-95 % of the depth, voxel size ±10 % (resampled to "
                   "--voxel-size), a low-frequency background of up to 1.5 standard deviations, occupancy "
                   "0.05-0.3. Every drawn value goes into NAME_settings.json ('randomized').")
@click.option("--context", "draw_context", is_flag=True,
              help="Cellular context, drawn per tomogram: up to 4 vesicles, 2 membrane sheets, 8 actin rods, "
                   "2 microtubules, 8 gold beads, 2 contamination blobs (per 256×256 voxels of field), a carbon or "
                   "lamella edge half the time over 10-30 % of the field, ice gradient 1-2, alignment error "
                   "0.1-1 voxel and 0-0.5°, dose B-factor 0-8 Å² per tilt. Any of the options below fixes its "
                   "part. Written: NAME_context.mrc (structures' labels), NAME_context.csv (points on them) and "
                   "every drawn value in NAME_settings.json.")
@click.option("--vesicles", type=click.IntRange(0, 1000), default=None, help="Membrane vesicles (radius 15-50 nm).")
@click.option("--sheets", type=click.IntRange(0, 1000), default=None, help="Curved membrane sheets.")
@click.option("--actin", type=click.IntRange(0, 1000), default=None, help="Actin-like rods, 7 nm across.")
@click.option("--microtubules", type=click.IntRange(0, 1000), default=None,
              help="Microtubule-like tubes, 25 nm across, hollow.")
@click.option("--gold", type=click.IntRange(0, 1000), default=None,
              help="Gold fiducials, 5-15 nm, mostly at the ice's surfaces (projected with the tilt series: "
                   "back-projection draws their streaks).")
@click.option("--contamination", type=click.IntRange(0, 1000), default=None,
              help="Ice contamination blobs at the ice's surfaces.")
@click.option("--edge", type=click.Choice(["none", "carbon", "lamella"]), default=None,
              help="A dense carbon region, or a lamella's end (vacuum), over part of the field.")
@click.option("--edge-fraction", type=FiniteFloat(0, 0.9), default=None,
              help="Share of the field beyond the edge [default: 0.2, or drawn with --context].")
@click.option("--ice-gradient", type=FiniteFloat(1, 10), default=None,
              help="Noise standard deviation at the thickest ice over that at the thinnest (1: even ice).")
@click.option("--alignment-shift", type=FiniteFloat(0, 5), default=None,
              help="Residual tilt-series alignment error: standard deviation of each tilt's shift, voxels.")
@click.option("--alignment-rotation", type=FiniteFloat(0, 5), default=None,
              help="Residual in-plane rotation of each tilt: standard deviation, degrees.")
@click.option("--dose-b-factor", type=FiniteFloat(0, 100), default=None,
              help="Å² added to the B-factor per tilt in dose-symmetric acquisition order (radiation damage).")
@click.option("--seed", default=0, show_default=True, type=SEED)
@reports_input_errors
def simulate(preset, size, shape, out, count, name, class_maps, distractors, voxel_size, occupancy,
             max_particles, slab_thickness, snr, tomogram_snr, tilt_range, b_factor, defocus, mode, randomize,
             draw_context, vesicles, sheets, actin, microtubules, gold, contamination, edge, edge_fraction,
             ice_gradient, alignment_shift, alignment_rotation, dose_b_factor, seed):
    """Simulate tomograms with particle tables and label maps as ground truth.

    Writes NAME.mrc (tomogram, zero mean, unit variance), NAME_labels.mrc
    (spheres), NAME_masks.mrc (particle shapes), NAME_particles.csv/.star
    (x, y, z in voxels, ZYZ angles), NAME_distractors.csv, classes.json and
    NAME_settings.json; with context NAME_context.mrc and NAME_context.csv.
    """
    from keras_ucaps.data.context import ContextSettings, drawn_context
    from keras_ucaps.data.simulate import randomized, settings_for_preset, write_simulation
    from keras_ucaps.data.simulate import simulate as run
    from keras_ucaps.data.tilt_series import Microscope
    from keras_ucaps.errors import InputError

    if randomize:
        context = click.get_current_context()
        for param in ("snr", "tomogram_snr", "tilt_range", "occupancy", "slab_thickness", "b_factor", "defocus"):
            if context.get_parameter_source(param) == click.core.ParameterSource.COMMANDLINE:
                option = "--slab" if param == "slab_thickness" else "--" + param.replace("_", "-")
                raise InputError(option, "is drawn per tomogram with --randomize: give one or the other")
    if snr is not None and tomogram_snr is not None:
        raise InputError("--tomogram-snr", "give --snr (per projection) or --tomogram-snr, not both")
    if defocus[0] > defocus[1]:
        raise InputError("--defocus", f"MIN {defocus[0]:g} is above MAX {defocus[1]:g}")
    if not name.strip(".") or any(c in name for c in "/\\\0"):
        raise InputError("--name", f"{name!r} is a file name stem: no '/', no '..' (files go into --out)")
    fixed = {key: value for key, value in dict(
        vesicles=vesicles, sheets=sheets, actin=actin, microtubules=microtubules, gold=gold,
        contamination=contamination, edge=None if edge == "none" else edge, edge_fraction=edge_fraction,
        ice_gradient=ice_gradient, alignment_shift=alignment_shift, alignment_rotation=alignment_rotation,
        dose_b_factor=dose_b_factor).items() if value is not None or (key == "edge" and edge == "none")}
    if mode == "fast":
        for key in ("alignment_shift", "alignment_rotation", "dose_b_factor"):
            if fixed.get(key):
                raise InputError("--" + key.replace("_", "-"), "applies to --mode tilt-series only (fast mode has "
                                                               "no tilts)")
    if edge_fraction is not None and not edge and not draw_context:
        raise InputError("--edge-fraction", "applies with --edge or --context")
    from keras_ucaps.io.atomic import check_output

    check_output(out, folder=True)  # before any work: a file where the folder is to be

    overrides = dict(
        shape=tuple(shape) if shape else SIZES[size], voxel_size=voxel_size, occupancy=occupancy,
        max_particles=max_particles, slab_thickness=slab_thickness, snr=0.1 if snr is None else snr,
        tomogram_snr=tomogram_snr, tilt_range=tuple(tilt_range), mode=mode,
        microscope=Microscope(defocus_range=tuple(defocus), b_factor=b_factor),
    )
    if class_maps is not None:
        overrides["classes"] = [c.strip() for c in class_maps.split(",") if c.strip()]
    if distractors is not None:
        overrides["distractors"] = [c.strip() for c in distractors.split(",") if c.strip()]
    _check_memory(overrides["shape"], "--shape" if shape else "--size")
    for i in range(count):
        tomo = name if count == 1 else f"{name}_{i:02d}"
        settings, drawn = settings_for_preset(preset, seed=seed + i, **overrides), None
        if randomize:
            settings, drawn = randomized(settings, seed + i)
        if draw_context:
            context = drawn_context(seed + i, settings.shape, tilt_series=mode == "tilt-series", **fixed)
        else:
            context = ContextSettings(**fixed)
        settings.context = context
        try:
            sim = run(settings, tomo)
            files = write_simulation(sim, out, tomo, randomized=drawn)
        except InputError as err:  # each tomogram is written whole or not at all: say which ones are there
            if i == 0:
                raise
            done = f"{name}_00" + (f" to {name}_{i - 1:02d}" if i > 1 else "")
            raise InputError(err.source, f"{err.problem} ({tomo} not written; {done} were, complete)") from None
        z, y, x = sim.settings.shape
        per = f"SNR {sim.settings.snr:.3g} per projection, " if tomogram_snr is None else ""
        click.echo(f"{files['tomogram']}: {x}×{y}×{z} voxels (x×y×z) at {voxel_size:g} Å, {per}tomogram SNR "
                   f"{sim.measured['tomogram_snr']:.3g}, {mode}, {sum(sim.seconds.values()):.1f} s")
        for cls in sim.classes.classes:
            n = int((sim.particles.class_name == cls.name).sum())
            click.echo(f"  {cls.name:>8}: {n:4d} particles, label {cls.label}, radius {cls.radius:g} Å")
        click.echo(f"  {'crowding':>8}: {len(sim.distractors):4d} unlabelled particles")
        structures = [s["kind"] for s in sim.context_drawn.get("structures", []) if "skipped" not in s]
        if structures:
            kinds = {k: structures.count(k) for k in dict.fromkeys(structures)}
            click.echo(f"  {'context':>8}: " + ", ".join(f"{n} {k}" for k, n in kinds.items()))
    click.echo(f"ground truth: {out}/*_particles.csv, *_labels.mrc, *_masks.mrc, classes.json")


# What a simulation holds per voxel at its peak (volumes, label maps, projections and their transforms), measured
# on a 200×512×512 tomogram: about 1 GB.
BYTES_PER_VOXEL = 24


def _check_memory(shape, option: str) -> None:
    """Refuse a tomogram that cannot fit in the memory this machine has available, before any work."""
    import os

    from keras_ucaps.errors import InputError

    voxels = int(shape[0]) * int(shape[1]) * int(shape[2])
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # no such figure here: let the simulation try
        return
    if voxels * BYTES_PER_VOXEL > available:
        z, y, x = shape
        raise InputError(option, f"{x}×{y}×{z} voxels need about {voxels * BYTES_PER_VOXEL / 2**30:.0f} GiB to "
                                  f"simulate; this machine has {available / 2**30:.0f} GiB available")
