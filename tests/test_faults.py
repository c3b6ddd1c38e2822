"""Faults a careless admin or a full disk brings: one-line errors (exit 2), no half-written or replaced files."""

import errno
import json
import os
import stat

import numpy as np
import pytest
from conftest import run_cli

from keras_ucaps.errors import InputError
from keras_ucaps.io import ParticleTable, write_particles
from keras_ucaps.io.atomic import atomic_path


@pytest.fixture
def table_csv(tmp_path):
    path = tmp_path / "in.csv"
    write_particles(ParticleTable.from_columns([[1.0, 2.0, 3.0]], "a", "t"), path)
    return path


def _bad_outputs(tmp_path):
    (tmp_path / "a_folder.csv").mkdir()
    (tmp_path / "a_file").write_text("x")
    target = tmp_path / "target.csv"
    target.write_text("keep me\n")
    (tmp_path / "link.csv").symlink_to(target)
    return {
        "is a folder": tmp_path / "a_folder.csv",
        "lies under": tmp_path / "a_file" / "out.csv",
        "symbolic link": tmp_path / "link.csv",
        "not a regular file": "/dev/null",
        "cannot be written": "/proc/keras-ucaps-test/out.csv",
    }


@pytest.mark.parametrize("problem", ["is a folder", "lies under", "symbolic link", "not a regular file",
                                     "cannot be written"])
def test_bad_output_paths_are_one_line_errors(tmp_path, table_csv, problem):
    out = _bad_outputs(tmp_path)[problem]
    result = run_cli("convert", table_csv, out, "--to", "csv")
    assert result.returncode == 2, result.stderr
    assert problem in result.stderr and "Traceback" not in result.stderr
    assert (tmp_path / "target.csv").read_text() == "keep me\n"  # a link's target is never replaced
    assert os.path.exists("/dev/null") and stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_a_full_disk_leaves_the_old_file_and_no_scratch(tmp_path, monkeypatch):
    out = tmp_path / "out.csv"
    out.write_text("old\n")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(InputError, match="out.csv: cannot be written \\(No space left on device\\)"):
        with atomic_path(out) as tmp:
            tmp.write_text("half")
            full()
    assert out.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


def test_outputs_follow_the_umask(tmp_path, table_csv):
    old = os.umask(0o022)
    try:
        write_particles(ParticleTable.from_columns([[1.0, 2.0, 3.0]], "a", "t"), tmp_path / "o.csv")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "o.csv").stat().st_mode) == 0o644


@pytest.mark.parametrize("name", ["../../x", "..", "a/b"])
def test_simulate_names_stay_inside_their_folder(tmp_path, name):
    result = run_cli("simulate", "--size", "small", "--out", tmp_path / "sim", "--name", name)
    assert result.returncode == 2 and "--name" in result.stderr
    assert not any(tmp_path.rglob("*.mrc"))


def test_export_name_cannot_leave_its_base(tmp_path):
    result = run_cli("export", "shrec-unet", "--base", tmp_path / "models", "--name", "..")
    assert result.returncode == 2 and "--name" in result.stderr
    assert not any(p for p in tmp_path.rglob("*") if p.is_file())


def test_a_version_made_meanwhile_is_not_renamed_over(tmp_path):
    from keras_ucaps.io.atomic import atomic_directory

    target = tmp_path / "m" / "1"
    with pytest.raises(FileExistsError):
        with atomic_directory(target) as tmp:
            (tmp / "saved_model.pb").write_text("second")
            target.mkdir(parents=True)
            (target / "saved_model.pb").write_text("first")
    assert (target / "saved_model.pb").read_text() == "first"
    assert [p.name for p in (tmp_path / "m").iterdir()] == ["1"]


def _patches_of(tmp_path, n, *args):
    """Write n tomograms t0.. and t0's particle table, then run patches with ARGS."""
    from conftest import make_sources

    from keras_ucaps.io import write_volume

    sources, registry = make_sources(n)
    registry.save(tmp_path / "classes.json")
    for s in sources:
        write_volume(tmp_path / f"{s.name}.mrc", s.volume.data, 10.0)
    write_particles(sources[0].particles, tmp_path / "t0.csv")  # names only tomogram t0
    return run_cli("patches", *args, "--particles", tmp_path / "t0.csv", "--classes", tmp_path / "classes.json",
                   "--out", tmp_path / "p.h5", "--patch-size", "32")


