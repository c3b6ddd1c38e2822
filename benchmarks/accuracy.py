"""Held-out accuracy, side by side: our UNet and UCaps against DeepFinder trained on the same data.

    python benchmarks/accuracy.py --unet RUN --ucaps RUN --deepfinder-weights DF/net_weights_FINAL.h5 \
        --deepfinder-python DFVENV/bin/python [--preset shrec] [--shape 128 256 256] [--seed 99]

A tomogram is simulated with --seed (default 99; never used for training or threshold tuning) at the
preset's SNR (0.1 per projection). Then:

- our models, through the Python API: ``keras_ucaps.load(RUN).pick(tomogram)`` with the run's picking settings
  (thresholds tuned on another simulated tomogram), scored by ``evaluate``;
- DeepFinder 0.2.1 (its own venv, benchmarks/deepfinder_venv.sh) with weights trained by
  benchmarks/deepfinder_train.py: its ``Segment`` (160³ patches, shrunk to fit the volume) and its
  ``Cluster`` (MeanShift, bandwidth 5 voxels as in its SHREC example; cluster size is the score, every
  cluster kept), in its own process, and, separately, its probability maps picked by our picker
  (:func:`keras_ucaps.picking.maps.pick_from_maps`, no thresholds), so the network and the picker can be told
  apart. --no-deepfinder-cluster skips MeanShift (slow).

Printed per method and class: precision, recall and F1 at the method's own thresholds, and the best F1
over all score thresholds (the oracle column: the fair one for methods without tuned thresholds).

    python benchmarks/accuracy.py --shifted --models shrec-unet,shrec-ucaps [--preset shrec] [--seed 99]

The shifted test set: beside the in-distribution tomogram, the same particles (same seed) imaged far from
the training data, one change at a time (SHIFTS: the other simulation mode, a sharper and a blurrier
envelope, SNR 0.05 and 0.3 per projection, a ±45° tilt range, a 200-deep slab), each picked with each model
(bundled name or run folder, its own thresholds) and scored: macro F1 per tomogram and the largest drop.
Each model's probability maps are kept in --work (SHIFT/NAME_maps/): run again, it only picks and scores, so
thresholds tuned again are scored without predicting again.

    python benchmarks/accuracy.py --seeds 99 100 101 102 --models shrec-unet,shrec-ucaps [--tile N] [--overlap N]

In distribution over several held-out seeds (never used for training or tuning; 95-98 tune the bundled
thresholds, tools/tune_thresholds.py): macro F1 per seed, mean ± standard deviation, per-class means.
--tile and --overlap pass predict's.

    python benchmarks/accuracy.py --seeds 99 100 101 102 --context --models shrec-unet,shrec-ucaps
    python benchmarks/accuracy.py --preset full --seeds 99 100 101 102 --context --models MODEL --apart 1s3x,3qm1

The cellular test set: the same seeds simulated with `simulate --context` (membranes, filaments, gold,
contamination, an edge, uneven ice, alignment errors and dose, drawn per seed), in seedNN_context/; compare
with the run without --context (the same particles' settings, the same seeds). benchmarks/false_picks.py then
says how many false picks lie on the context structures. --apart names classes (the `full` preset's tiny 1s3x
and 3qm1) reported on their own beside the macro F1 of the rest.
"""

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from predict_speed import cli, timed, working_folder  # noqa: E402

from keras_ucaps.classes import ClassRegistry  # noqa: E402
from keras_ucaps.evaluation.matching import evaluate_tables, threshold_sweep  # noqa: E402
from keras_ucaps.io import read_particles, write_particles  # noqa: E402

DEEPFINDER = r"""
import sys, time, json, csv
import numpy as np
np.int = int  # DeepFinder 0.2.1 still calls np.int
import mrcfile
from deepfinder.inference import Cluster, Segment
path, weights, ncl, patch, out, names, bandwidth, cluster = sys.argv[1:9]
ncl, patch, names, bandwidth, cluster = int(ncl), int(patch), names.split(","), int(bandwidth), cluster == "1"
data = mrcfile.read(path)
start = time.perf_counter()
scores = Segment(Ncl=ncl, path_weights=weights, patch_size=patch).launch(data)
predict_s = time.perf_counter() - start
labels = np.argmax(scores, axis=-1).astype(np.int8)
stem = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
for name, channel in zip(names, range(1, ncl)):
    mrcfile.write(f"{out}/{stem}_prob_{name}.mrc", scores[..., channel].astype(np.float32), voxel_size=10.0,
                  overwrite=True)
mrcfile.write(f"{out}/{stem}_labels.mrc", labels, voxel_size=10.0, overwrite=True)
cluster_s = None
if cluster:
    start = time.perf_counter()
    objects = Cluster(clustRadius=bandwidth).launch(labels)
    cluster_s = time.perf_counter() - start
    with open(out + "/cluster_picks.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["tomo", "class_name", "x", "y", "z", "score"])
        for o in objects:  # DeepFinder's coordinates are array indices, here (z, y, x)
            w.writerow([stem, names[int(o["label"]) - 1], o["x"], o["y"], o["z"], o["cluster_size"]])
print(json.dumps({"predict_s": predict_s, "cluster_s": cluster_s}))
"""


