"""Callbacks that make a run resumable and its files safe to read at any moment."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import keras
import numpy as np

from keras_ucaps.io.atomic import atomic_path

MONITOR = "val_loss"


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping whose counters survive a restart."""

    def __init__(self, state: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self._resume_state = state

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self._resume_state:
            self.wait, self.best = self._resume_state["wait"], self._resume_state["best"]

    def state(self) -> dict:
        return {"wait": int(self.wait), "best": float(self.best) if self.best is not None else None}


class ResumableReduceLROnPlateau(keras.callbacks.ReduceLROnPlateau):
    """ReduceLROnPlateau whose counters survive a restart (the rate itself is optimizer state)."""

    def __init__(self, state: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self._resume_state = state

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self._resume_state:
            self.wait = self._resume_state["wait"]
            self.best = self._resume_state["best"]
            self.cooldown_counter = self._resume_state["cooldown_counter"]

    def state(self) -> dict:
        return {"wait": int(self.wait), "best": float(self.best), "cooldown_counter": int(self.cooldown_counter)}


def schedule_callbacks(patience: int, state: dict | None) -> tuple[ResumableEarlyStopping,
                                                                    ResumableReduceLROnPlateau]:
    """Early stopping after ``patience`` epochs without improvement; the learning rate
    halves after ``max(2, patience // 3)``."""
    state = state or {}
    return (
        ResumableEarlyStopping(state.get("early_stopping"), monitor=MONITOR, patience=patience),
        ResumableReduceLROnPlateau(state.get("plateau"), monitor=MONITOR, factor=0.5,
                                   patience=max(2, patience // 3), min_lr=1e-7),
    )


class HistoryLogger(keras.callbacks.CSVLogger):
    """Keras' CSVLogger for history.csv, whose columns survive a resume.

    Keras appends a resumed run's rows under the file's old header whatever columns they have, so a run
    made before a column existed (``train_seconds``), or resumed off the GPU (``peak_accelerator_gb``), had
    its new rows shifted under the wrong names. Here the columns are the old header's and the new logs'
    together: when that differs from the header, the file is first rewritten (atomically) under the union,
    old rows with empty cells for columns they lack; new rows carry "NA" for values they lack.
    """

    def on_epoch_end(self, epoch, logs=None):
        if self.keys is None and self.append and os.path.getsize(self.filename):
            self._widen(sorted((logs or {}).keys()))
        super().on_epoch_end(epoch, logs)

    def _widen(self, keys: list[str]) -> None:
        with open(self.filename, newline="") as f:
            rows = list(csv.reader(f))
        header = rows[0]
        self.keys = sorted(set(header[1:]) | set(keys))
        if header == ["epoch", *self.keys]:
            return
        self.csv_file.close()
        with atomic_path(Path(self.filename)) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["epoch", *self.keys], restval="")
            writer.writeheader()
            writer.writerows(dict(zip(header, row, strict=False)) for row in rows[1:])
        self.csv_file = open(self.filename, "a")  # noqa: SIM115 (closed by on_train_end, as Keras' own)


class StopOnDivergence(keras.callbacks.Callback):
    """Stop at the first training step whose loss is not a finite number (a learning rate too large, or data
    with NaN in it): an :class:`~keras_ucaps.errors.InputError` naming --lr, before a model of NaN weights is
    saved as the epoch's."""

    def __init__(self):
        super().__init__()
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(loss)):
            from keras_ucaps.errors import InputError

            raise InputError("--lr", f"training diverged: the loss is {float(loss)} at step {batch + 1} of epoch "
                                     f"{self.epoch + 1}; give a smaller --lr")


class StepTimer(keras.callbacks.Callback):
    """Adds to each epoch's logs (and so to history.csv) ``step_seconds``, the median wall time of its
    training steps (a step's first call, which compiles, is an outlier the median ignores),
    ``train_seconds``, the wall time of the run's epochs so far (training and validation; a resumed run
    goes on from ``train_seconds``: the time axis of a learning curve), and, on a GPU,
    ``peak_accelerator_gb``, the device memory peak so far."""

    def __init__(self, train_seconds: float = 0.0):
        super().__init__()
        self._steps: list[float] = []
        self._start = 0.0
        self._train_seconds = float(train_seconds)
        self._epoch_start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        import time

        self._steps = []
        self._epoch_start = time.perf_counter()

    def on_train_batch_begin(self, batch, logs=None):
        import time

        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        import time

        self._steps.append(time.perf_counter() - self._start)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        import time

        if self._steps:
            logs["step_seconds"] = float(np.median(self._steps))
        self._train_seconds += time.perf_counter() - self._epoch_start
        logs["train_seconds"] = self._train_seconds
        peak = accelerator_peak_bytes()
        if peak is not None:
            logs["peak_accelerator_gb"] = peak / 2**30


def accelerator_peak_bytes() -> int | None:
    """Peak memory in use on the first GPU so far, under TensorFlow or JAX; ``None`` without a GPU."""
    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax

            device = jax.devices()[0]
            stats = device.memory_stats() if device.platform == "gpu" else None
            return int(stats["peak_bytes_in_use"]) if stats else None
        if backend == "tensorflow":
            import tensorflow as tf

            if tf.config.list_logical_devices("GPU"):
                return int(tf.config.experimental.get_memory_info("GPU:0")["peak"])
    except (KeyError, RuntimeError, ValueError):
        return None
    return None


class RunCheckpoint(keras.callbacks.Callback):
    """After each epoch: the best model if validation loss improved, the last
    model, every ``save_every``-th epoch's model in ``out/epochs/NN/weights_best.keras``,
    and a checkpoint (weights, optimizer variables, callback state) swapped into
    ``out/checkpoint`` as a whole."""

    def __init__(self, out: Path, schedule: tuple, state: dict | None = None, save_every: int | None = None):
        super().__init__()
        self.out = Path(out)
        self.save_every = save_every
        self.early_stopping, self.plateau = schedule
        self.best = state["best"] if state else np.inf
        self.best_logs = state["best_logs"] if state else {}

    def on_epoch_end(self, epoch, logs=None):
        logs = {k: float(v) for k, v in (logs or {}).items()}
        current = logs.get(MONITOR, np.inf)
        if current < self.best:
            self.best, self.best_logs = current, {**logs, "epoch": epoch + 1}
            self._save_model(self.out / "weights_best.keras")
        self._save_model(self.out / "weights_last.keras")
        if self.save_every and (epoch + 1) % self.save_every == 0:
            (self.out / "epochs" / f"{epoch + 1:02d}").mkdir(parents=True, exist_ok=True)
            self._save_model(self.out / "epochs" / f"{epoch + 1:02d}" / "weights_best.keras")
        state = {
            "epoch": epoch + 1,
            "best": float(self.best),
            "best_logs": self.best_logs,
            "early_stopping": self.early_stopping.state(),
            "plateau": self.plateau.state(),
            "learning_rate": float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
        }
        new = self.out / "checkpoint.new"
        shutil.rmtree(new, ignore_errors=True)
        new.mkdir(parents=True)
        self.model.save_weights(new / "model.weights.h5")
        np.savez(new / "optimizer.npz", *[keras.ops.convert_to_numpy(v) for v in self.model.optimizer.variables])
        (new / "state.json").write_text(json.dumps(state, indent=2) + "\n")
        _fsync_dir(new)
        current_dir, old = self.out / "checkpoint", self.out / "checkpoint.old"
        shutil.rmtree(old, ignore_errors=True)
        if current_dir.exists():
            os.rename(current_dir, old)
        os.rename(new, current_dir)
        shutil.rmtree(old, ignore_errors=True)

    def _save_model(self, path: Path) -> None:
        with atomic_path(path) as tmp:
            self.model.save(tmp)

    @staticmethod
    def is_complete(folder: Path) -> bool:
        """Whether a checkpoint folder holds a readable state, weights file and optimizer archive."""
        import zipfile

        import h5py

        try:
            state = json.loads((folder / "state.json").read_text())
            int(state["epoch"])
            with h5py.File(folder / "model.weights.h5", "r"):
                pass
            with zipfile.ZipFile(folder / "optimizer.npz") as archive:
                return archive.testzip() is None
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile):
            return False

    @classmethod
    def checkpoint_dir(cls, out: Path) -> Path | None:
        """The newest complete checkpoint: ``checkpoint``, or ``checkpoint.new`` / ``checkpoint.old`` when a kill
        interrupted the swap or left the current one damaged."""
        complete = [Path(out) / name for name in ("checkpoint", "checkpoint.new", "checkpoint.old")
                    if cls.is_complete(Path(out) / name)]
        if not complete:
            return None
        return max(complete, key=lambda f: json.loads((f / "state.json").read_text())["epoch"])

    @classmethod
    def load_state(cls, out: Path) -> dict | None:
        folder = cls.checkpoint_dir(out)
        return json.loads((folder / "state.json").read_text()) if folder else None

    @classmethod
    def restore(cls, out: Path, model) -> None:
        """Load the checkpoint's weights and optimizer variables into a compiled model."""
        folder = cls.checkpoint_dir(out)
        model.load_weights(folder / "model.weights.h5")
        model.optimizer.build(model.trainable_variables)
        saved = np.load(folder / "optimizer.npz")
        values = [saved[f"arr_{i}"] for i in range(len(saved.files))]
        if len(values) != len(model.optimizer.variables):
            raise RuntimeError(f"{folder}: optimizer state does not match the model")
        for variable, value in zip(model.optimizer.variables, values, strict=True):
            variable.assign(value)


def _fsync_dir(folder: Path) -> None:
    for path in folder.iterdir():
        with open(path, "rb") as f:
            os.fsync(f.fileno())
