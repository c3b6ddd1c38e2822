"""How much of the image UCaps' capsules carry at initialisation, and the gradients that reach each layer.

    python benchmarks/capsule_init.py [--data patches.h5] [--classes 5]

For each ``capsule_init`` ("reference", "unit"): on 4 patches (from --data, else unit Gaussian noise), each
capsule layer's mean length and its variation over space as a fraction of that length (near 0: every capsule
is squash(bias), whatever the image); then the RMS gradient of a cross-entropy on the probabilities relative
to the RMS weight, per convolution kernel.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=None, help="A patch store; default: Gaussian noise patches of 32³")
    parser.add_argument("--classes", type=int, default=5, help="Output classes, background included")
    args = parser.parse_args()
    if args.data:
        import h5py

        with h5py.File(args.data) as f:
            x, y = f["images"][:4].astype("float32")[..., None], f["labels"][:4].astype("int32")
    else:
        rng = np.random.default_rng(0)
        x = rng.normal(size=(4, 32, 32, 32, 1)).astype("float32")
        y = rng.integers(0, args.classes, size=(4, 32, 32, 32)).astype("int32")
    from keras_ucaps.models import build_model

    for init in ("reference", "unit"):
        keras.utils.set_random_seed(0)
        model = build_model("ucaps", args.classes, capsule_init=init)
        names = ["primary_capsules", *(layer.name for layer in model.layers if layer.name.startswith("encoder_"))]
        probe = keras.Model(model.input, [model.get_layer(n).output for n in names])
        print(f"capsule_init={init}: layer, mean length, spatial variation / length")
        for name, capsules in zip(names, probe(x), strict=True):
            capsules = keras.ops.convert_to_numpy(capsules)
            spread = np.linalg.norm(capsules - capsules.mean(axis=(1, 2, 3), keepdims=True), axis=-1)
            length = np.linalg.norm(capsules, axis=-1).mean()
            print(f"  {name:17s} {length:.4f} {spread.mean() / length:.3f}")
        import tensorflow as tf

        with tf.GradientTape() as tape:
            p = model(x, training=True)["probabilities"]
            loss = -tf.reduce_mean(tf.reduce_sum(tf.one_hot(y, args.classes) * tf.math.log(p + 1e-7), -1))
        grads = tape.gradient(loss, model.trainable_weights)
        print(f"capsule_init={init}: kernel, RMS weight, RMS gradient / RMS weight")
        for w, g in zip(model.trainable_weights, grads, strict=True):
            if g is not None and w.path.endswith("kernel"):
                rms_w, rms_g = float(np.sqrt(np.mean(w.numpy() ** 2))), float(np.sqrt(np.mean(g.numpy() ** 2)))
                print(f"  {w.path:32s} {rms_w:.3g} {rms_g / rms_w:.3g}")


if __name__ == "__main__":
    main()
