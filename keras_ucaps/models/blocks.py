"""Building blocks the two architectures share."""

from __future__ import annotations

import keras


def instance_norm(channels: int, name: str, dtype=None) -> keras.layers.Layer:
    """Instance normalisation without scale or centre: one group per channel."""
    return keras.layers.GroupNormalization(groups=channels, center=False, scale=False, epsilon=1e-5, name=name,
                                           dtype=dtype)


def prelu(name: str, dtype=None) -> keras.layers.Layer:
    """PReLU with one parameter shared by all voxels and channels (PyTorch's default, 0.25)."""
    return keras.layers.PReLU(alpha_initializer=keras.initializers.Constant(0.25), shared_axes=[1, 2, 3, 4],
                              name=name, dtype=dtype)


def conv_norm_act(x, filters: int, kernel_size: int, name: str, activation: str = "prelu", dilation_rate: int = 1,
                  dtype=None):
    """Conv3D (no bias, same padding) → instance norm → activation."""
    x = keras.layers.Conv3D(filters, kernel_size, padding="same", use_bias=False, dilation_rate=dilation_rate,
                            name=f"{name}_conv", dtype=dtype)(x)
    x = instance_norm(filters, f"{name}_norm", dtype)(x)
    if activation == "prelu":
        return prelu(f"{name}_prelu", dtype)(x)
    return keras.layers.Activation(activation, name=f"{name}_{activation}", dtype=dtype)(x)
