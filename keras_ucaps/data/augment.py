"""Augmentations that keep the missing wedge where it is.

The wedge lies in the (kx, kz) plane, symmetric about both axes, so these
leave it in place: a 180° rotation about the tilt axis y (reverse z and x
together) and a flip along x. Image and labels move together. Plain numpy, so
that the tf.data and the backend-neutral pipelines augment with one definition.
:func:`imaging` (``fit --augment-imaging``) adds what differs between microscopes:
scale, blur, noise, gain and offset.
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


def imaging(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """What another microscope, detector or reconstruction does to a patch, each with probability one half:
    anisotropic scaling about the patch centre (0.9–1.1 per axis; image linear, labels nearest), Gaussian blur
    (σ 0.3–1 voxel), additive Gaussian noise (σ 0.05–0.3 of the normalised image), intensity scale (0.8–1.25)
    and offset (±0.2). (z, y, x) arrays; ``rng`` draws every value, the same number of draws whatever applies.
    """
    from scipy import ndimage

    coins = rng.random(4) < 0.5
    scale, sigma = rng.uniform(0.9, 1.1, size=3), rng.uniform(0.3, 1.0)
    noise, gain, offset = rng.uniform(0.05, 0.3), rng.uniform(0.8, 1.25), rng.uniform(-0.2, 0.2)
    noise_seed = int(rng.integers(2**31))
    image = np.asarray(image, dtype=np.float32)
    if coins[0]:
        centre = (np.asarray(image.shape) - 1) / 2
        matrix = 1 / scale  # output voxel p samples the input at centre + (p - centre) / scale
        image = ndimage.affine_transform(image, matrix, centre - matrix * centre, order=1, mode="reflect")
        labels = ndimage.affine_transform(labels, matrix, centre - matrix * centre, order=0, mode="nearest")
    if coins[1]:
        image = ndimage.gaussian_filter(image, sigma, mode="reflect")
    if coins[2]:
        image = image + np.random.default_rng(noise_seed).normal(0.0, noise, image.shape).astype(np.float32)
    if coins[3]:
        image = image * np.float32(gain) + np.float32(offset)
    return np.ascontiguousarray(image, dtype=np.float32), np.ascontiguousarray(labels)