def test_one_table_for_two_tomograms_is_refused(tmp_path):
    result = _patches_of(tmp_path, 2, "--tomogram", tmp_path / "t0.mrc", "--tomogram", tmp_path / "t1.mrc")
    assert result.returncode == 2 and "t1" in result.stderr
    assert not (tmp_path / "p.h5").exists()


def test_a_float_volume_is_not_a_label_map(tmp_path):
    result = _patches_of(tmp_path, 1, "--tomogram", tmp_path / "t0.mrc", "--labels", tmp_path / "t0.mrc")
    assert result.returncode == 2 and "label" in result.stderr
    assert not (tmp_path / "p.h5").exists()


def test_a_star_file_with_two_particle_blocks(tmp_path):
    import pandas as pd
    import starfile

    from keras_ucaps.io import read_particles

    a = pd.DataFrame({"rlnTomoName": ["t"], "rlnCoordinateX": [1.0], "rlnCoordinateY": [2.0],
                      "rlnCoordinateZ": [3.0], "rlnClassNumber": [1]})
    starfile.write({"particles": a, "more": a.assign(rlnCoordinateX=[5.0])}, tmp_path / "two.star")
    assert read_particles(tmp_path / "two.star").coords[:, 0].tolist() == [1.0, 5.0]


@pytest.mark.parametrize("args, problem", [
    (["a=inf"], "a=inf"),
    (["a=10", "a=20"], "twice"),
    (["a=nan"], "a=nan"),
])
def test_classes_refuse_impossible_radii_and_repeats(tmp_path, args, problem):
    result = run_cli("classes", *args, "--out", tmp_path / "c.json")
    assert result.returncode == 2 and problem in result.stderr
    assert not (tmp_path / "c.json").exists()


def test_a_registry_label_beyond_int8(tmp_path):
    from keras_ucaps.classes import ClassRegistry

    (tmp_path / "c.json").write_text('{"classes": [{"name": "a", "label": 300, "radius": 30}]}')
    with pytest.raises(InputError, match="300"):
        ClassRegistry.load(tmp_path / "c.json")


def test_thresholds_that_are_not_numbers(tmp_path):
    from keras_ucaps.picking.maps import kept_above
    from keras_ucaps.picking.thresholds import read_thresholds

    (tmp_path / "t.json").write_text('{"thresholds": {"a": "high"}}')
    table = ParticleTable.from_columns([[1, 2, 3]], "a", "t", score=[0.5])
    with pytest.raises(InputError, match="threshold"):
        kept_above(table, read_thresholds(tmp_path / "t.json")["thresholds"])


def test_voxel_size_nan_is_refused(tmp_path, table_csv):
    result = run_cli("convert", table_csv, tmp_path / "o.json", "--voxel-size", "nan")
    assert result.returncode == 2 and not (tmp_path / "o.json").exists()


def test_the_distributed_loop_unscales_what_a_loss_scale_optimizer_scaled():
    import keras
    import tensorflow as tf

    from keras_ucaps.training.loop import fit_distributed

    def model_with(optimizer):
        inputs = keras.Input((4,))
        outputs = keras.layers.Dense(2, activation="softmax", kernel_initializer="ones", name="probabilities")(inputs)
        model = keras.Model(inputs, {"probabilities": outputs})
        model.compile(optimizer=optimizer)
        return model

    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    y = np.random.default_rng(1).integers(0, 2, size=(8,))
    data = tf.data.Dataset.from_tensor_slices((x, {"probabilities": y})).batch(8).repeat()
    losses = {"probabilities": keras.losses.SparseCategoricalCrossentropy()}
    kernels = []
    for optimizer in (keras.optimizers.SGD(0.5),
                      keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.5), initial_scale=2.0**15)):
        model = model_with(optimizer)
        fit_distributed(model, tf.distribute.get_strategy(), data, data.take(1), losses=losses,
                        loss_weights={"probabilities": 1.0}, epochs=1, initial_epoch=0, steps_per_epoch=1,
                        validation_steps=1, callbacks=[], class_labels={"a": 1}, verbose=0)
        kernels.append(model.get_layer("probabilities").kernel.numpy())
    assert not np.allclose(kernels[0], 1.0)  # the plain optimizer moved the weights
    np.testing.assert_allclose(kernels[1], kernels[0], rtol=1e-5)


