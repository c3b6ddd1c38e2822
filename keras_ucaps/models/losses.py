"""Training losses (Keras 3, any backend).

- :class:`DiceCrossEntropy` on the per-voxel probabilities: class-weighted
  cross-entropy plus soft Dice averaged over classes, per sample.
- :class:`MarginLoss` on the final capsules' lengths (Sabour et al. 2017):
  ``T·max(0, m⁺ − ‖v‖)² + λ·(1 − T)·max(0, ‖v‖ − m⁻)²``, summed over classes.
- :class:`ReconstructionLoss` on the reconstruction branch, over foreground
  voxels only: mean squared error, or binary cross-entropy with the branch's
  output as logits and ``sigmoid(image)`` as target (target first, logits
  second: the reference code swapped them).

Class weights come from training-voxel frequencies (:func:`class_weights`) and
are saved with the run.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

EPSILON = 1e-7


def class_weights(class_voxels, power: float = 0.5) -> list[float]:
    """Weights ``(median frequency / frequency) ** power``, normalised to mean 1.

    ``power=1`` is median-frequency balancing; the default square root tempers
    it for the very rare classes of cryo-ET (tiny particles).
    """
    counts = np.asarray(class_voxels, dtype=np.float64)
    frequency = counts / max(counts.sum(), 1.0)
    present = frequency > 0
    weights = np.ones_like(frequency)
    weights[present] = (np.median(frequency[present]) / frequency[present]) ** power
    return (weights / weights.mean()).round(6).tolist()


@keras.saving.register_keras_serializable(package="keras_ucaps")
class DiceCrossEntropy(keras.losses.Loss):
    """Class-weighted cross-entropy + soft Dice over integer labels.

    Args:
        num_classes: int, background included.
        class_weights: per-class cross-entropy weights (default all 1).
        dice_weight, ce_weight: weights of the two terms.
        smooth: Dice smoothing.

    ``y_true``: (batch, z, y, x) integer labels; ``y_pred``: (batch, z, y, x,
    C) probabilities. Returns one loss per sample.
    """

    def __init__(self, num_classes: int, class_weights=None, dice_weight: float = 1.0, ce_weight: float = 1.0,
                 smooth: float = 1e-5, name: str = "dice_cross_entropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = int(num_classes)
        self.class_weights = [float(w) for w in class_weights] if class_weights is not None else None
        self.dice_weight = float(dice_weight)
        self.ce_weight = float(ce_weight)
        self.smooth = float(smooth)

    def call(self, y_true, y_pred):
        y_pred = ops.clip(ops.cast(y_pred, "float32"), EPSILON, 1.0)
        onehot = ops.one_hot(ops.cast(y_true, "int32"), self.num_classes, dtype="float32")
        weights = ops.convert_to_tensor(self.class_weights or [1.0] * self.num_classes, dtype="float32")
        axes = tuple(range(1, len(y_pred.shape) - 1))
        ce = ops.mean(-ops.sum(onehot * weights * ops.log(y_pred), axis=-1), axis=axes)
        intersection = ops.sum(onehot * y_pred, axis=axes)
        total = ops.sum(onehot, axis=axes) + ops.sum(y_pred, axis=axes)
        dice = 1.0 - ops.mean((2.0 * intersection + self.smooth) / (total + self.smooth), axis=-1)
        return self.ce_weight * ce + self.dice_weight * dice

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "class_weights": self.class_weights,
                "dice_weight": self.dice_weight, "ce_weight": self.ce_weight, "smooth": self.smooth}


@keras.saving.register_keras_serializable(package="keras_ucaps")
class MarginLoss(keras.losses.Loss):
    """Capsule margin loss on lengths (batch, z', y', x', C).

    Targets: multi-hot class presence (batch, z', y', x', C), as the training
    pipeline gives (every class occurring in a capsule's block is a positive, as
    in Sabour et al.'s multi-digit loss), or integer labels (batch, z', y', x').
    """

    def __init__(self, num_classes: int, positive_margin: float = 0.9, negative_margin: float = 0.1,
                 downweight: float = 0.5, name: str = "margin", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = int(num_classes)
        self.positive_margin = float(positive_margin)
        self.negative_margin = float(negative_margin)
        self.downweight = float(downweight)

    def call(self, y_true, y_pred):
        lengths = ops.cast(y_pred, "float32")
        if len(y_true.shape) == len(lengths.shape):
            present = ops.cast(y_true, "float32")
        else:
            present = ops.one_hot(ops.cast(y_true, "int32"), self.num_classes, dtype="float32")
        loss = present * ops.square(ops.relu(self.positive_margin - lengths)) + self.downweight * (
            1.0 - present) * ops.square(ops.relu(lengths - self.negative_margin))
        return ops.mean(ops.sum(loss, axis=-1), axis=tuple(range(1, len(lengths.shape) - 1)))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "positive_margin": self.positive_margin,
                "negative_margin": self.negative_margin, "downweight": self.downweight}


@keras.saving.register_keras_serializable(package="keras_ucaps")
class ReconstructionLoss(keras.losses.Loss):
    """Reconstruction error over foreground voxels.

    ``y_true``: (batch, z, y, x, 2), the z-scored image and the foreground
    mask; ``y_pred``: (batch, z, y, x, 1), the branch's linear output.
    ``kind="mse"``: squared error to the image; ``kind="bce"``: binary
    cross-entropy of ``sigmoid(image)`` (target) against the output as logits.
    """

    def __init__(self, kind: str = "mse", name: str = "reconstruction", **kwargs):
        super().__init__(name=name, **kwargs)
        if kind not in ("mse", "bce"):
            raise ValueError(f"kind must be 'mse' or 'bce', got {kind!r}")
        self.kind = kind

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        image, mask = y_true[..., 0], y_true[..., 1]
        output = ops.cast(y_pred, "float32")[..., 0]
        if self.kind == "mse":
            error = ops.square(output - image)
        else:
            error = keras.losses.binary_crossentropy(
                ops.expand_dims(ops.sigmoid(image), -1), ops.expand_dims(output, -1), from_logits=True)
        axes = tuple(range(1, len(image.shape)))
        return ops.sum(error * mask, axis=axes) / ops.maximum(ops.sum(mask, axis=axes), 1.0)

    def get_config(self):
        return {**super().get_config(), "kind": self.kind}
