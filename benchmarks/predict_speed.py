"""Whole-tomogram prediction and picking: our UNet and UCaps against DeepFinder, same machine, same tomogram.

    python benchmarks/predict_speed.py [--shape 128 256 256] [--ucaps RUN] [--deepfinder-python PATH]

A SHREC-like tomogram (4v94, 1bxn, 3gl1; tilt-series imaging at SNR 0.1) is simulated with --seed
(default 99, never used for training or threshold tuning). Then, each in its own process:

- ours: ``keras-ucaps predict`` then ``keras-ucaps pick`` with the model's thresholds.json, then
  ``keras-ucaps evaluate`` against the simulation's truth;
- DeepFinder 0.2.1 (its own venv, made by benchmarks/deepfinder_venv.sh): the same UNet architecture
  with the same weights as our UNet (copied layer by layer; DeepFinder's ``my_model`` is the layout
  ``UNet3D`` reproduces, 903,060 parameters for 4 classes), its ``Segment`` (160³ patches, a 25-voxel
  crop, 55-voxel overlap: its defaults but for the patch, shrunk to fit a 128-deep volume) and its
  ``Cluster`` (MeanShift on the argmax label map, bandwidth 5 voxels as in its SHREC example; 8, the
  mean object radius, scored lower on a 64×128×128 trial), scored by the same ``evaluate``, cluster
  size as the score. --no-deepfinder-cluster skips the clustering (it grows much faster than
  prediction with the volume).

Reported per method: wall time of each command (imports and model loading included), voxels per
second of prediction, peak RSS, F1 per class at the shipped thresholds, and the best F1 per class over
all score thresholds (DeepFinder has no shipped cluster-size thresholds, so this is the fair column).
UNet weights: the bundled ``shrec-unet``; UCaps weights: --ucaps (a run folder), else random weights
(speed only).
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

ROOT = Path(__file__).resolve().parents[1]
BUNDLED_UNET = ROOT / "keras_ucaps" / "resources" / "models" / "shrec-unet"

DEEPFINDER = r"""
import sys, time, json, csv
import numpy as np
np.int = int  # DeepFinder 0.2.1 still calls np.int
import mrcfile
from deepfinder import models
from deepfinder.inference import Cluster, Segment
path, weights_npz, ncl, patch, out, names, bandwidth, cluster = sys.argv[1:9]
cluster = cluster == "1"
ncl, patch, names, bandwidth = int(ncl), int(patch), names.split(","), int(bandwidth)
net = models.my_model(patch, ncl)
arrays = np.load(weights_npz)
net.set_weights([arrays[f"w{i}"] for i in range(len(arrays.files))])
net.save_weights(out + "/df.weights.h5")
data = mrcfile.read(path)
start = time.perf_counter()
scores = Segment(Ncl=ncl, path_weights=out + "/df.weights.h5", patch_size=patch).launch(data)
predict_s = time.perf_counter() - start
labels = np.argmax(scores, axis=-1).astype(np.int8)
if not cluster:
    print(json.dumps({"predict_s": predict_s, "cluster_s": None}))
    sys.exit()
start = time.perf_counter()
objects = Cluster(clustRadius=bandwidth).launch(labels)
cluster_s = time.perf_counter() - start
if not objects:
    sys.exit("DeepFinder found no objects")
