"""The Python API (keras_ucaps.load → Picker; UNet3D / UCaps3D.from_preset) and the metadata a .keras file
carries."""

import shutil

import numpy as np
import pytest
from conftest import run_cli

from keras_ucaps.classes import ClassRegistry
from keras_ucaps.errors import InputError
from keras_ucaps.io import read_particles, read_volume, write_volume


@pytest.fixture(scope="module")
def simulation(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sim")
    result = run_cli("simulate", "--preset", "shrec", "--size", "small", "--out", folder, "--seed", "4")
    assert result.returncode == 0, result.stderr[-2000:]
    return folder


@pytest.fixture(scope="module")
def picker():
    import keras_ucaps

    return keras_ucaps.load("shrec-unet")


def test_one_line_picks_what_the_command_line_picks_and_scores_it(simulation, picker, tmp_path):
    picks = picker.pick(simulation / "tomo.mrc")
    result = run_cli("pick", simulation / "tomo.mrc", "--model", "shrec-unet", "--out", tmp_path / "p.csv")
    assert result.returncode == 0, result.stderr[-2000:]
    cli = read_particles(tmp_path / "p.csv")
    assert len(picks) == len(cli) > 10
    # pair each pick with the command line's nearest: the two processes' float round-off may move a peak between
    # two voxels of almost equal probability (one voxel), never more, and leaves the others where they were
    from scipy.spatial import cKDTree

    distance, nearest = cKDTree(cli.coords).query(picks.coords)
    assert distance.max() <= np.sqrt(3) + 1e-3 and len(set(nearest)) == len(cli)
    assert np.mean(distance < 1e-3) >= 0.9, distance
    assert list(picks.class_name) == list(cli.class_name[nearest])
    assert set(picks.tomograms) == {"tomo"}  # named after the file, as the truth table names it
    scores = picker.evaluate(picks, simulation / "tomo_particles.csv")
    assert scores["macro"]["f1"] > 0.6
    assert set(scores["classes"]) == {"4v94", "1bxn", "3gl1"}


def test_an_array_needs_its_voxel_size_and_gives_the_same_maps_as_the_file(simulation, picker, tmp_path):
    data = np.asarray(read_volume(simulation / "tomo.mrc").data)
    with pytest.raises(InputError, match="voxel_size: give the voxel size"):
        picker.predict(data)
    with pytest.raises(InputError, match="header differs"):
        picker.predict(simulation / "tomo.mrc", voxel_size=12.0)
    in_memory = picker.predict(data, voxel_size=10.0)
    assert in_memory.labels.shape == data.shape and in_memory["1bxn"].shape == data.shape
    on_disk = picker.predict(simulation / "tomo.mrc", out=tmp_path / "maps")
    assert on_disk.folder == tmp_path / "maps" and (tmp_path / "maps" / "tomo_labels.mrc").is_file()
    np.testing.assert_allclose(np.asarray(on_disk["1bxn"], np.float32), in_memory["1bxn"], atol=1e-3)
    picks = picker.pick(data, voxel_size=10.0, name="tomo", maps=in_memory)
    assert len(picks) > 10 and set(picks.tomograms) == {"tomo"}
    with pytest.raises(InputError, match="do not fit the volume"):
        picker.pick(data[:32], voxel_size=10.0, maps=in_memory)


def test_a_picker_carries_what_its_model_needs(picker):
    assert picker.classes.names == ["4v94", "1bxn", "3gl1"]
    assert picker.voxel_size == 10.0 and picker.normalization == "robust"
    assert picker.settings.thresholds["1bxn"] > 0.5 and picker.settings.fit_radius < 1
    assert picker.contract.multiple == 4 and "UNet3D" in repr(picker)


def test_bundled_keras_files_describe_themselves_without_their_folder(tmp_path):
    import keras

    import keras_ucaps
    from keras_ucaps.pretrained import REGISTRY, pretrained_run

    for name in REGISTRY:
        copy = tmp_path / f"{name}.keras"
        shutil.copy(pretrained_run(name) / "weights_best.keras", copy)  # no config.json or thresholds.json beside
        alone = keras_ucaps.load(copy)
        bundled = keras_ucaps.load(name)
        assert alone.classes == bundled.classes and alone.voxel_size == bundled.voxel_size
        assert alone.normalization == bundled.normalization and alone.settings == bundled.settings
        assert keras.saving.load_model(copy, compile=False).metadata.classes.names == bundled.classes.names


def test_from_preset_gives_the_bare_keras_model_of_its_class():
    from keras_ucaps.models import UCaps3D, UNet3D

    model = UNet3D.from_preset("shrec-unet")
    assert type(model) is UNet3D and model.metadata.classes.names == ["4v94", "1bxn", "3gl1"]
    assert type(UCaps3D.from_preset("shrec-ucaps")) is UCaps3D
    with pytest.raises(InputError, match="is a UNet3D, not a UCaps3D"):
        UCaps3D.from_preset("shrec-unet")
    with pytest.raises(InputError, match="unknown pretrained model"):
        UNet3D.from_preset("nope")


def test_a_keras_file_without_metadata_is_refused_not_guessed(tmp_path, simulation):
    """Before, a bare .keras file was predicted with classes named class_1… and radius 1 Å (a silent wrong
    answer): now it is refused in one line, and the output folder is not made."""
    from keras_ucaps.models import UNet3D

    UNet3D(3, filters=(4, 6, 8), bottom_convs=1).save(tmp_path / "bare.keras")
    import keras_ucaps

    with pytest.raises(InputError, match="carries no classes, voxel size or normalisation"):
        keras_ucaps.load(tmp_path / "bare.keras")
    result = run_cli("predict", tmp_path / "bare.keras", simulation / "tomo.mrc", "--out", tmp_path / "maps")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "bare.keras: carries no classes" in result.stderr and not (tmp_path / "maps").exists()


def test_a_run_folder_without_config_json_predicts_with_its_models_own_classes(tmp_path, store):
    """A run's config.json lost: its weights_best.keras still carries the classes (before: maps named
    prob_class_1… and radius 1 Å in classes.json)."""
    from keras_ucaps.training.fit import FitSettings, fit

    fit(FitSettings(model="unet", data=str(store), out=str(tmp_path / "run"), epochs=1, batch_size=2,
                    steps_per_epoch=1, validation_steps=1, model_options={"filters": [4, 6, 8], "bottom_convs": 1}),
        verbose=0)
    (tmp_path / "run" / "config.json").unlink()
    write_volume(tmp_path / "t.mrc", np.random.default_rng(0).normal(size=(32, 32, 32)), 10.0)
    result = run_cli("predict", tmp_path / "run", tmp_path / "t.mrc", "--out", tmp_path / "maps")
    assert result.returncode == 0, result.stderr[-2000:]
    assert {p.name for p in (tmp_path / "maps").glob("t_prob_*.mrc")} == {"t_prob_big.mrc", "t_prob_small.mrc"}
    assert ClassRegistry.load(tmp_path / "maps" / "classes.json") == ClassRegistry.from_radii(
        {"big": 50.0, "small": 30.0})


@pytest.mark.parametrize("architecture", ["ucaps", "unet"])
def test_metadata_survives_config_and_keras_file_round_trips(tmp_path, architecture):
    import keras

    from keras_ucaps.models import ARCHITECTURES, build_model
    from keras_ucaps.models.metadata import ModelMetadata

    metadata = ModelMetadata(ClassRegistry.from_radii({"a": 30.0, "b": 20.0}), 7.5, "robust", 32,
                             {"thresholds": {"a": 0.4}, "fit_radius": 0.8})
    model = build_model(architecture, 3, metadata=metadata)
    again = ARCHITECTURES[architecture].from_config(model.get_config())
    assert again.metadata == metadata
    model.save(tmp_path / "m.keras")
    assert keras.saving.load_model(tmp_path / "m.keras", compile=False).metadata == metadata
    with pytest.raises(InputError, match="lacks voxel_size"):
        ModelMetadata.from_dict({**metadata.to_dict(), "voxel_size": None})
    with pytest.raises(InputError, match="unknown normalization"):
        ModelMetadata.from_dict({**metadata.to_dict(), "normalization": "per-patch"})


def test_tuned_thresholds_do_not_lower_the_tuning_tomograms_f1_and_are_saved_for_pick(simulation, tmp_path):
    """Picker.tune does what `evaluate --model` does, in the library: pick without thresholds, pool, and keep
    each class's plateau threshold; save_settings writes them where `pick --model` and load() read them."""
    import dataclasses

    import keras_ucaps
    from keras_ucaps.picking.thresholds import read_thresholds

    picker = keras_ucaps.load("shrec-unet")
    truth = simulation / "tomo_particles.csv"
    maps = picker.predict(simulation / "tomo.mrc")
    untuned = dataclasses.replace(picker.settings, thresholds={})
    before = picker.evaluate(keras_ucaps.Picker(picker.loaded, untuned).pick(simulation / "tomo.mrc", maps=maps),
                             truth)["macro"]["f1"]
    thresholds = picker.tune([simulation / "tomo.mrc"], [truth])
    assert set(thresholds) <= {"4v94", "1bxn", "3gl1"} and all(0 <= t <= 1 for t in thresholds.values())
    assert picker.settings.thresholds == thresholds
    after = picker.evaluate(picker.pick(simulation / "tomo.mrc", maps=maps), truth)["macro"]["f1"]
    assert after >= before - 1e-9
    path = picker.save_settings(tmp_path)
    saved = read_thresholds(path)
    assert saved["thresholds"] == thresholds and saved["fit_radius"] == picker.settings.fit_radius
