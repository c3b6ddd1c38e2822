"""Training from the command line: files, resume after a kill, distributed strategies."""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from conftest import VOXEL_SIZE, run_cli

DEFAULT_UNET = ["--model", "unet", "--batch-size", "2", "--steps-per-epoch", "2", "--validation-steps", "1"]
FAST = [*DEFAULT_UNET, "--filters", "4,6,8"]  # a narrow UNet: the tests are about the run, not the model


def test_fit_writes_a_complete_run_folder(tmp_path, store):
    result = run_cli("fit", "--data", store, "--out", tmp_path / "run", "--epochs", "1", *DEFAULT_UNET)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    for name in ("config.json", "weights_best.keras", "weights_last.keras", "history.csv", "checkpoint/state.json"):
        assert (run / name).is_file(), name
    assert any((run / "logs").rglob("*tfevents*"))
    config = json.loads((run / "config.json").read_text())
    assert config["architecture"] == "unet" and config["voxel_size"] == VOXEL_SIZE and config["patch_size"] == 32
    assert [c["name"] for c in config["classes"]["classes"]] == ["big", "small"]
    assert len(config["class_weights"]) == 3 and config["normalization"] == "robust"  # the store's method
    from keras_ucaps.models.loading import load_trained

    assert load_trained(run).normalization == "robust"  # and prediction normalises the same way
    header = (run / "history.csv").read_text().splitlines()[0]
    assert "val_dice_big" in header and "val_dice_small" in header and "val_loss" in header
    model = keras.saving.load_model(run / "weights_best.keras")
    assert model.count_params() == 902_928 + 33 * 3
    again = run_cli("fit", "--data", store, "--out", run, "--epochs", "1", *DEFAULT_UNET)
    assert again.returncode == 2 and "use --resume" in again.stderr
    missing = run_cli("fit", "--out", tmp_path / "other", "--epochs", "1", *DEFAULT_UNET)
    assert missing.returncode == 2 and missing.stderr.startswith("Error: --data: missing")
    assert not (tmp_path / "other").exists()
    nothing = run_cli("fit", "--out", tmp_path / "other", "--epochs", "1", "--resume", *DEFAULT_UNET)
    assert nothing.returncode == 2 and "nothing to resume" in nothing.stderr
    assert not (tmp_path / "other").exists()  # the folder the lock made is removed again


def test_a_killed_run_resumes_from_its_last_completed_epoch(tmp_path, store):
    run = tmp_path / "run"
    args = [sys.executable, "-m", "keras_ucaps", "fit", "--data", str(store), "--out", str(run), "--epochs", "4", *FAST]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state_path = run / "checkpoint" / "state.json"
    deadline = time.time() + 300
    while time.time() < deadline:
        if state_path.is_file() and json.loads(state_path.read_text())["epoch"] >= 2:
            break
        if process.poll() is not None:
            pytest.fail("training ended before it could be killed")
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = json.loads(state_path.read_text())["epoch"]
    assert 2 <= killed_at < 4
    assert keras.saving.load_model(run / "weights_last.keras") is not None  # nothing written is corrupt

    result = run_cli("fit", "--out", run, "--epochs", "4", "--resume", *FAST)  # the run knows its store
    assert result.returncode == 0, result.stderr[-3000:]
    epochs = [int(line.split(",")[0]) for line in (run / "history.csv").read_text().splitlines()[1:]]
    assert epochs == [0, 1, 2, 3]
    # The learning curve's time axis: training wall time since the run began, carried on through the resume.
    with open(run / "history.csv") as f:
        seconds = [float(row["train_seconds"]) for row in csv.DictReader(f)]
    assert all(b > a for a, b in zip(seconds, seconds[1:], strict=False)) and seconds[0] > 0, seconds
    state = json.loads(state_path.read_text())
    assert state["epoch"] == 4
    iterations = np.load(run / "checkpoint" / "optimizer.npz")["arr_0"]
    assert int(iterations) == 4 * 2  # the optimizer state carried on: 4 epochs of 2 steps


