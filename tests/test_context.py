"""Cellular context in the simulator: each structure lies where its settings say, particles never overlap it,
the imaging effects act as described, and the same seed gives the same tomogram."""

import json

import numpy as np
import pytest
from conftest import run_cli

from keras_ucaps.data import context as cellular
from keras_ucaps.data.simulate import settings_for_preset, simulate
from keras_ucaps.data.templates import MASK_THRESHOLD
from keras_ucaps.errors import InputError
from keras_ucaps.io import read_particles, read_volume

SHAPE = (64, 128, 128)
VS = 10.0


def _draw(seed=1, **counts):
    return cellular.draw(cellular.ContextSettings(**counts), SHAPE, VS, (8, 56), np.random.default_rng(seed))


def _only(scene, kind):
    (structure,) = [s for s in scene.structures if s["kind"] == kind]
    return structure


def _distance(point_xyz):
    z, y, x = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    return np.sqrt((x - point_xyz[0]) ** 2 + (y - point_xyz[1]) ** 2 + (z - point_xyz[2]) ** 2)


def test_a_vesicle_is_a_bilayer_two_leaflets_four_nm_apart_on_its_sphere():
    scene = _draw(vesicles=1)
    vesicle = _only(scene, "membrane")
    assert vesicle["shape"] == "vesicle"
    offset = _distance(vesicle["centre"]) - vesicle["radius"]  # voxels from the sphere
    bins = np.round(offset * 2) / 2  # half-voxel shells
    profile = {b: float(scene.density[bins == b].mean()) for b in np.arange(-4, 4.5, 0.5) if (bins == b).any()}
    h = cellular.LEAFLET_SEPARATION / 2 / VS
    inner, outer = max((b for b in profile if b < 0), key=profile.get), max((b for b in profile if b > 0),
                                                                          key=profile.get)
    assert abs(inner + h) <= 0.5 and abs(outer - h) <= 0.5
    assert profile[0.0] < 0.5 * min(profile[inner], profile[outer])  # the tails between the leaflets are thin
    assert profile[-4.0] < 0.05 and profile[4.0] < 0.05
    assert (scene.labels[np.abs(offset) < h] == cellular.KINDS.index("membrane") + 1).mean() > 0.9


def _along(structure, n=9):
    start, end = np.asarray(structure["start"]), np.asarray(structure["end"])
    return [start + (end - start) * f for f in np.linspace(0.2, 0.8, n)]


def _inside(point):
    return all(0 <= p < s for p, s in zip(point[::-1], SHAPE, strict=True))


def test_actin_is_a_solid_rod_and_a_microtubule_a_hollow_tube_along_their_recorded_axes():
    scene = _draw(seed=4, actin=1)
    actin = _only(scene, "actin")
    axis_points = [p for p in _along(actin) if _inside(p)]
    assert axis_points
    for x, y, z in axis_points:
        assert scene.density[int(round(z)), int(round(y)), int(round(x))] > 0.3
    tube = _only(_draw(seed=5, microtubules=1), "microtubule")
    scene = _draw(seed=5, microtubules=1)
    start, end = np.asarray(tube["start"]), np.asarray(tube["end"])
    axis = (end - start) / np.linalg.norm(end - start)
    across = np.cross(axis, [0, 0, 1.0] if abs(axis[2]) < 0.9 else [1.0, 0, 0])
    across /= np.linalg.norm(across)
    wall = (cellular.TUBE_OUTER + cellular.TUBE_INNER) / 2 / VS
    checked = 0
    for point in _along(tube):
        on_axis, on_wall = point, point + wall * across
        if _inside(on_axis) and _inside(on_wall):
            z, y, x = np.round(on_axis[::-1]).astype(int)
            wz, wy, wx = np.round(on_wall[::-1]).astype(int)
            assert scene.density[z, y, x] < 0.05  # hollow
            assert scene.density[wz, wy, wx] > 0.15
            checked += 1
    assert checked >= 3


