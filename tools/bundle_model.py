"""Copy a trained run into the package as a bundled model and export it for TF Serving.

    python tools/bundle_model.py RUN NAME

Writes keras_ucaps/resources/models/NAME/ (weights_best.keras without optimizer state, config.json,
thresholds.json) and saved_models/NAME/1/, replacing an earlier bundle of that name (the package is
not released yet, so a bundled model has one version), and prints the SHA-256 to register in
keras_ucaps/pretrained.py. The model card (MODEL_CARD.md) is written by hand from the run's numbers.
"""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main():
    run, name = Path(sys.argv[1]), sys.argv[2]
    if not (run / "thresholds.json").is_file():
        raise SystemExit(f"{run}: no thresholds.json; tune them first with `keras-ucaps evaluate --model {run}`")
    import keras

    import keras_ucaps  # noqa: F401  (registers the layers)
    from keras_ucaps.pretrained import sha256

    folder = ROOT / "keras_ucaps" / "resources" / "models" / name
    folder.mkdir(parents=True, exist_ok=True)
    model = keras.saving.load_model(run / "weights_best.keras", compile=False)
    model.save(folder / "weights_best.keras")
    for file in ("config.json", "thresholds.json"):
        shutil.copy(run / file, folder / file)
    shutil.rmtree(ROOT / "saved_models" / name, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "keras_ucaps", "export", str(folder), "--name", name, "--base",
                    str(ROOT / "saved_models")], check=True)
    print(f'"{name}": ("{sha256(folder / "weights_best.keras")}", "…"),')


if __name__ == "__main__":
    main()
