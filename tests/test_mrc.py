import mrcfile
import numpy as np
import pytest

from keras_ucaps.errors import InputError
from keras_ucaps.io import read_volume, write_volume


@pytest.mark.parametrize("suffix", [".mrc", ".rec", ".h5"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_volume_round_trip_keeps_voxel_size_and_origin(tmp_path, suffix, dtype):
    data = np.random.default_rng(1).normal(size=(6, 7, 8)).astype(np.float32)
    path = write_volume(tmp_path / f"v{suffix}", data, 13.48, origin=(1.0, 2.0, 3.0), dtype=dtype)
    volume = read_volume(path)
    assert volume.shape == (6, 7, 8)
    assert volume.voxel_size == pytest.approx(13.48, rel=1e-5)
    assert volume.origin == pytest.approx((1.0, 2.0, 3.0))
    assert volume.data.dtype == np.dtype(dtype)
    np.testing.assert_allclose(volume.data, data, atol=1e-2 if dtype == "float16" else 0)


def test_int8_labels_and_range_check(tmp_path):
    labels = np.arange(24, dtype=np.int64).reshape(2, 3, 4) % 3
    volume = read_volume(write_volume(tmp_path / "l.mrc", labels, 10.0, dtype="int8"))
    assert volume.data.dtype == np.int8
    np.testing.assert_array_equal(volume.data, labels)
    with pytest.raises(ValueError, match="int8"):
        write_volume(tmp_path / "bad.mrc", labels + 200, 10.0, dtype="int8")
    assert not (tmp_path / "bad.mrc").exists()


def test_memory_mapped_read_matches(tmp_path):
    data = np.random.default_rng(2).normal(size=(5, 6, 7)).astype(np.float32)
    path = write_volume(tmp_path / "v.mrc", data, 10.0)
    volume = read_volume(path, mmap=True)
    assert isinstance(volume.data, np.memmap)
    np.testing.assert_array_equal(volume.data, data)


def test_hdf5_dataset_name(tmp_path):
    path = write_volume(tmp_path / "v.h5", np.ones((2, 3, 4)), 8.0, dataset="labels")
    assert read_volume(path, dataset="labels").voxel_size == 8.0
    with pytest.raises(InputError, match="no HDF5 dataset 'dataset'"):
        read_volume(path)


def test_zero_voxel_size_reads_as_unknown_and_is_never_written(tmp_path):
    with mrcfile.new(tmp_path / "zero.mrc") as mrc:
        mrc.set_data(np.zeros((2, 2, 2), np.float32))
    assert read_volume(tmp_path / "zero.mrc").voxel_size is None
    with pytest.raises(ValueError, match="voxel size must be positive"):
        write_volume(tmp_path / "out.mrc", np.zeros((2, 2, 2)), 0.0)


def test_failed_write_leaves_previous_file(tmp_path):
    path = write_volume(tmp_path / "v.mrc", np.ones((2, 2, 2)), 10.0)
    with pytest.raises(ValueError):
        write_volume(path, np.ones((2, 2)), 10.0)
    assert read_volume(path).shape == (2, 2, 2)
    assert [p.name for p in tmp_path.iterdir()] == ["v.mrc"]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_bytes(b"not an mrc file at all" * 100), "not a readable MRC file"),
        (lambda p: _truncated(p), "not a readable MRC file"),
        (lambda p: _mrc(p, np.zeros((4, 5), np.float32)), "expected a 3D volume"),
        (lambda p: _mrc(p, np.full((2, 2, 2), np.nan, np.float32)), "NaN or Inf"),
        (lambda p: _mrc(p, np.array([[[1, np.inf]]], np.float32)), "NaN or Inf"),
    ],
    ids=["missing", "garbage", "truncated", "2d", "nan", "inf"],
)
def test_bad_volumes_raise_input_error_naming_the_file(tmp_path, make, message):
    path = tmp_path / "bad.mrc"
    make(path)
    with pytest.raises(InputError, match=message) as info:
        read_volume(path)
    assert str(path) in str(info.value)


def _mrc(path, data):
    with mrcfile.new(path) as mrc:
        mrc.set_data(data)
        mrc.voxel_size = 10.0


def _truncated(path):
    _mrc(path, np.ones((8, 8, 8), np.float32))
    path.write_bytes(path.read_bytes()[:1500])
