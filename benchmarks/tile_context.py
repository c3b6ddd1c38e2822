"""Which tile side a whole-input model (UCaps) should predict on: F1, time and memory per layout.

    python benchmarks/tile_context.py [--model shrec-ucaps] [--shape 128 256 256] [--seed 98]
                                      [--layouts 32:own 96:own 128:own 128:blend]

A ``--preset shrec`` tomogram is simulated with ``--seed``; each layout predicts it in its own process
(timed, peak RSS from ``/usr/bin/time``), then ``pick`` (no thresholds) and ``evaluate`` give the best
F1 per class over score thresholds. Layouts: ``SIDE:own``, the tile contract (fixed tiles of SIDE, each
voxel owned by one tile); ``SIDE:blend``, the layout before it (fewest tiles of at most SIDE per axis,
their length chosen per tomogram, blended). README, "Prediction", holds the results.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ONE_LAYOUT = r"""
import dataclasses, sys, time
from keras_ucaps import pretrained
from keras_ucaps.inference.predict import predict_tomogram
from keras_ucaps.models.loading import load_trained
name, tomo, out, side, mode = sys.argv[1:6]
loaded = load_trained(pretrained.pretrained_run(name))
if mode == "blend":  # the layout before the tile contract
    loaded = dataclasses.replace(loaded, contract=dataclasses.replace(loaded.contract, whole_input=False, tile=None))
start = time.perf_counter()
predict_tomogram(loaded, tomo, out, tile=int(side))
print(f"PREDICT_S {time.perf_counter() - start:.1f}")
"""


def cli(*args):
    return [sys.executable, "-m", "keras_ucaps", *map(str, args)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="shrec-ucaps")
    parser.add_argument("--shape", type=int, nargs=3, default=[128, 256, 256])
    parser.add_argument("--seed", type=int, default=98)
    parser.add_argument("--layouts", nargs="+", default=["32:own", "96:own", "128:own", "128:blend"])
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="tile-context-"))
    sim = work / "sim"
    if not (sim / "tomo.mrc").is_file():
        subprocess.run(cli("simulate", "--preset", "shrec", "--shape", *args.shape, "--seed", args.seed, "--out", sim),
                       check=True, capture_output=True)
    print(f"{args.model} on a simulated shrec tomogram {tuple(args.shape)} (z, y, x), seed {args.seed}\n")
    print("| layout | predict | peak RAM | best F1 per class (macro) |")
    print("| --- | --- | --- | --- |")
    for layout in args.layouts:
        side, mode = layout.split(":")
        out = work / f"{side}_{mode}"
        run = subprocess.run(["/usr/bin/time", "-f", "PEAK_KB %M", sys.executable, "-c", ONE_LAYOUT, args.model,
                              str(sim / "tomo.mrc"), str(out), side, mode], capture_output=True, text=True)
        if run.returncode != 0:
            raise SystemExit(run.stderr[-2000:])
        seconds = float(re.search(r"PREDICT_S ([\d.]+)", run.stdout).group(1))
        peak_gb = int(re.search(r"PEAK_KB (\d+)", run.stderr).group(1)) / 2**20
        subprocess.run(cli("pick", out / "tomo_labels.mrc", "--out", out / "picks.csv"), check=True,
                       capture_output=True)
        subprocess.run(cli("evaluate", sim / "tomo_particles.csv", out / "picks.csv", "--voxel-size", 10, "--json",
                           out / "scores.json"), check=True, capture_output=True)
        best = {c: r["best_f1"] for c, r in json.loads((out / "scores.json").read_text())["thresholds"].items()}
        cells = " / ".join(f"{f:.2f}" for f in best.values())
        print(f"| {side}³ {mode} | {seconds:.0f} s | {peak_gb:.1f} GB | {cells} "
              f"({sum(best.values()) / len(best):.3f}) |", flush=True)


if __name__ == "__main__":
    main()
