"""Do the exported SavedModels run under the TensorFlow of the serving image the Dockerfile pins?

    python benchmarks/serving_compat.py [--venv DIR] [--base saved_models]

Reads the pinned image from the Dockerfile (``FROM tensorflow/serving:X.Y.Z``), makes (once) a venv
with ``tensorflow-cpu==X.Y.Z`` — the runtime that image carries — and, in it, loads the latest
version of every model under ``--base`` with ``tf.saved_model.load``, calls ``serving_default`` on a
fixed random batch of tiles and the batchable ``metadata`` signature. Each result is compared here with the
model's local prediction (its bundled Keras model where one has the same name, else the same
SavedModel under this machine's TensorFlow): the largest difference in probability must stay under
1e-4 and the config must equal the export's ``assets/config.json``. Exits 1 on any mismatch. The
Dockerfile's pin and this check move together: change one and this script follows it.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-4
RUNNER = r"""
import json, sys
import numpy as np
import tensorflow as tf
path, x_file, out_file = sys.argv[1:]
loaded = tf.saved_model.load(path)
x = np.load(x_file)
p = loaded.signatures["serving_default"](tomogram_patch=tf.constant(x))["probabilities"].numpy()
config = loaded.signatures["metadata"](request=tf.constant([b"a", b"b"]))["config"].numpy()
np.savez(out_file, probabilities=p, config=np.array([c.decode() for c in config]), version=tf.__version__)
"""


def serving_runtime_version(dockerfile: Path = ROOT / "Dockerfile") -> str:
    """The TensorFlow version of the pinned ``tensorflow/serving`` image (its tag)."""
    match = re.search(r"^FROM\s+tensorflow/serving:(\d+\.\d+\.\d+)", dockerfile.read_text(), re.MULTILINE)
    if not match:
        raise SystemExit(f"{dockerfile}: no pinned 'FROM tensorflow/serving:X.Y.Z' line")
    return match.group(1)


def ensure_venv(venv: Path, version: str) -> Path:
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import tensorflow as tf; print(tf.__version__)"]
    if python.is_file() and subprocess.run(probe, capture_output=True, text=True).stdout.strip() == version:
        return python
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", f"tensorflow-cpu=={version}"], check=True)
    return python


def local_prediction(name: str, version_folder: Path, x: np.ndarray) -> tuple[np.ndarray, str]:
    """The model's probabilities here: the bundled Keras model of that name, else the SavedModel."""
    from keras_ucaps import pretrained

    if name in pretrained.REGISTRY:
        import keras

        model = keras.saving.load_model(pretrained.pretrained_run(name) / "weights_best.keras", compile=False)
        return np.asarray(model(x, training=False)["probabilities"], np.float32), "bundled Keras model"
    import tensorflow as tf

    loaded = tf.saved_model.load(str(version_folder))
    return loaded.signatures["serving_default"](tomogram_patch=tf.constant(x))["probabilities"].numpy(), \
        f"SavedModel under TF {tf.__version__}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--venv", type=Path, default=Path(tempfile.gettempdir()) / "keras-ucaps-serving-runtime")
    parser.add_argument("--base", type=Path, default=ROOT / "saved_models")
    args = parser.parse_args(argv)
    version = serving_runtime_version()
    python = ensure_venv(args.venv, version)
    failures = 0
    print("| model | version | served under TF | compared with | max abs difference | config |")
    print("| --- | --- | --- | --- | --- | --- |")
    for folder in sorted(p for p in args.base.iterdir() if p.is_dir()):
        versions = sorted((int(v.name), v) for v in folder.iterdir() if v.name.isdigit())
        if not versions:
            continue
        number, path = versions[-1]
        exported = json.loads((path / "assets" / "config.json").read_text())
        tile = int(exported["tile"])
        batch = 2 if tile <= 64 else 1  # a 128³ UCaps tile alone takes several GB
        x = np.random.default_rng(0).normal(size=(batch, tile, tile, tile, 1)).astype(np.float32)
        with tempfile.TemporaryDirectory() as scratch:
            np.save(Path(scratch) / "x.npy", x)
            result = subprocess.run([str(python), "-c", RUNNER, str(path), str(Path(scratch) / "x.npy"),
                                     str(Path(scratch) / "out.npz")], capture_output=True, text=True)
            if result.returncode != 0:
                print(f"| {folder.name} | {number} | {version} | — | failed to run: "
                      f"{result.stderr.strip().splitlines()[-1]} | — |")
                failures += 1
                continue
            out = np.load(Path(scratch) / "out.npz")
            served, configs, runtime = out["probabilities"], out["config"], str(out["version"])
        local, what = local_prediction(folder.name, path, x)
        difference = float(np.max(np.abs(served - local)))
        config_ok = len(configs) == 2 and all(json.loads(c) == exported for c in configs)
        ok = difference < TOLERANCE and config_ok and runtime == version
        failures += not ok
        print(f"| {folder.name} | {number} | {runtime} | {what} | {difference:.1e} | "
              f"{'equal' if config_ok else 'DIFFERS'} |")
    print("all exports run under the pinned serving runtime" if not failures else f"{failures} export(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
