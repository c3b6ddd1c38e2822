import numpy as np
import pytest

from keras_ucaps.data.resample import fourier_resample


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

    from keras_ucaps.data.resample import fourier_resample
    from keras_ucaps.inference.predict import onto_tomogram_grid

    n, m = 40, 52  # a 13 Å tomogram predicted at 10 Å
    x = np.arange(n)
    wave = np.sin(2 * np.pi * 2 * x / n).astype(np.float32)  # band-limited: the resampled grid holds it exactly
    volume = np.broadcast_to(wave, (n, n, n)).copy()
    there = fourier_resample(volume, (m, m, m))
    back = onto_tomogram_grid(there[..., None], 0, n, (n, n, n))[..., 0]
    error = np.abs(back - volume).max()
    assert error < 0.02
    zoomed = ndimage.zoom(there, n / m, order=1)  # the grid it used to come back on drifts at the far end
    assert np.abs(zoomed - volume).max() > 3 * error


def test_out_of_core_resampling_in_thin_slabs_equals_the_in_memory_one(tmp_path, monkeypatch):
    """With a scratch folder the volume goes through DiskArray files a few planes at a time, with the same result."""
    import functools

    from keras_ucaps.data import resample
    from keras_ucaps.io.diskarray import DiskArray, slabs

    noise = np.random.default_rng(2).standard_normal((14, 18, 22)).astype(np.float32)
    expected = fourier_resample(noise, (17, 15, 27))
    source = DiskArray(tmp_path / "source.npy", noise.shape)
    source[...] = noise
    monkeypatch.setattr(resample, "slabs", functools.partial(slabs, budget=3000))  # a few planes per slab
    result = fourier_resample(source, (17, 15, 27), scratch=tmp_path)
    assert isinstance(result, DiskArray)
    np.testing.assert_allclose(result[...], expected, atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == [result.path.name, "source.npy"]  # intermediates removed


def test_a_cosine_at_the_new_nyquist_keeps_its_amplitude():
    """Cropping 16 → 8 samples: a cosine of 4 cycles is the new grid's Nyquist frequency, ±1 alternating."""
    x = np.arange(16)
    wave = np.cos(2 * np.pi * 4 * x / 16)
    volume = np.broadcast_to(wave, (4, 4, 16)).astype(np.float32)
    np.testing.assert_allclose(fourier_resample(volume, (4, 4, 8))[0, 0], np.cos(np.pi * np.arange(8)), atol=1e-5)


@pytest.mark.parametrize("grid", [(31, 20, 26), (17, 12, 15)])  # predicted finer and coarser than the tomogram
def test_maps_come_back_slab_by_slab_exactly_as_in_one_piece(grid):
    """Each slab of planes reads only the predicted planes it needs and equals the whole-volume interpolation."""
    from scipy import ndimage

    from keras_ucaps.inference.predict import onto_tomogram_grid

    shape = (23, 16, 20)
    maps = np.random.default_rng(3).random((*grid, 2)).astype(np.float32)
    scale = [m / n for n, m in zip(shape, grid, strict=True)]
    whole = np.stack([ndimage.affine_transform(maps[..., c], scale, output_shape=shape, order=1, mode="nearest")
                      for c in range(2)], axis=-1)
    for bounds in [(0, 23), (0, 1), (5, 9), (22, 23), (11, 23)]:
        np.testing.assert_allclose(onto_tomogram_grid(maps, *bounds, shape), whole[slice(*bounds)], atol=1e-6)
