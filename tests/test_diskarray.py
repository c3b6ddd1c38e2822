"""DiskArray: on-disk arrays read and written a region at a time (nothing kept mapped between accesses)."""

import numpy as np

from keras_ucaps.io import read_volume, write_volume
from keras_ucaps.io.diskarray import DiskArray, slabs


def test_regions_read_write_and_add_like_an_array(tmp_path):
    a = DiskArray(tmp_path / "a.npy", (5, 6, 7))
    reference = np.zeros((5, 6, 7), np.float32)
    a[1:3, :, 2] = 4.0
    reference[1:3, :, 2] = 4.0
    a.add((slice(0, 4), slice(2, 5)), 1.5)
    reference[0:4, 2:5] += 1.5
    np.testing.assert_array_equal(np.asarray(a), reference)
    np.testing.assert_array_equal(DiskArray(tmp_path / "a.npy")[2:4], reference[2:4])  # reopened from its header
    assert a.size == reference.size and len(a) == 5


def test_an_mrc_files_memory_map_is_read_through_the_same_bytes(tmp_path):
    data = np.random.default_rng(0).random((6, 8, 10)).astype(np.float16)
    path = write_volume(tmp_path / "p.mrc", data, 10.0, dtype="float16")
    mapped = read_volume(path, mmap=True).data
    view = DiskArray.over(mapped)
    assert isinstance(view, DiskArray) and view.shape == data.shape and view.dtype == np.float16
    np.testing.assert_array_equal(view[2:5, 1:3], data[2:5, 1:3])
    plain = np.zeros(3)
    assert DiskArray.over(plain) is plain


def test_slabs_cover_an_axis_within_a_budget():
    assert list(slabs(10, 100, budget=300)) == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert list(slabs(4, 10**9, budget=1)) == [(0, 1), (1, 2), (2, 3), (3, 4)]
