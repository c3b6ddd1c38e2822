"""A distributed training loop for MultiWorkerMirroredStrategy.

Keras 3's ``Model.fit`` does not run under ``tf.distribute.MultiWorkerMirroredStrategy``
(keras-team/keras#20585), so multi-worker training steps through this loop:
the model's losses and optimizer, ``strategy.run`` per replica, the
gradients all-reduced by the optimizer, validation Dice summed across workers,
and the same callbacks (schedule, checkpoints, CSV and TensorBoard logs) as ``fit``.
"""

from __future__ import annotations

import time

import keras
import tensorflow as tf


def fit_distributed(model, strategy, train_ds, val_ds, *, losses: dict, loss_weights: dict, epochs, initial_epoch,
                    steps_per_epoch, validation_steps, callbacks, class_labels: dict[str, int],
                    verbose: int = 2) -> None:
    """Train ``model`` under ``strategy`` with ``losses`` (output name → Keras loss) weighted by
    ``loss_weights``; calls ``callbacks`` as ``Model.fit`` would."""
    prefix = "probabilities_" if isinstance(model.output, dict) and len(model.output) > 1 else ""
    replicas = strategy.num_replicas_in_sync
    train_iter = iter(strategy.experimental_distribute_dataset(train_ds))
    labels = tf.constant(list(class_labels.values()), tf.int64)

    def total_loss(y, y_pred):
        return tf.add_n([loss_weights[k] * tf.reduce_mean(loss(y[k], y_pred[k])) for k, loss in losses.items()])

    @tf.function
    def train_step(iterator):
        def step(x, y):
            with tf.GradientTape() as tape:
                y_pred = model(x, training=True)
                loss = total_loss(y, y_pred)
                scaled = loss / replicas  # gradients are summed across replicas
                # Under mixed_float16 the optimizer is a LossScaleOptimizer: scale here, it unscales when applying
                # (for other optimizers scale_loss returns the loss as it is).
                scaled = model.optimizer.scale_loss(scaled)
            grads = tape.gradient(scaled, model.trainable_variables)
            model.optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
            return loss

        return strategy.reduce("MEAN", strategy.run(step, args=next(iterator)), axis=None)

    @tf.function
    def val_step(batch):
        def step(x, y):
            y_pred = model(x, training=False)
            loss = total_loss(y, y_pred)
            predicted = tf.argmax(y_pred["probabilities"], axis=-1)
            truth = tf.cast(y["probabilities"], tf.int64)
            hit = tf.cast(predicted[..., None] == labels, tf.float32)
            true = tf.cast(truth[..., None] == labels, tf.float32)
            axes = tf.range(tf.rank(hit) - 1)
            return loss, tf.reduce_sum(hit * true, axis=axes), tf.reduce_sum(hit + true, axis=axes)

        loss, inter, total = strategy.run(step, args=batch)
        return (strategy.reduce("MEAN", loss, axis=None), strategy.reduce("SUM", inter, axis=None),
                strategy.reduce("SUM", total, axis=None))

    callback_list = keras.callbacks.CallbackList(callbacks, model=model)
    model.stop_training = False
    callback_list.on_train_begin()
    for epoch in range(initial_epoch, epochs):
        start = time.perf_counter()
        callback_list.on_epoch_begin(epoch)
        train_losses = [float(train_step(train_iter)) for _ in range(steps_per_epoch)]
        val_losses, inter, total = [], 0.0, 0.0
        for i, batch in enumerate(strategy.experimental_distribute_dataset(val_ds)):
            if validation_steps and i >= validation_steps:
                break
            loss, batch_inter, batch_total = val_step(batch)
            val_losses.append(float(loss))
            inter, total = inter + batch_inter.numpy(), total + batch_total.numpy()
        logs = {"loss": sum(train_losses) / len(train_losses), "val_loss": sum(val_losses) / max(len(val_losses), 1),
                "learning_rate": float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))}
        for j, name in enumerate(class_labels):
            logs[f"val_{prefix}dice_{name}"] = float(2 * inter[j] / total[j]) if total[j] > 0 else 0.0
        callback_list.on_epoch_end(epoch, logs)
        if verbose:
            print(f"Epoch {epoch + 1}/{epochs} - {time.perf_counter() - start:.0f}s - "
                  + " - ".join(f"{k}: {v:.4f}" for k, v in logs.items()), flush=True)
        if model.stop_training:
            break
    callback_list.on_train_end()