@pytest.mark.slow  # CI trains under the two-process MultiWorkerMirroredStrategy below
def test_fit_under_mirrored_strategy_on_two_logical_cpus(tmp_path, store):
    script = f"""
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
from keras_ucaps.training.fit import FitSettings, fit
best = fit(FitSettings(model="unet", data={str(store)!r}, out={str(tmp_path / 'run')!r}, epochs=1, batch_size=2,
                       steps_per_epoch=2, validation_steps=1, model_options={{"filters": [4, 6, 8]}}),
           strategy=strategy, verbose=0)
print("replicas", strategy.num_replicas_in_sync, "val_loss", best["val_loss"])
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "replicas 2" in result.stdout
    assert np.isfinite(float(result.stdout.split("val_loss")[1]))
    assert (tmp_path / "run" / "weights_best.keras").is_file()


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_fit_under_multi_worker_mirrored_strategy_on_loopback(tmp_path, store):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    script = f"""
from keras_ucaps.training.fit import FitSettings, distribution_strategy, fit
strategy = distribution_strategy()
best = fit(FitSettings(model="unet", data={str(store)!r}, out={str(tmp_path / 'run')!r}, epochs=1, batch_size=2,
                       steps_per_epoch=2, validation_steps=1, model_options={{"filters": [4, 6, 8]}}),
           verbose=0, strategy=strategy)
