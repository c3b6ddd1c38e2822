"""Carry the retraining's resumable state across machines, through the repository.

    python tools/carry_retraining.py save RUN [RUN ...]      # RUN's state -> retraining/NAME/ (commit it)
    python tools/carry_retraining.py restore RUN [RUN ...]   # retraining/NAME/ -> RUN, if RUN has none
    (--carried DIR: another folder than retraining/)

A session's machine and its checkout go when the session ends, and an ignored run folder (runs/retrain) goes
with them: only what is committed reaches the next session. ``save`` copies what ``fit --resume`` needs from a
run folder RUN into ``retraining/NAME/`` (NAME = RUN's folder name): the last complete checkpoint (weights,
optimizer variables, callback state), ``weights_best.keras``, ``config.json``, ``history.csv``, and of each kept
epoch (``tools/snapshot_epochs.sh``) its small JSON files: tuned thresholds and held-out scores
(``benchmarks/learning_f1.py``), not its weights. The patch store
is not carried: ``tools/retrain_bundled.sh`` makes it again from its fixed seeds. ``restore`` copies it back
into a run folder that has no checkpoint yet, so that the script's ``--resume`` continues from the carried epoch.

``save`` refuses a state caught in the middle of an epoch's save: ``weights_best.keras`` newer than the
checkpoint's ``state.json``, or the checkpoint's epoch changing while copying (run it again, or pause the fit
with ``pkill -STOP -f "keras-ucaps fit"`` first).
"""

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CARRIED = ROOT / "retraining"
FILES = ("weights_best.keras", "config.json", "history.csv")
EPOCH_FILES = ("state.json", "thresholds.json", "held_out_scores.json")


def _checkpoint(run: Path) -> Path:
    sys.path.insert(0, str(ROOT))
    from keras_ucaps.training.callbacks import RunCheckpoint

    folder = RunCheckpoint.checkpoint_dir(run)
    if folder is None:
        raise SystemExit(f"{run}: no complete checkpoint to carry")
    return folder


def _epoch(folder: Path) -> int:
    return json.loads((folder / "state.json").read_text())["epoch"]


def _without_optimizer(source: Path, dest: Path) -> None:
    """The checkpoint's weights file without its copy of the optimizer variables, which optimizer.npz holds
    (restore reads them from there): for the UNet, 3.7 MB of the 10.9 MB file (Adam keeps two moments per weight)."""
    import h5py

    with h5py.File(source, "r") as f, h5py.File(dest, "w") as out:
        for key, value in f.attrs.items():
            out.attrs[key] = value
        for key in f:
            if key != "optimizer":
                f.copy(f[key], out, name=key)


def _model_alone(source: Path, dest: Path) -> None:
    """``weights_best.keras`` as the bundled models are saved: the model without optimizer state."""
    import keras

    import keras_ucaps  # noqa: F401  (registers the layers)

    keras.saving.load_model(source, compile=False).save(dest)


def save(run: Path, carried: Path = CARRIED) -> Path:
    folder = _checkpoint(run)
    epoch = _epoch(folder)
    if os.path.getmtime(run / "weights_best.keras") > os.path.getmtime(folder / "state.json"):
        raise SystemExit(f"{run}: an epoch is being saved; try again in a minute")
    dest = carried / run.name
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "checkpoint").mkdir(parents=True)
    for name in ("state.json", "optimizer.npz"):
        shutil.copy2(folder / name, partial / "checkpoint" / name)
    _without_optimizer(folder / "model.weights.h5", partial / "checkpoint" / "model.weights.h5")
    for name in ("config.json", "history.csv"):
        shutil.copy2(run / name, partial / name)
    _model_alone(run / "weights_best.keras", partial / "weights_best.keras")
    for kept in sorted((run / "epochs").glob("[0-9][0-9]")):
        for name in EPOCH_FILES:
            if (kept / name).is_file():
                (partial / "epochs" / kept.name).mkdir(parents=True, exist_ok=True)
                shutil.copy2(kept / name, partial / "epochs" / kept.name / name)
    if _checkpoint(run) != folder or _epoch(folder) != epoch:
        shutil.rmtree(partial)
        raise SystemExit(f"{run}: the checkpoint changed while copying; try again")
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(partial, dest)
    print(f"{run} epoch {epoch} -> {dest}")
    return dest


def restore(run: Path, carried: Path = CARRIED) -> None:
    source = carried / run.name
    if not (source / "checkpoint" / "state.json").is_file():
        print(f"{run}: nothing carried in {source}")
        return
    if any((run / name).exists() for name in ("checkpoint", "checkpoint.new", "checkpoint.old")):
        print(f"{run}: has a checkpoint of its own; left as it is")
        return
    run.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copy2(source / name, run / name)
    if (source / "epochs").is_dir():
        shutil.copytree(source / "epochs", run / "epochs", dirs_exist_ok=True)
    shutil.copytree(source / "checkpoint", run / "checkpoint")
    print(f"{source} epoch {_epoch(run / 'checkpoint')} -> {run}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=("save", "restore"))
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--carried", type=Path, default=CARRIED,
                        help="Where the state is carried (default: %(default)s)")
    args = parser.parse_args()
    for run in args.runs:
        (save if args.action == "save" else restore)(run, args.carried)


if __name__ == "__main__":
    main()
