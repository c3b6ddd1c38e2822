"""What part of the cellular context costs a model its F1: each held-out seed simulated with the context its seed
draws, split in two.

    python benchmarks/context_ablation.py [--seeds 99 101] [--models shrec-unet] [--work DIR]

Per seed (the `shrec` preset, 128×256×256, as `benchmarks/accuracy.py --seeds ... --context`): the structures
alone (membranes, filaments, gold, contamination, edge; no alignment error, no dose B-factor, even ice), the
imaging alone (its ice gradient, residual alignment shifts and rotations, dose B-factors; no structures), and the
alignment errors alone. Each model picks with its own thresholds; prints macro and per-class F1. Compare with the
same seeds' rows of the held-out and cellular sets in RESULTS.md.
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path


def variants(seed: int) -> dict[str, list[str]]:
    from keras_ucaps.data.context import drawn_context

    drawn = drawn_context(seed, (128, 256, 256))
    alignment = ["--alignment-shift", str(drawn.alignment_shift), "--alignment-rotation", str(drawn.alignment_rotation)]
    return {
        "structures only": ["--context", "--alignment-shift", "0", "--alignment-rotation", "0", "--dose-b-factor", "0",
                            "--ice-gradient", "1"],
        "imaging only": [*alignment, "--ice-gradient", str(drawn.ice_gradient), "--dose-b-factor",
                         str(drawn.dose_b_factor)],
        "alignment only": alignment,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=[99, 101])
    parser.add_argument("--models", default="shrec-unet")
    parser.add_argument("--work", type=Path, default=None, help="Kept and reused (default: a temporary folder)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="context-ablation-"))
    import keras_ucaps

    pickers = {name: keras_ucaps.load(name) for name in args.models.split(",")}
    print("| seed | variant | model | macro F1 | per class |\n| --- | --- | --- | --- | --- |")
    for seed in args.seeds:
        for variant, options in variants(seed).items():
            folder = work / f"seed{seed}_{variant.replace(' ', '_')}"
            if not (folder / "tomo.mrc").is_file():
                subprocess.run([sys.executable, "-m", "keras_ucaps", "simulate", "--preset", "shrec", "--shape", "128",
                                "256", "256", "--seed", str(seed), "--out", str(folder), *options],
                               check=True, capture_output=True)
            for name, picker in pickers.items():
                scores = picker.evaluate(picker.pick(folder / "tomo.mrc"), folder / "tomo_particles.csv")
                f1 = {c: v["f1"] for c, v in scores["classes"].items()}
                print(f"| {seed} | {variant} | `{name}` | {scores['macro']['f1']:.3f} | "
                      + " / ".join(f"{v:.2f}" for v in f1.values()) + " |", flush=True)


if __name__ == "__main__":
    main()
