"""One harness over everything keras-ucaps registers with Keras, generated from the registries.

Every architecture in ``keras_ucaps.models.ARCHITECTURES``: its config (metadata included) round-trips
through JSON and a ``.keras`` file with identical outputs, it runs under each CPU dtype policy, its options are
its config's, and what it says it is trained against (``training_targets``, ``training_losses``) fits its
outputs. Every other object registered under the package ``keras_ucaps`` (layers, losses, metrics,
initializers) round-trips through its config; a newly registered object without an example here fails
``test_every_registered_object_is_covered``.
"""

import json

import keras
import numpy as np
import pytest
from conftest import metadata

from keras_ucaps.models import ARCHITECTURES

SIDE = 16  # a multiple of every architecture's pooling grid


def registered() -> dict:
    import keras_ucaps

    keras_ucaps.register_keras_objects()
    return {k.split(">", 1)[1]: v for k, v in keras.saving.get_custom_objects().items()
            if k.startswith("keras_ucaps>")}


def _input(seed=0):
    return np.random.default_rng(seed).normal(size=(1, SIDE, SIDE, SIDE, 1)).astype(np.float32)


def _probabilities(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False)["probabilities"])


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_an_architecture_round_trips_through_json_and_a_keras_file(tmp_path, name):
    model = ARCHITECTURES[name](num_classes=3, metadata=metadata(("a", "b")))
    x = _input()
    expected = _probabilities(model, x)
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(model)))
    assert keras.saving.deserialize_keras_object(config).get_config() == model.get_config()
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", compile=False)
    assert type(loaded) is type(model) and loaded.metadata == model.metadata
    np.testing.assert_array_equal(_probabilities(loaded, x), expected)


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_an_architecture_runs_under_each_cpu_dtype_policy(name, policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = ARCHITECTURES[name](num_classes=3)
        probabilities = model(_input(), training=False)["probabilities"]
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert keras.backend.standardize_dtype(probabilities.dtype) == "float32"  # the softmax stays float32
    np.testing.assert_allclose(keras.ops.convert_to_numpy(probabilities).sum(-1), 1.0, atol=1e-3)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_an_architectures_options_are_its_config_and_its_training_fits_its_outputs(name):
    """What fit and the pipeline ask of an architecture: targets for each output, of that output's shape where
    the target is dense, and losses that turn them into a finite number."""
    cls = ARCHITECTURES[name]
    model = cls(num_classes=3)
    assert set(cls.option_names()) <= set(model.architecture_config())
    outputs = model(_input(), training=False)
    targets = model.training_targets()
    assert set(targets) <= set(outputs) and "probabilities" in targets
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, size=(SIDE,) * 3).astype(np.uint8)
    image = rng.normal(size=(SIDE,) * 3).astype(np.float32)
    losses, weights = model.training_losses([1.0, 1.0, 1.0])
    assert set(losses) == set(weights) == set(targets)
    for key, target in targets.items():
        made = target.make(image, labels, 3)
        shape, dtype = target.spec(SIDE, 3)
        assert made.shape == shape and str(made.dtype) == dtype, key
        value = float(keras.ops.convert_to_numpy(losses[key](made[None], outputs[key])))
        assert np.isfinite(value), key


EXAMPLES = {  # constructor arguments and an input shape, per registered layer
    "ConvCapsule3D": (dict(num_types=2, num_atoms=3, kernel_size=3, strides=2, routings=2), (1, 4, 4, 4, 2, 5)),
    "CapsuleLength": ({}, (1, 2, 2, 2, 3, 4)),
    "FlattenCapsules": ({}, (1, 2, 2, 2, 3, 4)),
    "ChannelsToCapsule": ({}, (1, 2, 2, 2, 6)),
}
CONFIG_ONLY = {  # registered objects that are not layers: their constructor arguments
    "DiceCrossEntropy": dict(num_classes=3, class_weights=[0.5, 1.0, 2.0]),
    "MarginLoss": dict(num_classes=3),
    "ReconstructionLoss": dict(kind="bce"),
    "ClassDice": dict(class_id=1, num_classes=3),
    "UnitLengthVotes": dict(input_atom_std=0.3, seed=1),
}


def test_every_registered_object_is_covered():
    assert set(registered()) == set(EXAMPLES) | set(CONFIG_ONLY) | {cls.__name__ for cls in ARCHITECTURES.values()}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_a_registered_layer_round_trips_through_json_and_a_keras_file(tmp_path, name):
    kwargs, shape = EXAMPLES[name]
    layer = registered()[name](**kwargs)
    x = np.random.default_rng(2).normal(size=shape).astype(np.float32)
    expected = keras.ops.convert_to_numpy(layer(x))
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(layer)))
    assert keras.saving.deserialize_keras_object(config).get_config() == layer.get_config()
    model = keras.Sequential([keras.Input(shape[1:]), layer])
    model.save(tmp_path / "layer.keras")
    loaded = keras.saving.load_model(tmp_path / "layer.keras")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)), expected, atol=1e-6)
    assert tuple(layer.compute_output_shape(shape)) == expected.shape


@pytest.mark.parametrize("name", sorted(CONFIG_ONLY))
def test_a_registered_object_round_trips_through_its_config(name):
    thing = registered()[name](**CONFIG_ONLY[name])
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(thing)))
    assert keras.saving.deserialize_keras_object(config).get_config() == thing.get_config()
