"""Whole-tomogram prediction speed: our UNet and UCaps against DeepFinder, same machine.

    python benchmarks/predict_speed.py [--shape 128 256 256] [--deepfinder-python PATH]

Speed only: the networks have random weights (accuracy is compared in benchmarks/train_budget.sh and
the pretrained-model benchmark). Each run is a separate process; reported: wall time of the whole
command (imports and model loading included), voxels per second, and peak RSS.

DeepFinder (cryoet-deepfinder 0.2.1, the same UNet architecture) runs in its own venv; make one with
benchmarks/deepfinder_venv.sh and pass its python. Its Segment tiles with 160³ patches, a 25-voxel
crop and a 55-voxel overlap (its defaults but for the patch, shrunk to fit a 128-deep volume).
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEEPFINDER = r"""
import sys, time, json, resource
import numpy as np
np.int = int  # DeepFinder 0.2.1 still calls np.int
import mrcfile
from deepfinder import models
from deepfinder.inference import Segment
path, weights, ncl, patch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
models.my_model(patch, ncl).save_weights(weights)
data = mrcfile.read(path)
start = time.perf_counter()
scores = Segment(Ncl=ncl, path_weights=weights, patch_size=patch).launch(data)
print(json.dumps({"predict_s": time.perf_counter() - start, "shape": list(scores.shape)}))
"""


def timed(command, env=None):
    """Wall seconds, this process's own peak RSS (GB) and its stdout."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, text=True, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if process.returncode != 0:
            raise SystemExit(err.read()[-3000:])
        return wall, usage.ru_maxrss / 2**20, out.read()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", nargs=3, type=int, default=(128, 256, 256))
    parser.add_argument("--deepfinder-python", default=None)
    parser.add_argument("--models", default="unet,ucaps,deepfinder")
    args = parser.parse_args()
    from keras_ucaps.data.simulate import settings_for_preset, simulate
    from keras_ucaps.io import write_volume

    work = Path(tempfile.mkdtemp())
    sim = simulate(settings_for_preset("shrec", shape=tuple(args.shape), seed=0, mode="fast"))
    tomo = write_volume(work / "tomo.mrc", sim.tomogram, 10.0)
    voxels = int(sim.tomogram.size)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; tomogram {tuple(args.shape)} (z, y, x), "
          f"{voxels / 1e6:.1f} M voxels; random weights, 3 classes + background")
    print("| method | wall time | voxels/s | peak RAM |")
    print("| --- | --- | --- | --- |")
    rows = {}
    for name in args.models.split(","):
        if name in ("unet", "ucaps"):
            model_path = work / f"{name}.keras"
            subprocess.run([sys.executable, "-c", f"from keras_ucaps.models import build_model; "
                            f"build_model({name!r}, 4).save({str(model_path)!r})"], check=True, env=env,
                           capture_output=True)
            wall, peak, _ = timed([sys.executable, "-m", "keras_ucaps", "predict", str(model_path), str(tomo),
                                   "--out", str(work / name)], env=env)
        elif name == "deepfinder":
            if not args.deepfinder_python:
                print("| DeepFinder | skipped: no --deepfinder-python | | |")
                continue
            wall, peak, out = timed([args.deepfinder_python, "-c", DEEPFINDER, str(tomo), str(work / "df.h5"), "4",
                                     "160"], env={**env, "TF_USE_LEGACY_KERAS": "1"})
            rows["deepfinder_predict_s"] = json.loads(out.strip().splitlines()[-1])["predict_s"]
        rows[name] = wall
        print(f"| {name} | {wall:.1f} s | {voxels / wall / 1e6:.2f} M | {peak:.1f} GB |", flush=True)
    if "unet" in rows and "deepfinder" in rows:
        print(f"UNet throughput / DeepFinder's: {rows['deepfinder'] / rows['unet']:.2f}×")


if __name__ == "__main__":
    main()
