"""The simulator's ground truth is true, its physics shows, and it is repeatable."""

import numpy as np
import pytest
from conftest import run_cli
from scipy.spatial.transform import Rotation

from keras_ucaps.data.simulate import settings_for_preset, simulate
from keras_ucaps.data.templates import MASK_THRESHOLD, bundled_names, load_template
from keras_ucaps.data.tilt_series import project, tilt_angles
from keras_ucaps.errors import InputError
from keras_ucaps.io import read_particles, read_volume, write_volume

SMALL = (48, 96, 96)


@pytest.fixture(scope="module")
def sim():
    return simulate(settings_for_preset("shrec", shape=SMALL, seed=3, occupancy=0.15), "t")


def _paint(shape, templates, table):
    """Count, per voxel, how many particles' masks (re-rendered from the table) cover it."""
    count = np.zeros(shape, dtype=np.int32)
    labels = np.zeros(shape, dtype=np.int32)
    for (x, y, z), name, angles in zip(table.coords, table.class_name, table.angles, strict=True):
        template = templates[name]
        mask = template.rotated(Rotation.from_euler("ZYZ", angles, degrees=True)) > MASK_THRESHOLD
        half = np.asarray(mask.shape) // 2
        lo = np.array([z, y, x], dtype=int) - half
        hi = lo + mask.shape
        clo, chi = np.maximum(lo, 0), np.minimum(hi, shape)
        box = tuple(slice(a, b) for a, b in zip(clo, chi, strict=True))
        inner = tuple(slice(a - l, b - l) for a, b, l in zip(clo, chi, lo, strict=True))
        count[box] += mask[inner]
        labels[box][mask[inner]] = template.label if hasattr(template, "label") else 1
    return count


def test_every_class_is_placed_with_truth_files(sim):
    assert set(sim.particles.class_name) == {"4v94", "1bxn", "3gl1"}
    assert len(sim.distractors) > 0
    assert sim.tomogram.shape == SMALL and sim.tomogram.dtype == np.float32
    assert abs(sim.tomogram.mean()) < 1e-3 and abs(sim.tomogram.std() - 1) < 1e-3


def test_listed_positions_and_angles_reproduce_the_particles_without_overlap(sim):
    templates = {n: load_template(n) for n in ("4v94", "1bxn", "3gl1", "1qvr", "2cg9", "3d2f", "1s3x")}
    both = type(sim.particles).concat([sim.particles, sim.distractors])
    count = _paint(SMALL, templates, both)
    assert count.max() <= 1, "two particles' masks overlap"
    labelled = _paint(SMALL, templates, sim.particles) > 0
    agreement = (labelled == (sim.mask_labels > 0)).mean()
    assert agreement > 0.999
    # Each listed centre sits in its particle: the density near it is substantial.
    for (x, y, z), name in zip(sim.particles.coords, sim.particles.class_name, strict=True):
        r = max(1, int(templates[name].radius / 10 / 2))
        zi, yi, xi = int(z), int(y), int(x)
        near = sim.mask_labels[max(zi - r, 0):zi + r + 1, max(yi - r, 0):yi + r + 1, max(xi - r, 0):xi + r + 1]
        assert (near == sim.classes.label(name)).any(), f"no {name} density near its listed centre"


def test_tomogram_shows_the_missing_wedge(sim):
    power = np.abs(np.fft.fftn(sim.tomogram)) ** 2
    kz, ky, kx = np.meshgrid(*[np.fft.fftfreq(n) for n in SMALL], indexing="ij")
    radius = np.sqrt(kz**2 + kx**2)
    band = (radius > 0.05) & (radius < 0.4) & (np.abs(ky) < 0.1)
    angle_from_z = np.degrees(np.arctan2(np.abs(kx), np.abs(kz)))
    inside = power[band & (angle_from_z < 20)].mean()  # within the wedge (tilts stop at 60°)
    outside = power[band & (angle_from_z > 45)].mean()
    assert inside < 0.1 * outside


