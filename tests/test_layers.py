"""Capsule layers: the routing computes what the papers define, and serialises."""


import keras
import numpy as np
import pytest

from keras_ucaps.layers import ConvCapsule3D, squash
from keras_ucaps.layers.capsules import UnitLengthVotes


def numpy_squash(s):
    n2 = (s**2).sum(-1, keepdims=True)
    return s * n2 / (1 + n2) / np.sqrt(n2 + 1e-7)


def numpy_conv_capsule(x, kernel, conv_bias, caps_bias, types, atoms, routings, stride):
    """Votes by a direct 'same'-padded convolution, then routing as in Sabour et al. / SegCaps."""
    b, nz, ny, nx, n_in, a_in = x.shape
    k = kernel.shape[0]
    oz, oy, ox = (-(-n // stride) for n in (nz, ny, nx))
    # TensorFlow's "same" padding: total = max((out - 1) * stride + k - n, 0), the extra voxel after.
    pads = [max((o - 1) * stride + k - n, 0) for o, n in zip((oz, oy, ox), (nz, ny, nx), strict=True)]
    xp = np.pad(x, [(0, 0)] + [(p // 2, p - p // 2) for p in pads] + [(0, 0), (0, 0)])
    votes = np.zeros((b, oz, oy, ox, n_in, types * atoms))
    for z in range(oz):
        for y in range(oy):
            for xx in range(ox):
                patch = xp[:, z * stride:z * stride + k, y * stride:y * stride + k, xx * stride:xx * stride + k]
                votes[:, z, y, xx] = np.einsum("bijkna,ijkac->bnc", patch, kernel) + conv_bias
    votes = votes.reshape(b, oz, oy, ox, n_in, types, atoms)
    logits = np.zeros(votes.shape[:-1])
    for it in range(routings):
        coupling = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)  # softmax over output types
        s = (coupling[..., None] * votes).sum(axis=4) + caps_bias
        v = numpy_squash(s)
        if it < routings - 1:
            logits = logits + (votes * v[:, :, :, :, None]).sum(-1)
    return v


@pytest.mark.parametrize("routings, stride", [(1, 1), (3, 2), (3, 1)])
def test_conv_capsule_matches_an_independent_numpy_computation(routings, stride):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 4, 6, 3, 4)).astype(np.float32)
    layer = ConvCapsule3D(num_types=2, num_atoms=5, kernel_size=3, strides=stride, routings=routings)
    layer.build(x.shape)
    kernel = rng.normal(scale=0.3, size=(3, 3, 3, 4, 10)).astype(np.float32)
    conv_bias = rng.normal(scale=0.1, size=10).astype(np.float32)
    caps_bias = rng.normal(scale=0.1, size=(2, 5)).astype(np.float32)
    layer.vote_conv.kernel.assign(kernel)
    layer.vote_conv.bias.assign(conv_bias)
    layer.capsule_bias.assign(caps_bias)
    expected = numpy_conv_capsule(x, kernel, conv_bias, caps_bias, 2, 5, routings, stride)
    got = keras.ops.convert_to_numpy(layer(x))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=2e-5)


@pytest.mark.parametrize("stride, dilation, shape", [(1, 1, (2, 5, 4, 6, 3, 4)), (2, 1, (1, 7, 5, 4, 3, 4)),
                                                     (1, 2, (1, 6, 5, 5, 2, 4))])
def test_votes_routed_in_slabs_equal_votes_routed_in_one_piece(monkeypatch, stride, dilation, shape):
    import keras_ucaps.layers.capsules as capsules

    rng = np.random.default_rng(1)
    x = keras.ops.convert_to_tensor(rng.normal(size=shape).astype(np.float32))
    layer = ConvCapsule3D(num_types=2, num_atoms=5, kernel_size=3, strides=stride, dilation_rate=dilation,
                          routings=3, kernel_initializer=keras.initializers.RandomNormal(stddev=0.3, seed=2))
    layer.build(shape)

    def output_and_gradient():
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * y)
        grads = tape.gradient(loss, [x, layer.vote_conv.kernel])
        return keras.ops.convert_to_numpy(y), np.concatenate([keras.ops.convert_to_numpy(g).ravel() for g in grads])

    assert layer.slab_rows(shape) is None
    whole, whole_grad = output_and_gradient()
    monkeypatch.setattr(capsules, "VOTE_SLAB_BYTES", 1)  # one output z row per slab
    assert layer.slab_rows(shape) == 1
    slabs, slabs_grad = output_and_gradient()
    assert slabs.shape == whole.shape == (shape[0], *(-(-n // stride) for n in shape[1:4]), 2, 5)
    np.testing.assert_allclose(slabs, whole, atol=1e-6)
    np.testing.assert_allclose(slabs_grad, whole_grad, rtol=1e-5, atol=1e-5)
    if dilation == 1:  # and both equal the direct computation
        kernel, bias = (keras.ops.convert_to_numpy(w) for w in (layer.vote_conv.kernel, layer.vote_conv.bias))
        expected = numpy_conv_capsule(keras.ops.convert_to_numpy(x), kernel, bias,
                                      keras.ops.convert_to_numpy(layer.capsule_bias), 2, 5, 3, stride)
        np.testing.assert_allclose(slabs, expected, atol=2e-5)


def test_squash_keeps_direction_bounds_length_and_is_safe_at_zero():
    s = np.array([[3.0, 4.0], [0.0, 0.0], [1e-4, 0.0]], np.float32)
    v = keras.ops.convert_to_numpy(squash(s))
    assert np.linalg.norm(v[0]) == pytest.approx(25 / 26, rel=1e-5)
    np.testing.assert_allclose(v[0] / np.linalg.norm(v[0]), [0.6, 0.8], rtol=1e-5)
    assert np.all(np.isfinite(v)) and np.all(v[1] == 0)
    bf16 = squash(keras.ops.cast(s, "bfloat16"))
    assert keras.backend.standardize_dtype(bf16.dtype) == "bfloat16"


def test_routing_runs_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        layer = ConvCapsule3D(num_types=2, num_atoms=4)
        out = layer(np.random.default_rng(1).normal(size=(1, 4, 4, 4, 3, 4)).astype(np.float32))
        assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
        assert layer.capsule_bias.dtype == "float32"
        assert np.all(np.isfinite(keras.ops.convert_to_numpy(keras.ops.cast(out, "float32"))))
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("in_types, in_atoms, out_types, out_atoms", [(1, 64, 16, 4), (16, 8, 8, 16), (8, 32, 3, 64)])
def test_unit_length_votes_start_capsules_at_about_unit_length_before_squash(in_types, in_atoms, out_types, out_atoms):
    rng = np.random.default_rng(0)
    directions = rng.normal(size=(2, 8, 8, 8, in_types, in_atoms))
    inputs = (0.5 * directions / np.linalg.norm(directions, axis=-1, keepdims=True)).astype(np.float32)
    layer = ConvCapsule3D(out_types, out_atoms, routings=1, kernel_initializer=UnitLengthVotes(seed=3),
                          capsule_bias_initializer="zeros")
    lengths = np.linalg.norm(keras.ops.convert_to_numpy(layer(inputs))[:, 1:-1, 1:-1, 1:-1], axis=-1)
    before_squash = np.sqrt(lengths / (1 - lengths))  # squash: |v| = |s|² / (1 + |s|²)
    assert 0.7 < np.sqrt(np.mean(before_squash**2)) < 1.4
