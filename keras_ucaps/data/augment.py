"""Augmentations that keep the missing wedge where it is.

The wedge lies in the (kx, kz) plane, symmetric about both axes, so these
leave it in place: a 180° rotation about the tilt axis y (reverse z and x
together) and a flip along x. Image and labels move together.
"""

from __future__ import annotations

import tensorflow as tf


def augment(image: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Randomly rotate by 180° about y and/or flip along x; (z, y, x, ...) tensors.

    ``seed`` is a stateless-random seed of shape (2,), so a run is repeatable.
    """
    coins = tf.random.stateless_uniform((2,), seed=seed) < 0.5
    image, labels = tf.cond(coins[0], lambda: (tf.reverse(image, [0, 2]), tf.reverse(labels, [0, 2])),
                            lambda: (image, labels))
    image, labels = tf.cond(coins[1], lambda: (tf.reverse(image, [2]), tf.reverse(labels, [2])),
                            lambda: (image, labels))
    return image, labels
