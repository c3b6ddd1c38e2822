"""Patches per second the tf.data pipeline delivers, against what a training step consumes.

    python benchmarks/pipeline_speed.py [--patch-size 64] [--batches 50] [--store PATCHES.h5]

Without --store it simulates three 128×256×256 tomograms and cuts a store.
Consumption comes from one timed UNet train step (the faster model) at the same patch size.
"""

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--patch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--store")
    args = parser.parse_args()
    import numpy as np

    from keras_ucaps.data.pipeline import make_dataset, read_store_info

    store = args.store
    if store is None:
        from keras_ucaps.data.patches import PatchSettings, Source, build_patch_store
        from keras_ucaps.data.simulate import settings_for_preset, simulate
        from keras_ucaps.io import Volume

        sources = []
        for i in range(3):
            sim = simulate(settings_for_preset("shrec", shape=(128, 256, 256), seed=i, mode="fast"), f"t{i}")
            sources.append(Source(f"t{i}", Volume(sim.tomogram, 10.0), sim.particles, sim.sphere_labels))
        store = str(Path(tempfile.mkdtemp()) / "patches.h5")
        build_patch_store(sources, sim.classes, 10.0, store, PatchSettings(patch_size=args.patch_size))
    info = read_store_info(store)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; store {store}: {len(info.split)} patches of "
          f"{info.patch_size}³, batch {args.batch_size}")
    from keras_ucaps.models import UCaps3D, UNet3D

    for model in (UNet3D(info.classes.num_classes), UCaps3D(info.classes.num_classes)):
        outputs = model.training_targets()
        ds = make_dataset(info, info.indices(0), batch_size=args.batch_size, targets=outputs)
        iterator = iter(ds)
        next(iterator)
        start = time.perf_counter()
        for _ in range(args.batches):
            next(iterator)
        rate = args.batches * args.batch_size / (time.perf_counter() - start)
        print(f"pipeline for {type(model).__name__}'s targets: {rate:.1f} patches/s")

    import keras
    import tensorflow as tf

    from keras_ucaps.models import UNet3D

    model = UNet3D(info.classes.num_classes)
    model.compile(optimizer="adam", loss={"probabilities": "sparse_categorical_crossentropy"})
    x = np.random.default_rng(0).normal(size=(args.batch_size, *(info.patch_size,) * 3, 1)).astype("float32")
    y = {"probabilities": np.zeros((args.batch_size, *(info.patch_size,) * 3), "uint8")}
    model.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(3):
        model.train_on_batch(x, y)
    rate = 3 * args.batch_size / (time.perf_counter() - start)
    print(f"UNet training consumes {rate:.1f} patches/s (UCaps consumes fewer)")
    del keras, tf


if __name__ == "__main__":
    main()
