"""Copy a trained run into the package as a bundled model and export it for TF Serving.

    python tools/bundle_model.py RUN NAME

Writes keras_ucaps/resources/models/NAME/: weights_best.keras (no optimizer state) carrying its metadata —
classes, voxel size, normalisation, patch size and the run's picking settings (thresholds.json) — and, as the
run's record, config.json (file paths reduced to their names) and thresholds.json; then saved_models/NAME/1/,
replacing an earlier bundle of that name (the package is not released yet, so a bundled model has one version).
Prints the SHA-256 to register in keras_ucaps/pretrained.py. The model card (MODEL_CARD.md) is written by hand
from the run's numbers. RUN may be a bundled model's folder itself: it is then re-saved in place.
"""

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PATH_KEYS = (("fit", "data"), ("fit", "out"), ("fit", "init_weights"), ("data", "path"))


def recorded(value):
    """A path as a run record keeps it: its last component (a bundled model's name stays as it is)."""
    return value if value is None or "/" not in str(value) else Path(value).name


def main():
    run, name = Path(sys.argv[1]).resolve(), sys.argv[2]
    if not (run / "thresholds.json").is_file():
        raise SystemExit(f"{run}: no thresholds.json; tune them first with `keras-ucaps evaluate --model {run}`")
    from keras_ucaps.models.loading import load_trained
    from keras_ucaps.pretrained import sha256

    loaded = load_trained(run)
    model = loaded.model
    model.metadata = loaded.metadata.replace(picking=loaded.picking)
    config = json.loads((run / "config.json").read_text())
    for section, key in PATH_KEYS:
        if key in config.get(section, {}):
            config[section][key] = recorded(config[section][key])
    folder = ROOT / "keras_ucaps" / "resources" / "models" / name
    with tempfile.TemporaryDirectory() as scratch:  # RUN may be FOLDER itself
        model.save(Path(scratch) / "weights_best.keras")
        thresholds = (run / "thresholds.json").read_text()
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(scratch) / "weights_best.keras", folder / "weights_best.keras")
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (folder / "thresholds.json").write_text(thresholds)
    shutil.rmtree(ROOT / "saved_models" / name, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "keras_ucaps", "export", str(folder), "--name", name, "--base",
                    str(ROOT / "saved_models")], check=True)
    print(f'"{name}": ("{sha256(folder / "weights_best.keras")}", "…"),')


if __name__ == "__main__":
    main()
