"""Picking finds the particles of a label map; evaluation counts hits one-to-one."""

import json

import numpy as np
import pytest
from conftest import run_cli

from keras_ucaps.classes import ClassRegistry
from keras_ucaps.data.targets import sphere_targets
from keras_ucaps.evaluation.matching import evaluate_tables, match
from keras_ucaps.io import ParticleTable, read_particles, write_particles, write_volume
from keras_ucaps.picking.cluster import pick_particles, suppress_duplicates

CLASSES = ClassRegistry.from_radii({"big": 50.0, "small": 30.0})
TRUTH = ParticleTable.from_columns([[10, 10, 10], [30.5, 12, 14], [20, 30, 8], [40, 35, 20]],
                                   ["big", "small", "small", "big"], "t")


def test_picks_recover_sphere_centres_and_drop_specks():
    labels = sphere_targets(TRUTH, (28, 44, 52), CLASSES, 10.0)
    labels[2, 40, 2] = 2  # a one-voxel speck
    picks = pick_particles(labels, CLASSES, 10.0, tomo="t")
    assert len(picks) == 4
    for cls in ("big", "small"):
        got = picks.where(class_name=cls).sorted().coords
        want = TRUTH.where(class_name=cls).sorted().coords
        np.testing.assert_allclose(got, want, atol=0.6)


def test_probability_weighting_moves_centres_and_gives_scores():
    labels = sphere_targets(TRUTH[:1], (28, 44, 52), CLASSES, 10.0)
    prob = np.zeros(labels.shape, np.float32)
    prob[labels == 1] = 0.6
    prob[10, 10, 11:16] = 1.0  # brighter towards +x
    picks = pick_particles(labels, CLASSES, 10.0, probabilities={"big": prob})
    assert picks.coords[0, 0] > 10.0 and 0.6 <= picks.score[0] <= 1.0


def test_duplicates_closer_than_the_radius_fraction_are_merged():
    table = ParticleTable.from_columns([[0, 0, 0], [1, 0, 0], [10, 0, 0]], "big", "t", score=[0.5, 0.9, 0.7])
    kept = suppress_duplicates(table, 2.5)
    assert sorted(kept.score.tolist()) == [0.7, 0.9]


def test_hungarian_matching_is_one_to_one_within_tolerance():
    truth = np.array([[0.0, 0, 0], [10, 0, 0]])
    predicted = np.array([[1.0, 0, 0], [2, 0, 0], [30, 0, 0]])
    rows, cols = match(truth, predicted, max_distance=3)
    assert len(rows) == 1  # both near predictions compete for one truth; the other truth is too far


def test_scores_per_class_micro_and_macro():
    predicted = ParticleTable.from_columns([[11, 10, 10], [30, 12, 14], [90, 90, 90]], ["big", "small", "small"], "t")
    scores = evaluate_tables(TRUTH, predicted, CLASSES, voxel_size=10.0)
    big, small = scores["classes"]["big"], scores["classes"]["small"]
    assert (big["tp"], big["fp"], big["fn"]) == (1, 0, 1)
    assert (small["tp"], small["fp"], small["fn"]) == (1, 1, 1)
    assert scores["micro"]["tp"] == 2 and scores["micro"]["precision"] == pytest.approx(2 / 3)
    assert scores["macro"]["f1"] == pytest.approx((2 / 3 + 0.5) / 2)


def test_predict_pick_evaluate_from_the_command_line(tmp_path):
    labels = sphere_targets(TRUTH, (28, 44, 52), CLASSES, 10.0)
    write_volume(tmp_path / "t_labels.mrc", labels, 10.0, dtype="int8")
    CLASSES.save(tmp_path / "classes.json")
    result = run_cli("pick", tmp_path / "t_labels.mrc", "--out", tmp_path / "picks.star")
    assert result.returncode == 0, result.stderr
    assert "4 particles" in result.stdout
    write_particles(TRUTH, tmp_path / "truth.csv")
    result = run_cli("evaluate", tmp_path / "truth.csv", tmp_path / "picks.star", "--voxel-size", "10",
                     "--json", tmp_path / "scores.json")
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "scores.json").read_text())["micro"]["f1"] == 1.0
    assert "macro" in result.stdout
    assert len(read_particles(tmp_path / "picks.star", context=None)) == 4


def test_pick_and_evaluate_bad_input(tmp_path):
    CLASSES.save(tmp_path / "classes.json")
    write_volume(tmp_path / "t_labels.mrc", np.full((8, 8, 8), 7), 10.0, dtype="int8")
    result = run_cli("pick", tmp_path / "t_labels.mrc", "--out", tmp_path / "p.csv")
    assert result.returncode == 2 and "labels [7]" in result.stderr
    write_volume(tmp_path / "t_labels.mrc", np.zeros((8, 8, 8)), 10.0, dtype="int8")
    result = run_cli("pick", tmp_path / "t_labels.mrc", "--out", tmp_path / "p.csv")
    assert result.returncode == 0 and "no particles found" in result.stdout
    assert len(read_particles(tmp_path / "p.csv")) == 0
    write_particles(ParticleTable.from_columns([[1, 1, 1]], "chaperone", "t"), tmp_path / "truth.csv")
    result = run_cli("evaluate", tmp_path / "truth.csv", tmp_path / "p.csv", "--voxel-size", "10")
    assert result.returncode == 2 and "unknown class 'chaperone'" in result.stderr