def _mrc(path, data, **header):
    import mrcfile

    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(data)
        mrc.voxel_size = 10.0
        for key, value in header.items():
            setattr(mrc.header, key, value)
    return path


def test_hostile_mrc_headers_are_refused_before_reading(tmp_path):
    from keras_ucaps.io import read_volume

    complex_map = _mrc(tmp_path / "fft.mrc", np.zeros((4, 4, 4), dtype=np.complex64))
    with pytest.raises(InputError, match="complex"):
        read_volume(complex_map)
    huge = _mrc(tmp_path / "huge.mrc", np.zeros((4, 4, 4), dtype=np.float32))
    with open(huge, "r+b") as f:  # NSYMBT, word 24: a 2 GB extended header in a tiny file
        f.seek(92)
        f.write(np.array([2**31 - 1], dtype="<i4").tobytes())
    with pytest.raises(InputError, match="extended header"):
        read_volume(huge)
    negative = _mrc(tmp_path / "neg.mrc", np.zeros((4, 4, 4), dtype=np.float32))
    with open(negative, "r+b") as f:
        f.write(np.array([-4], dtype="<i4").tobytes())
    with pytest.raises(InputError, match="not a volume"):
        read_volume(negative)


def test_show_refuses_a_complex_map(tmp_path):
    _mrc(tmp_path / "fft.mrc", np.zeros((4, 4, 4), dtype=np.complex64))
    result = run_cli("show", tmp_path / "fft.mrc", "--out", tmp_path / "s.png")
    assert result.returncode == 2 and "complex" in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1  # one line, no TensorFlow start-up notes before it


def _tiny_run(tmp_path, classes=("a", "b")):
    import keras

    from keras_ucaps.classes import ClassRegistry
    from keras_ucaps.models import build_model

    run = tmp_path / "run"
    run.mkdir()
    model = build_model("unet", len(classes) + 1)
    model.save(run / "weights_best.keras")
    registry = ClassRegistry.from_radii({c: 30.0 for c in classes})
    (run / "config.json").write_text(json.dumps({"classes": registry.to_dict(), "voxel_size": 10.0,
                                                 "patch_size": 32}))
    return run, keras


def test_a_run_whose_config_names_other_classes(tmp_path):
    from keras_ucaps.classes import ClassRegistry
    from keras_ucaps.models.loading import load_trained

    run, _ = _tiny_run(tmp_path)
    config = json.loads((run / "config.json").read_text())
    config["classes"] = ClassRegistry.from_radii({"a": 30.0, "b": 30.0, "c": 30.0}).to_dict()
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="predicts 2"):
        load_trained(run)
    data = (run / "weights_best.keras").read_bytes()
    (run / "weights_best.keras").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated"):
        load_trained(run)


def test_predict_voxel_size_must_agree_with_the_header(tmp_path):
    run, _ = _tiny_run(tmp_path)
    _mrc(tmp_path / "tomo.mrc", np.zeros((32, 32, 32), dtype=np.float32))
    result = run_cli("predict", run, tmp_path / "tomo.mrc", "--out", tmp_path / "maps", "--voxel-size", "12")
    assert result.returncode == 2 and "differs from --voxel-size" in result.stderr
    assert not (tmp_path / "maps").exists()


def test_simulated_star_numbers_classes_as_classes_json(tmp_path):
    import starfile

    from keras_ucaps.classes import ClassRegistry

    assert run_cli("simulate", "--size", "small", "--out", tmp_path, "--mode", "fast").returncode == 0
    registry = ClassRegistry.load(tmp_path / "classes.json")
    star = starfile.read(tmp_path / "tomo_particles.star", always_dict=True)["particles"]
    for number, name in zip(star["rlnClassNumber"], star["ucapsClassName"], strict=True):
        assert registry.label(name) == number


