"""Train DeepFinder 0.2.1 on a keras-ucaps simulation for a fixed wall-clock budget.

Runs inside DeepFinder's own venv (benchmarks/deepfinder_venv.sh), with TF_USE_LEGACY_KERAS=1:

    TF_USE_LEGACY_KERAS=1 DFVENV/bin/python benchmarks/deepfinder_train.py SIM TARGETS OUT \
        --budget 991 [--validation tomo_05] [--patch 32] [--batch 4] [--steps-per-epoch 80]

SIM is a ``keras-ucaps simulate`` folder (NAME.mrc, NAME_particles.csv, classes.json); TARGETS holds
NAME_labels.mrc for each tomogram, written by ``keras-ucaps targets`` (the same sphere targets our
patch store is cut from). DeepFinder's own trainer (``deepfinder.training.Train``) does the rest:
its patch sampling around the particles (random shifts up to 13 voxels, 180° rotation about the
tilt axis), its Tversky loss, Adam 1e-4, its per-epoch validation. Every setting is DeepFinder's
default except the patch side and batch size, set to ours (32, 4) so both see the same amount of data
per step, and the epoch count: training stops when the budget (seconds of training, validation
included) is spent, and the weights at that moment are written to OUT/net_weights_FINAL.h5.
"""

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

np.int = int  # DeepFinder 0.2.1 still calls np.int

from deepfinder.training import Train  # noqa: E402


class BudgetSpent(Exception):
    pass


def object_list(table, tomo_idx, labels):
    """DeepFinder's object list (its coordinates are voxel indices x, y, z; labels 1..N)."""
    with open(table, newline="") as f:
        return [{"tomo_idx": tomo_idx, "label": labels[row["class_name"]], "x": int(round(float(row["x"]))),
                 "y": int(round(float(row["y"]))), "z": int(round(float(row["z"])))}
                for row in csv.DictReader(f)]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("simulation", type=Path)
    parser.add_argument("targets", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--budget", type=float, required=True, help="Seconds of training")
    parser.add_argument("--validation", default=None, help="Tomogram held out for validation (default: the last)")
    parser.add_argument("--patch", type=int, default=32)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps-per-epoch", type=int, default=80)
    parser.add_argument("--steps-per-valid", type=int, default=10)
    args = parser.parse_args()

    classes = json.loads((args.simulation / "classes.json").read_text())["classes"]
    labels = {c["name"]: int(c["label"]) for c in classes}
    names = sorted(p.stem for p in args.simulation.glob("*.mrc")
                   if (args.simulation / f"{p.stem}_particles.csv").is_file())
    validation = args.validation or names[-1]
    data, target, train, valid = [], [], [], []  # paths, paths, object lists
    for i, name in enumerate(names):
        data.append(str(args.simulation / f"{name}.mrc"))
        target.append(str(args.targets / f"{name}_labels.mrc"))
        objects = object_list(args.simulation / f"{name}_particles.csv", i, labels)
        (valid if name == validation else train).extend(objects)

    args.out.mkdir(parents=True, exist_ok=True)
    trainer = Train(Ncl=len(classes) + 1, dim_in=args.patch)
    trainer.path_out = str(args.out) + "/"
    trainer.batch_size = args.batch
    trainer.epochs = 10**6
    trainer.steps_per_epoch = args.steps_per_epoch
    trainer.steps_per_valid = args.steps_per_valid
    trainer.flag_direct_read = 0  # DeepFinder loads the tomograms into memory once

    start = time.perf_counter()
    steps = [0]
    train_on_batch = trainer.net.train_on_batch

    def budgeted(*a, **k):
        if time.perf_counter() - start > args.budget:
            raise BudgetSpent
        steps[0] += 1
        return train_on_batch(*a, **k)

    trainer.net.train_on_batch = budgeted
    try:
        trainer.launch(data, target, train, valid)
    except BudgetSpent:
        pass
    elapsed = time.perf_counter() - start
    trainer.net.save(str(args.out / "net_weights_FINAL.h5"))
    summary = {"train_s": elapsed, "steps": steps[0], "epochs": steps[0] / args.steps_per_epoch,
               "patch": args.patch, "batch": args.batch, "train_objects": len(train),
               "valid_objects": len(valid), "validation": validation}
    (args.out / "train_summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))


if __name__ == "__main__":
    sys.exit(main())
