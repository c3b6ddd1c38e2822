"""Resampling a tomogram to another voxel size without changing its noise.

Linear interpolation (``scipy.ndimage.zoom(order=1)``) low-pass filters white noise: a 10 Å
tomogram zoomed to 8 Å and back differs from itself by half its standard deviation, and a network
trained on unfiltered tomograms misses most small particles in it. Cropping or zero-padding the
spectrum (Fourier binning, as cryo-EM packages resample) keeps every frequency both grids share and
round-trips to within a few percent.

The discrete Fourier transform is separable, so the volume is resampled one axis at a time (x, then
y, then z), each axis in slabs along another: memory holds one slab, whatever the volume's size.
Given a ``scratch`` folder, the intermediate and resampled volumes are :class:`DiskArray` files
there, so a 500×1000×1000 tomogram resamples in a few hundred MB of RAM.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from keras_ucaps.io.diskarray import DiskArray, slabs


def fourier_resample(volume, shape: tuple[int, ...], *, scratch: str | os.PathLike | None = None):
    """``volume`` (z, y, x) resampled onto ``shape`` by cropping or zero-padding its spectrum, axis by axis
    (float32, same mean). Sample j of an M-voxel axis lies at position j × N / M of the N-voxel original
    (first voxels aligned).

    ``volume`` may be an array, a memory map or a :class:`DiskArray`; with ``scratch`` the result is a
    :class:`DiskArray` in that folder (and so are the intermediates), else an in-memory array.

    Example:
        >>> fourier_resample(np.ones((4, 6, 6)), (5, 8, 8)).shape
        (5, 8, 8)
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or len(volume.shape) != 3 or min(shape) < 1:
        raise ValueError(f"cannot resample a {tuple(volume.shape)} volume onto {shape}")
    source, made = volume, []
    current = tuple(int(n) for n in volume.shape)
    for axis in (2, 1, 0):
        if current[axis] == shape[axis] and not (axis == 0 and source is volume):
            continue
        target = current[:axis] + (shape[axis],) + current[axis + 1:]
        if scratch is not None:
            destination = DiskArray(Path(scratch) / f"resampled-{axis}-{os.getpid()}.npy", target)
        else:
            destination = np.empty(target, dtype=np.float32)
        along = 1 if axis == 0 else 0  # slabs across the axis being resampled
        plane = int(np.prod(target)) // target[along] * 8  # complex64 spectrum of one plane, roughly
        for start, stop in slabs(target[along], plane):
            index = (slice(None),) * along + (slice(start, stop),)
            block = np.asarray(source[index], dtype=np.float32)
            destination[index] = _resample_axis(block, axis, shape[axis])
        made.append(destination)
        if len(made) > 1 and isinstance(made[-2], DiskArray):
            made[-2].path.unlink(missing_ok=True)
        source, current = destination, target
    return source


def _resample_axis(block: np.ndarray, axis: int, size: int) -> np.ndarray:
    """One axis of ``block`` resampled onto ``size`` samples by its real spectrum (float32)."""
    from scipy import fft

    n = block.shape[axis]
    if n == size:
        return block.astype(np.float32, copy=False)
    spectrum = fft.rfft(block, axis=axis, workers=-1)
    kept = min(n, size) // 2 + 1
    half = np.zeros(block.shape[:axis] + (size // 2 + 1,) + block.shape[axis + 1:], dtype=spectrum.dtype)
    take = (slice(None),) * axis
    half[take + (slice(0, kept),)] = spectrum[take + (slice(0, kept),)]
    # The Nyquist bin of an even length stands for one frequency, every other bin for a pair (+f and -f):
    # a bin that changes role between the two grids changes weight.
    if n % 2 == 0 and n < size:  # the old Nyquist becomes a pair: half of it on each side
        half[take + (n // 2,)] *= 0.5
    if size % 2 == 0 and size < n:  # a pair becomes the new Nyquist: both sides of it
        half[take + (size // 2,)] *= 2.0
    out = fft.irfft(half, n=size, axis=axis, workers=-1)
    out *= size / n
    return out.astype(np.float32, copy=False)