def test_gold_beads_are_dense_balls_mostly_at_the_ice_surfaces_and_never_overlap_other_structures():
    scene = _draw(seed=2, gold=8, vesicles=2)
    beads = [s for s in scene.structures if s["kind"] == "gold"]
    assert len(beads) == 8
    at_faces = 0
    for bead in beads:
        x, y, z = np.round(bead["centre"]).astype(int)
        if _inside(bead["centre"]):
            assert scene.density[z, y, x] > 0.9 * cellular.GOLD_DENSITY
        assert 25 / VS <= bead["radius"] <= 75 / VS
        at_faces += min(abs(bead["centre"][2] - 8), abs(bead["centre"][2] - 55)) < 4
    assert at_faces >= 4
    gold = scene.labels == cellular.KINDS.index("gold") + 1
    assert gold.sum() > 0
    # a bead's ball holds gold only: no membrane under it
    for bead in beads:
        ball = _distance(bead["centre"]) < bead["radius"] - 1
        assert (scene.labels[ball] == cellular.KINDS.index("gold") + 1).all()


@pytest.mark.parametrize("edge, sign", [("carbon", 1), ("lamella", -1)])
def test_an_edge_covers_its_share_of_the_field_through_the_whole_depth(edge, sign):
    scene = _draw(edge=edge, edge_fraction=0.25)
    kind = "carbon" if edge == "carbon" else "vacuum"
    region = scene.labels == cellular.KINDS.index(kind) + 1
    assert abs(region.mean() - 0.25) < 0.03
    assert (region == region[:1]).all()  # the same in every z plane
    assert np.sign(scene.density[region].mean()) == sign


def test_contamination_sits_at_the_slab_faces():
    scene = _draw(seed=3, contamination=2)
    blobs = [s for s in scene.structures if s["kind"] == "contamination"]
    assert len(blobs) == 2
    for blob in blobs:
        assert blob["centre"][2] in (8, 55)
        assert len(blob["radii"]) >= 3


SCENE = cellular.ContextSettings(vesicles=2, sheets=1, actin=3, microtubules=1, gold=4, contamination=1,
                                 edge="carbon", ice_gradient=1.5, alignment_shift=0.5, alignment_rotation=0.3,
                                 dose_b_factor=4)


@pytest.fixture(scope="module")
def cell():
    return simulate(settings_for_preset("shrec", shape=SHAPE, seed=7, context=SCENE), "cell")


def test_particles_never_overlap_context_and_fill_around_it(cell):
    particle = (cell.density > MASK_THRESHOLD) | (cell.mask_labels > 0)
    assert len(cell.particles) > 20
    assert not (particle & (cell.context_labels > 0)).any()
    kinds = {s["kind"] for s in cell.context_drawn["structures"]}
    assert kinds == {"membrane", "actin", "microtubule", "gold", "contamination", "carbon"}
    # particles come close: some lie within 3 voxels of a structure
    from scipy import ndimage

    distance = ndimage.distance_transform_edt(cell.context_labels == 0)
    near = [distance[int(z), int(y), int(x)] for x, y, z in cell.particles.coords]
    assert min(near) < 6


def test_the_same_seed_gives_the_same_tomogram_and_another_seed_another(cell):
    again = simulate(settings_for_preset("shrec", shape=SHAPE, seed=7, context=SCENE), "cell")
    np.testing.assert_array_equal(again.tomogram, cell.tomogram)
    np.testing.assert_array_equal(again.context_labels, cell.context_labels)
    other = simulate(settings_for_preset("shrec", shape=SHAPE, seed=8, context=SCENE), "cell")
    assert not np.array_equal(other.context_labels, cell.context_labels)


def test_context_leaves_the_noise_level_the_particles_set():
    """Dense gold and carbon would raise a projection's variance; the noise stays what the particles alone ask
    for, as a microscope's dose does not know what lies in the ice."""
    plain = simulate(settings_for_preset("shrec", shape=SHAPE, seed=7, snr=0.2), "plain")
    dense = simulate(settings_for_preset("shrec", shape=SHAPE, seed=7, snr=0.2,
                                         context=cellular.ContextSettings(gold=6, edge="carbon")), "dense")
    noise = [(s.tilt_series - s.clean_tilt_series).std() for s in (plain, dense)]
    assert abs(noise[1] / noise[0] - 1) < 0.25  # different particles, about the same noise
    assert dense.clean_tilt_series.var() > 2 * plain.clean_tilt_series.var()


