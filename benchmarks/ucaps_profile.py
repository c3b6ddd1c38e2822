"""Where UCaps' inference time and memory go, layer by layer, on this machine.

    python benchmarks/ucaps_profile.py [--side 64] [--tile 128] [--repeats 2]

1. Per layer (one traced call each, on the input the layer sees inside a forward pass on a ``--side``³ patch;
   the intermediate tensors come from one pass through the model): seconds, share of the sum, and for the
   convolutions the multiply-adds and the rate reached (GFLOP/s, 2 per multiply-add). The capsule layers are
   split into their vote convolution (input types as batch entries: its output is shown types × z × y × x ×
   channels) and the rest (the transpose into the routing layout and the routing; the whole layer's time
   minus the convolution's).
2. The whole forward pass on one ``--tile``³ prediction tile (the tile contract's default side), each setting
   in its own process for its peak RSS: the capsule layers' votes routed in slabs (``VOTE_SLAB_BYTES``, the
   default) and in one piece (as before the slabs). Same weights (seed 0), and the largest difference of
   their probabilities.
3. With --routing-layouts: the routing of one encoder layer's votes (16 input and 16 output types of 8 atoms,
   32³ voxels) as the layer does it (transpose into (voxels, out types, in types, atoms), batched matrix
   products) against routing in the convolution's own layout (input types outermost, elementwise products and
   sums, no transpose): forward, and forward with the backward pass.

Random weights: time and memory do not depend on them.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

CHILD = r"""
import json, resource, sys, time
import numpy as np, keras, tensorflow as tf
import keras_ucaps.layers.capsules as capsules
from keras_ucaps.models import build_model
side, slab_mb, out = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
capsules.VOTE_SLAB_BYTES = int(slab_mb * 2**20) if slab_mb > 0 else 1 << 62
keras.utils.set_random_seed(0)
model = build_model("ucaps", 4)
x = np.random.default_rng(0).normal(size=(1, side, side, side, 1)).astype("float32")
forward = tf.function(lambda a: model(a, training=False)["probabilities"])
start = time.perf_counter(); forward(x); first = time.perf_counter() - start
start = time.perf_counter(); p = forward(x).numpy(); second = time.perf_counter() - start
np.save(out, p)
print(json.dumps({"first_s": first, "second_s": second,
                  "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
"""


def timed(function, *args, repeats):
    function(*args)
    start = time.perf_counter()
    for _ in range(repeats):
        function(*args)
    return (time.perf_counter() - start) / repeats


def conv_madds(layer, input_shape, output_shape) -> float:
    """Multiply-adds of a Conv3D / Conv3DTranspose layer (kernel volume × in × out channels per output voxel)."""
    import numpy as np

    kernel = layer.kernel.shape
    if layer.__class__.__name__ == "Conv3DTranspose":  # each input voxel scatters a kernel
        return float(np.prod(input_shape[:-1])) * np.prod(kernel)
    return float(np.prod(output_shape[:-1])) * np.prod(kernel)


def per_layer(side: int, repeats: int) -> list[tuple[str, float, float | None, tuple]]:
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_ucaps.layers.capsules import ConvCapsule3D
    from keras_ucaps.models import build_model

    keras.utils.set_random_seed(0)
    model = build_model("ucaps", 4)
    x = tf.constant(np.random.default_rng(0).normal(size=(1, side, side, side, 1)).astype("float32"))
    layers = model.layers[1:]
    values = dict(zip((layer.name for layer in layers), keras.Model(model.inputs, [layer.output for layer in
                                                                                  layers])(x), strict=True))
    rows = []
    for layer in layers:
        inputs = [values.get(t._keras_history.operation.name, x) for t in layer._inbound_nodes[0].input_tensors]
        arg = inputs if len(inputs) > 1 else inputs[0]
        out_shape = tuple(values[layer.name].shape)
        if isinstance(layer, ConvCapsule3D):  # its vote convolution, and the rest: layout and routing
            shape = arg.shape
            folded = tf.reshape(tf.transpose(arg, (0, 4, 1, 2, 3, 5)), (-1, *shape[1:4], shape[5]))
            votes = layer.vote_conv(folded)
            conv_s = timed(tf.function(lambda v, c=layer.vote_conv: c(v)), folded, repeats=repeats)
            whole_s = timed(tf.function(lambda a, layer=layer: layer(a)), arg, repeats=repeats)
            rows.append((f"{layer.name}: votes conv", conv_s, conv_madds(layer.vote_conv, folded.shape, votes.shape),
                         (None, shape[4], *votes.shape[1:])))
            rows.append((f"{layer.name}: routing ×{layer.routings} (with layout)", whole_s - conv_s, None, out_shape))
            continue
        seconds = timed(tf.function(lambda a, layer=layer: layer(a, training=False)), arg, repeats=repeats)
        madds = (conv_madds(layer, tuple(arg.shape), out_shape)
                 if layer.__class__.__name__ in ("Conv3D", "Conv3DTranspose") else None)
        rows.append((layer.name, seconds, madds, out_shape))
    return rows


def route_in_convolution_layout(votes, bias, routings: int):
    """Routing on votes laid out (batch, in types, voxels, out types, atoms), as the vote convolution leaves
    them: no transpose; the sums over input types and atoms are elementwise products and reductions."""
    from keras import ops

    from keras_ucaps.layers.capsules import squash

    logits, outputs = None, None
    for iteration in range(routings):
        if logits is None:
            weighted = ops.sum(votes, axis=1) / ops.shape(votes)[3]
        else:
            weighted = ops.sum(votes * ops.expand_dims(ops.softmax(logits, axis=-1), -1), axis=1)
        outputs = squash(weighted + bias)  # (batch, voxels, out types, atoms)
        if iteration < routings - 1:
            agreement = ops.sum(votes * ops.expand_dims(outputs, 1), axis=-1)
            logits = agreement if logits is None else logits + agreement
    return outputs


def routing_layouts(repeats: int) -> None:
    import numpy as np
    import tensorflow as tf

    from keras_ucaps.layers.capsules import route

    votes = tf.constant(np.random.default_rng(0).normal(scale=0.1, size=(1, 16, 32**3, 16, 8)).astype("float32"))
    bias = tf.constant(np.full((16, 8), 0.1, "float32"))

    def layer_layout(v):
        return route(tf.reshape(tf.transpose(v, (0, 2, 3, 1, 4)), (-1, 16, 16, 8)), bias, 3)

    def convolution_layout(v):
        return route_in_convolution_layout(v, bias, 3)

    def with_gradient(f):
        def g(v):
            with tf.GradientTape() as tape:
                tape.watch(v)
                y = f(v)
                loss = tf.reduce_sum(y * y)
            return tape.gradient(loss, v)
        return g

    a = tf.function(layer_layout)(votes).numpy().reshape(-1)
    b = tf.function(convolution_layout)(votes).numpy().reshape(-1)
    print(f"\nRouting one 32³ encoder layer's votes, 3 iterations (largest difference {abs(a - b).max():.1e}):\n")
    print("| layout | forward | forward + backward |")
    print("| --- | --- | --- |")
    for label, f in (("transpose, batched matrix products (the layer's)", layer_layout),
                     ("the convolution's, elementwise products and sums", convolution_layout)):
        forward = timed(tf.function(f), votes, repeats=repeats)
        both = timed(tf.function(with_gradient(f)), votes, repeats=repeats)
        print(f"| {label} | {forward:.2f} s | {both:.2f} s |")


def whole_tile(tile: int, slab_mb: float) -> dict:
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "p.npy")
        result = subprocess.run([sys.executable, "-c", CHILD, str(tile), str(slab_mb), out],
                                capture_output=True, text=True)
        if result.returncode:
            sys.exit(result.stderr[-3000:])
        row = json.loads(result.stdout.strip().splitlines()[-1])
        row["probabilities"] = np.load(out)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=64, help="patch side of the per-layer profile")
    parser.add_argument("--tile", type=int, default=128, help="tile side of the whole-pass comparison (0: skip)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--routing-layouts", action="store_true", help="also time the rejected routing layout")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.processor() or 'unknown CPU'}")

    rows = per_layer(args.side, args.repeats)
    total = sum(r[1] for r in rows)
    print(f"\nPer layer, {args.side}³ input, float32 (sum {total:.2f} s; layers under 1 % left out):\n")
    print("| layer | output | time | share | GFLOP/s |")
    print("| --- | --- | --- | --- | --- |")
    for name, seconds, madds, shape in rows:
        if seconds >= 0.01 * total:
            rate = f"{2 * madds / seconds / 1e9:.0f}" if madds else ""
            print(f"| {name} | {'×'.join(str(n) for n in shape[1:])} | {seconds:.3f} s | {100 * seconds / total:.1f} % "
                  f"| {rate} |")
    groups = {"feature extractor (3 convs 5³ + norms)": "features_", "primary capsules": "primary_capsules",
              "capsule encoder": "encoder_", "decoder and output": ("decoder_", "logits", "probabilities",
                                                                      "flatten", "capsule_lengths", "reconstruct")}
    print()
    for label, prefix in groups.items():
        seconds = sum(r[1] for r in rows if r[0].startswith(prefix))
        print(f"- {label}: {seconds:.2f} s ({100 * seconds / total:.0f} %)")
    madds = sum(r[2] or 0 for r in rows)
    conv_s = sum(r[1] for r in rows if r[2])
    print(f"- convolutions: {2 * madds / 1e9:.0f} GFLOP in {conv_s:.2f} s ({2 * madds / conv_s / 1e9:.0f} GFLOP/s); "
          f"everything else {total - conv_s:.2f} s")

    if args.tile:
        from keras_ucaps.layers.capsules import VOTE_SLAB_BYTES

        print(f"\nWhole forward pass on one {args.tile}³ tile (second call; each in its own process):\n")
        print("| capsule votes | first call | second call | peak RSS |")
        print("| --- | --- | --- | --- |")
        results = {}
        for label, mb in ((f"in slabs of ≤ {VOTE_SLAB_BYTES / 2**20:.0f} MB (default)", VOTE_SLAB_BYTES / 2**20),
                          ("in one piece (as before the slabs)", 0)):
            results[label] = whole_tile(args.tile, mb)
            r = results[label]
            print(f"| {label} | {r['first_s']:.1f} s | {r['second_s']:.1f} s | {r['peak_gb']:.2f} GB |")
        a, b = (r["probabilities"] for r in results.values())
        print(f"\nlargest difference of the probabilities: {abs(a - b).max():.2e}")
    if args.routing_layouts:
        routing_layouts(args.repeats)


if __name__ == "__main__":
    main()
