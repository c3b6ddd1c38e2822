"""Image formation for the simulator: tilt series, CTF, noise, reconstruction.

The tilt axis is y. A tilt by θ turns the (x, z) plane about the volume's
centre; the projection at θ sums the volume along the rotated beam direction,
so detector column u sees ``x cos θ + z sin θ`` (both from the centre). The
reconstruction is weighted (ramp-filtered) back-projection onto the same grid.
All arrays are float32, (z, y, x) for volumes and (tilt, y, u) for tilt series.
"""

from __future__ import annotations

import dataclasses

import numpy as np

WAVELENGTH_300KV = 0.019687  # Å, relativistic electron wavelength at 300 kV


@dataclasses.dataclass(frozen=True)
class Microscope:
    """Imaging parameters (defaults: a 300 kV cryo-ET set-up).

    Attributes
    ----------
    wavelength : float
        Electron wavelength in Å (0.0197 Å at 300 kV).
    cs : float
        Spherical aberration in mm.
    amplitude_contrast : float
        Fraction of amplitude contrast.
    defocus_range : tuple of float
        Underfocus drawn uniformly per tilt, in µm (positive = underfocus).
    b_factor : float
        Envelope exp(-B k² / 4), in Å².
    """

    wavelength: float = WAVELENGTH_300KV
    cs: float = 2.7
    amplitude_contrast: float = 0.07
    defocus_range: tuple[float, float] = (2.0, 5.0)
    b_factor: float = 200.0


def tilt_angles(start: float = -60.0, stop: float = 60.0, step: float = 3.0) -> np.ndarray:
    """Tilt angles in degrees, ``start`` to ``stop`` inclusive."""
    return np.arange(start, stop + step / 2, step, dtype=np.float64)


def ctf(k2: np.ndarray, defocus_um: float, microscope: Microscope) -> np.ndarray:
    """Contrast transfer with envelope at squared spatial frequencies ``k2`` (Å⁻²).

    Sign: positive at low frequency for underfocus, so that ``-ctf * F[p]``
    images dense particles dark, as on the microscope.
    """
    lam = microscope.wavelength
    chi = np.pi * lam * defocus_um * 1e4 * k2 - 0.5 * np.pi * microscope.cs * 1e7 * lam**3 * k2**2
    a = microscope.amplitude_contrast
    transfer = np.sqrt(1 - a * a) * np.sin(chi) + a * np.cos(chi)
    return (transfer * np.exp(-microscope.b_factor * k2 / 4)).astype(np.float32)


def project(volume: np.ndarray, angles_deg: np.ndarray) -> np.ndarray:
    """Line integrals through ``volume`` (z, y, x) at each tilt about y.

    Returns (tilt, y, x) projections on a detector as wide as the volume.
    """
    nz, ny, nx = volume.shape
    # (z, x, y) layout with a zero row at x = nx: interpolation then gathers whole rows.
    rows = np.zeros((nz, nx + 1, ny), dtype=np.float32)
    rows[:, :nx] = volume.transpose(0, 2, 1)
    out = np.zeros((len(angles_deg), nx, ny), dtype=np.float32)
    u = np.arange(nx, dtype=np.float64) - (nx - 1) / 2
    for t, angle in enumerate(np.deg2rad(angles_deg)):
        c, s = np.cos(angle), np.sin(angle)
        for z in range(nz):
            x = (u - (z - (nz - 1) / 2) * s) / c + (nx - 1) / 2
            _accumulate(out[t], rows[z], x, nx)
        out[t] /= c
    return np.ascontiguousarray(out.transpose(0, 2, 1))


def backproject(series: np.ndarray, angles_deg: np.ndarray, nz: int) -> np.ndarray:
    """Smear each projection (tilt, y, u) back along its beam into an (nz, y, u) volume."""
    n, ny, nu = series.shape
    rows = np.zeros((n, nu + 1, ny), dtype=np.float32)
    rows[:, :nu] = series.transpose(0, 2, 1)
    volume = np.zeros((nz, nu, ny), dtype=np.float32)
    x = np.arange(nu, dtype=np.float64) - (nu - 1) / 2
    for t, angle in enumerate(np.deg2rad(angles_deg)):
        c, s = np.cos(angle), np.sin(angle)
        for z in range(nz):
            _accumulate(volume[z], rows[t], x * c + (z - (nz - 1) / 2) * s + (nu - 1) / 2, nu)
    return np.ascontiguousarray(volume.transpose(0, 2, 1))


def _accumulate(out: np.ndarray, rows: np.ndarray, position: np.ndarray, n: int) -> None:
    """out += rows linearly interpolated at ``position`` (rows[n] is a zero row)."""
    index = np.floor(position).astype(np.int64)
    weight = (position - index).astype(np.float32)[:, None]
    outside = (index < 0) | (index > n - 1)
    index[outside] = n
    weight[outside] = 0
    out += rows[index] * (1 - weight)
    out += rows[np.minimum(index + 1, n)] * weight


def ramp_filter(series: np.ndarray) -> np.ndarray:
    """Weight each projection by |k| along u (zero-padded to avoid wrap-around)."""
    nu = series.shape[-1]
    size = 2 * nu
    k = np.abs(np.fft.rfftfreq(size)).astype(np.float32)
    k[0] = 0.25 / size  # keep a little of the mean, as a Ram-Lak filter sampled on a grid does
    spectrum = np.fft.rfft(series, n=size, axis=-1) * k
    return np.fft.irfft(spectrum, n=size, axis=-1)[..., :nu].astype(np.float32)


