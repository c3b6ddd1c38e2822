"""Tune a model's picking thresholds on four simulated tomograms, as the bundled models' were.

    python tools/tune_thresholds.py WORK [MODEL ...]     (default: shrec-unet shrec-ucaps)

Seeds 95-98 (128×256×256, the `shrec` preset) are never used for training or held-out scoring (99-102 are the
held-out seeds of ``benchmarks/accuracy.py --seeds``). Each MODEL (a bundled name or a run folder) picks them
without thresholds with its own fit radius and density weight, the picks are pooled, and each class gets the
middle of its F1 plateau (``Picker.tune``, what ``keras-ucaps evaluate --model`` does), written with the rest of
its picking settings into WORK/model_NAME/thresholds.json: copy that file beside the model to use them.
"""

import subprocess
import sys
from pathlib import Path

SEEDS = (95, 96, 97, 98)


def main():
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    work, models = Path(sys.argv[1]), sys.argv[2:] or ["shrec-unet", "shrec-ucaps"]
    sim = work / "sim"
    for seed in SEEDS:
        if not (sim / f"tune{seed}.mrc").is_file():
            subprocess.run([sys.executable, "-m", "keras_ucaps", "simulate", "--preset", "shrec", "--shape", "128",
                            "256", "256", "--seed", str(seed), "--name", f"tune{seed}", "--out", str(sim)],
                           check=True, capture_output=True)
    import keras_ucaps

    tomograms = [sim / f"tune{seed}.mrc" for seed in SEEDS]
    truths = [sim / f"tune{seed}_particles.csv" for seed in SEEDS]
    for model in models:
        picker = keras_ucaps.load(model)
        thresholds = picker.tune(tomograms, truths)
        folder = work / f"model_{Path(model).name}"
        folder.mkdir(parents=True, exist_ok=True)
        path = picker.save_settings(folder)
        print(f"{model}: " + ", ".join(f"{name} {value:.3f}" for name, value in thresholds.items()) + f" → {path}")


if __name__ == "__main__":
    main()
