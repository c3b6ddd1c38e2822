"""How F1 falls with slab thickness, at one SNR per projection and at one SNR per voxel of the tomogram.

    python benchmarks/thickness.py [--models shrec-unet shrec-ucaps] [--xy 256] [--depths 128 200] [--seed 99]

For each depth a `shrec` tomogram (tilt series, the preset's settings, seed --seed, never used in training)
is simulated twice: at the default SNR 0.1 per projection, and at the tomogram SNR that the first depth's
tomogram has at SNR 0.1 per projection (`simulate --tomogram-snr`, measured over the particle slab). Each
bundled model predicts and picks it with its tuned thresholds and scores the picks (tolerance 0.5 × radius),
through the Python API (`keras_ucaps.load(model).pick(...)`, `.evaluate(...)`). Prints one Markdown row per
model, depth and SNR definition: measured tomogram SNR, per-class F1 and macro F1.
"""

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path


def cli(*args) -> str:
    result = subprocess.run([sys.executable, "-m", "keras_ucaps", *map(str, args)], capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"keras-ucaps {' '.join(map(str, args))} failed:\n{result.stderr[-2000:]}")
    return result.stdout


def simulate(folder: Path, depth: int, xy: int, seed: int, tomogram_snr: float | None) -> tuple[Path, float]:
    snr = ["--tomogram-snr", f"{tomogram_snr:.6g}"] if tomogram_snr else []
    cli("simulate", "--preset", "shrec", "--shape", depth, xy, xy, "--seed", seed, "--out", folder, *snr)
    settings = json.loads((folder / "tomo_settings.json").read_text())
    return folder / "tomo.mrc", settings["measured"]["tomogram_snr"]


def score(picker, tomogram: Path) -> dict:
    return picker.evaluate(picker.pick(tomogram), tomogram.parent / "tomo_particles.csv")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["shrec-unet"])
    parser.add_argument("--depths", nargs="+", type=int, default=[128, 200])
    parser.add_argument("--xy", type=int, default=256)
    parser.add_argument("--seed", type=int, default=99)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, python {platform.python_version()}")
    rows = []
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        reference = None
        cases = []
        for depth in args.depths:
            tomogram, measured = simulate(work / f"p{depth}", depth, args.xy, args.seed, None)
            reference = reference or measured
            cases.append((depth, "0.1 per projection", tomogram, measured))
            if depth != args.depths[0]:
                tomogram, measured = simulate(work / f"t{depth}", depth, args.xy, args.seed, reference)
                cases.append((depth, f"{reference:.3g} per tomogram", tomogram, measured))
        import keras_ucaps

        for model in args.models:
            picker = keras_ucaps.load(model)
            for depth, definition, tomogram, measured in cases:
                report = score(picker, tomogram)
                f1 = {name: c["f1"] for name, c in report["classes"].items()}
                rows.append(f"| {model} | {depth}×{args.xy}×{args.xy} | {definition} | {measured:.3f} | "
                            + " / ".join(f"{v:.2f}" for v in f1.values()) + f" | {report['macro']['f1']:.3f} |")
                print(rows[-1], flush=True)
    print("| model | shape (z×y×x) | SNR set | tomogram SNR (slab) | F1 " + " / ".join(f1) + " | macro F1 |")
    print("| --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
