import h5py
import numpy as np
import pytest
from conftest import VOXEL_SIZE, make_sources

from keras_ucaps.data.patches import PatchSettings, build_patch_store
from keras_ucaps.errors import InputError


@pytest.mark.parametrize("normalization", ["robust", "tomogram z-score"])
def test_store_layout_chunks_and_metadata(tmp_path, normalization):
    import json

    from keras_ucaps.data.normalization import Normalization

    sources, classes = make_sources(3)
    summary = build_patch_store(sources, classes, VOXEL_SIZE, tmp_path / "p.h5",
                                PatchSettings(patch_size=32, normalization=normalization))
    with h5py.File(tmp_path / "p.h5") as f:
        assert f["images"].chunks == (1, 32, 32, 32) and f["images"].compression is None
        assert f["labels"].chunks == (1, 32, 32, 32) and f["labels"].compression == "lzf"
        assert f["images"].dtype == np.float16 and f["labels"].dtype == np.uint8
        assert f.attrs["voxel_size"] == VOXEL_SIZE and f.attrs["patch_size"] == 32
        n = len(f["split"])
        assert f.attrs["normalization"] == normalization
        stats = json.loads(f.attrs["tomogram_stats"])
        # Labels in each patch are the tomogram's labels at that place.
        for i in range(0, n, 7):
            t, (x, y, z) = f["tomogram"][i], f["centre"][i]
            expected = sources[t].labels[z - 16:z + 16, y - 16:y + 16, x - 16:x + 16]
            np.testing.assert_array_equal(f["labels"][i], expected)
            # Images are normalised with statistics of the whole tomogram, recorded in the store, as prediction does.
            data = sources[t].volume.data
            region = (slice(z - 16, z + 16), slice(y - 16, y + 16), slice(x - 16, x + 16))
            recorded = Normalization.from_dict(stats[sources[t].name])
            np.testing.assert_allclose(f["images"][i], recorded.apply(data[region], region), atol=2e-2)
            if normalization == "tomogram z-score":
                np.testing.assert_allclose(f["images"][i], (data[region] - data.mean()) / data.std(), atol=2e-2)
        held_out = set(f["tomogram"][f["split"][()] == 1])
    assert held_out == {2}  # split by tomogram: the last one
    assert summary["train"]["big"] > 0 and summary["validation"]["small"] > 0
    assert summary["train"]["background"] > 0


def test_single_tomogram_splits_by_region_without_overlap(tmp_path):
    sources, classes = make_sources(1, shape=(40, 48, 160))
    build_patch_store(sources, classes, VOXEL_SIZE, tmp_path / "p.h5", PatchSettings(patch_size=32))
    with h5py.File(tmp_path / "p.h5") as f:
        x, split = f["centre"][:, 0], f["split"][()]
    assert (split == 0).any() and (split == 1).any()
    train_right = (x[split == 0] + 16).max()  # patch covers [x - 16, x + 16)
    val_left = (x[split == 1] - 16).min()
    assert train_right <= val_left, "training and validation patches overlap"


def test_bad_settings_and_inputs(tmp_path):
    with pytest.raises(InputError, match="--patch-size"):
        PatchSettings(patch_size=40)
    sources, classes = make_sources(1, shape=(20, 48, 64))
    with pytest.raises(InputError, match="smaller than a 32³ patch"):
        build_patch_store(sources, classes, VOXEL_SIZE, tmp_path / "p.h5", PatchSettings(patch_size=32))
    assert not (tmp_path / "p.h5").exists()