def test_pick_needs_every_probability_map_and_the_maps_classes(tmp_path):
    from keras_ucaps.classes import ClassRegistry
    from keras_ucaps.io import write_volume

    maps = tmp_path / "maps"
    labels = np.zeros((16, 16, 16), dtype=np.int8)
    labels[4:8, 4:8, 4:8] = 1
    write_volume(maps / "t_labels.mrc", labels, 10.0, dtype="int8")
    write_volume(maps / "t_prob_a.mrc", labels.astype(np.float32), 10.0)
    ClassRegistry.from_radii({"a": 20.0, "b": 20.0}).save(maps / "classes.json")
    missing = run_cli("pick", maps / "t_labels.mrc", "--out", tmp_path / "p.csv")
    assert missing.returncode == 2 and "t_prob_b.mrc" in missing.stderr
    write_volume(maps / "t_prob_b.mrc", np.zeros((16, 16, 16), np.float32), 10.0)
    ClassRegistry.from_radii({"b": 20.0, "a": 20.0}).save(tmp_path / "other.json")
    other = run_cli("pick", maps / "t_labels.mrc", "--out", tmp_path / "p.csv", "--classes", tmp_path / "other.json")
    assert other.returncode == 2 and "disagrees" in other.stderr
    assert not (tmp_path / "p.csv").exists()


def test_targets_with_labels_that_skip_numbers(tmp_path):
    _mrc(tmp_path / "tomo.mrc", np.zeros((16, 16, 16), dtype=np.float32))
    (tmp_path / "c.json").write_text(json.dumps({"classes": [{"name": "a", "label": 1, "radius": 20},
                                                             {"name": "b", "label": 5, "radius": 20}]}))
    write_particles(ParticleTable.from_columns([[8, 8, 8]], "b", "tomo"), tmp_path / "p.csv")
    result = run_cli("targets", tmp_path / "p.csv", "--tomogram", tmp_path / "tomo.mrc", "--classes",
                     tmp_path / "c.json", "--out", tmp_path / "l.mrc")
    assert result.returncode == 0, result.stderr
    from keras_ucaps.io import read_volume

    written = read_volume(tmp_path / "l.mrc").data
    assert set(np.unique(written).tolist()) == {0, 5}
    assert f"'a': 0, 'b': {int((written == 5).sum())}" in result.stdout


def test_convert_tomogram_size_must_agree_with_the_tomogram(tmp_path, table_csv):
    _mrc(tmp_path / "t.mrc", np.zeros((8, 10, 12), dtype=np.float32))
    result = run_cli("convert", table_csv, tmp_path / "o.star", "--to", "relion5", "--tomogram", tmp_path / "t.mrc",
                     "--tomogram-size", "12", "10", "9")
    assert result.returncode == 2 and "--tomogram-size" in result.stderr and not (tmp_path / "o.star").exists()


def test_evaluate_says_when_nothing_can_match(tmp_path):
    from keras_ucaps.classes import ClassRegistry
    from keras_ucaps.io import write_volume

    ClassRegistry.from_radii({"a": 30.0}).save(tmp_path / "classes.json")
    write_particles(ParticleTable.from_columns([[5.0, 5.0, 5.0]], "a", "tomo_01"), tmp_path / "truth.csv")
    write_particles(ParticleTable.from_columns([[5.0, 5.0, 5.0]], "a", "TS_01"), tmp_path / "picks.csv")
    args = ["evaluate", tmp_path / "truth.csv", tmp_path / "picks.csv", "--voxel-size", "10"]
    lenient = run_cli(*args)
    assert lenient.returncode == 0 and "Warning" in lenient.stderr and "no pick can match" in lenient.stderr
    strict = run_cli(*args, "--strict")
    assert strict.returncode == 2 and "no pick can match" in strict.stderr
    empty = np.zeros((16, 16, 16), dtype=np.int8)  # another tomogram's (empty) label map
    write_volume(tmp_path / "labels.mrc", empty, 10.0, dtype="int8")
    write_particles(ParticleTable.from_columns([[5.0, 5.0, 5.0]], "a", "tomo_01"), tmp_path / "picks.csv")
    wrong_map = run_cli(*args, "--truth-labels", tmp_path / "labels.mrc", "--strict")
    assert wrong_map.returncode == 2 and "own class's label" in wrong_map.stderr
    _mrc(tmp_path / "tomo_01.mrc", np.zeros((20, 16, 16), dtype=np.float32))
    shape = run_cli(*args, "--truth-labels", tmp_path / "labels.mrc", "--tomogram", tmp_path / "tomo_01.mrc")
    assert shape.returncode == 2 and "does not match the tomogram" in shape.stderr
    other = run_cli(*args[:-2], "--voxel-size", "12", "--tomogram", tmp_path / "tomo_01.mrc")
    assert other.returncode == 2 and "differs from --voxel-size" in other.stderr


