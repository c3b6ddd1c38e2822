"""Normalisation: an ice-thickness gradient and a block of extreme values (a carbon edge, gold) must not
shift the level or the scale of the region with particles, and patches and prediction see the same values."""

import h5py
import numpy as np
import pytest
from conftest import VOXEL_SIZE, make_sources, run_cli

from keras_ucaps.data.normalization import ROBUST, ZSCORE, Normalization, measure
from keras_ucaps.data.patches import PatchSettings, build_patch_store
from keras_ucaps.io import Volume, write_particles, write_volume

SHAPE = (48, 96, 128)


def clean_tomogram(seed=0):
    """Noise of std 1 with dark balls (particles in cryo-ET are dark)."""
    rng = np.random.default_rng(seed)
    data = rng.normal(size=SHAPE).astype(np.float32)
    z, y, x = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    for cx, cy, cz in rng.uniform([10, 10, 10], [SHAPE[2] - 10, SHAPE[1] - 10, SHAPE[0] - 10], size=(30, 3)):
        data[(x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 <= 25] -= 1.5
    return data


def corrupted(data):
    """A linear gradient of 8 standard deviations across x and y, and a slab of +25 (a carbon edge) over
    the last 12 % of y."""
    z, y, x = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    out = data + 4.0 * (x / SHAPE[2]) + 4.0 * (y / SHAPE[1]) - 1.0
    out = (3.0 * out + 7.0).astype(np.float32)  # and another scale and offset, as another detector would give
    edge = SHAPE[1] - SHAPE[1] // 8
    out[:, edge:, :] = 80.0 + np.random.default_rng(5).normal(size=out[:, edge:, :].shape)
    return out, (slice(None), slice(0, edge), slice(None))


WHOLE = (slice(None), slice(None), slice(None))


@pytest.mark.parametrize("method,holds", [(ROBUST, True), (ZSCORE, False)])
def test_a_gradient_and_a_block_of_extreme_values_do_not_shift_the_particle_region(method, holds):
    clean = clean_tomogram()
    dirty, particles = corrupted(clean)
    reference = measure(clean, method).apply(clean, WHOLE)[particles]
    normalised = measure(dirty, method).apply(dirty, WHOLE)[particles]
    error = np.abs(normalised - reference)
    # The region with particles keeps its values: within a tenth of a standard deviation on average.
    assert (error.mean() < 0.1 and np.percentile(error, 99) < 0.3) == holds, (error.mean(), np.percentile(error, 99))
    if holds:
        assert abs(np.std(normalised) - np.std(reference)) < 0.05


def test_a_region_is_normalised_as_the_whole_volume_is_and_the_settings_round_trip():
    dirty, _ = corrupted(clean_tomogram())
    norm = measure(dirty, ROBUST)
    whole = norm.apply(dirty, WHOLE)
    region = (slice(5, 29), slice(40, 96), slice(17, 128))
    np.testing.assert_array_equal(norm.apply(dirty[region], region), whole[region])
    assert np.abs(whole).max() <= norm.clip  # the carbon edge is clipped
    assert Normalization.from_dict(norm.to_dict()) == norm
    assert Normalization.from_dict([2.0, 4.0]).apply(np.array([[[6.0]]]), WHOLE) == 1.0  # stores of before


def test_patches_store_the_normalisation_and_the_view_prediction_reads_gives_the_same_values(tmp_path):
    """The store's images are the robust normalisation of the tomogram, as prediction's view of it gives them;
    `patches --normalization zscore` keeps the z-score (fit copies the store's method into config.json:
    tests/test_fit.py)."""
    from keras_ucaps.data.pipeline import read_store_info
    from keras_ucaps.inference.predict import normalised_view

    sources, classes = make_sources(2)
    dirty, _ = corrupted(clean_tomogram())
    sources[0] = type(sources[0])("t0", Volume(dirty[:40, :48, :64].copy(), VOXEL_SIZE), sources[0].particles,
                                  sources[0].labels)
    store = tmp_path / "p.h5"
    build_patch_store(sources, classes, VOXEL_SIZE, store, PatchSettings(patch_size=32))
    info = read_store_info(store)
    assert info.normalization == ROBUST
    norm = measure(sources[0].volume.data, ROBUST)
    view = normalised_view(sources[0].volume.data, norm)
    with h5py.File(store) as f:
        i = int(np.flatnonzero(f["tomogram"][:] == 0)[0])
        x, y, z = (int(c) - 16 for c in f["centre"][i])
        region = (slice(z, z + 32), slice(y, y + 32), slice(x, x + 32))
        np.testing.assert_allclose(f["images"][i].astype(np.float32), view[region], atol=1e-2)

    # The command line: zscore by name, and fit carries the store's method into config.json.
    args = []
    for source in sources:
        write_volume(tmp_path / f"{source.name}.mrc", source.volume.data, VOXEL_SIZE)
        write_particles(source.particles, tmp_path / f"{source.name}.csv")
        args += ["--tomogram", tmp_path / f"{source.name}.mrc", "--particles", tmp_path / f"{source.name}.csv"]
    classes.save(tmp_path / "classes.json")
    result = run_cli("patches", *args, "--classes", tmp_path / "classes.json", "--out", tmp_path / "z.h5",
                     "--patch-size", "32", "--normalization", "zscore")
    assert result.returncode == 0, result.stderr
    assert read_store_info(tmp_path / "z.h5").normalization == ZSCORE


def test_predict_normalises_as_the_run_says_and_refuses_an_unknown_method(tmp_path):
    """A run whose config says robust is predicted on the robust view of the tomogram, one that says nothing
    (runs of before) on the z-score; an unknown method is a one-line error naming the config."""
    import json

    from keras_ucaps.classes import ClassRegistry
    from keras_ucaps.inference.predict import normalised_view, predict_tomogram, predict_volume
    from keras_ucaps.io import read_volume
    from keras_ucaps.models import build_model
    from keras_ucaps.models.loading import load_trained

    dirty, _ = corrupted(clean_tomogram())
    dirty = dirty[:32, :48, :64].copy()
    write_volume(tmp_path / "t.mrc", dirty, VOXEL_SIZE)
    run = tmp_path / "run"
    run.mkdir()
    build_model("unet", 2, filters=(4, 6, 8), bottom_convs=1).save(run / "weights_best.keras")
    config = {"classes": ClassRegistry.from_radii({"a": 30.0}).to_dict(), "voxel_size": VOXEL_SIZE, "patch_size": 32}
    maps = {}
    for method in (ROBUST, None):
        (run / "config.json").write_text(json.dumps({**config, **({"normalization": method} if method else {})}))
        loaded = load_trained(run)
        files = predict_tomogram(loaded, tmp_path / "t.mrc", tmp_path / str(method), tile=32)
        maps[method] = read_volume(files["a"]).data.astype(np.float32)
        expected = predict_volume(loaded.model, normalised_view(dirty, measure(dirty, method or ZSCORE)), 2,
                                  tile=32, margin=4, scratch=tmp_path / "s")
        np.testing.assert_allclose(maps[method], np.asarray(expected)[..., 1], atol=2e-3)
    assert np.abs(maps[ROBUST] - maps[None]).max() > 1e-2  # the two methods do differ on this tomogram

    (run / "config.json").write_text(json.dumps({**config, "normalization": "per-patch"}))
    result = run_cli("predict", run, tmp_path / "t.mrc", "--out", tmp_path / "x")
    assert result.returncode == 2 and "unknown normalization 'per-patch'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "x").exists()
