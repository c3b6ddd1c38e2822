"""Held-out F1 against training time: each kept epoch of a run, tuned and scored like a bundled model.

    python benchmarks/learning_f1.py RUN [RUN ...] [--epochs 5 10 ...] [--cached] [--work runs/learning_f1]
        [--preset shrec|invitro]

RUN/epochs/NN/ holds the model after epoch NN (weights_best.keras, as ``keras-ucaps fit --save-every N`` keeps it).
For each kept epoch, through the Python API: ``picker.tune`` on a tuning tomogram (``simulate --preset`` of
``--preset``, shrec by default; seed 98) sets the threshold per class (the middle of its F1 plateau), saved into
that epoch's folder, then ``picker.pick`` on the held-out tomogram (seed 99) and its scores: precision, recall and
F1 per class, as the bundled models' held-out figures are made, but with the epoch's own picking settings (the
whole fit radius unless its run was fine-tuned from a model with another). Printed for every epoch of the run's
history.csv: its wall time (``train_seconds``) and validation Dice per class, and the held-out F1 where scored.
Results are cached in each epoch's folder (held_out_scores.json): running it again scores only the epochs not
scored yet (none with ``--cached``).
"""

import argparse
import csv
import json
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import evaluate  # noqa: E402
from predict_speed import cli, timed, working_folder  # noqa: E402 (cli and timed simulate the tomograms)

from keras_ucaps.io.jsonfile import write_json  # noqa: E402


def simulated(work, preset, seed, shape, env):
    folder = work / f"seed{seed}" if preset == "shrec" else work / f"{preset}_seed{seed}"
    if not (folder / "tomo.mrc").is_file():
        timed(cli("simulate", "--preset", preset, "--shape", *shape, "--seed", seed, "--out", folder), env=env)
    return folder


def history(run):
    """{epoch (1-based): (train_seconds or None, validation Dice per class in the run's class order)}."""
    names = [c["name"] for c in json.loads((run / "config.json").read_text())["classes"]["classes"]]
    rows = {}
    with open(run / "history.csv", newline="") as f:
        for row in csv.DictReader(f):
            dice = {k.rsplit("_", 1)[1]: float(v) for k, v in row.items() if k.startswith("val_") and "dice_" in k}
            dice = {name: dice[name] for name in names if name in dice}
            seconds = float(row["train_seconds"]) if row.get("train_seconds") else None
            rows[int(row["epoch"]) + 1] = (seconds, dice)
    return rows


def score_epoch(folder, tune, held):
    """Tune thresholds on ``tune``, score ``held``, through the Python API; cached in folder/held_out_scores.json
    (and the thresholds in folder/thresholds.json)."""
    import time

    import keras_ucaps

    result_path = folder / "held_out_scores.json"
    if result_path.is_file():
        return json.loads(result_path.read_text())
    picker = keras_ucaps.load(folder)
    if not (folder / "thresholds.json").is_file():
        picker.tune([tune / "tomo.mrc"], [tune / "tomo_particles.csv"])
        picker.save_settings(folder)
    start = time.perf_counter()
    picks = picker.pick(held / "tomo.mrc")
    seconds = time.perf_counter() - start
    scores = evaluate(folder, held / "tomo_particles.csv", picks, "held_out_evaluate", picker.classes)
    result = {c: {k: v[k] for k in ("precision", "recall", "f1")} for c, v in scores.items()}
    result = {"classes": result, "pick_seconds": seconds}
    write_json(result_path, result)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--epochs", nargs="*", type=int, default=None,
                        help="Score only these kept epochs (default: every kept epoch)")
    parser.add_argument("--cached", action="store_true", help="Score nothing: print the epochs scored before")
    parser.add_argument("--shape", nargs=3, type=int, default=(128, 256, 256))
    parser.add_argument("--work", default=None, help="Folder for the two tomograms (default: a temporary one)")
    parser.add_argument("--preset", choices=("shrec", "invitro"), default="shrec",
                        help="The simulation preset of the runs' classes")
    args = parser.parse_args()
    work, env = working_folder(args.work)
    tune, held = (simulated(work, args.preset, seed, args.shape, env) for seed in (98, 99))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; {args.preset!r} tuning seed 98, held out seed 99, "
          f"{tuple(args.shape)} (z, y, x)")
    print("| run | epoch | training wall time | validation Dice | held-out F1 (macro) |")
    print("| --- | --- | --- | --- | --- |")
    for run in args.runs:
        for epoch, (seconds, dice) in history(run).items():
            folder = run / "epochs" / f"{epoch:02d}"
            wanted = (folder / "weights_best.keras").is_file() and (args.epochs is None or epoch in args.epochs)
            if (folder / "held_out_scores.json").is_file() or (wanted and not args.cached):
                f1 = [v["f1"] for v in score_epoch(folder, tune, held)["classes"].values()]
                f1 = f"{' / '.join(f'{v:.2f}' for v in f1)} ({sum(f1) / len(f1):.3f})"
            else:
                f1 = ""
            wall = "" if seconds is None else f"{seconds:,.0f} s"
            print(f"| {run.name} | {epoch} | {wall} | {' / '.join(f'{v:.3f}' for v in dice.values())} | {f1} |",
                  flush=True)


if __name__ == "__main__":
    main()