def test_predict_removes_what_killed_predictions_left(tmp_path):
    run, _ = _tiny_run(tmp_path)
    _mrc(tmp_path / "tomo.mrc", np.random.default_rng(0).normal(size=(32, 32, 32)).astype(np.float32))
    out = tmp_path / "maps"
    (out / ".keras-ucaps-999999-abcd").mkdir(parents=True)  # a killed prediction's scratch (pid 999999 is gone)
    (out / ".keras-ucaps-999999-abcd" / "sums.npy").write_bytes(b"x" * 1000)
    (out / ".tomo_labels.mrc.999999.k2j3.part.mrc").write_bytes(b"half")
    alive = out / f".keras-ucaps-{os.getpid()}-live"  # a running one's (this process) is left alone
    alive.mkdir()
    result = run_cli("predict", run, tmp_path / "tomo.mrc", "--out", out)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [alive.name]
    assert (out / "tomo_labels.mrc").is_file()


def test_a_failed_prediction_keeps_the_old_maps_and_leaves_no_scratch(tmp_path, monkeypatch):
    from keras_ucaps.inference import predict as module

    run, _ = _tiny_run(tmp_path)
    _mrc(tmp_path / "tomo.mrc", np.random.default_rng(0).normal(size=(32, 32, 32)).astype(np.float32))
    out = tmp_path / "maps"
    from keras_ucaps.models.loading import load_trained

    loaded = load_trained(run)
    module.predict_tomogram(loaded, tmp_path / "tomo.mrc", out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(*args, scratch=None, **kwargs):
        (Path(scratch) / "sums.npy").write_bytes(b"x")
        raise OSError(errno.EIO, "input/output error")

    from pathlib import Path

    monkeypatch.setattr(module, "predict_volume", broken)
    with pytest.raises(InputError, match="maps: cannot be written \\(input/output error\\)"):
        module.predict_tomogram(loaded, tmp_path / "tomo.mrc", out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_terminated_prediction_cleans_up(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    run, _ = _tiny_run(tmp_path)
    _mrc(tmp_path / "tomo.mrc", np.random.default_rng(0).normal(size=(96, 160, 160)).astype(np.float32))
    out = tmp_path / "maps"
    process = subprocess.Popen([sys.executable, "-m", "keras_ucaps", "predict", str(run), str(tmp_path / "tomo.mrc"),
                                "--out", str(out), "--tile", "64"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and not (out.is_dir() and any(out.glob(".keras-ucaps-*/*"))):
        time.sleep(0.05)
    assert process.poll() is None, "prediction ended before it could be terminated"
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, process.stderr.read()[-3000:]
    assert list(out.iterdir()) == []  # no scratch, no half of the maps


def test_a_damaged_patch_store_is_named(tmp_path):
    import h5py
    from conftest import make_sources

    from keras_ucaps.data.patches import PatchSettings, build_patch_store
    from keras_ucaps.data.pipeline import read_store_info

    sources, registry = make_sources(2)
    good = tmp_path / "p.h5"
    build_patch_store(sources, registry, 10.0, good, PatchSettings(patch_size=32))
    read_store_info(good)
    no_attrs = tmp_path / "no_attrs.h5"
    no_attrs.write_bytes(good.read_bytes())
    with h5py.File(no_attrs, "a") as f:
        del f.attrs["classes"]
    with pytest.raises(InputError, match="damaged patch store"):
        read_store_info(no_attrs)
    short = tmp_path / "short.h5"
    short.write_bytes(good.read_bytes())
    with h5py.File(short, "a") as f:
        del f["split"]
        f["split"] = np.zeros(1, dtype=np.uint8)
    result = run_cli("fit", "--data", short, "--out", tmp_path / "run", "--epochs", "1")
    assert result.returncode == 2 and "short.h5: damaged patch store" in result.stderr
    assert not (tmp_path / "run").exists()
