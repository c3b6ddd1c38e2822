"""A user's own particles: F1 against the number of annotated particles and the minutes of training.

    python benchmarks/few_labels.py --work DIR --counts 10 30 100 300 --minutes 1 5 15 \
        --starts generalist-unet scratch-unet shrec-ucaps scratch-ucaps [--maps FOLDER] [--json OUT]

The user's data: four particle maps that no bundled model was trained on (HELD_OUT: the generalists hold them
out of pretraining), imaged by `simulate` with cellular context and crowding by other proteins, in 96×192×192
tomograms as a user's would be. For each count N a training set holds about N particles of each class (every
particle in its tomograms annotated: `simulate --particles` caps how many are placed); the test set is two
tomograms of the same settings at the simulator's default crowding, never trained on.

For each start (a bundled model's name or a run folder: `fit --init-weights`; ``scratch-ARCH``: `fit --from-scratch`)
and each count, one `fit` with the defaults a user gets (batch 2, learning rate 1e-4, `--mixed-precision auto`:
bfloat16 on a CPU with AMX, else float32; epochs of --steps steps so that the time axis is fine, every epoch's
model kept) runs until its training time (history.csv's ``train_seconds``: training and validation, wall time)
passes the last of --minutes. For each minute mark the
model of the last epoch completed by then picks the test tomograms with its own picking settings (a new class
head has no tuned thresholds: the picker's defaults) and is scored by `evaluate`'s matching: macro F1 over the
four classes, per class, and the epoch and seconds it stood at. ``tuned`` scores the same model once more with
thresholds tuned on the store's validation tomogram (`Picker.tune`, what `evaluate --model` does): the step the
documents give a user who annotates one tomogram more; it is never trained on, nor part of the test.

With --negatives the stores also hold background patches centred on the training tomograms' unlabelled crowding
proteins and context structures (`patches --simulation-negatives`; run folders ``START_nN_negatives``): what
the model gains when told what is not a particle, as a user does with `patches --negatives` on tables of
objects they marked, or of a first model's false picks.

Run alone on the machine: the minutes are wall time. Each fit's run folder stays in --work, so a second run
only scores (and fits what is missing).
"""

import argparse
import csv
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from predict_speed import cli, timed, working_folder  # noqa: E402

# Held out of the generalists' pretraining: small (3h84, a 43 Å Hsp70-like chaperone), medium (6pxm, 73 Å),
# large (7n4y, 91 Å) and very large (2uv8, 135 Å), from ../shared/data/templates_10A (polnet, Apache-2.0).
HELD_OUT = ("3h84", "6pxm", "7n4y", "2uv8")
CROWDING = "1qvr,2cg9,3d2f,1s3x"
SHAPE = (96, 192, 192)
TEST_SEEDS = (8100, 8101)
# Particles placed per training tomogram (a fifth of them crowding): more crowd out the largest class.
PER_TOMOGRAM = 100


