"""Forward+backward time and peak memory per 64³ sample, UCaps vs UNet, on this machine.

    python benchmarks/model_speed.py [--side 64] [--batch 1] [--steps 3] [--jit] [--precisions float32 ...]

Each (model, precision) runs in its own process: peak RSS is that process's
maximum resident memory minus what it held after building the model. Prints
a Markdown table for the README.
"""

import argparse
import json
import os
import platform
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import numpy as np, keras, tensorflow as tf
from keras_ucaps.models import build_model
arch, policy = sys.argv[1], sys.argv[2]
side, batch, steps, jit = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6] == "1"
keras.mixed_precision.set_global_policy(policy)
model = build_model(arch, 3)
x = tf.constant(np.random.default_rng(0).normal(size=(batch, side, side, side, 1)).astype("float32"))
y = tf.one_hot(np.random.default_rng(1).integers(0, 3, size=(batch, side, side, side)), 3)
opt = keras.optimizers.Adam(1e-4)

@tf.function(jit_compile=jit)
def step(x, y):
    with tf.GradientTape() as tape:
        p = model(x, training=True)["probabilities"]
        loss = -tf.reduce_mean(tf.reduce_sum(y * tf.math.log(p + 1e-7), -1))
    grads = tape.gradient(loss, model.trainable_variables)
    opt.apply_gradients(zip(grads, model.trainable_variables))
    return loss

@tf.function(jit_compile=jit)
def forward(x):
    return model(x, training=False)["probabilities"]

base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
forward(x); step(x, y)  # trace and warm up
t0 = time.perf_counter()
for _ in range(steps):
    forward(x).numpy()
t_fwd = (time.perf_counter() - t0) / steps
t0 = time.perf_counter()
for _ in range(steps):
    step(x, y).numpy()
t_step = (time.perf_counter() - t0) / steps
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"forward_s": t_fwd / batch, "train_step_s": t_step / batch, "peak_gb": (peak - base) / 2**20,
                  "params": model.count_params()}))
"""


def run(arch, policy, args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, "-c", CHILD, arch, policy, str(args.side), str(args.batch),
                             str(args.steps), "1" if args.jit else "0"], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--side", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--jit", action="store_true", help="XLA-compile the steps")
    parser.add_argument("--precisions", nargs="+", default=["float32", "mixed_bfloat16"],
                        choices=["float32", "mixed_bfloat16"],
                        help="Keras dtype policies to time (bfloat16 is slow on a CPU without its instructions)")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; {args.side}³ patches, batch {args.batch}, "
          f"{'XLA' if args.jit else 'no XLA'}, times per sample")
    print("| model | precision | forward | forward + backward (train step) | peak RAM above the built model |")
    print("| --- | --- | --- | --- | --- |")
    results = {}
    for policy in args.precisions:
        for arch in ("unet", "ucaps"):
            r = results[arch, policy] = run(arch, policy, args)
            print(f"| {arch} | {policy} | {r['forward_s']:.2f} s | {r['train_step_s']:.2f} s | {r['peak_gb']:.2f} GB |",
                  flush=True)
    for policy in args.precisions:
        ratio = results["ucaps", policy]["train_step_s"] / results["unet", policy]["train_step_s"]
        print(f"UCaps / UNet train-step time, {policy}: {ratio:.2f}×")


if __name__ == "__main__":
    main()
