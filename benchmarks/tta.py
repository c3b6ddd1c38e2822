"""What test-time augmentation (``--tta``: the 8 axis flips averaged) buys, and what it costs.

    python benchmarks/tta.py [--models shrec-unet shrec-ucaps] [--shape 96 192 192] [--seed 99] [--snr 0.1]

A held-out tomogram is simulated (``--seed`` 99 is never used for training or threshold tuning); each
model then predicts and picks it with and without test-time augmentation (``picker.pick(tomogram, tta=...)``
with the model's picking settings) and scores the picks (``picker.evaluate``). Prints per model: the wall time
of prediction and picking, and F1 per class and macro, both ways, as a Markdown table for
benchmarks/RESULTS.md.
"""

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def keras_ucaps(*args) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "keras_ucaps", *map(str, args)], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"keras-ucaps {' '.join(map(str, args))} failed:\n{result.stderr[-3000:]}")
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["shrec-unet"])
    parser.add_argument("--shape", nargs=3, type=int, default=[96, 192, 192])
    parser.add_argument("--seed", type=int, default=99)
    parser.add_argument("--snr", type=float, default=0.1)
    parser.add_argument("--preset", default="shrec")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        keras_ucaps("simulate", "--preset", args.preset, "--shape", *args.shape, "--seed", args.seed,
                    "--snr", args.snr, "--out", folder / "sim", "--name", "held_out")
        truth = folder / "sim" / "held_out_particles.csv"
        tomogram = folder / "sim" / "held_out.mrc"
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores; {args.preset} tomogram "
              f"{'×'.join(map(str, args.shape))} (z×y×x), seed {args.seed}, SNR {args.snr}")
        print("| model | TTA | wall time | " + " | ".join(["F1 per class", "macro F1"]) + " |")
        print("| --- | --- | --- | --- | --- |")
        import keras_ucaps as api

        for model in args.models:
            picker = api.load(model)
            for tta in (False, True):
                start = time.perf_counter()
                picks = picker.pick(tomogram, tta=tta)
                seconds = time.perf_counter() - start
                result = picker.evaluate(picks, truth)
                per_class = ", ".join(f"{n} {v['f1']:.3f}" for n, v in result["classes"].items())
                print(f"| {model} | {'8 flips' if tta else 'off'} | {seconds:.0f} s | {per_class} | "
                      f"{result['macro']['f1']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