def training_set(count: int) -> list[tuple[int, int]]:
    """(seed, particles placed) per training tomogram for about ``count`` annotated particles per class."""
    placed = int(round(count * len(HELD_OUT) / 0.8))
    tomograms = max(1, -(-placed // PER_TOMOGRAM))
    return [(8000 + 10 * count + k, -(-placed // tomograms)) for k in range(tomograms)]


def simulate(work: Path, maps: Path, env) -> None:
    classes = ",".join(str(maps / f"{name}.mrc") for name in HELD_OUT)
    common = ["--classes", classes, "--distractors", CROWDING, "--shape", *SHAPE, "--context"]
    test = work / "test"
    if not (test / "classes.json").is_file():
        for k, seed in enumerate(TEST_SEEDS):
            timed(cli("simulate", *common, "--seed", seed, "--name", f"test_{k}", "--out", test), env=env)


def store(work: Path, maps: Path, count: int, env, negatives: bool = False) -> Path:
    """The patch store of the training set for ``count`` particles per class."""
    out = work / (f"n{count}_negatives.h5" if negatives else f"n{count}.h5")
    if out.is_file():
        return out
    classes = ",".join(str(maps / f"{name}.mrc") for name in HELD_OUT)
    sim = work / f"n{count}"
    for k, (seed, placed) in enumerate(training_set(count)):
        if not (sim / f"train_{k}.mrc").is_file():
            timed(cli("simulate", "--classes", classes, "--distractors", CROWDING, "--shape", *SHAPE, "--context",
                      "--particles", placed, "--seed", seed, "--name", f"train_{k}", "--out", sim), env=env)
    timed(cli("patches", "--simulation", sim, "--out", out, "--patch-size", 32,
              *(["--simulation-negatives"] if negatives else [])), env=env)
    return out


def annotated(work: Path, count: int) -> dict:
    """Particles per class in the training set of ``count``."""
    counts: dict = {}
    for table in sorted((work / f"n{count}").glob("train_*_particles.csv")):
        with open(table, newline="") as f:
            for row in csv.DictReader(f):
                counts[row["class_name"]] = counts.get(row["class_name"], 0) + 1
    return counts


def history(run: Path) -> list[dict]:
    path = run / "history.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def train(run: Path, data: Path, start: str, seconds: float, steps: int, precision: str, env) -> None:
    """`fit` from ``start`` until its history passes ``seconds`` of training (killed then; the run stays)."""
    rows = history(run)
    if rows and float(rows[-1]["train_seconds"]) >= seconds:
        return
    if start.startswith("scratch-"):
        how = ["--model", start.removeprefix("scratch-"), "--from-scratch"]
    else:
        how = ["--init-weights", start]
    if (run / "config.json").is_file():  # a run stopped earlier goes on with its own settings
        command = cli("fit", "--out", run, "--epochs", 10000, "--save-every", 1, "--resume")
    else:
        command = cli("fit", "--data", data, "--out", run, *how, "--epochs", 10000, "--patience", 10000,
                      "--steps-per-epoch", steps, "--validation-steps", 10, "--mixed-precision", precision,
                      "--save-every", 1)
    with open(run.parent / f"{run.name}.log", "a") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        while process.poll() is None:
            time.sleep(2)
            rows = history(run)
            if rows and float(rows[-1]["train_seconds"]) >= seconds:
                process.send_signal(signal.SIGTERM)
                process.wait()
                break
    if process.returncode not in (0, -signal.SIGTERM, 128 + signal.SIGTERM):
        raise SystemExit(f"fit {run} failed (exit {process.returncode}): see {run.parent / f'{run.name}.log'}")


def validation_tomograms(work: Path, count: int, data: Path) -> list[Path]:
    """The tomograms of the training set of ``count`` that its store ``data`` holds out for validation."""
    import h5py
    import numpy as np

    with h5py.File(data, "r") as f:
        names = json.loads(f.attrs["tomograms"])
        held = np.unique(f["tomogram"][:][f["split"][:] == 1])
    return [work / f"n{count}" / f"{names[int(i)]}.mrc" for i in held]


def score(model: Path, work: Path, tune_on: list[Path] = ()) -> dict:
    import keras_ucaps
    from keras_ucaps.classes import ClassRegistry
    from keras_ucaps.evaluation.matching import evaluate_tables
    from keras_ucaps.io import read_particles

    test = work / "test"
    registry = ClassRegistry.load(test / "classes.json")
    picker = keras_ucaps.load(model)
    if tune_on:
        picker.tune(tune_on, [t.with_name(f"{t.stem}_particles.csv") for t in tune_on])
    picks = [picker.pick(test / f"test_{k}.mrc") for k in range(len(TEST_SEEDS))]
    truths = [read_particles(test / f"test_{k}_particles.csv") for k in range(len(TEST_SEEDS))]
    from keras_ucaps.io import ParticleTable

    result = evaluate_tables(ParticleTable.concat(truths), ParticleTable.concat(picks), registry, 10.0)
    return {"macro_f1": result["macro"]["f1"], "f1": {c: v["f1"] for c, v in result["classes"].items()},
            "precision": {c: v["precision"] for c, v in result["classes"].items()},
            "recall": {c: v["recall"] for c, v in result["classes"].items()},
            **({"thresholds": dict(picker.settings.thresholds)} if tune_on else {})}


def cached_score(model: Path, work: Path, name: str, tune_on: list[Path] = ()) -> dict:
    """:func:`score`, kept in the epoch's folder as ``name``.json for later calls."""
    path = model / f"{name}.json"
    if path.is_file():
        return json.loads(path.read_text())
    result = score(model, work, tune_on)
    path.write_text(json.dumps(result))
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--maps", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data"
                        / "templates_10A", help="folder of the held-out maps (NAME.mrc at 10 Å)")
    parser.add_argument("--counts", type=int, nargs="+", default=[10, 30, 100, 300])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 5, 15])
    parser.add_argument("--starts", nargs="+", default=["generalist-unet", "scratch-unet"],
                        help="bundled models' names, run folders (fit --init-weights) or scratch-ARCH")
    parser.add_argument("--steps", type=int, default=20, help="training steps per epoch (the time axis' grain)")
    parser.add_argument("--negatives", action="store_true",
                        help="stores with background patches on crowding proteins and context structures")
    parser.add_argument("--mixed-precision", choices=("auto", "off", "bf16"), default="auto",
                        help="fit's --mixed-precision (auto: bfloat16 on a CPU with AMX, else float32); run "
                             "folders of off and bf16 end in _float32 and _bf16")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    work, env = working_folder(args.work)
    simulate(work, args.maps, env)
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "held_out": list(HELD_OUT),
               "test": [str(work / "test" / f"test_{k}.mrc") for k in range(len(TEST_SEEDS))], "runs": []}
    print(f"machine: {results['machine']}; held-out maps {', '.join(HELD_OUT)}; test seeds {TEST_SEEDS}")
    print("| start | particles per class | minutes | epoch | macro F1 | " + " | ".join(HELD_OUT)
          + " | macro F1, tuned thresholds |")
    print("| --- | --- | --- | --- | --- |" + " --- |" * len(HELD_OUT) + " --- |")
    for count in args.counts:
        data = store(work, args.maps, count, env, args.negatives)
        for start in args.starts:
            run = work / (f"{Path(start).name}_n{count}" + ("_negatives" if args.negatives else "")
                          + {"auto": "", "off": "_float32", "bf16": "_bf16"}[args.mixed_precision])
            train(run, data, start, 60 * max(args.minutes), args.steps, args.mixed_precision, env)
            precision = json.loads((run / "config.json").read_text()).get("precision", "float32")
            label = f"{Path(start).name}{' + negatives' if args.negatives else ''}, {precision}"
            rows = history(run)
            for minutes in args.minutes:
                done = [r for r in rows if float(r["train_seconds"]) <= 60 * minutes + 1e-6]
                if not done:
                    print(f"| {label} | {count} | {minutes:g} | no epoch completed |")
                    continue
                epoch = int(done[-1]["epoch"]) + 1
                model = run / "epochs" / f"{epoch:02d}"
                result = cached_score(model, work, "few_labels_score")
                tuned = cached_score(model, work, "few_labels_tuned", validation_tomograms(work, count, data))
                entry = {"start": Path(start).name, "count": count, "negatives": args.negatives, "precision": precision,
                         "annotated": annotated(work, count), "minutes": minutes,
                         "epoch": epoch, "train_seconds": float(done[-1]["train_seconds"]), **result,
                         "tuned": tuned}
                results["runs"].append(entry)
                print(f"| {label} | {count} | {minutes:g} | {epoch} | {result['macro_f1']:.3f} | "
                      + " | ".join(f"{result['f1'][c]:.2f}" for c in HELD_OUT) + f" | {tuned['macro_f1']:.3f} |",
                      flush=True)
    if args.json:  # merged with an earlier call's results (another start, count or minute mark)
        if args.json.is_file():
            def key(r):
                return r["start"], r["count"], r.get("negatives", False), r.get("precision", "float32"), r["minutes"]

            new = {key(r) for r in results["runs"]}
            kept = [r for r in json.loads(args.json.read_text())["runs"] if key(r) not in new]
            results["runs"] = sorted(kept + results["runs"], key=key)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