def evaluate(work, truth, picks, name, classes, voxel_size=10.0):
    """Per-class scores of the ``picks`` table against the ``truth`` file (tomogram ``tomo``) and the best F1
    over score thresholds, as ``keras-ucaps evaluate`` gives them; also written to WORK/NAME_scores.json."""
    truth = read_particles(truth)
    result = evaluate_tables(truth, picks, classes, voxel_size)
    result["thresholds"] = threshold_sweep(truth, picks, classes, voxel_size)
    (work / f"{name}_scores.json").write_text(json.dumps(result, indent=2))
    tomo = result["tomograms"]["tomo"]
    return {c: {**tomo[c], "best_f1": result["thresholds"][c]["best_f1"]} for c in result["classes"]}


def print_rows(name, scores):
    classes = list(scores)
    macro = lambda key: sum(scores[c][key] for c in classes) / len(classes)  # noqa: E731
    cells = " | ".join(f"{scores[c]['precision']:.2f} / {scores[c]['recall']:.2f} / {scores[c]['f1']:.2f} "
                       f"({scores[c]['best_f1']:.2f})" for c in classes)
    print(f"| {name} | {cells} | {macro('f1'):.3f} ({macro('best_f1'):.3f}) |", flush=True)


# Imaging far from the bundled models' training data (SNR 0.1 per projection, B 200 Å², defocus 2-5 µm, ±60°
# in 3° steps, a slab of 3/4 of 128 voxels, tilt-series mode), one change at a time. The randomised training
# sets (simulate --randomize) cover SNR 0.03-0.5, B 50-600, defocus 1.5-6, tilts of 40-70°: fast mode, B 0
# and B 2000 with their defocus, and the 200-deep slab lie outside those too.
SHIFTS = {
    "in distribution": [],
    "fast mode": ["--mode", "fast"],
    "sharper: B 0, defocus 1-1.5 µm": ["--b-factor", "0", "--defocus", "1", "1.5"],
    "blurrier: B 2000, defocus 6-7 µm": ["--b-factor", "2000", "--defocus", "6", "7"],
    "SNR 0.05": ["--snr", "0.05"],
    "SNR 0.3": ["--snr", "0.3"],
    "tilt ±45°": ["--tilt-range", "-45", "45", "3"],
    "200 deep": "thick",
}


def maps_name(model, predict_options=()):
    """The name of a model's maps, picks and scores in a benchmark folder (NAME_maps/, NAME_picks.csv, ...)."""
    return _slug(Path(model).name + "".join(map(str, predict_options)))


def _slug(text):
    """A folder or file name made of ASCII letters, digits and underscores."""
    return "".join(c if c.isascii() and c.isalnum() else "_" for c in text)


def pick_and_score(folder, model, tile=None, overlap=None):
    """Per-class scores of ``model`` (bundled name or run folder) on FOLDER/tomo.mrc, picked with its own picking
    settings (``keras_ucaps.load(model)``). Its maps are kept in FOLDER/NAME_maps, so thresholds tuned again
    re-pick without predicting again; ``tile`` and ``overlap`` (predict's) change the maps' folder name."""
    import keras_ucaps
    from keras_ucaps.picker import ProbabilityMaps

    options = [*(["--tile", tile] if tile is not None else []),
               *(["--overlap", overlap] if overlap is not None else [])]
    name = maps_name(model, options)
    picker, tomogram, folder_maps = keras_ucaps.load(model), folder / "tomo.mrc", folder / f"{name}_maps"
    if (folder_maps / "tomo_labels.mrc").is_file():
        maps = ProbabilityMaps.read(folder_maps, "tomo")
    else:
        maps = picker.predict(tomogram, out=folder_maps, tile=tile, overlap=overlap)
    picks = picker.pick(tomogram, maps=maps)
    write_particles(picks, folder / f"{name}_picks.csv")
    return evaluate(folder, folder / "tomo_particles.csv", picks, name, picker.classes)


