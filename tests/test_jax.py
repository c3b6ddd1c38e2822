"""Training without TensorFlow: `fit` under KERAS_BACKEND=jax through the backend-neutral pipeline, whose
batches are the tf.data pipeline's; the run folder it writes is loaded, predicted with and exported under
TensorFlow."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import VOXEL_SIZE, make_sources, run_cli

from keras_ucaps.data.patches import PatchSettings, build_patch_store
from keras_ucaps.data.pipeline import make_dataset, patch_batches, read_store_info
from keras_ucaps.io import read_volume, write_volume

# Runs `keras-ucaps` with the JAX backend in an interpreter that cannot find TensorFlow, as on a machine where
# it is not installed: importing it fails and importlib.util.find_spec("tensorflow") is None (libraries such
# as etils, which JAX's compilation cache uses, ask that way).
WITHOUT_TENSORFLOW = """
import sys
from importlib.machinery import PathFinder

class WithoutTensorFlow(PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.split(".")[0] == "tensorflow":
            return None
        return PathFinder.find_spec(name, path, target)

sys.meta_path[sys.meta_path.index(PathFinder)] = WithoutTensorFlow
from keras_ucaps.cli import main

main(sys.argv[1:], prog_name="keras-ucaps")
"""


def run_without_tensorflow(*args, devices=1):
    """``devices``: how many CPU devices JAX shows (several: fit trains data parallel over them)."""
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    return subprocess.run([sys.executable, "-c", WITHOUT_TENSORFLOW, *map(str, args)], capture_output=True,
                          text=True, env=env)


@pytest.fixture(scope="module", autouse=True)
def jax_cache(tmp_path_factory):
    """XLA's compiled programs shared by this module's commands (as `keras-ucaps` keeps them for a user)."""
    folder = tmp_path_factory.mktemp("jax_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JAX_COMPILATION_CACHE_DIR", str(folder))
        yield folder


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("jax")
    sources, classes = make_sources(2)
    build_patch_store(sources, classes, VOXEL_SIZE, folder / "p.h5", PatchSettings(patch_size=32))
    return folder / "p.h5"


@pytest.mark.parametrize("balance", [False, True])
def test_both_pipelines_give_the_same_batches_for_the_same_seed(store, balance):
    info = read_store_info(store)
    idx = info.indices(0)
    from keras_ucaps.data.targets import BlockPresenceTarget, ImageAndForegroundTarget, LabelTarget

    targets = {"probabilities": LabelTarget(), "reconstruction": ImageAndForegroundTarget(),
               "capsule_lengths": BlockPresenceTarget(8)}  # UCaps3D's (built without importing the model here)
    common = dict(targets=targets, seed=3,
                  imaging=balance)  # --augment-imaging too, with --balance-classes
    tf_batches = iter(make_dataset(info, idx, batch_size=3, readers=2, balance=balance, **common))
    steps = 2 + len(idx) // 3  # two Keras epochs run past the end of the first pass over the store
    batches = patch_batches(info, idx, batch_size=3, steps=steps, balance=balance, **common)
    for epoch in range(2):
        for step in range(steps):
            image, targets = batches[step]
            expected_image, expected = next(tf_batches)
            np.testing.assert_array_equal(image, expected_image.numpy())
            for key, value in targets.items():
                np.testing.assert_array_equal(value, expected[key].numpy(), err_msg=f"{key} {epoch} {step}")
        batches.on_epoch_end()
    validation = patch_batches(info, info.indices(1), batch_size=4, repeat=False, shuffle=False, augment=False)
    assert sum(len(validation[i][0]) for i in range(len(validation))) == len(info.indices(1))


def test_unet_fit_under_jax_without_tensorflow_data_parallel_resumes_then_tensorflow_predicts_and_exports(
        store, tmp_path, jax_cache):
    """Trained data parallel over two CPU devices and resumed (XLA's programs from the compilation cache);
    predicted under JAX; under TensorFlow loaded, predicted the same, exported."""
    run = tmp_path / "run"
    args = ["fit", "--data", store, "--out", run, "--steps-per-epoch", "2", "--batch-size", "2",
            "--balance-classes", "--model", "unet", "--filters", "4,6,8"]
    odd = run_without_tensorflow(*args, "--batch-size", "3", "--epochs", "1", devices=2)
    assert odd.returncode == 2 and "multiple of 2" in odd.stderr and len(odd.stderr.strip().splitlines()) == 1
    assert not (run / "config.json").exists()
    result = run_without_tensorflow(*args, "--epochs", "2", devices=2)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "data parallel over 2 cpu devices" in result.stdout
    assert list(jax_cache.iterdir())  # the compiled programs were kept for the next command
    for name in ("config.json", "weights_best.keras", "weights_last.keras", "history.csv", "checkpoint/state.json"):
        assert (run / name).is_file(), name
    assert not (run / "logs").exists()  # TensorBoard logs need TensorFlow
    resumed = run_without_tensorflow(*args, "--epochs", "3", "--resume", devices=2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    history = (run / "history.csv").read_text().strip().splitlines()
    assert len(history) == 4 and "step_seconds" in history[0]
    assert json.loads((run / "checkpoint" / "state.json").read_text())["epoch"] == 3
    # Under TensorFlow: the run predicts as it does under JAX, and exports.
    tomo = write_volume(tmp_path / "t.mrc", np.random.default_rng(1).normal(size=(32, 32, 40)), VOXEL_SIZE)
    under_jax = run_without_tensorflow("predict", run, tomo, "--out", tmp_path / "jax_maps")
    assert under_jax.returncode == 0, under_jax.stderr[-2000:]
    predicted = run_cli("predict", run, tomo, "--out", tmp_path / "maps")
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    for name in ("t_prob_big.mrc", "t_prob_small.mrc"):
        np.testing.assert_allclose(read_volume(tmp_path / "maps" / name).data.astype(np.float32),
                                   read_volume(tmp_path / "jax_maps" / name).data.astype(np.float32), atol=2e-3)
    exported = run_cli("export", run, "--name", "jaxrun", "--base", tmp_path / "served")
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert list((tmp_path / "served" / "jaxrun").glob("*/saved_model.pb"))


@pytest.mark.slow  # two minutes: XLA compiles UCaps' training step slowly on a CPU
def test_ucaps_fit_under_jax_without_tensorflow_then_tensorflow_predicts(store, tmp_path):
    run = tmp_path / "run"
    result = run_without_tensorflow("fit", "--data", store, "--out", run, "--epochs", "1", "--steps-per-epoch", "1",
                                    "--validation-steps", "1", "--batch-size", "1", "--model", "ucaps", "--levels", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run / "weights_best.keras").is_file()
    tomo = write_volume(tmp_path / "t.mrc", np.random.default_rng(1).normal(size=(32, 32, 32)), VOXEL_SIZE)
    predicted = run_cli("predict", run, tomo, "--out", tmp_path / "maps", "--tile", "32")
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    assert (tmp_path / "maps" / "t_labels.mrc").is_file()


def test_export_says_it_needs_tensorflow(tmp_path):
    result = run_without_tensorflow("export", tmp_path / "missing.keras", "--name", "m", "--base", tmp_path / "s")
    assert result.returncode == 2 and "TensorFlow" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_install_without_tensorflow_lists_every_other_dependency():
    """requirements-jax.txt is setup.cfg's install_requires without TensorFlow (and TensorBoard), plus JAX."""
    import configparser
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    config = configparser.ConfigParser()
    config.read(root / "setup.cfg")
    needed = [line.split(";")[0].strip() for line in config["options"]["install_requires"].strip().splitlines()]
    needed = {r for r in needed if not r.startswith(("tensorflow", "tensorboard"))}
    listed = {line.strip() for line in (root / "requirements-jax.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    assert listed - needed == {"jax>=0.4.30"} and needed <= listed


@pytest.mark.slow  # 13 minutes on 2 cores (measured): XLA compiles UCaps' training step for minutes
def test_gpu_script_dry_run_on_the_cpu(tmp_path):
    """benchmarks/gpu_train.sh --cpu: every stage (data, step-time table, budgeted training, tar parts) on JAX's CPU."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "OUT": str(tmp_path / "out"), "PYTHON": sys.executable}
    result = subprocess.run(["bash", str(root / "benchmarks" / "gpu_train.sh"), "--cpu", "--steps", "2",
                             "--train-seconds", "60", "--work", str(tmp_path / "work")], capture_output=True,
                            text=True, env=env, cwd=root)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = (tmp_path / "out" / "gpu_benchmark.md").read_text().strip().splitlines()
    assert len(table) == 2 + 4  # UNet and UCaps, float32 and bfloat16 (float16 on a GPU only)
    assert all(float(row.split("|")[3]) > 0 for row in table[2:])
    for name in ("shrec-ucaps", "shrec-unet"):
        parts = sorted((tmp_path / "out").glob(f"{name}.tgz.part-*"))
        assert parts and all(p.stat().st_size <= 15 * 2**20 for p in parts)