import tensorflow as tf
print("multi-worker", isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy), strategy.num_replicas_in_sync)
"""
    workers = []
    for index in range(2):
        env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        workers.append(subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, env=env))
    outputs = []
    for worker in workers:
        try:
            out, err = worker.communicate(timeout=300)
        finally:
            if worker.poll() is None:
                worker.kill()
        assert worker.returncode == 0, err[-3000:]
        outputs.append(out)
    assert all("multi-worker True 2" in out for out in outputs)
    assert (tmp_path / "run" / "weights_best.keras").is_file()  # the chief wrote the run
    assert (tmp_path / "run" / ".worker_worker_1").is_dir()  # the other worker wrote elsewhere


def test_k_fold_cross_validation_by_tomogram(tmp_path, store):
    result = run_cli("fit", "--data", store, "--out", tmp_path / "cv", "--epochs", "1", "--folds", "2", *FAST)
    assert result.returncode == 0, result.stderr[-3000:]
    for k in range(2):
        config = json.loads((tmp_path / "cv" / f"fold_{k}" / "config.json").read_text())
        assert config["fit"]["folds"] == 2 and config["fit"]["fold"] == k
    summary = json.loads((tmp_path / "cv" / "folds.json").read_text())
    assert summary["folds"] == 2 and len(summary["per_fold"]) == 2
    assert {"mean", "std"} <= set(summary["summary"]["val_loss"])
    assert "2-fold cross-validation" in result.stdout and "val_dice_big" in result.stdout
    bad = run_cli("fit", "--data", store, "--out", tmp_path / "cv5", "--epochs", "1", "--folds", "5", *FAST)
    assert bad.returncode == 2 and "--folds" in bad.stderr


def test_split_indices_hold_out_whole_tomograms(store):
    from keras_ucaps.data.pipeline import read_store_info
    from keras_ucaps.training.fit import FitSettings, split_indices

    info = read_store_info(store)
    for k in range(3):
        train, val = split_indices(info, FitSettings(data=str(store), folds=3, fold=k))
        assert set(info.tomogram[val]) == {k} and k not in set(info.tomogram[train])


def test_architecture_and_sampling_options_reach_the_run(tmp_path, store, one_epoch_run):
    config = json.loads((one_epoch_run / "config.json").read_text())
    assert config["model"]["normalization"] == "batch" and config["model"]["filters"] == [4, 6, 8]
    assert config["fit"]["balance_classes"] is True and config["fit"]["augment_imaging"] is True
    wrong = run_cli("fit", "--data", store, "--out", tmp_path / "x", "--dilation", *FAST)
    assert wrong.returncode == 2 and "--dilation: applies to --model ucaps only" in wrong.stderr
    wrong = run_cli("fit", "--data", store, "--out", tmp_path / "x", "--capsule-init", "unit", *FAST)
    assert wrong.returncode == 2 and "--capsule-init: applies to --model ucaps only" in wrong.stderr
    assert not (tmp_path / "x").exists()


def test_auto_precision_on_a_cpu_is_bfloat16_only_with_amx(monkeypatch):
    # bfloat16 on a CPU without bf16 tiles is emulated: a UNet train step ran 10× slower than in float32 on the
    # AVX2 development machine; with AMX it ran 3× faster (benchmarks/RESULTS.md, model speed)
    import tensorflow as tf

    from keras_ucaps.training import fit

    assert not tf.config.list_physical_devices("GPU")
    amx = "processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n"
    avx512 = "processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 avx512_vnni\n"
    assert fit.cpu_multiplies_bfloat16(amx) and not fit.cpu_multiplies_bfloat16(avx512)
    assert not fit.cpu_multiplies_bfloat16("model name\t: amx_bf16 in a name, not a flag\n")
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")  # bf16 tiles are reached through oneDNN
    assert not fit.cpu_multiplies_bfloat16(amx)
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS")
    for has_amx, policy in ((True, "mixed_bfloat16"), (False, "float32")):
        monkeypatch.setattr(fit, "cpu_multiplies_bfloat16", lambda has_amx=has_amx: has_amx)
        assert fit.precision_policy("auto") == policy
    assert fit.precision_policy("off") == "float32"
    assert fit.precision_policy("bf16") == "mixed_bfloat16" and fit.precision_policy("fp16") == "mixed_float16"


def test_a_bfloat16_run_gives_back_the_callers_policy_and_saves_a_float32_model(tmp_path, store):
    """A run under mixed bfloat16 left it as Keras' global policy: every model the caller built afterwards ran in
    bfloat16. Its saved model carries no precision: it loads in float32 (16x slower on a CPU without AMX)."""
    import keras

    from keras_ucaps.training.fit import FitSettings, fit

    assert keras.mixed_precision.global_policy().name == "float32"
    fit(FitSettings(model="unet", data=str(store), out=str(tmp_path / "run"), epochs=1, batch_size=2,
                    steps_per_epoch=1, validation_steps=1, mixed_precision="bf16",
                    model_options={"filters": [4, 6, 8], "bottom_convs": 1}), verbose=0)
    assert keras.mixed_precision.global_policy().name == "float32"
    model = keras.saving.load_model(tmp_path / "run" / "weights_best.keras", compile=False)
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}


@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory, store):
    """A one-epoch run (with batch normalisation, balanced sampling and imaging augmentation, which a test checks
    reach the run)."""
    run = tmp_path_factory.mktemp("base") / "run"
    result = run_cli("fit", "--data", store, "--out", run, "--epochs", "1", "--normalization", "batch",
                     "--balance-classes", "--augment-imaging", *FAST)
    assert result.returncode == 0, result.stderr[-3000:]
    return run


def _copy(run, tmp_path):
    import shutil

    target = tmp_path / "run"
    shutil.copytree(run, target)
    (target / ".lock").unlink(missing_ok=True)
    return target


def test_a_second_fit_into_a_busy_run_folder_is_refused(tmp_path, store):
    from keras_ucaps.training.fit import lock_run_folder

    handle = lock_run_folder(tmp_path / "run")
    try:
        result = run_cli("fit", "--data", store, "--out", tmp_path / "run", "--epochs", "1", *FAST)
    finally:
        handle.close()
    assert result.returncode == 2 and "another fit is running" in result.stderr
    assert not (tmp_path / "run" / "config.json").exists()


@pytest.mark.parametrize("option, value", [("--batch-size", "4"), ("--lr", "0.01"), ("--model", "ucaps"),
                                           ("--filters", "4,6,10")])
def test_resume_refuses_settings_that_differ_from_the_run(tmp_path, store, one_epoch_run, option, value):
    run = _copy(one_epoch_run, tmp_path)
    args = dict(zip(FAST[::2], FAST[1::2], strict=True))
    args[option] = value
    if option == "--model":
        del args["--filters"]  # a UNet option
    result = run_cli("fit", "--data", store, "--out", run, "--epochs", "2", "--resume",
                     *[x for pair in args.items() for x in pair])
    assert result.returncode == 2 and option in result.stderr and "only --epochs" in result.stderr
    if option == "--filters":  # named alone, not beside the run's other architecture options
        assert "{'filters': [4, 6, 10]} differs from the run's {'filters': [4, 6, 8]}" in result.stderr


def test_resume_takes_a_complete_checkpoint_left_in_the_swap_and_an_older_history(tmp_path, store, one_epoch_run):
    run = _copy(one_epoch_run, tmp_path)
    (run / "checkpoint").rename(run / "checkpoint.new")  # killed between the two renames
    (run / "checkpoint.old").mkdir()  # and a damaged older one beside it
    (run / "checkpoint.old" / "state.json").write_text('{"epoch": 0')
    (run / ".weights_last.keras.x1y2.part.keras").write_bytes(b"half")  # a model save cut short
    # history.csv as versions before train_seconds and step_seconds wrote it: Keras' own CSVLogger appended the
    # resumed rows with two more fields than the old header names, shifted under the wrong columns.
    with open(run / "history.csv", newline="") as f:
        old = list(csv.DictReader(f))
    with open(run / "history.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[c for c in old[0] if not c.endswith("_seconds")],
                                extrasaction="ignore")
        writer.writeheader()
        writer.writerows(old)
    result = run_cli("fit", "--data", store, "--out", run, "--epochs", "2", "--resume", *FAST)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(run / "history.csv", newline="") as f:
        header, *rows = list(csv.reader(f))
    assert all(len(row) == len(header) for row in rows), (header, rows)
    first, resumed = (dict(zip(header, row, strict=True)) for row in rows)
    assert first["epoch"] == "0" and resumed["epoch"] == "1"
    assert first["loss"] == old[0]["loss"] and first["train_seconds"] == ""  # the old row keeps its values
    assert float(resumed["learning_rate"]) == pytest.approx(float(old[0]["learning_rate"]))
    assert float(resumed["train_seconds"]) >= float(resumed["step_seconds"]) > 0
    assert int(np.load(run / "checkpoint" / "optimizer.npz")["arr_0"]) == 2 * 2
    assert not list(run.glob(".*.part.keras"))


def test_a_damaged_checkpoint_falls_back_to_the_previous_one(tmp_path, store, one_epoch_run):
    import shutil

    run = _copy(one_epoch_run, tmp_path)
    shutil.copytree(run / "checkpoint", run / "checkpoint.old")
    data = (run / "checkpoint" / "optimizer.npz").read_bytes()
    (run / "checkpoint" / "optimizer.npz").write_bytes(data[: len(data) // 3])
    result = run_cli("fit", "--data", store, "--out", run, "--epochs", "2", "--resume", *FAST)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((run / "checkpoint" / "state.json").read_text())["epoch"] == 2


def test_a_run_killed_in_its_first_epoch_starts_again(tmp_path, store, one_epoch_run):
    import shutil

    run = _copy(one_epoch_run, tmp_path)
    for name in ("checkpoint", "weights_best.keras", "weights_last.keras"):
        path = run / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    result = run_cli("fit", "--data", store, "--out", run, "--epochs", "1", "--resume", *FAST)
    assert result.returncode == 0, result.stderr[-3000:]
    epochs = [int(line.split(",")[0]) for line in (run / "history.csv").read_text().splitlines()[1:]]
    assert epochs == [0]


def test_save_every_keeps_every_nth_epochs_model_as_a_folder_models_are_taken_from(tmp_path, one_epoch_run):
    """`fit --save-every N` keeps epochs N, 2N, … (what tools/snapshot_epochs.sh did beside a run): each folder
    is a model that `keras_ucaps.load` and `--model` take; a resumed run may change N."""
    import keras_ucaps

    run = _copy(one_epoch_run, tmp_path)
    result = run_cli("fit", "--data", json.loads((run / "config.json").read_text())["fit"]["data"], "--out", run,
                     "--resume", "--epochs", "3", "--save-every", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (run / "epochs").iterdir()) == ["02"]
    kept = keras_ucaps.load(run / "epochs" / "02")
    assert kept.classes.names == ["big", "small"] and kept.voxel_size == 10.0


@pytest.mark.parametrize("damage", ["state.json garbled", "optimizer.npz deleted"])
def test_a_resume_whose_checkpoint_is_damaged_is_refused_and_keeps_the_run(tmp_path, store, one_epoch_run, damage):
    """It restarted at epoch 1 without a word (its first loss a fresh run's), overwriting the run's history."""
    run = _copy(one_epoch_run, tmp_path)
    if damage == "state.json garbled":
        (run / "checkpoint" / "state.json").write_text("{not json")
    else:
        (run / "checkpoint" / "optimizer.npz").unlink()
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    result = run_cli("fit", "--data", store, "--out", run, "--epochs", "2", "--resume", "--normalization", "batch",
                     "--balance-classes", "--augment-imaging", *FAST)
    assert result.returncode == 2 and "checkpoint: is damaged" in result.stderr, result.stderr[-2000:]
    assert len(result.stderr.strip().splitlines()) == 1
    after = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == {k: v for k, v in before.items() if k.name != ".lock"}
