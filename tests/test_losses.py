import keras
import numpy as np
import pytest

from keras_ucaps.models.losses import DiceCrossEntropy, MarginLoss, ReconstructionLoss, class_weights


def test_dice_cross_entropy_is_zero_for_a_perfect_prediction_and_grows_with_errors():
    labels = np.random.default_rng(0).integers(0, 3, size=(2, 4, 4, 4))
    perfect = keras.ops.one_hot(labels, 3)
    loss = DiceCrossEntropy(3)
    assert float(loss(labels, perfect)) == pytest.approx(0.0, abs=1e-4)
    uniform = np.full((2, 4, 4, 4, 3), 1 / 3, np.float32)
    assert float(loss(labels, uniform)) > float(loss(labels, 0.8 * perfect + 0.2 * uniform)) > 0.01


def test_class_weights_raise_rare_classes():
    weights = class_weights([1000, 100, 10])
    assert weights[2] > weights[1] > weights[0] and np.mean(weights) == pytest.approx(1.0)
    loss_rare = DiceCrossEntropy(3, class_weights=weights, dice_weight=0)
    labels = np.full((1, 2, 2, 2), 2)
    wrong = np.tile(np.array([0.9, 0.05, 0.05], np.float32), (1, 2, 2, 2, 1))
    assert float(loss_rare(labels, wrong)) == pytest.approx(weights[2] * -np.log(0.05), rel=1e-4)


def test_margin_loss_matches_its_formula():
    lengths = np.array([[[[[0.95, 0.3]]]]], np.float32)  # class 0 present, class 1 absent
    loss = MarginLoss(2)(np.zeros((1, 1, 1, 1)), lengths)
    assert float(loss) == pytest.approx(0.5 * (0.3 - 0.1) ** 2, rel=1e-5)


@pytest.mark.parametrize("kind", ["mse", "bce"])
def test_reconstruction_counts_foreground_only(kind):
    rng = np.random.default_rng(1)
    image = rng.normal(size=(1, 4, 4, 4)).astype(np.float32)
    mask = np.zeros_like(image)
    mask[0, :2] = 1
    target = np.stack([image, mask], -1)
    output = rng.normal(size=(1, 4, 4, 4, 1)).astype(np.float32)
    loss = ReconstructionLoss(kind)
    base = float(loss(target, output))
    changed = output.copy()
    changed[0, 2:] += 10  # background voxels: no effect
    assert float(loss(target, changed)) == pytest.approx(base, rel=1e-6)
    if kind == "bce":  # target sigmoid(image), logits the output
        p = 1 / (1 + np.exp(-output[..., 0]))
        t = 1 / (1 + np.exp(-image))
        manual = -(t * np.log(p) + (1 - t) * np.log(1 - p))
        assert base == pytest.approx(float((manual * mask).sum() / mask.sum()), rel=1e-4)


def test_margin_loss_takes_multi_hot_presence_or_labels():
    rng = np.random.default_rng(0)
    lengths = rng.uniform(size=(2, 2, 2, 2, 3)).astype(np.float32)
    labels = rng.integers(0, 3, size=(2, 2, 2, 2))
    one_hot = np.eye(3, dtype=np.float32)[labels]
    loss = MarginLoss(3)
    np.testing.assert_allclose(np.asarray(loss(one_hot, lengths)), np.asarray(loss(labels, lengths)), rtol=1e-6)
    both = one_hot.copy()
    both[..., 2] = 1.0  # a second class present everywhere: its long capsules are no longer penalised
    assert float(loss(both, lengths)) != float(loss(one_hot, lengths))