def heldout_seeds(args, work, env):
    """Macro F1 of each model on in-distribution tomograms of several seeds: one tomogram's figure, 300-odd
    particles, moves by a few hundredths from seed to seed, more than the gaps between models."""
    import statistics

    z, y, x = args.shape
    models = [m for m in args.models.split(",") if m]
    options = [*(["--tile", args.tile] if args.tile is not None else []),
               *(["--overlap", args.overlap] if args.overlap is not None else [])]  # as printed
    table, located = {}, {}
    suffix = "_context" if args.context else ""
    for seed in args.seeds:
        folder = work / f"seed{seed}{suffix}"
        if not (folder / "tomo.mrc").is_file():
            timed(cli("simulate", "--preset", args.preset, "--shape", z, y, x, "--seed", seed, "--out", folder,
                      *(["--context"] if args.context else [])), env=env)
        for model in models:
            start = time.perf_counter()
            scores = pick_and_score(folder, model, args.tile, args.overlap)
            table.setdefault(model, {})[seed] = scores
            f1 = {c: round(v["f1"], 3) for c, v in scores.items()}
            found = json.loads((folder / f"{maps_name(model, options)}_scores.json").read_text())["localisation"]
            located.setdefault(model, {})[seed] = found["f1"]
            print(f"{model} | seed {seed} | macro F1 {sum(f1.values()) / len(f1):.3f} | any class "
                  f"{found['f1']:.3f} | {f1} | "
                  f"{time.perf_counter() - start:.0f} s", flush=True)
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores; '{args.preset}' preset {tuple(args.shape)}"
          + (", with cellular context" if args.context else "")
          + (f", predict {' '.join(map(str, options))}" if options else ""))
    classes = list(next(iter(next(iter(table.values())).values())))
    print("| model | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean ± sd | "
          + " / ".join(classes) + " (mean) |")
    print("| --- |" + " --- |" * (len(args.seeds) + 2))
    for model, rows in table.items():
        macro = [sum(v["f1"] for v in rows[s].values()) / len(rows[s]) for s in args.seeds]
        spread = statistics.stdev(macro) if len(macro) > 1 else 0.0
        per_class = " / ".join(f"{statistics.mean(rows[s][c]['f1'] for s in args.seeds):.2f}" for c in classes)
        print(f"| `{model}` | " + " | ".join(f"{m:.3f}" for m in macro)
              + f" | {statistics.mean(macro):.3f} ± {spread:.3f} | {per_class} |")
    apart = [c for c in args.apart.split(",") if c] if args.apart else []
    for model, rows in table.items():
        rest = [c for c in classes if c not in apart]
        if not apart or not rest:
            continue
        macro = [statistics.mean(rows[s][c]["f1"] for c in rest) for s in args.seeds]
        spread = statistics.stdev(macro) if len(macro) > 1 else 0.0
        print(f"`{model}` without {', '.join(apart)}: " + " / ".join(f"{m:.3f}" for m in macro)
              + f", {statistics.mean(macro):.3f} ± {spread:.3f}; "
              + ", ".join(f"{c} {statistics.mean(rows[s][c]['f1'] for s in args.seeds):.3f}"
                          for c in apart if c in classes))
    for model, rows in located.items():
        found = [rows[s] for s in args.seeds]
        spread = statistics.stdev(found) if len(found) > 1 else 0.0
        print(f"`{model}` localisation F1 (a particle found, whatever its class): "
              + " / ".join(f"{f:.3f}" for f in found) + f", {statistics.mean(found):.3f} ± {spread:.3f}")
    by_seed = {m: {str(s): v for s, v in r.items()} for m, r in table.items()}
    (work / f"seeds{suffix}.json").write_text(json.dumps(by_seed, indent=2))