def image_series(
    projections: np.ndarray,
    voxel_size: float,
    snr: float | None,
    microscope: Microscope,
    rng: np.random.Generator,
    *,
    reference: np.ndarray | None = None,
    b_factors: np.ndarray | None = None,
    noise_scale: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Apply a per-tilt CTF and add white noise at ``snr`` (signal variance over
    noise variance, per projection); ``snr=None``: noise of standard deviation 1.

    ``reference`` (default ``projections``): the projections whose imaged variance sets the noise, such as the
    particles alone, so that what else the scene holds (membranes, gold) leaves the noise as it was.
    ``b_factors``: each tilt's B-factor in Å² instead of the microscope's (dose accumulation).
    ``noise_scale``: a (y, u) map multiplying the noise's standard deviation (uneven ice).

    Returns the noisy series, the noise-free (CTF-filtered) series, the reference's noise-free series and the
    defocus of each tilt in µm.
    """
    _, ny, nu = projections.shape
    ky = np.fft.fftfreq(ny, d=voxel_size)[:, None]
    ku = np.fft.rfftfreq(nu, d=voxel_size)[None, :]
    k2 = ky**2 + ku**2
    defocus = rng.uniform(*microscope.defocus_range, size=len(projections))
    clean = np.empty_like(projections)
    noisy = np.empty_like(projections)
    reference_clean = clean if reference is None else np.empty_like(reference)
    for t, image in enumerate(projections):
        scope = microscope if b_factors is None else dataclasses.replace(microscope, b_factor=float(b_factors[t]))
        transfer = ctf(k2, defocus[t], scope)
        clean[t] = -np.fft.irfft2(np.fft.rfft2(image) * transfer, s=(ny, nu))
        if reference is not None:
            reference_clean[t] = -np.fft.irfft2(np.fft.rfft2(reference[t]) * transfer, s=(ny, nu))
        variance = reference_clean[t].var()
        sigma = 1.0 if snr is None or variance == 0 else np.sqrt(variance / snr)
        noise = rng.normal(0.0, sigma, size=clean[t].shape).astype(np.float32)
        noisy[t] = clean[t] + (noise if noise_scale is None else noise * noise_scale)
    return noisy, clean, reference_clean, defocus


def reconstruct(series: np.ndarray, angles_deg: np.ndarray, nz: int) -> np.ndarray:
    """Weighted back-projection of a (tilt, y, u) series into (nz, y, u)."""
    volume = backproject(ramp_filter(series), angles_deg, nz)
    return volume * np.float32(np.pi / (2 * len(angles_deg)))


def wedge_mask(shape: tuple[int, int, int], max_tilt_deg: float) -> np.ndarray:
    """Fourier (rfftn layout) mask of the directions a ±max_tilt series about y
    measures: those within ``max_tilt`` of the kx axis in the (kx, kz) plane."""
    nz, ny, nx = shape
    kz = np.fft.fftfreq(nz)[:, None, None]
    kx = np.fft.rfftfreq(nx)[None, None, :]
    inside = np.abs(kz) <= np.abs(kx) * np.tan(np.deg2rad(max_tilt_deg)) + 1e-12
    return np.broadcast_to(inside, (nz, ny, nx // 2 + 1))


def fast_image(density: np.ndarray, voxel_size: float, max_tilt_deg: float, microscope: Microscope) -> np.ndarray:
    """``density`` through the CTF (mean defocus) and the missing wedge of a ±max_tilt series about y, in 3D
    Fourier space (dense objects come out dark, as on the microscope)."""
    from scipy import fft

    shape = density.shape
    kz = fft.fftfreq(shape[0], d=voxel_size)[:, None, None]
    ky = fft.fftfreq(shape[1], d=voxel_size)[None, :, None]
    kx = fft.rfftfreq(shape[2], d=voxel_size)[None, None, :]
    transfer = ctf(kz**2 + ky**2 + kx**2, float(np.mean(microscope.defocus_range)), microscope)
    transfer = transfer * wedge_mask(shape, max_tilt_deg)
    return (-fft.irfftn(fft.rfftn(density, workers=-1) * transfer, s=shape, workers=-1)).astype(np.float32)


def fast_tomogram(
    density: np.ndarray,
    voxel_size: float,
    snr: float,
    max_tilt_deg: float,
    microscope: Microscope,
    rng: np.random.Generator,
    *,
    noise_scale: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Missing wedge, CTF (mean defocus) and noise applied directly in 3D Fourier space.

    ``snr`` is the variance of the imaged signal over that of the (equally
    wedge-filtered) noise in the volume; ``noise_scale``, a (y, x) map, then multiplies the noise's standard
    deviation (uneven ice). Returns the signal and the noise (their sum is the tomogram).
    """
    from scipy import fft

    shape = density.shape
    signal = fast_image(density, voxel_size, max_tilt_deg, microscope)
    noise = rng.normal(size=shape).astype(np.float32)
    noise = fft.irfftn(fft.rfftn(noise, workers=-1) * wedge_mask(shape, max_tilt_deg), s=shape, workers=-1)
    noise *= np.sqrt(signal.var() / snr / max(noise.var(), 1e-20))
    if noise_scale is not None:
        noise = noise * noise_scale
    return signal, noise.astype(np.float32)