def test_projection_snr_matches_request(sim):
    noise = sim.tilt_series - sim.clean_tilt_series
    measured = sim.clean_tilt_series.var(axis=(1, 2)) / noise.var(axis=(1, 2))
    assert np.all(np.abs(measured / 0.1 - 1) < 0.2)


def test_same_seed_same_output_other_seed_other_output():
    settings = settings_for_preset("invitro", shape=(32, 64, 64), seed=7, mode="fast")
    a, b = simulate(settings), simulate(settings)
    np.testing.assert_array_equal(a.tomogram, b.tomogram)
    np.testing.assert_array_equal(a.particles.coords, b.particles.coords)
    c = simulate(settings_for_preset("invitro", shape=(32, 64, 64), seed=8, mode="fast"))
    assert not np.array_equal(a.particles.coords, c.particles.coords)


def test_fast_mode_also_has_the_wedge():
    sim = simulate(settings_for_preset("shrec", shape=(32, 64, 64), seed=1, mode="fast"))
    spectrum = np.abs(np.fft.fftn(sim.tomogram)) ** 2
    assert spectrum[5, 0, 0] < 1e-6 * spectrum[0, 0, 5]  # pure kz: inside the wedge; pure kx: measured


def test_zero_tilt_projection_is_the_sum_along_z():
    volume = np.random.default_rng(0).random((6, 5, 7)).astype(np.float32)
    np.testing.assert_allclose(project(volume, tilt_angles(0, 0, 1))[0], volume.sum(axis=0), rtol=1e-5)


def test_user_map_is_resampled_to_the_voxel_size(tmp_path):
    bundled = load_template("3gl1")
    path = write_volume(tmp_path / "mine.mrc", bundled.density, 10.0)
    mine = load_template(path, voxel_size=5.0)
    assert mine.name == "mine" and mine.voxel_size == 5.0
    assert mine.radius == pytest.approx(bundled.radius, rel=0.1)
    assert mine.mask.sum() / bundled.mask.sum() == pytest.approx(8, rel=0.3)  # 2³ voxels, smoothed


def test_bundled_maps_cover_the_presets():
    assert {"4v94", "1bxn", "3gl1", "3j9i", "4v4r", "4cr2"} <= set(bundled_names())
    with pytest.raises(InputError, match="neither a bundled template"):
        load_template("9zzz")


def test_cli_writes_a_small_two_tomogram_dataset(tmp_path):
    result = run_cli("simulate", "--size", "small", "--shape", "32", "64", "64", "--count", "2", "--out",
                     tmp_path / "sim", "--seed", "5")
    assert result.returncode == 0, result.stderr
    for name in ("tomo_00", "tomo_01"):
        tomo = read_volume(tmp_path / "sim" / f"{name}.mrc")
        assert tomo.shape == (32, 64, 64) and tomo.voxel_size == 10.0
        table = read_particles(tmp_path / "sim" / f"{name}_particles.csv")
        assert table.tomograms == [name] and len(table) > 0
        labels = read_volume(tmp_path / "sim" / f"{name}_labels.mrc").data
        assert set(np.unique(labels)) <= {0, 1, 2, 3} and labels.max() > 0
    result = run_cli("show", tmp_path / "sim" / "tomo_00.mrc", "--picks", tmp_path / "sim" / "tomo_00_particles.csv")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "sim" / "tomo_00.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_rejects_bad_settings(tmp_path):
    result = run_cli("simulate", "--out", tmp_path, "--occupancy", "0.9", "--size", "small")
    assert result.returncode == 2 and "Error: --occupancy" in result.stderr
    result = run_cli("simulate", "--out", tmp_path, "--classes", "nope.mrc", "--size", "small")
    assert result.returncode == 2 and "Error: nope.mrc: neither a bundled template" in result.stderr
