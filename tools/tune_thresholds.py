"""Tune a model's picking thresholds on four simulated tomograms, as the bundled models' were.

    python tools/tune_thresholds.py WORK [MODEL ...] [--context] [--preset invitro]
    (default models: shrec-unet shrec-ucaps)

Seeds 95-98 (128×256×256, the `shrec` preset unless --preset names another) are never used for training or
held-out scoring (99-102 are the held-out seeds of ``benchmarks/accuracy.py --seeds``). Each MODEL (a bundled
name or a run folder) picks them without thresholds with its own fit radius and density weight, the picks are
pooled, and each class gets the middle of its F1 plateau (``Picker.tune``, what ``keras-ucaps evaluate
--model`` does), written with the rest of its picking settings into WORK/model_NAME/thresholds.json: copy that
file beside the model to use them. With --context the same seeds are also simulated with cellular context
(`simulate --context`) and pooled with them: thresholds for tomograms of cells as well as of particles alone.
"""

import subprocess
import sys
from pathlib import Path

SEEDS = (95, 96, 97, 98)


def main():
    arguments = [a for a in sys.argv[1:] if a != "--context"]
    context = "--context" in sys.argv[1:]
    preset = "shrec"
    if "--preset" in arguments:
        at = arguments.index("--preset")
        preset = arguments[at + 1]
        del arguments[at:at + 2]
    if not arguments:
        raise SystemExit(__doc__)
    work, models = Path(arguments[0]), arguments[1:] or ["shrec-unet", "shrec-ucaps"]
    sim = work / ("sim" if preset == "shrec" else f"sim_{preset}")
    names = [f"tune{seed}" for seed in SEEDS] + ([f"tune{seed}_context" for seed in SEEDS] if context else [])
    for name in names:
        if not (sim / f"{name}.mrc").is_file():
            seed = name[4:6]
            subprocess.run([sys.executable, "-m", "keras_ucaps", "simulate", "--preset", preset, "--shape", "128",
                            "256", "256", "--seed", seed, "--name", name, "--out", str(sim),
                            *(["--context"] if name.endswith("_context") else [])],
                           check=True, capture_output=True)
    import keras_ucaps

    tomograms = [sim / f"{name}.mrc" for name in names]
    truths = [sim / f"{name}_particles.csv" for name in names]
    for model in models:
        picker = keras_ucaps.load(model)
        thresholds = picker.tune(tomograms, truths)
        folder = work / f"model_{Path(model).name}"
        folder.mkdir(parents=True, exist_ok=True)
        path = picker.save_settings(folder)
        print(f"{model}: " + ", ".join(f"{name} {value:.3f}" for name, value in thresholds.items()) + f" → {path}")


if __name__ == "__main__":
    main()
