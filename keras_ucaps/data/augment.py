"""Augmentations that keep the missing wedge where it is.

The wedge lies in the (kx, kz) plane, symmetric about both axes, so these
leave it in place: a 180° rotation about the tilt axis y (reverse z and x
together) and a flip along x. Image and labels move together. Plain numpy, so
that the tf.data and the backend-neutral pipelines augment with one definition.
"""

from __future__ import annotations

import numpy as np


def augment(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Randomly rotate by 180° about y and/or flip along x; (z, y, x, ...) arrays.

    ``rng`` draws the two coins, so a run seeded the same way augments the same way.
    """
    rotate, flip = rng.random(2) < 0.5
    if rotate:
        image, labels = image[::-1, :, ::-1], labels[::-1, :, ::-1]
    if flip:
        image, labels = image[:, :, ::-1], labels[:, :, ::-1]
    return np.ascontiguousarray(image), np.ascontiguousarray(labels)
