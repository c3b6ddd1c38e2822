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
    from keras_ucaps.models import UCaps3D

    ds = make_dataset(info, info.indices(0), batch_size=3, targets=UCaps3D(3).training_targets())
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


def test_augmentation_only_uses_wedge_preserving_moves():
    from keras_ucaps.data.augment import augment

    volume = np.random.default_rng(0).normal(size=(4, 5, 6))
    allowed = [volume, volume[::-1, :, ::-1], volume[:, :, ::-1], volume[::-1]]
    seen = set()
    for step in range(24):
        out, labels = augment(volume, volume.copy(), np.random.default_rng((7, step)))
        assert np.array_equal(out, labels)  # image and labels move together
        match = [k for k, a in enumerate(allowed) if np.array_equal(out, a)]
        assert match
        seen.add(match[0])
    assert seen == {0, 1, 2, 3}  # every move is drawn


def test_imaging_augmentation_scales_blurs_adds_noise_and_changes_gain_with_labels_in_step():
    """--augment-imaging: each effect is drawn about half the time; a scaled image keeps its labels on it."""
    from keras_ucaps.data.augment import imaging

    z, y, x = np.mgrid[:32, :32, :32]
    ball = ((z - 15.5) ** 2 + (y - 15.5) ** 2 + (x - 15.5) ** 2 <= 8**2).astype(np.float32)
    counts = np.zeros(4)
    for step in range(40):
        out, labels = imaging(ball, ball.astype(np.uint8), np.random.default_rng((3, step)))
        assert out.dtype == np.float32 and out.shape == labels.shape == ball.shape
        scaled = not np.array_equal(labels, ball)
        counts += [scaled, 0, 0, 0]
        residual = out - ball
        counts[1] += np.abs(np.diff(out, axis=2)).max() < 0.9 and not scaled  # blurred: no sharp edge left
        counts[2] += residual[ball == 0].std() > 0.03  # noise (or a gain) in the background
        counts[3] += abs(out[ball == 1].mean() - 1) > 0.05 and not scaled
    assert counts[0] >= 8 and counts[1] >= 4 and counts[2] >= 8 and counts[3] >= 4, counts
    # The same generator state gives the same patch (both pipelines rely on it).
    a = imaging(ball, ball, np.random.default_rng(9))[0]
    assert np.array_equal(a, imaging(ball, ball, np.random.default_rng(9))[0])


def test_scaled_labels_follow_the_scaled_image():
    """Draws where only the anisotropic scaling applies: the image (a ball) and its labels stay in step."""
    from keras_ucaps.data.augment import imaging

    z, y, x = np.mgrid[:32, :32, :32]
    ball = ((z - 15.5) ** 2 + (y - 15.5) ** 2 + (x - 15.5) ** 2 <= 8**2).astype(np.float32)
    checked = 0
    for step in range(200):
        coins = np.random.default_rng((5, step)).random(4) < 0.5  # imaging's first draws
        if not (coins[0] and not coins[1:].any()):
            continue
        out, labels = imaging(ball, ball.astype(np.uint8), np.random.default_rng((5, step)))
        assert np.mean((out > 0.5) != (labels > 0)) < 0.006  # edge voxels only (a scale the other way: > 0.015)
        checked += not np.array_equal(labels, ball)  # scaled visibly
    assert checked >= 3


def test_capsule_targets_mark_every_class_in_a_block():
    from keras_ucaps.data.targets import block_presence

    labels = np.zeros((16, 16, 16), np.uint8)
    labels[9, 2, 3] = 2  # one voxel of class 2 in block (1, 0, 0): sampling block centres would miss it
    labels[0:8, 8:16, 8:16] = 1
    labels[7, 15, 15] = 2
    present = block_presence(labels, 8, 3)
    assert present.shape == (2, 2, 2, 3)
    np.testing.assert_array_equal(present[1, 0, 0], [0, 0, 1])
    np.testing.assert_array_equal(present[0, 1, 1], [0, 1, 1])
    np.testing.assert_array_equal(present[0, 0, 0], [1, 0, 0])
    assert present.sum() == 8 + 1  # one class per block, two in block (0, 1, 1)


def test_balanced_epochs_show_a_rare_class_as_often_as_a_common_one_and_keep_the_background_share(tmp_path):
    import dataclasses

    from keras_ucaps.data.pipeline import epoch_order

    info = _store(tmp_path)
    n = 600  # 40 patches of class 1, 400 of class 2, 160 background
    centred = np.r_[np.full(40, 1), np.full(400, 2), np.full(160, -1)].astype(np.int16)
    info = dataclasses.replace(info, patch_class=centred, split=np.zeros(n, np.uint8))
    indices = np.arange(n)
    plain = epoch_order(info, indices, 3)
    assert sorted(plain) == list(indices)  # every patch once
    drawn = np.concatenate([epoch_order(info, indices, seed, balance=True) for seed in range(20)])
    assert len(drawn) == 20 * n
    shares = {label: np.mean(centred[drawn] == label) for label in (1, 2, -1)}
    assert abs(shares[1] - shares[2]) < 0.02 and abs(shares[1] - 0.5 * 440 / 600) < 0.02
    assert abs(shares[-1] - 160 / 600) < 0.02
    assert set(drawn[centred[drawn] == 1]) == set(range(40))  # every rare patch appears


def test_balancing_needs_the_class_of_each_patch(tmp_path):
    import dataclasses

    import pytest

    from keras_ucaps.data.pipeline import epoch_order
    from keras_ucaps.errors import InputError

    info = _store(tmp_path)
    assert info.patch_class is not None and len(info.patch_class) == len(info.split)
    with pytest.raises(InputError, match="class of each patch"):
        epoch_order(dataclasses.replace(info, patch_class=None), info.indices(0), 0, balance=True)
