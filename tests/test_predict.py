"""Tiled prediction: no seams, same as one pass, the input's grid and voxel size."""

import numpy as np
import pytest
from conftest import metadata, run_cli

from keras_ucaps.inference.predict import predict_volume
from keras_ucaps.inference.tiling import axis_layout, tile_starts, tiles
from keras_ucaps.io import read_volume, write_volume
from keras_ucaps.models import UNet3D


def test_tiles_cover_every_voxel_with_positive_weight():
    shape = (20, 33, 70)
    weight = np.zeros(shape)
    for slices, w in tiles(shape, 16, 3):
        weight[slices] += w
    assert weight.min() > 0
    assert tile_starts(70, 16, 3)[-1] == 54 and tile_starts(10, 16, 3) == [0]
    for multiple in (1, 4):
        weight = np.zeros(shape)
        for slices, w in tiles(shape, 16, 3, multiple=multiple):
            assert all((s.stop - s.start) % multiple == 0 for s in slices)
            weight[slices] += w
        assert weight.min() > 0


def test_layout_uses_fewest_tiles_of_one_length_on_the_pooling_grid():
    # 256 voxels, tiles of at most 160 with 20-voxel margins: two tiles of 148, not three of 160.
    assert axis_layout(256, 160, 20, 4) == (148, [0, 108], 20)
    assert axis_layout(128, 160, 20, 4) == (128, [0], 20)
    assert axis_layout(130, 160, 20, 4) == (88, [0, 42], 20)  # not a multiple of 4: two (shortest) tiles
    for size in range(8, 300, 7):
        length, starts, margin = axis_layout(size, 64, 8, 4)
        assert length % 4 == 0 and length <= min(64, size) and starts[0] == 0 and starts[-1] == size - length
        assert all(s % 4 == 0 for s in starts[:-1])
        assert all(b - a <= length - 2 * margin for a, b in zip(starts, starts[1:], strict=False))
        assert margin == (8 if len(starts) == 1 else min(8, min(64, size) // 4 * 4 // 4))


def test_tiled_prediction_equals_one_pass_prediction():
    model = UNet3D(3, filters=(4, 8), bottom_convs=1)  # one pooling: receptive radius 8
    radius = model.tile_contract(32).radius
    assert radius == 8
    volume = np.random.default_rng(0).normal(size=(40, 48, 72)).astype(np.float32)
    one_pass = np.moveaxis(np.asarray(model(volume[None, ..., None])["probabilities"])[0], -1, 0)
    for fixed in (False, True):  # fewest tiles per axis (local models) and fixed-side tiles (served models)
        tiled = predict_volume(model, volume, 3, tile=32, margin=radius, batch_size=3, fixed_tiles=fixed)
        np.testing.assert_allclose(np.moveaxis(np.asarray(tiled), -1, 0), one_pass, atol=1e-3)
    # With too small a margin, tiles differ from one pass near their faces, but blend without a jump.
    rough = np.moveaxis(np.asarray(predict_volume(model, volume, 3, tile=32, margin=2, batch_size=3)), -1, 0)
    assert np.abs(rough - one_pass).max() > 1e-3


def test_predict_cli_writes_maps_on_the_input_grid(tmp_path):
    model = UNet3D(3, filters=(4, 6, 8), bottom_convs=1, metadata=metadata(voxel_size=9.5))
    model.save(tmp_path / "m.keras")
    tomo = write_volume(tmp_path / "t.mrc", np.random.default_rng(1).normal(size=(24, 40, 48)), 9.5,
                        origin=(1.0, 2.0, 3.0))
    result = run_cli("predict", tmp_path / "m.keras", tomo, "--out", tmp_path / "out", "--tile", "16")
    assert result.returncode == 0, result.stderr[-2000:]
    probs = [read_volume(tmp_path / "out" / f"t_prob_class_{i}.mrc") for i in (1, 2)]
    labels = read_volume(tmp_path / "out" / "t_labels.mrc")
    for v in (*probs, labels):
        assert v.shape == (24, 40, 48) and v.voxel_size == pytest.approx(9.5) and v.origin == (1.0, 2.0, 3.0)
    assert probs[0].data.dtype == np.float16 and labels.data.dtype == np.int8
    assert not [p for p in (tmp_path / "out").iterdir() if p.is_dir()]  # scratch removed


def test_predict_cli_bad_input(tmp_path):
    result = run_cli("predict", tmp_path / "none.keras", tmp_path / "t.mrc", "--out", tmp_path)
    assert result.returncode == 2 and "none.keras: no such file" in result.stderr
    (tmp_path / "bad.keras").write_text("not a model")
    result = run_cli("predict", tmp_path / "bad.keras", tmp_path / "t.mrc", "--out", tmp_path)
    assert result.returncode == 2 and "truncated or not a .keras file" in result.stderr


def test_tta_averages_the_eight_flips(tmp_path):
    import json

    from keras_ucaps.classes import ClassRegistry
    from keras_ucaps.inference.predict import (
        TTA_FLIPS,
        normalised_view,
        predict_tomogram,
        predict_volume,
    )
    from keras_ucaps.models import build_model
    from keras_ucaps.models.loading import load_trained

    run = tmp_path / "run"
    run.mkdir()
    build_model("unet", 2, filters=(4, 6, 8), bottom_convs=1).save(run / "weights_best.keras")
    (run / "config.json").write_text(json.dumps({"classes": ClassRegistry.from_radii({"a": 30.0}).to_dict(),
                                                 "voxel_size": 10.0, "patch_size": 32}))
    data = np.random.default_rng(0).normal(size=(24, 32, 40)).astype(np.float32)
    write_volume(tmp_path / "t.mrc", data, 10.0)
    loaded = load_trained(run)
    files = predict_tomogram(loaded, tmp_path / "t.mrc", tmp_path / "out", tta=True, tile=32)
    from keras_ucaps.data.normalization import ZSCORE, Normalization

    assert loaded.normalization == ZSCORE  # a config without "normalization" (runs of before) is z-scored
    mean, std = float(data.mean(dtype=np.float64)), float(data.std(dtype=np.float64))
    zscore = Normalization(ZSCORE, data.shape, (0, 0, 0), (mean,), std)
    expected = np.zeros(data.shape, np.float32)
    for axes in TTA_FLIPS:
        view = np.flip(data, axes) if axes else data
        p = predict_volume(loaded.model, normalised_view(view, zscore), 2, tile=32, margin=4,
                           scratch=tmp_path / "s")
        expected += (np.flip(np.asarray(p)[..., 1], axes) if axes else np.asarray(p)[..., 1]) / len(TTA_FLIPS)
    plain = predict_tomogram(loaded, tmp_path / "t.mrc", tmp_path / "plain", tile=32)
    got = read_volume(files["a"]).data.astype(np.float32)
    np.testing.assert_allclose(got, expected, atol=2e-3)
    assert np.abs(got - read_volume(plain["a"]).data.astype(np.float32)).max() > 1e-3  # it did change something


def test_maps_written_a_few_planes_at_a_time_equal_maps_written_in_one_piece(tmp_path, monkeypatch):
    """The slab loops (resampling on disk, TTA flipped back plane by plane, maps brought back onto the
    tomogram's grid and written slab by slab) give what one slab for everything gives."""
    import functools
    import json

    from keras_ucaps.classes import ClassRegistry
    from keras_ucaps.data import resample
    from keras_ucaps.inference import predict
    from keras_ucaps.io.diskarray import slabs
    from keras_ucaps.models import build_model
    from keras_ucaps.models.loading import load_trained

    run = tmp_path / "run"
    run.mkdir()
    build_model("unet", 3, filters=(4, 6, 8), bottom_convs=1).save(run / "weights_best.keras")
    (run / "config.json").write_text(json.dumps({"classes": ClassRegistry.from_radii({"a": 30.0, "b": 20.0})
                                                 .to_dict(), "voxel_size": 10.0, "patch_size": 32}))
    data = np.random.default_rng(4).normal(size=(26, 36, 44)).astype(np.float32)
    write_volume(tmp_path / "t.mrc", data, 8.0, origin=(5.0, 6.0, 7.0))  # predicted on a 10 Å grid
    loaded = load_trained(run)
    with pytest.warns(UserWarning, match="resampling"):
        whole = predict.predict_tomogram(loaded, tmp_path / "t.mrc", tmp_path / "whole", tta=True, tile=32)
    thin = functools.partial(slabs, budget=20000)  # a few planes per slab
    monkeypatch.setattr(predict, "slabs", thin)
    monkeypatch.setattr(resample, "slabs", thin)
    with pytest.warns(UserWarning, match="resampling"):
        sliced = predict.predict_tomogram(loaded, tmp_path / "t.mrc", tmp_path / "sliced", tta=True, tile=32)
    for key in ("a", "b", "labels"):
        a, b = read_volume(whole[key]), read_volume(sliced[key])
        assert a.shape == data.shape and a.voxel_size == 8.0 and a.origin == (5.0, 6.0, 7.0)
        np.testing.assert_allclose(np.asarray(a.data, np.float32), np.asarray(b.data, np.float32), atol=1e-3)