stem = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
with open(out + "/picks.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["tomo", "class_name", "x", "y", "z", "score"])
    for o in objects:  # DeepFinder's coordinates are array indices, here (z, y, x)
        w.writerow([stem, names[int(o["label"]) - 1], o["x"], o["y"], o["z"], o["cluster_size"]])
print(json.dumps({"predict_s": predict_s, "cluster_s": cluster_s, "picks": len(objects)}))
"""


def timed(command, env=None):
    """Wall seconds, the process's own peak RSS (GB) and its stdout."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, text=True, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if process.returncode != 0:
            raise SystemExit(f"{command[:4]} failed:\n" + err.read()[-3000:])
        return wall, usage.ru_maxrss / 2**20, out.read()


def working_folder(path):
    """The benchmark's working folder (a temporary one without --work) and the environment for its commands."""
    work = Path(path or tempfile.mkdtemp())
    work.mkdir(parents=True, exist_ok=True)
    return work, {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def cli(*args):
    return [sys.executable, "-m", "keras_ucaps", *map(str, args)]


def scores(work, truth, picks, name, env):
    """Per-class F1 at the picks as given and the best over score thresholds."""
    out = work / f"{name}_scores.json"
    timed(cli("evaluate", truth, picks, "--voxel-size", 10, "--json", out), env=env)
    result = json.loads(out.read_text())
    names = result["classes"]
    f1 = [result["tomograms"]["tomo"][c]["f1"] for c in names]
    best = [result["thresholds"][c]["best_f1"] for c in names]
    return names, f1, best


def row(name, voxels, predict, pick, peak, f1, best):
    fmt = lambda values: " / ".join(f"{v:.2f}" for v in values) if values else "—"  # noqa: E731
    mean = lambda values: f"{sum(values) / len(values):.3f}" if values else "—"  # noqa: E731
    pick = "not run" if pick is None else f"{pick:.1f} s"
    print(f"| {name} | {predict:.1f} s | {voxels / predict / 1e6:.3f} M | {pick} | {peak:.1f} GB | "
          f"{fmt(f1)} ({mean(f1)}) | {fmt(best)} ({mean(best)}) |", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", nargs=3, type=int, default=(128, 256, 256))
    parser.add_argument("--seed", type=int, default=99)
    parser.add_argument("--ucaps", default=None, help="UCaps run folder (default: random weights, speed only)")
    parser.add_argument("--deepfinder-python", default=None)
    parser.add_argument("--models", default="unet,ucaps,deepfinder")
    parser.add_argument("--deepfinder-bandwidth", type=int, default=5,
                        help="MeanShift bandwidth in voxels (5 in DeepFinder's SHREC example)")
    parser.add_argument("--no-deepfinder-cluster", action="store_true")
    parser.add_argument("--work", default=None, help="Working folder (default: a temporary one)")
    args = parser.parse_args()
    work, env = working_folder(args.work)
    z, y, x = args.shape
    timed(cli("simulate", "--preset", "shrec", "--shape", z, y, x, "--seed", args.seed, "--out", work / "sim"),
          env=env)
    tomo, truth = work / "sim" / "tomo.mrc", work / "sim" / "tomo_particles.csv"
    voxels = z * y * x
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; tomogram {tuple(args.shape)} (z, y, x), "
          f"{voxels / 1e6:.1f} M voxels, simulated shrec seed {args.seed}")
    print("| method | predict | voxels/s | pick | peak RAM | F1 4v94 / 1bxn / 3gl1 (macro) | best F1 (macro) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    results = {}
    for name in args.models.split(","):
        if name in ("unet", "ucaps"):
            model = BUNDLED_UNET if name == "unet" else args.ucaps
            trained = model is not None
            if not trained:
                model = work / "ucaps.keras"
                subprocess.run([sys.executable, "-c", "from keras_ucaps.models import build_model; "
                                f"build_model('ucaps', 4).save({str(model)!r})"], check=True, env=env,
                               capture_output=True)
            maps = work / name
            predict, peak, _ = timed(cli("predict", model, tomo, "--out", maps), env=env)
            picks = maps / "picks.csv"
            thresholds = Path(model) / "thresholds.json"
            extra = ["--thresholds", thresholds] if trained and thresholds.is_file() else []
            pick, pick_peak, _ = timed(cli("pick", maps / "tomo_labels.mrc", "--tomogram", tomo, "--out", picks,
                                           *extra), env=env)
            f1 = best = None
            if trained:
                _, f1, best = scores(work, truth, picks, name, env)
            results[name] = predict
            row(name, voxels, predict, pick, max(peak, pick_peak), f1, best)
        elif name == "deepfinder":
            if not args.deepfinder_python:
                print("| DeepFinder | skipped: no --deepfinder-python | | | | | |")
                continue
            npz = work / "unet_weights.npz"
            subprocess.run([sys.executable, "-c", "import numpy as np, keras, keras_ucaps; "
                            f"m = keras.saving.load_model({str(BUNDLED_UNET / 'weights_best.keras')!r}); "
                            f"np.savez({str(npz)!r}, **{{f'w{{i}}': w for i, w in enumerate(m.get_weights())}})"],
                           check=True, env=env, capture_output=True)
            out = work / "deepfinder"
            out.mkdir(exist_ok=True)
            patch = min(160, (min(args.shape) + 50) // 4 * 4)  # fits the volume with DeepFinder's 25-voxel pad
            command = [args.deepfinder_python, "-c", DEEPFINDER, str(tomo), str(npz), "4", str(patch), str(out),
                       "4v94,1bxn,3gl1", str(args.deepfinder_bandwidth), "0" if args.no_deepfinder_cluster else "1"]
            wall, peak, stdout = timed(command, env={**env, "TF_USE_LEGACY_KERAS": "1"})
            inner = json.loads(stdout.strip().splitlines()[-1])
            f1 = best = None
            if inner["cluster_s"] is not None:
                _, f1, best = scores(work, truth, out / "picks.csv", "deepfinder", env)
            predict = wall - (inner["cluster_s"] or 0)  # Segment with imports and model building, as for ours
            results["deepfinder"] = predict
            row("DeepFinder 0.2.1 (same weights)", voxels, predict, inner["cluster_s"], peak, f1, best)
    if "unet" in results and "deepfinder" in results:
        print(f"UNet prediction throughput / DeepFinder's: {results['deepfinder'] / results['unet']:.2f}×")
    if "ucaps" in results and "deepfinder" in results:
        print(f"UCaps prediction throughput / DeepFinder's: {results['deepfinder'] / results['ucaps']:.2f}×")


if __name__ == "__main__":
    main()
