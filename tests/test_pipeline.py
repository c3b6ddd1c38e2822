import numpy as np
from conftest import VOXEL_SIZE, make_sources

from keras_ucaps.data.patches import PatchSettings, build_patch_store
from keras_ucaps.data.pipeline import make_dataset, read_store_info


def _store(tmp_path):
    sources, classes = make_sources(2)
    for s in sources:  # image = labels: alignment is visible after augmentation
        s.volume.data[...] = s.labels.astype(np.float32)
    build_patch_store(sources, classes, VOXEL_SIZE, tmp_path / "p.h5", PatchSettings(patch_size=32))
    return read_store_info(tmp_path / "p.h5")


def test_batches_are_normalised_augmented_and_aligned(tmp_path):
    info = _store(tmp_path)
    ds = make_dataset(info, info.indices(0), batch_size=3, outputs=("probabilities", "reconstruction",
                                                                     "capsule_lengths"), capsule_stride=8)
    image, targets = next(iter(ds))
    assert image.shape == (3, 32, 32, 32, 1)
    assert targets["probabilities"].shape == (3, 32, 32, 32)
    assert targets["reconstruction"].shape == (3, 32, 32, 32, 2)
    assert targets["capsule_lengths"].shape == (3, 4, 4, 4, info.classes.num_classes)
    image = image.numpy()[..., 0]
    labels = targets["probabilities"].numpy()
    for i in range(3):
        if labels[i].max() > 0:
            # The image was the label map: its brightest voxels are still where the labels are.
            assert np.array_equal(image[i] >= image[i].max() - 1e-3, labels[i] == labels[i].max())
    np.testing.assert_array_equal(targets["reconstruction"].numpy()[..., 1], labels > 0)


def test_one_pass_visits_every_patch_once(tmp_path):
    info = _store(tmp_path)
    idx = info.indices(1)
    ds = make_dataset(info, idx, batch_size=4, shuffle=False, augment=False, repeat=False)
    assert sum(int(b[0].shape[0]) for b in ds) == len(idx)


def test_augmentation_only_uses_wedge_preserving_moves(tmp_path):
    import tensorflow as tf

    from keras_ucaps.data.augment import augment

    volume = tf.random.normal((4, 5, 6))
    allowed = [volume, tf.reverse(volume, [0, 2]), tf.reverse(volume, [2]), tf.reverse(volume, [0])]
    for step in range(12):
        out, _ = augment(volume, volume, tf.constant([7, step], tf.int64))
        assert any(np.array_equal(out.numpy(), a.numpy()) for a in allowed)


def test_capsule_targets_mark_every_class_in_a_block():
    from keras_ucaps.data.pipeline import block_presence

    labels = np.zeros((16, 16, 16), np.uint8)
    labels[9, 2, 3] = 2  # one voxel of class 2 in block (1, 0, 0): sampling block centres would miss it
    labels[0:8, 8:16, 8:16] = 1
    labels[7, 15, 15] = 2
    present = block_presence(labels, 8, 3).numpy()
    assert present.shape == (2, 2, 2, 3)
    np.testing.assert_array_equal(present[1, 0, 0], [0, 0, 1])
    np.testing.assert_array_equal(present[0, 1, 1], [0, 1, 1])
    np.testing.assert_array_equal(present[0, 0, 0], [1, 0, 0])
    assert present.sum() == 8 + 1  # one class per block, two in block (0, 1, 1)