def shifted(args, work, env):
    """Macro F1 of each model on the in-distribution tomogram and on each shifted one."""
    z, y, x = args.shape
    models = [m for m in args.models.split(",") if m]
    table = {}
    for shift, options in SHIFTS.items():
        folder = work / ("shift_" + _slug(shift))
        shape = (200, y, x) if options == "thick" else (z, y, x)
        if not (folder / "tomo.mrc").is_file():
            timed(cli("simulate", "--preset", args.preset, "--shape", *shape, "--seed", args.seed, "--out", folder,
                      *([] if options == "thick" else options)), env=env)
        for model in models:
            scores = pick_and_score(folder, model)
            table.setdefault(model, {})[shift] = scores
            f1 = {c: round(v["f1"], 3) for c, v in scores.items()}
            print(f"{model} | {shift} | macro F1 {sum(f1.values()) / len(f1):.3f} | {f1}", flush=True)
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores; '{args.preset}' preset, seed {args.seed}")
    print("| model | " + " | ".join(SHIFTS) + " | largest drop |")
    print("| --- |" + " --- |" * (len(SHIFTS) + 1))
    for model, rows in table.items():
        macro = {s: sum(v["f1"] for v in rows[s].values()) / len(rows[s]) for s in rows}
        drop = macro["in distribution"] - min(macro.values())
        print(f"| `{model}` | " + " | ".join(f"{macro[s]:.3f}" for s in SHIFTS) + f" | {drop:.3f} |")
    (work / "shifted.json").write_text(json.dumps(table, indent=2))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="shrec")
    parser.add_argument("--shape", nargs=3, type=int, default=(128, 256, 256))
    parser.add_argument("--seed", type=int, default=99)
    parser.add_argument("--unet", default=None, help="UNet run folder")
    parser.add_argument("--ucaps", default=None, help="UCaps run folder")
    parser.add_argument("--deepfinder-weights", default=None, help="From benchmarks/deepfinder_train.py")
    parser.add_argument("--deepfinder-python", default=None)
    parser.add_argument("--deepfinder-bandwidth", type=int, default=5)
    parser.add_argument("--no-deepfinder-cluster", action="store_true")
    parser.add_argument("--work", default=None, help="Working folder (default: a temporary one)")
    parser.add_argument("--shifted", action="store_true", help="Score --models on the shifted test set instead")
    parser.add_argument("--models", default="shrec-unet,shrec-ucaps",
                        help="With --shifted or --seeds: comma-separated bundled model names or run folders")
    parser.add_argument("--seeds", nargs="+", type=int, default=None,
                        help="Score --models on in-distribution tomograms of these seeds instead")
    parser.add_argument("--context", action="store_true",
                        help="With --seeds: the cellular test set (the seeds simulated with --context)")
    parser.add_argument("--tile", type=int, default=None, help="With --seeds: predict --tile")
    parser.add_argument("--overlap", type=int, default=None, help="With --seeds: predict --overlap")
    parser.add_argument("--apart", default=None,
                        help="With --seeds: comma-separated classes (e.g. the tiny 1s3x,3qm1) also reported on their "
                             "own, beside the macro F1 of the others")
    args = parser.parse_args()
    if (args.tile is not None or args.overlap is not None) and not args.seeds:
        parser.error("--tile and --overlap apply with --seeds only")
    if (args.context or args.apart) and not args.seeds:
        parser.error("--context and --apart apply with --seeds only")
    work, env = working_folder(args.work)
    if args.shifted:
        return shifted(args, work, env)
    if args.seeds:
        return heldout_seeds(args, work, env)
    z, y, x = args.shape
    sim = work / "sim"
    if not (sim / "tomo.mrc").is_file():
        timed(cli("simulate", "--preset", args.preset, "--shape", z, y, x, "--seed", args.seed, "--out", sim),
              env=env)
    tomo, truth = sim / "tomo.mrc", sim / "tomo_particles.csv"
    classes = [c["name"] for c in json.loads((sim / "classes.json").read_text())["classes"]]
    particles = sum(1 for _ in open(truth)) - 1
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; held-out '{args.preset}' tomogram "
          f"{tuple(args.shape)} (z, y, x), seed {args.seed}, {particles} particles, SNR 0.1")
    print("| method | " + " | ".join(f"{c}: P / R / F1 (best F1)" for c in classes) + " | macro F1 (best) |")
    print("| --- |" + " --- |" * (len(classes) + 1))
    results = {}
    import keras_ucaps

    registry = ClassRegistry.load(sim / "classes.json")
    for name, run in (("UNet", args.unet), ("UCaps", args.ucaps)):
        if run is None:
            continue
        picks = keras_ucaps.load(run).pick(tomo)
        write_particles(picks, work / f"{name.lower()}_picks.csv")
        results[name] = evaluate(work, truth, picks, name.lower(), registry)
        print_rows(f"{name} (ours)", results[name])
    if args.deepfinder_weights and args.deepfinder_python:
        out = work / "deepfinder"
        out.mkdir(exist_ok=True)
        shutil.copy(sim / "classes.json", out / "classes.json")
        patch = min(160, (min(args.shape) + 50) // 4 * 4)
        command = [args.deepfinder_python, "-c", DEEPFINDER, str(tomo), str(args.deepfinder_weights),
                   str(len(classes) + 1), str(patch), str(out), ",".join(classes), str(args.deepfinder_bandwidth),
                   "0" if args.no_deepfinder_cluster else "1"]
        timed(command, env={**env, "TF_USE_LEGACY_KERAS": "1"})
        from keras_ucaps.picking.maps import PickingSettings, pick_from_maps

        picks, _, _ = pick_from_maps(out / "tomo_labels.mrc", registry, PickingSettings())
        results["DeepFinder + our pick"] = evaluate(work, truth, picks, "deepfinder_pick", registry)
        print_rows("DeepFinder 0.2.1 network, our `pick`", results["DeepFinder + our pick"])
        if not args.no_deepfinder_cluster:
            results["DeepFinder"] = evaluate(work, truth, read_particles(out / "cluster_picks.csv"), "deepfinder",
                                             registry)
            print_rows("DeepFinder 0.2.1 (Segment + Cluster)", results["DeepFinder"])
    (work / "accuracy.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
