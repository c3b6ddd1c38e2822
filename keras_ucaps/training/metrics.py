"""Validation metrics: hard Dice per class."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_ucaps")
class ClassDice(keras.metrics.Metric):
    """Dice of one class between the argmax prediction and the labels, over all
    voxels seen since the last reset (not an average of per-batch values).

    Args:
        class_id: int, the label scored.
        num_classes: int, background included.
    """

    def __init__(self, class_id: int, num_classes: int, name: str | None = None, **kwargs):
        super().__init__(name=name or f"dice_{class_id}", **kwargs)
        self.class_id = int(class_id)
        self.num_classes = int(num_classes)
        self.intersection = self.add_variable(shape=(), initializer="zeros", name="intersection")
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")

    def update_state(self, y_true, y_pred, sample_weight=None):
        predicted = ops.cast(ops.equal(ops.argmax(y_pred, axis=-1), self.class_id), "float32")
        actual = ops.cast(ops.equal(ops.cast(y_true, "int32"), self.class_id), "float32")
        self.intersection.assign_add(ops.sum(predicted * actual))
        self.total.assign_add(ops.sum(predicted) + ops.sum(actual))

    def result(self):
        return ops.where(self.total > 0, 2.0 * self.intersection / ops.maximum(self.total, 1.0), 0.0)

    def reset_state(self):
        self.intersection.assign(0.0)
        self.total.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "class_id": self.class_id, "num_classes": self.num_classes}
