"""Train a model on a patch store: ``keras-ucaps fit``.

A run folder holds::

    config.json          everything predict needs: model, classes, radii, voxel size,
                         patch size, normalisation, class weights, the fit settings
    weights_best.keras   the model with the lowest validation loss so far
    weights_last.keras   the model after the last completed epoch
    checkpoint/          last completed epoch's weights, optimizer state and
                         callback state (state.json), for --resume
    history.csv          one row per epoch: losses, per-class validation Dice, learning rate
    logs/                TensorBoard logs

Every file is replaced atomically; the checkpoint folder is swapped in whole,
so a run killed at any moment resumes from its last completed epoch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np

from keras_ucaps.errors import InputError
from keras_ucaps.io.atomic import atomic_path
from keras_ucaps.io.jsonfile import read_json, write_json

CONFIG_VERSION = 1
PRECISIONS = ("auto", "bf16", "fp16", "off")


@dataclasses.dataclass
class FitSettings:
    """Settings of a training run (saved in config.json; unknown keys are refused).

    Attributes
    ----------
    model : {"ucaps", "unet"}
    data : str
        Patch store (HDF5).
    out : str
        Run folder.
    epochs, batch_size, learning_rate, patience : training schedule; the
        learning rate halves after ``max(2, patience // 3)`` epochs without
        improvement and training stops after ``patience``.
    mixed_precision : {"auto", "bf16", "fp16", "off"}
        auto: mixed_float16 on GPU; on a CPU mixed_bfloat16 where it has AMX bf16 tiles, else float32.
    steps_per_epoch, validation_steps : int, optional
        Default: one pass over the training / validation patches.
    seed : int
    model_options : dict
        Extra architecture options (e.g. ``{"levels": 2}``).
    loss_weights : dict
        Weights of the Dice+CE, margin and reconstruction losses.
    reconstruction : {"mse", "bce"}
    folds, fold : int, optional
        K-fold cross-validation by tomogram: this run holds out fold ``fold`` of ``folds``.
    balance_classes : bool
        Draw training patches so that every particle class is seen equally often (background keeps its
        share); see :func:`keras_ucaps.data.pipeline.epoch_order`.
    augment_imaging : bool
        Also augment what differs between microscopes: scale, blur, noise, gain and offset
        (:func:`keras_ucaps.data.augment.imaging`).
    init_weights : str, optional
        Fine-tuning: start from this trained model's weights (a bundled model's name or an absolute path to
        a run folder or .keras file); the run takes its architecture and options
        (:mod:`keras_ucaps.training.warm_start`).
    save_every : int, optional
        Also keep the model of every ``save_every``-th epoch in ``out/epochs/NN/weights_best.keras`` (a folder
        that prediction and fine-tuning take as a model); may change on resume.
    """

    model: str = "ucaps"
    data: str = ""
    out: str = ""
    epochs: int = 100
    batch_size: int = 2
    learning_rate: float = 1e-4
    patience: int = 10
    mixed_precision: str = "auto"
    steps_per_epoch: int | None = None
    validation_steps: int | None = None
    seed: int = 0
    model_options: dict = dataclasses.field(default_factory=dict)
    loss_weights: dict = dataclasses.field(
        default_factory=lambda: {"probabilities": 1.0, "capsule_lengths": 1.0, "reconstruction": 0.1})
    reconstruction: str = "mse"
    folds: int | None = None
    fold: int | None = None
    balance_classes: bool = False
    augment_imaging: bool = False
    init_weights: str | None = None
    save_every: int | None = None
    version: int = CONFIG_VERSION

    def __post_init__(self):
        if self.model not in ("ucaps", "unet"):
            raise InputError("--model", f"must be ucaps or unet, got {self.model!r}")
        if self.mixed_precision not in PRECISIONS:
            raise InputError("--mixed-precision", f"must be one of {', '.join(PRECISIONS)}")
        if self.batch_size < 1 or self.epochs < 1:
            raise InputError("--batch-size", "batch size and epochs must be at least 1")

    @classmethod
    def from_dict(cls, payload: dict, source: str) -> FitSettings:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(payload) - known)
        if unknown:
            raise InputError(source, f"unknown fit setting(s) {', '.join(unknown)}")
        if payload.get("version", CONFIG_VERSION) > CONFIG_VERSION:
            raise InputError(source, f"settings version {payload['version']} is newer than this keras-ucaps")
        return cls(**payload)


def precision_policy(choice: str) -> str:
    if choice == "off":
        return "float32"
    if choice == "fp16":
        return "mixed_float16"
    if choice == "bf16":
        return "mixed_bfloat16"
    if accelerators():
        return "mixed_float16"
    # On a CPU, bfloat16 pays only where the CPU multiplies it in hardware: with Intel AMX, TensorFlow's oneDNN
    # convolutions ran a UNet train step 3x and a UCaps step 1.9x faster than float32; without (AVX2, AVX-512
    # alone) it is emulated, 4-10x slower. Saved models keep no precision: they load in float32.
    return "mixed_bfloat16" if cpu_multiplies_bfloat16() else "float32"


def cpu_multiplies_bfloat16(cpuinfo: str | None = None) -> bool:
    """Whether Keras runs on TensorFlow with oneDNN on a CPU with AMX bfloat16 tiles (``amx_bf16`` in the flags of
    ``/proc/cpuinfo``, or of ``cpuinfo`` when given): where mixed bfloat16 trains faster than float32."""
    import keras

    if keras.backend.backend() != "tensorflow" or os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "0":
        return False
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:  # not Linux: no way to tell, keep float32
            return False
    return any(line.startswith("flags") and "amx_bf16" in line.split()
               for line in cpuinfo.splitlines())


def accelerators() -> list:
    """The GPUs the Keras backend sees (TensorFlow's, JAX's or PyTorch's)."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.config.list_logical_devices("GPU")
    if backend == "jax":
        import jax

        return [d for d in jax.devices() if d.platform == "gpu"]
    if backend == "torch":
        import torch

        return list(range(torch.cuda.device_count()))
    return []


def has_tensorflow() -> bool:
    """Whether TensorFlow can be imported (TensorBoard logs need it; training under JAX does not)."""
    import importlib.util

    try:
        return importlib.util.find_spec("tensorflow") is not None
    except ImportError:
        return False


def tf_config() -> dict:
    """The cluster description of a multi-worker run (empty when there is none)."""
    return json.loads(os.environ.get("TF_CONFIG", "{}"))


def distribution_strategy():
    """Under TensorFlow: MultiWorkerMirroredStrategy when TF_CONFIG names several workers,
    MirroredStrategy when several GPUs are visible, else the default strategy. Under JAX: data
    parallel over every device (``keras.distribution.DataParallel``) when there are several, and
    ``None`` (no strategy) otherwise or under another backend."""
    import keras

    if keras.backend.backend() == "jax":
        devices = data_parallel_devices()
        if devices:
            keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        return None
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    cluster = tf_config().get("cluster", {})
    if sum(len(v) for k, v in cluster.items() if k in ("worker", "chief")) > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def data_parallel_devices() -> list:
    """Under JAX, the devices a batch is split over when there are several (else none)."""
    import keras

    if keras.backend.backend() != "jax":
        return []
    import jax

    devices = jax.devices()
    return devices if len(devices) > 1 else []


def split_indices(info, settings: FitSettings) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation patch indices: the store's split, or fold ``fold`` of
    ``folds`` by tomogram."""
    if settings.folds is None:
        train, val = info.indices(0), info.indices(1)
    else:
        tomos = np.arange(len(info.tomograms))
        if settings.folds < 2 or settings.folds > len(tomos):
            raise InputError("--folds", f"needs 2 to {len(tomos)} folds (one tomogram at least per fold), "
                                        f"got {settings.folds}")
        held_out = np.array_split(tomos, settings.folds)[settings.fold]
        val_mask = np.isin(info.tomogram, held_out)
        train, val = np.flatnonzero(~val_mask), np.flatnonzero(val_mask)
    if len(train) == 0 or len(val) == 0:
        raise InputError(info.path, f"needs training and validation patches, has {len(train)} and {len(val)}")
    return train, val


def run_config(settings: FitSettings, info, class_weight_list, model) -> dict:
    """What config.json holds: everything needed to predict with the run's model."""
    return {
        "version": CONFIG_VERSION,
        "architecture": settings.model,
        "model": {k: v for k, v in model.get_config().items() if k != "metadata"},  # metadata: below
        "classes": info.classes.to_dict(),
        "num_classes": info.classes.num_classes,
        "voxel_size": info.voxel_size,
        "patch_size": info.patch_size,
        "patch_multiple": int(model.patch_multiple),
        "normalization": info.normalization,
        "class_weights": class_weight_list,
        "fit": dataclasses.asdict(settings),
        "precision": model.dtype_policy.name,  # what --mixed-precision came to on this machine
        "data": {"path": os.path.abspath(info.path), "tomograms": info.tomograms},
    }


RESUMABLE = ("epochs", "save_every")  # what a resumed run may change
OPTION_NAMES = {"learning_rate": "lr"}


def resumed_settings(saved: dict, asked: FitSettings, given: frozenset[str], source: Path) -> FitSettings:
    """The run's own settings with the new ``epochs``; an option the user gave that disagrees is an error."""
    run = FitSettings.from_dict({**saved, "epochs": asked.epochs, "save_every": asked.save_every}, str(source))
    for name in sorted(given - set(RESUMABLE) - {"out"}):
        mine, theirs = getattr(run, name), getattr(asked, name)
        option = OPTION_NAMES.get(name, name.replace("_", "-"))
        if name == "data":
            if not Path(mine).exists() and Path(theirs).exists():
                run = dataclasses.replace(run, data=os.path.abspath(theirs))  # the store moved: take the new path
                continue
            same = Path(theirs).exists() and Path(mine).exists() and os.path.samefile(mine, theirs)
        elif name == "model_options":  # each architecture option given must be the run's (others stay the run's)
            mismatch = {k: v for k, v in theirs.items() if mine.get(k) != v}
            same = not mismatch
            theirs, mine = mismatch, {k: mine.get(k) for k in mismatch}
            option = "/--".join(k.replace("_", "-") for k in mismatch)
        else:
            same = mine == theirs
        if not same:
            raise InputError(f"--{option}", f"{theirs!r} differs from the run's {mine!r}: a resumed run keeps its "
                                            "settings (only --epochs may change); start a new --out to change it")
    if not Path(run.data).exists():
        raise InputError(source, f"the run's patch store {run.data} is gone: give its new path with --data")
    return run


_LOCKS: list = []  # run-folder locks this process holds, released when it ends


def lock_run_folder(out: Path):
    """An exclusive lock on ``out/.lock`` for this process's lifetime; a second fit into the folder is refused."""
    import fcntl

    from keras_ucaps.io.atomic import cannot_write, make_folder

    make_folder(out)
    try:
        handle = open(out / ".lock", "a+")  # noqa: SIM115 - held open on purpose, released when the process ends
    except OSError as err:
        raise cannot_write(out, err) from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise InputError(out, f"another fit is running in this run folder ({holder}): wait for it or use another "
                              "--out") from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
    except OSError as err:  # a full disk
        with contextlib.suppress(OSError):  # closing flushes the same bytes again
            handle.close()
        raise cannot_write(out, err) from None
    _LOCKS.append(handle)
    return handle


def clean_leftovers(out: Path) -> None:
    """Scratch a killed fit left behind: half-written models and an incomplete checkpoint.new."""
    from keras_ucaps.training.callbacks import RunCheckpoint

    for scratch in out.glob(".*.part.keras"):
        scratch.unlink(missing_ok=True)
    new = out / "checkpoint.new"
    if new.exists() and not RunCheckpoint.is_complete(new):
        shutil.rmtree(new, ignore_errors=True)


def is_chief() -> bool:
    """Whether this process writes the run's files (always, unless it is a
    non-chief worker of a multi-worker cluster)."""
    config = tf_config()
    task, cluster = config.get("task", {}), config.get("cluster", {})
    if not task:
        return True
    if "chief" in cluster:
        return task.get("type") == "chief"
    return task.get("type") == "worker" and int(task.get("index", 0)) == 0


def trim_history(path: Path, epochs_done: int) -> None:
    """Keep the history rows of completed (checkpointed) epochs only."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = lines[:1] + [line for line in lines[1:] if line.split(",", 1)[0].isdigit()
                        and int(line.split(",", 1)[0]) < epochs_done]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(kept))


def history_train_seconds(path: Path) -> float:
    """The ``train_seconds`` of the last epoch in history.csv (0 for a new run, or one from before the column)."""
    import csv

    if not path.is_file():
        return 0.0
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    try:
        return float(rows[-1]["train_seconds"]) if rows else 0.0
    except (KeyError, TypeError, ValueError):
        return 0.0


def fit(settings: FitSettings, *, resume: bool = False, verbose: int | str = "auto", strategy=None,
        given: frozenset[str] = frozenset(), source=None) -> dict:
    """Train (or resume) a run; returns the best epoch's validation metrics.

    ``strategy``: a tf.distribute strategy; default :func:`distribution_strategy`. ``given``: the settings the
    user named explicitly; on resume each must equal the run's own (only ``epochs`` may change). ``source``: the
    :class:`~keras_ucaps.training.warm_start.Source` of ``settings.init_weights`` when the caller has read it.

    A new run that fails on a bad input or a write the system refuses (a full disk) before it completed an
    epoch leaves no run folder behind (nor the folders made for it), and so does ``--resume`` of a folder that
    did not exist; one with a checkpoint keeps it, for ``--resume``.
    """
    import keras

    from keras_ucaps.io.atomic import first_missing

    made = first_missing(settings.out) if is_chief() else None  # --resume into no run at all makes it too
    policy = keras.mixed_precision.global_policy()  # the caller's, given back: models built later are theirs
    try:
        return _fit(settings, resume=resume, verbose=verbose, strategy=strategy, given=given, source=source)
    except (InputError, OSError):
        from keras_ucaps.training.callbacks import RunCheckpoint

        if made is not None and made.is_dir() and RunCheckpoint.load_state(Path(settings.out)) is None:
            shutil.rmtree(made, ignore_errors=True)
        raise
    finally:
        keras.mixed_precision.set_global_policy(policy)


def _fit(settings: FitSettings, *, resume: bool, verbose: int | str, strategy, given: frozenset[str],
         source) -> dict:
    import keras

    from keras_ucaps.data.pipeline import make_dataset, read_store_info
    from keras_ucaps.models import build_model
    from keras_ucaps.models.losses import class_weights
    from keras_ucaps.models.metadata import ModelMetadata
    from keras_ucaps.training.callbacks import (
        HistoryLogger,
        RunCheckpoint,
        StepTimer,
        StopOnDivergence,
        schedule_callbacks,
    )
    from keras_ucaps.training.metrics import ClassDice
    from keras_ucaps.training.warm_start import copy_weights, picking_from_source, settings_from_source, start_from

    out = Path(settings.out)
    chief = is_chief()
    if not chief:  # other workers of a cluster write into a scratch folder of their own
        worker = tf_config()["task"]
        settings = dataclasses.replace(settings, out=str(out / f".worker_{worker['type']}_{worker['index']}"))
        out = Path(settings.out)
    state = None
    read_already, source = source, None
    if not resume:
        # a damaged or missing store, or a source model that does not fit it, is refused before the run folder
        # is made
        info = read_store_info(settings.data)
        if settings.init_weights:
            source = start_from(settings.init_weights, info, read_already)
            settings = settings_from_source(settings, source, given)
    if chief:
        lock_run_folder(out)  # held until this process ends
        clean_leftovers(out)
    if resume:
        state = RunCheckpoint.load_state(out)
        if not (out / "config.json").is_file():
            raise InputError(out, "nothing to resume: no run in this folder (start it without --resume)")
        if state is None and any((out / name).exists() for name in ("checkpoint", "checkpoint.new", "checkpoint.old")):
            # A run that completed epochs and whose every checkpoint is damaged: restarting at epoch 1 would
            # silently throw its training away.
            raise InputError(out / "checkpoint", "is damaged (state.json, model.weights.h5 or optimizer.npz missing "
                                                 "or unreadable): cannot resume; start a new --out, with "
                                                 f"--init-weights {out / 'weights_last.keras'} to keep its weights")
        saved = read_json(out / "config.json")
        if not isinstance(saved, dict) or not isinstance(saved.get("fit"), dict):
            raise InputError(out / "config.json", "not a run's config.json (no 'fit' settings)")
        settings = resumed_settings(saved["fit"], settings, given, out / "config.json")
    elif (out / "config.json").exists():
        raise InputError(out, "run folder already holds a run: use --resume to continue it, or another --out")
    settings = dataclasses.replace(settings, data=os.path.abspath(settings.data))

    keras.utils.set_random_seed(settings.seed)
    keras.mixed_precision.set_global_policy(precision_policy(settings.mixed_precision))
    info = read_store_info(settings.data)
    if resume and state is None and settings.init_weights:  # killed in its first epoch: start from the source again
        source = start_from(settings.init_weights, info, read_already)
    train_idx, val_idx = split_indices(info, settings)
    weights = class_weights(info.class_voxels)
    num_classes = info.classes.num_classes
    devices = data_parallel_devices()
    if devices and settings.batch_size % len(devices):
        raise InputError("--batch-size", f"{settings.batch_size} does not split over the {len(devices)} devices of "
                                         f"data parallel training: give a multiple of {len(devices)}")
    if devices and len(val_idx) < settings.batch_size:
        raise InputError(info.path, f"{len(val_idx)} validation patches make no full batch of "
                                    f"{settings.batch_size} to split over {len(devices)} devices")
    if devices and verbose:
        print(f"data parallel over {len(devices)} {devices[0].platform} devices "
              f"({settings.batch_size // len(devices)} samples each per step)", flush=True)
    strategy = strategy or distribution_strategy()
    import contextlib

    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model = build_model(settings.model, num_classes, **settings.model_options)
        if info.patch_size % model.patch_multiple:
            raise InputError(info.path, f"patch size {info.patch_size} is not a multiple of {model.patch_multiple}")
        targets = model.training_targets()
        losses, loss_weights = model.training_losses(weights, settings.loss_weights,
                                                     reconstruction=settings.reconstruction)
        metrics = {"probabilities": [ClassDice(c.label, num_classes, name=f"dice_{c.name}")
                                     for c in info.classes.classes]}
        model.compile(
            optimizer=keras.optimizers.Adam(settings.learning_rate),
            loss=dict(losses),  # compile converts what it is given in place
            loss_weights=dict(loss_weights),
            metrics=metrics,
        )
    config = run_config(settings, info, weights, model)
    picking = picking_from_source(source, info.classes.names) if source is not None else None
    if state is not None and (out / "thresholds.json").is_file():
        from keras_ucaps.picking.thresholds import read_thresholds

        picking = read_thresholds(out / "thresholds.json")
    # Every model the run saves carries what it needs to be used (keras_ucaps.models.metadata).
    model.metadata = ModelMetadata(info.classes, info.voxel_size, info.normalization, info.patch_size, picking)
    out.mkdir(parents=True, exist_ok=True)
    if state is None:  # a new run, or one killed before it completed an epoch: (re)start it
        if source is not None:
            fresh = copy_weights(model, source, info.classes.names)
            if verbose:
                print(f"starting from the weights of {source.given}"
                      + (f"; the class head ({', '.join(fresh)}) starts afresh: the store's classes "
                         f"{', '.join(info.classes.names)} are not its {', '.join(source.classes)}" if fresh else ""),
                      flush=True)
        if verbose:
            print(f"computing in {model.dtype_policy.name}"
                  + (f" (--mixed-precision {settings.mixed_precision})" if settings.mixed_precision == "auto" else ""),
                  flush=True)
        shutil.rmtree(out / "logs", ignore_errors=True)
        (out / "history.csv").unlink(missing_ok=True)
        write_json(out / "config.json", config)
        if picking is not None:
            from keras_ucaps.picking.thresholds import write_thresholds

            write_thresholds(out, picking)
            if verbose:
                print(f"picks as {source.given} did (fit radius {picking.get('fit_radius', 1.0):g}, density weight "
                      f"{picking.get('density_weight', 0.0):g}, "
                      + ("its thresholds" if picking["thresholds"] else "no thresholds: a new class head")
                      + f") until tuned: keras-ucaps evaluate TRUTH PICKS --model {out}", flush=True)
    else:
        RunCheckpoint.restore(out, model)
        trim_history(out / "history.csv", state["epoch"])

    common = dict(targets=targets, seed=settings.seed)
    steps = settings.steps_per_epoch or max(1, len(train_idx) // settings.batch_size)
    validation_steps = settings.validation_steps or -(-len(val_idx) // settings.batch_size)
    initial_epoch = state["epoch"] if state else 0
    on_tensorflow = keras.backend.backend() == "tensorflow"
    if on_tensorflow:
        train_ds = make_dataset(info, train_idx, batch_size=settings.batch_size, balance=settings.balance_classes,
                                imaging=settings.augment_imaging, **common)
        val_ds = make_dataset(info, val_idx, batch_size=settings.batch_size, shuffle=False, augment=False,
                              repeat=False, **common)
    else:  # the same batches through keras.utils.PyDataset: no TensorFlow needed
        from keras_ucaps.data.pipeline import patch_batches

        train_ds = patch_batches(info, train_idx, batch_size=settings.batch_size, steps=steps,
                                 balance=settings.balance_classes, imaging=settings.augment_imaging, **common)
        train_ds.keras_epoch = initial_epoch  # a resumed run goes on where the stream was
        val_ds = patch_batches(info, val_idx, batch_size=settings.batch_size, repeat=False, shuffle=False,
                               augment=False, **common)
        # Over several devices every batch must split evenly: validation leaves out its last, partial batch.
        validation_steps = min(validation_steps, len(val_idx) // settings.batch_size if devices else len(val_ds))
    schedule = schedule_callbacks(settings.patience, state)
    callbacks = [
        StopOnDivergence(),
        *schedule,
        StepTimer(history_train_seconds(out / "history.csv")),  # before the logger: its figures go into history.csv
        HistoryLogger(str(out / "history.csv"), append=state is not None),
        *([keras.callbacks.TensorBoard(str(out / "logs"), write_graph=False)] if has_tensorflow() else []),
        RunCheckpoint(out, schedule, state, save_every=settings.save_every),  # last: it records the schedule's counters
    ]
    if verbose == "auto":
        import sys

        verbose = 1 if sys.stdout.isatty() else 2  # a progress bar on a terminal, a line per epoch in logs
    if initial_epoch < settings.epochs:
        multi_worker = False
        if on_tensorflow:
            import tensorflow as tf

            multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        if multi_worker:
            from keras_ucaps.training.loop import fit_distributed

            fit_distributed(model, strategy, train_ds, val_ds, losses=losses, loss_weights=loss_weights,
                            epochs=settings.epochs, initial_epoch=initial_epoch,
                            steps_per_epoch=steps, validation_steps=validation_steps, callbacks=callbacks,
                            class_labels={c.name: c.label for c in info.classes.classes}, verbose=verbose)
        else:
            model.fit(train_ds, validation_data=val_ds, epochs=settings.epochs, initial_epoch=initial_epoch,
                      steps_per_epoch=steps, validation_steps=validation_steps, callbacks=callbacks,
                      verbose=verbose, shuffle=False)  # the stream is shuffled already, in a seeded order
    return json.loads((out / "checkpoint" / "state.json").read_text())["best_logs"]