def test_gold_is_in_the_tilt_series_and_back_projection_draws_its_streaks():
    settings = settings_for_preset("shrec", shape=SHAPE, seed=7, snr=50.0, max_particles=1,
                                   context=cellular.ContextSettings(gold=3))
    sim = simulate(settings, "gold")
    bead = next(s for s in sim.context_drawn["structures"] if s["kind"] == "gold" and _inside(s["centre"]))
    x, y, z = np.round(bead["centre"]).astype(int)
    zero = len(sim.tilt_series) // 2  # the 0° tilt
    image = sim.clean_tilt_series[zero]
    u = x  # at 0° a column sees x
    assert image[y, u] < np.percentile(image, 1)  # dark, as gold is
    # away from the bead along z, the column through it carries streaks; a column far from every bead does not
    column = np.abs(sim.tomogram[:, y, x])
    far = [d for d in range(len(column)) if abs(d - z) > 3 * bead["radius"] + 3]
    gold = sim.context_labels == cellular.KINDS.index("gold") + 1
    quiet = np.argwhere(~gold.any(axis=0))
    qy, qx = quiet[len(quiet) // 2]
    assert column[far].mean() > 1.5 * np.abs(sim.tomogram[:, qy, qx]).mean()


def test_dose_symmetric_order_and_its_b_factors(cell):
    angles = np.array([-6.0, -3.0, 0.0, 3.0, 6.0])
    np.testing.assert_array_equal(cellular.dose_order(angles), [4, 2, 0, 1, 3])
    b = np.asarray(cell.context_drawn["b_factors"])
    angles = np.arange(-60, 61, 3.0)
    assert b[angles == 0][0] == pytest.approx(200.0)  # the microscope's, at the first tilt
    assert b.max() == pytest.approx(200 + 4 * (len(angles) - 1))
    assert b[angles == 60][0] > b[angles == 30][0] > b[angles == 3][0]


def test_residual_alignment_error_shifts_and_turns_each_tilt():
    image = np.zeros((1, 33, 33), np.float32)
    image[0, 16, 20] = 1.0
    shifted = cellular.misalign(image, np.array([[2.0, -3.0]]), np.array([0.0]))
    assert np.unravel_index(np.argmax(shifted[0]), (33, 33)) == (18, 17)
    turned = cellular.misalign(image, np.zeros((1, 2)), np.array([90.0]))
    y, u = np.unravel_index(np.argmax(turned[0]), (33, 33))
    assert (abs(y - 16), abs(u - 16)) == (4, 0)  # a point 4 voxels off the centre stays 4 off, turned 90°


def test_ice_gradient_scales_the_noise_between_its_ends():
    scale, drawn = cellular.ice_noise_scale((64, 64), 2.0, np.random.default_rng(0))
    assert scale.max() / scale.min() == pytest.approx(2.0, rel=1e-3)
    assert np.exp(np.log(scale).mean()) == pytest.approx(1.0, abs=0.02)
    assert "ice_gradient_direction_deg" in drawn
    settings = settings_for_preset("shrec", shape=SHAPE, seed=7, mode="fast",
                                   context=cellular.ContextSettings(ice_gradient=3.0))
    sim = simulate(settings)
    angle = np.deg2rad(sim.context_drawn["ice_gradient_direction_deg"])
    y, x = np.meshgrid(np.arange(SHAPE[1]), np.arange(SHAPE[2]), indexing="ij")
    along = x * np.cos(angle) + y * np.sin(angle)
    thin, thick = along < np.quantile(along, 0.2), along > np.quantile(along, 0.8)
    ratio = sim.tomogram[:, thick].std() / sim.tomogram[:, thin].std()
    assert ratio > 1.5  # the noisy end is noisier


def test_settings_are_checked():
    with pytest.raises(InputError, match="--edge"):
        cellular.ContextSettings(edge="gold")
    with pytest.raises(InputError, match="--ice-gradient"):
        cellular.ContextSettings(ice_gradient=float("nan"))
    with pytest.raises(InputError, match="--gold"):
        cellular.ContextSettings(gold=-1)


def test_randomised_context_on_another_voxel_size_keeps_structures_on_the_grid():
    settings = settings_for_preset("shrec", shape=SHAPE, seed=7, voxel_size_scale=1.1,
                                   context=cellular.ContextSettings(gold=3))
    sim = simulate(settings)
    assert sim.context_labels.shape == SHAPE
    for bead in (s for s in sim.context_drawn["structures"] if s["kind"] == "gold"):
        if _inside(bead["centre"]):
            x, y, z = np.round(bead["centre"]).astype(int)
            assert sim.context_labels[z, y, x] == cellular.KINDS.index("gold") + 1


def test_cli_context_writes_labels_points_and_every_drawn_value(tmp_path):
    out = tmp_path / "sim"
    result = run_cli("simulate", "--size", "small", "--context", "--gold", "3", "--edge", "lamella", "--seed", "3",
                     "--count", "2", "--out", str(out))
    assert result.returncode == 0, result.stderr
    settings = json.loads((out / "tomo_00_settings.json").read_text())
    assert settings["context"]["gold"] == 3 and settings["context"]["edge"] == "lamella"
    drawn = settings["context_drawn"]
    assert len(drawn["alignment_shifts_yu"]) == len(drawn["b_factors"]) == 41
    assert "context:" in result.stdout and "gold" in result.stdout
    labels = read_volume(out / "tomo_00_context.mrc").data
    points = read_particles(out / "tomo_00_context.csv")
    assert set(points.class_name) <= set(cellular.KINDS) and {"gold", "vacuum"} <= set(points.class_name)
    for (x, y, z), kind in zip(points.coords, points.class_name, strict=True):
        assert labels[int(z), int(y), int(x)] == cellular.KINDS.index(kind) + 1
    patches = run_cli("patches", "--simulation", str(out), "--simulation-negatives", "--patch-size", "32",
                      "--out", str(tmp_path / "p.h5"))
    assert patches.returncode == 0, patches.stderr
    import h5py

    with h5py.File(tmp_path / "p.h5") as f:
        on_negatives = int(f["negative"][()].sum())
    expected = sum(len(read_particles(out / f"tomo_0{i}_{what}.csv")) for i in (0, 1)
                   for what in ("distractors", "context"))
    assert on_negatives == expected


@pytest.mark.parametrize("args, option", [
    (["--mode", "fast", "--alignment-shift", "1"], "--alignment-shift"),
    (["--edge-fraction", "0.3"], "--edge-fraction"),
    (["--ice-gradient", "nan"], "--ice-gradient"),
    (["--gold", "-2"], "--gold"),
])
def test_cli_refuses_context_options_that_cannot_apply(tmp_path, args, option):
    result = run_cli("simulate", "--size", "small", *args, "--out", str(tmp_path / "sim"))
    assert result.returncode == 2
    assert option in result.stderr
    assert not (tmp_path / "sim").exists()


def test_a_simulation_of_several_tomograms_that_fails_part_way_says_which_were_written(tmp_path, monkeypatch):
    """Each tomogram is written whole or not at all; the error names the one that failed and those written."""
    from click.testing import CliRunner

    from keras_ucaps.cli import main
    from keras_ucaps.data import simulate as module

    real = module._write_files
    calls = []

    def full_on_the_third(sim, out, name, randomized, files):
        calls.append(name)
        if len(calls) == 3:
            files["tomogram"] = module.write_volume(out / f"{name}.mrc", sim.tomogram, 10.0)
            raise InputError(out / f"{name}_labels.mrc", "cannot be written (No space left on device)")
        return real(sim, out, name, randomized, files)

    monkeypatch.setattr(module, "_write_files", full_on_the_third)
    result = CliRunner().invoke(main, ["simulate", "--shape", "32", "64", "64", "--particles", "4", "--count", "3",
                                       "--out", str(tmp_path / "sim")])
    assert result.exit_code == 2
    assert "tomo_02 not written; tomo_00 to tomo_01 were, complete" in result.stderr
    written = sorted(p.name for p in (tmp_path / "sim").iterdir())
    assert "tomo_02.mrc" not in written and "tomo_01_settings.json" in written and "classes.json" in written
