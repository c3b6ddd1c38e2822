"""fit --init-weights: fine-tuning from a trained model (a run folder, a .keras file or a bundled model)."""

import dataclasses
import json

import keras
import numpy as np
import pytest
from conftest import VOXEL_SIZE, make_sources, run_cli

from keras_ucaps.classes import ClassRegistry
from keras_ucaps.data.normalization import ZSCORE
from keras_ucaps.data.patches import PatchSettings, build_patch_store
from keras_ucaps.data.targets import sphere_targets

# An Adam step moves each weight by about the learning rate: at 1e-9, two steps leave the starting weights
# within 1e-8, where one epoch at the default 1e-4 moved them by about 2e-4.
STILL = ["--lr", "1e-9", "--batch-size", "2", "--steps-per-epoch", "2", "--validation-steps", "1", "--epochs", "1"]


@pytest.fixture(scope="module")
def source_run(tmp_path_factory, store):
    """A narrow UNet trained one epoch on ``store`` (classes big, small)."""
    run = tmp_path_factory.mktemp("source") / "run"
    result = run_cli("fit", "--data", store, "--out", run, "--model", "unet", "--filters", "4,6,8", "--epochs", "1",
                     "--batch-size", "2", "--steps-per-epoch", "2", "--validation-steps", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    return run


def layer_weights(path) -> dict[str, list[np.ndarray]]:
    model = keras.saving.load_model(path, compile=False)
    return {layer.name: layer.get_weights() for layer in model.layers if layer.weights}


def max_change(a: dict, b: dict, names) -> float:
    return max(float(np.abs(x - y).max()) for n in names for x, y in zip(a[n], b[n], strict=True))


def test_a_fine_tuned_run_starts_from_its_source_and_takes_its_architecture(tmp_path, store, source_run):
    # neither --model nor --filters: the run is the source's UNet of 4, 6, 8 channels
    result = run_cli("fit", "--data", store, "--out", tmp_path / "ft", "--init-weights", source_run, *STILL)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"starting from the weights of {source_run}" in result.stdout and "afresh" not in result.stdout
    config = json.loads((tmp_path / "ft" / "config.json").read_text())
    assert config["architecture"] == "unet" and config["model"]["filters"] == [4, 6, 8]
    assert config["fit"]["init_weights"] == str(source_run) and config["fit"]["model_options"]["filters"] == [4, 6, 8]
    source = layer_weights(source_run / "weights_best.keras")
    tuned = layer_weights(tmp_path / "ft" / "weights_last.keras")
    assert max_change(source, tuned, source) < 1e-6
    # the same run without --init-weights starts from its own initialisation, far from the source's weights
    fresh = run_cli("fit", "--data", store, "--out", tmp_path / "new", "--model", "unet", "--filters", "4,6,8", *STILL)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert max_change(source, layer_weights(tmp_path / "new" / "weights_last.keras"), source) > 1e-5
    # a resumed fine-tuning keeps its source: another one is refused
    other = run_cli("fit", "--data", store, "--out", tmp_path / "ft", "--resume", "--epochs", "2",
                    "--init-weights", tmp_path / "new")
    assert other.returncode == 2 and "--init-weights" in other.stderr and "only --epochs" in other.stderr
    again = run_cli("fit", "--data", store, "--out", tmp_path / "ft", "--resume", "--epochs", "2")
    assert again.returncode == 0, again.stderr[-3000:]
    assert not (tmp_path / "ft" / "thresholds.json").exists()  # the source has none to pass on


def test_a_fine_tuned_run_picks_as_its_source_did_until_it_is_tuned(tmp_path, store, source_run):
    # How its maps split into particles (fit radius, density weight) and, for the same classes, its thresholds go
    # with the weights into the run's thresholds.json, which `pick --model RUN` reads
    import shutil

    from keras_ucaps.picking.thresholds import read_thresholds

    source = tmp_path / "source"
    shutil.copytree(source_run, source, ignore=shutil.ignore_patterns("checkpoint", "logs"))
    tuned = {"tolerance": 0.5, "thresholds": {"big": 0.6, "small": 0.7}, "fit_radius": 0.8, "density_weight": 0.5}
    (source / "thresholds.json").write_text(json.dumps(tuned))
    result = run_cli("fit", "--data", store, "--out", tmp_path / "ft", "--init-weights", source, *STILL)
    assert result.returncode == 0, result.stderr[-3000:]
    written = read_thresholds(tmp_path / "ft" / "thresholds.json")
    assert written == {**tuned, "from": str(source)}
    assert f"picks as {source} did (fit radius 0.8, density weight 0.5, its thresholds)" in result.stdout
    assert f"until tuned: keras-ucaps evaluate TRUTH PICKS --model {tmp_path / 'ft'}" in result.stdout


def test_a_store_of_other_classes_starts_the_class_head_afresh(tmp_path, store, source_run):
    # the same particles under the classes' names swapped: every layer but the class head carries over
    sources, classes = make_sources(3)
    swapped = ClassRegistry.from_radii({"small": classes.get("small").radius, "big": classes.get("big").radius})
    sources = [dataclasses.replace(s, labels=sphere_targets(s.particles, s.labels.shape, swapped, VOXEL_SIZE))
               for s in sources]
    other = tmp_path / "swapped.h5"
    build_patch_store(sources, swapped, VOXEL_SIZE, other, PatchSettings(patch_size=32))
    result = run_cli("fit", "--data", other, "--out", tmp_path / "ft", "--init-weights",
                     source_run / "weights_best.keras", "--seed", "1", *STILL)  # another seed: another head
    assert result.returncode == 0, result.stderr[-3000:]
    assert "the class head (logits) starts afresh" in result.stdout
    assert "small, big are not its big, small" in result.stdout
    source = layer_weights(source_run / "weights_best.keras")
    tuned = layer_weights(tmp_path / "ft" / "weights_last.keras")
    assert max_change(source, tuned, [n for n in source if n != "logits"]) < 1e-6
    assert max_change(source, tuned, ["logits"]) > 1e-3


def test_a_bundled_model_fine_tunes_on_a_store_of_its_own_classes(tmp_path, store):
    from keras_ucaps.pretrained import pretrained_run

    result = run_cli("fit", "--data", store, "--out", tmp_path / "ft", "--init-weights", "shrec-unet", *STILL)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "starting from the weights of shrec-unet; the class head (logits) starts afresh" in result.stdout
    config = json.loads((tmp_path / "ft" / "config.json").read_text())
    assert config["fit"]["init_weights"] == "shrec-unet" and config["num_classes"] == 3
    bundled = layer_weights(pretrained_run("shrec-unet") / "weights_best.keras")
    tuned = layer_weights(tmp_path / "ft" / "weights_last.keras")
    assert max_change(bundled, tuned, [n for n in bundled if n != "logits"]) < 1e-6
    assert tuned["logits"][0].shape[-1] == 3 and bundled["logits"][0].shape[-1] == 4
    # another model's thresholds mean nothing for a new class head: only how the maps split goes with it
    written = json.loads((tmp_path / "ft" / "thresholds.json").read_text())
    assert written == {"tolerance": 0.5, "thresholds": {}, "fit_radius": 0.6667, "density_weight": 0.0,
                       "from": "shrec-unet"}
    assert "picks as shrec-unet did (fit radius 0.6667, density weight 0, no thresholds: a new class head)" \
        in result.stdout


def test_a_new_run_fine_tunes_the_bundled_starting_point_unless_told_from_scratch(tmp_path, store):
    from keras_ucaps.pretrained import STARTING_POINTS, pretrained_run

    start = STARTING_POINTS["unet"]
    result = run_cli("fit", "--data", store, "--out", tmp_path / "ft", "--model", "unet", *STILL)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"fine-tuning from {start} (the default start" in result.stdout
    assert "the class head (logits) starts afresh" in result.stdout  # the store's classes are big, small
    config = json.loads((tmp_path / "ft" / "config.json").read_text())
    assert config["fit"]["init_weights"] == start
    bundled = layer_weights(pretrained_run(start) / "weights_best.keras")
    tuned = layer_weights(tmp_path / "ft" / "weights_last.keras")
    body = [name for name in bundled if name != "logits"]
    assert max_change(bundled, tuned, body) < 1e-6
    assert tuned["logits"][0].shape[-1] == 3 != bundled["logits"][0].shape[-1]
    scratch = run_cli("fit", "--data", store, "--out", tmp_path / "new", "--model", "unet", "--from-scratch", *STILL)
    assert scratch.returncode == 0, scratch.stderr[-3000:]
    assert "fine-tuning" not in scratch.stdout
    assert json.loads((tmp_path / "new" / "config.json").read_text())["fit"]["init_weights"] is None
    assert max_change(bundled, layer_weights(tmp_path / "new" / "weights_last.keras"), body) > 1e-3


def test_architecture_options_that_build_another_network_train_from_scratch():
    from keras_ucaps.pretrained import STARTING_POINTS
    from keras_ucaps.training.warm_start import default_start

    assert default_start("ucaps", {})[0] == STARTING_POINTS["ucaps"]
    assert default_start("unet", {"filters": [32, 48, 64]})[0] == STARTING_POINTS["unet"]  # its own widths
    name, why = default_start("unet", {"filters": [4, 6, 8]})
    assert name is None and why == (f"training from scratch: --filters 4,6,8 is not the architecture of "
                                    f"{STARTING_POINTS['unet']}, the default start")
    name, why = default_start("ucaps", {"levels": 2, "dilation": True})
    assert name is None and "--levels 2, --dilation is not the architecture" in why


def test_from_scratch_with_another_start_is_refused(tmp_path, store, source_run):
    both = run_cli("fit", "--data", store, "--out", tmp_path / "ft", "--from-scratch", "--init-weights",
                   "shrec-unet", *STILL)
    assert both.returncode == 2 and "--from-scratch: and --init-weights ask for two different starts" in both.stderr
    assert len(both.stderr.strip().splitlines()) == 1 and not (tmp_path / "ft").exists()
    tuned = run_cli("fit", "--data", store, "--out", tmp_path / "ft", "--init-weights", source_run, *STILL)
    assert tuned.returncode == 0, tuned.stderr[-2000:]
    before = sorted(p.name for p in (tmp_path / "ft").iterdir())
    resumed = run_cli("fit", "--out", tmp_path / "ft", "--resume", "--from-scratch", "--epochs", "2")
    assert resumed.returncode == 2 and f"started from {source_run}: a resumed run keeps its start" in resumed.stderr
    assert len(resumed.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in (tmp_path / "ft").iterdir()) == before
    # a run begun from scratch resumes with the flag repeated, as a script that runs its command again gives it
    scratch = [*STILL[:-2], "--model", "unet", "--filters", "4,6,8", "--from-scratch"]
    first = run_cli("fit", "--data", store, "--out", tmp_path / "new", *scratch, "--epochs", "1")
    assert first.returncode == 0, first.stderr[-2000:]
    again = run_cli("fit", "--data", store, "--out", tmp_path / "new", *scratch, "--epochs", "2", "--resume")
    assert again.returncode == 0, again.stderr[-2000:]


def test_the_class_head_of_ucaps_is_found_on_the_model():
    # UCaps' classes reach its class capsules and the decoder that reads them: measured, not listed
    from keras_ucaps.models import build_model
    from keras_ucaps.training.warm_start import class_dependent_layers

    model = build_model("ucaps", 3)
    names = {model.layers[i].name for i in class_dependent_layers(model)}
    assert names == {"encoder_5", "decoder_up_0", "logits"}  # the class capsules, the decoder's first, the head
    model = build_model("unet", 3)
    assert {model.layers[i].name for i in class_dependent_layers(model)} == {"logits"}


@pytest.mark.parametrize("args, message", [
    (["--model", "ucaps"], "--model: ucaps differs from --init-weights"),
    (["--filters", "4,6,10"], "--filters: {'filters': [4, 6, 10]} differs from --init-weights"),
    (["--init-weights", "no-such-model"], "no-such-model: no such file, nor a bundled model"),
    (["zscore"], "patches normalised 'tomogram z-score', but "),
])
def test_a_source_that_does_not_fit_is_refused_before_any_file(tmp_path, store, source_run, args, message):
    data = store
    if args == ["zscore"]:
        sources, classes = make_sources(3)
        data = tmp_path / "zscore.h5"
        build_patch_store(sources, classes, VOXEL_SIZE, data, PatchSettings(patch_size=32, normalization=ZSCORE))
        args = []
    if "--init-weights" not in args:
        args = ["--init-weights", source_run, *args]
    result = run_cli("fit", "--data", data, "--out", tmp_path / "ft", *STILL, *args)
    assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "ft").exists()


def test_a_keras_file_alone_carries_its_classes_and_one_without_them_is_refused(tmp_path, store, source_run):
    """A .keras file away from its run folder fine-tunes with the classes it carries (before: they were taken
    to be the store's, with a warning); one that carries none is refused before any file is written."""
    import shutil

    from keras_ucaps.models import UNet3D

    bare = tmp_path / "bare" / "model.keras"
    bare.parent.mkdir()
    shutil.copy(source_run / "weights_best.keras", bare)
    result = run_cli("fit", "--data", store, "--out", tmp_path / "ft", "--init-weights", bare, *STILL)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "taken to be" not in result.stderr
    tuned = layer_weights(tmp_path / "ft" / "weights_last.keras")
    source = layer_weights(bare)
    assert max_change(source, tuned, source) < 1e-6
    UNet3D(3, filters=(4, 6, 8), bottom_convs=1).save(tmp_path / "old.keras")
    result = run_cli("fit", "--data", store, "--out", tmp_path / "ft2", "--init-weights", tmp_path / "old.keras",
                     *STILL)
    assert result.returncode == 2 and "old.keras: carries no classes" in result.stderr, result.stderr[-2000:]
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "ft2").exists()
