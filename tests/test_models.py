"""Both architectures: exact sizes, shapes, saving, loading from plain Keras, other backends."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_ucaps.models import UCaps3D, UNet3D


@pytest.mark.parametrize("num_classes, expected", [(2, 2_992_983), (3, 3_179_608)])
def test_ucaps_parameter_count_matches_the_reference(num_classes, expected):
    model = UCaps3D(num_classes)
    assert model.count_params() == expected
    reconstruction = sum(model.get_layer(n).count_params() for n in ("reconstruct_1", "reconstruct_2",
                                                                      "reconstruction"))
    assert reconstruction == 16_705


@pytest.mark.parametrize("num_classes", [2, 3, 13])
def test_unet_parameter_count_matches_deepfinder(num_classes):
    assert UNet3D(num_classes).count_params() == 902_928 + 33 * num_classes


def test_ablation_options_change_the_network():
    assert UCaps3D(3, levels=2).count_params() < UCaps3D(3).count_params()
    assert UCaps3D(3, encoder_kernel_size=5).count_params() > UCaps3D(3).count_params()
    dilated = UCaps3D(3, dilation=True)
    assert dilated.get_layer("features_2_conv").dilation_rate == (2, 2, 2)
    assert UNet3D(3, normalization="batch").count_params() > UNet3D(3).count_params()


def _capsule_outputs(model, x):
    names = ["primary_capsules", *(layer.name for layer in model.layers if layer.name.startswith("encoder_"))]
    probe = keras.Model(model.input, [model.get_layer(n).output for n in names])
    return dict(zip(names, (keras.ops.convert_to_numpy(o) for o in probe(x)), strict=True))


@pytest.mark.parametrize("capsule_init, carried", [("reference", False), ("unit", True)])
def test_capsules_start_driven_by_the_image_with_unit_init_and_by_their_bias_with_the_reference(capsule_init,
                                                                                                 carried):
    # The reference's Glorot vote kernels leave every encoder capsule ~ squash(bias): the image moves it by
    # 1-7 % of its length, so the encoder passes little on and UCaps learns slowly (see UnitLengthVotes).
    keras.utils.set_random_seed(0)
    model = UCaps3D(3, capsule_init=capsule_init)
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 16, 1)).astype(np.float32)
    for name, capsules in _capsule_outputs(model, x).items():
        lengths = np.linalg.norm(capsules, axis=-1)
        spread = np.linalg.norm(capsules - capsules.mean(axis=(1, 2, 3), keepdims=True), axis=-1)
        ratio = spread.mean() / lengths.mean()
        if name != "primary_capsules":
            assert (ratio > 0.5) if carried else (ratio < 0.3), (name, ratio)
    assert model.get_config()["capsule_init"] == capsule_init
    assert UCaps3D(3).capsule_init == "unit"  # the default, from the learning-curve ablation (README)
    assert UCaps3D.from_config({k: v for k, v in model.get_config().items() if k != "capsule_init"}).capsule_init \
        == "reference"  # configs written before the option: those models were initialised as the reference
    with pytest.raises(ValueError, match="capsule_init"):
        UCaps3D(3, capsule_init="he")


@pytest.mark.parametrize("model, side", [(UCaps3D(3), 16), (UCaps3D(2, levels=2), 8), (UNet3D(3), 16)])
def test_outputs_are_per_voxel_probabilities(model, side):
    x = np.random.default_rng(0).normal(size=(2, side, side, 2 * side, 1)).astype(np.float32)
    out = model(x)
    probabilities = keras.ops.convert_to_numpy(out["probabilities"])
    assert probabilities.shape == (2, side, side, 2 * side, model.num_classes)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)
    if isinstance(model, UCaps3D):
        assert tuple(out["reconstruction"].shape) == (2, side, side, 2 * side, 1)
        down = model.capsule_stride  # what fit cuts the capsule targets by
        assert tuple(out["capsule_lengths"].shape) == (2, side // down, side // down, 2 * side // down,
                                                       model.num_classes)


@pytest.mark.parametrize("order", ["keras_ucaps first", "keras first", "tensorflow first"])
def test_a_plain_keras_script_loads_a_saved_model_after_import_keras_ucaps(tmp_path, order):
    UNet3D(2, name="saved").save(tmp_path / "unet.keras")
    imports = {"keras_ucaps first": "import keras_ucaps; import keras",
               "keras first": "import keras; import keras_ucaps",
               "tensorflow first": "import keras_ucaps; import tensorflow; import keras"}[order]
    script = f"{imports}; m = keras.saving.load_model({str(tmp_path / 'unet.keras')!r}); print(type(m).__name__)"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("UNet3D")


# JAX runs Conv3D eagerly and slowly on a CPU (70 s here): out of CI; a model saved under JAX is still exported
# under TensorFlow in CI (test_export.py).
@pytest.mark.parametrize("backend", ["tensorflow", pytest.param("jax", marks=pytest.mark.slow)])
def test_tiny_forward_pass_under_each_backend(backend):
    script = (
        "import numpy as np, keras; from keras_ucaps.models import UCaps3D, UNet3D; "
        "x = np.random.default_rng(0).normal(size=(1, 8, 8, 8, 1)).astype('float32'); "
        "u = UCaps3D(2, levels=2)(x)['probabilities']; n = UNet3D(2, filters=(4, 6, 8))(x)['probabilities']; "
        "print(keras.backend.backend(), tuple(u.shape), tuple(n.shape), float(np.asarray(u).sum()))"
    )
    env = {**os.environ, "KERAS_BACKEND": backend}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    name, *rest = result.stdout.split()
    assert name == backend
    assert "(1, 8, 8, 8, 2)" in result.stdout
    assert float(rest[-1]) == pytest.approx(512.0, rel=1e-4)  # probabilities sum to 1 per voxel


def test_layers_use_only_keras_ops():
    from pathlib import Path

    import keras_ucaps.layers.capsules as capsules

    source = Path(capsules.__file__).read_text()
    assert "import tensorflow" not in source and "tf." not in source
