import numpy as np
import pytest

from keras_ucaps.inference.resample import fourier_resample


def _cosine(shape, cycles=(1, 2, 3)):
    """A band-limited field: whole cycles along each axis, sampled on ``shape``."""
    grids = np.meshgrid(*[np.arange(n) / n for n in shape], indexing="ij")
    return sum(np.cos(2 * np.pi * c * g + 0.3) for c, g in zip(cycles, grids, strict=True))


@pytest.mark.parametrize("target", [(20, 25, 30), (12, 15, 17)])
def test_band_limited_field_is_resampled_exactly(target):
    resampled = fourier_resample(_cosine((16, 20, 24)), target)
    assert resampled.shape == target and resampled.dtype == np.float32
    np.testing.assert_allclose(resampled, _cosine(target), atol=1e-4)


def test_white_noise_round_trip_keeps_its_detail_where_linear_zoom_loses_it():
    from scipy import ndimage

    noise = np.random.default_rng(0).standard_normal((16, 20, 24)).astype(np.float32)
    back = fourier_resample(fourier_resample(noise, (20, 25, 30)), noise.shape)
    assert np.abs(back - noise).mean() < 0.1
    linear = ndimage.zoom(ndimage.zoom(noise, 1.25, order=1), 0.8, order=1)[:16, :20, :24]
    assert np.abs(linear - noise).mean() > 0.3  # what interpolation would have done


def test_mean_is_kept_and_bad_shapes_are_refused():
    volume = np.random.default_rng(1).standard_normal((8, 9, 10)) + 5
    assert fourier_resample(volume, (11, 7, 13)).mean() == pytest.approx(volume.mean(), rel=1e-5)
    with pytest.raises(ValueError, match="cannot resample"):
        fourier_resample(volume, (8, 9))


def test_maps_come_back_onto_the_grid_fourier_resampling_used():
    from scipy import ndimage

    from keras_ucaps.inference.predict import _resize
    from keras_ucaps.inference.resample import fourier_resample

    n, m = 40, 52  # a 13 Å tomogram predicted at 10 Å
    x = np.arange(n)
    wave = np.sin(2 * np.pi * 2 * x / n).astype(np.float32)  # band-limited: the resampled grid holds it exactly
    volume = np.broadcast_to(wave, (n, n, n)).copy()
    there = fourier_resample(volume, (m, m, m))
    back = _resize(there, (n, n, n))
    error = np.abs(back - volume).max()
    assert error < 0.02
    zoomed = ndimage.zoom(there, n / m, order=1)  # the grid it used to come back on drifts at the far end
    assert np.abs(zoomed - volume).max() > 3 * error
