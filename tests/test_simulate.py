"""The simulator's ground truth is true, its physics shows, and it is repeatable."""

import dataclasses
import json

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


@pytest.mark.parametrize("mode", ["tilt-series", "fast"])
def test_a_thicker_slab_is_noisier_per_voxel_at_one_projection_snr_and_tomogram_snr_equalises_it(mode):
    """--snr is per projection: a thicker slab projects more signal, so its noise is raised with it and
    the reconstructed tomogram is noisier per voxel (tomogram SNR 0.06 at 60 slab voxels against 0.14 at 24,
    measured). --tomogram-snr sets the SNR of the reconstruction over the particle slab instead (the noise
    scaled by the factor that gives it, reconstruction being linear), and the measured value is recorded for
    both."""
    common = dict(shape=(32, 64, 64), seed=4, mode=mode, occupancy=0.15)
    thin, thick = (settings_for_preset("shrec", **{**common, "shape": (nz, 64, 64)}) for nz in (32, 80))
    thin_sim, thick_sim = simulate(thin), simulate(thick)
    if mode == "tilt-series":  # per projection, the thick slab's tomogram is the noisier
        assert thick_sim.measured["tomogram_snr"] < 0.75 * thin_sim.measured["tomogram_snr"]
    target = 0.05
    equal = [simulate(dataclasses.replace(s, tomogram_snr=target)) for s in (thin, thick)]
    for e in equal:
        assert abs(e.measured["tomogram_snr"] / target - 1) < 0.02
        if mode == "tilt-series":  # the tilt series written beside it carries the same noise
            assert e.tilt_series is not None and not np.array_equal(e.tilt_series, e.clean_tilt_series)


def test_snr_and_tomogram_snr_are_exclusive_on_the_command_line(tmp_path):
    result = run_cli("simulate", "--shape", "16", "32", "32", "--snr", "0.1", "--tomogram-snr", "0.05", "--out",
                     tmp_path / "s")
    assert result.returncode == 2 and "--tomogram-snr" in result.stderr and not (tmp_path / "s").exists()


def test_randomize_draws_per_tomogram_records_every_value_and_keeps_the_grid(tmp_path):
    result = run_cli("simulate", "--randomize", "--shape", "32", "64", "64", "--count", "2", "--seed", "5", "--mode",
                     "fast", "--out", tmp_path / "r")
    assert result.returncode == 0, result.stderr
    drawn = []
    for i in range(2):
        stem = tmp_path / "r" / f"tomo_{i:02d}"
        settings = json.loads(stem.with_name(f"tomo_{i:02d}_settings.json").read_text())
        assert set(settings["randomized"]) == {"snr", "defocus_um", "b_factor", "tilt_range", "slab_thickness",
                                               "voxel_size_scale", "background", "occupancy"}
        for key in ("snr", "slab_thickness", "voxel_size_scale", "background", "occupancy"):
            assert settings[key] == settings["randomized"][key]  # what was drawn is what was simulated
        drawn.append(settings["randomized"])
        volume = read_volume(stem.with_suffix(".mrc"))
        assert volume.shape == (32, 64, 64) and volume.voxel_size == 10.0  # the target grid, whatever was drawn
        particles = read_particles(stem.with_name(f"tomo_{i:02d}_particles.csv"))
        labels = read_volume(stem.with_name(f"tomo_{i:02d}_labels.mrc")).data
        x, y, z = np.round(particles.coords).astype(int).T
        assert np.all(labels[z, y, x] > 0)
    assert drawn[0] != drawn[1]  # each tomogram draws its own
    clash = run_cli("simulate", "--randomize", "--snr", "0.2", "--shape", "16", "32", "32", "--out", tmp_path / "c")
    assert clash.returncode == 2 and "--snr" in clash.stderr and not (tmp_path / "c").exists()


@pytest.mark.parametrize("scale", [0.9, 1.1])
def test_another_voxel_size_resampled_to_the_target_keeps_particles_where_the_table_says(scale):
    """Simulated at 10 × scale Å, brought back to 10 Å: each particle's density is centred on its table
    coordinates (x, y, z voxels of the target grid) within a voxel."""
    base = settings_for_preset("invitro", shape=(40, 80, 80), seed=2, mode="fast", max_particles=6)
    sim = simulate(dataclasses.replace(base, voxel_size_scale=scale))
    assert sim.tomogram.shape == sim.density.shape == sim.sphere_labels.shape == (40, 80, 80)
    radius = {c.name: c.radius / 10.0 for c in sim.classes.classes}
    checked = 0
    for (x, y, z), name in zip(sim.particles.coords, sim.particles.class_name, strict=True):
        r = int(radius[name] * 0.8)
        lo = np.array([z, y, x]).round().astype(int) - r
        if np.any(lo < 0) or np.any(lo + 2 * r + 1 > np.array(sim.density.shape)):
            continue
        box = sim.density[lo[0]:lo[0] + 2 * r + 1, lo[1]:lo[1] + 2 * r + 1, lo[2]:lo[2] + 2 * r + 1].clip(0)
        centre = [(box.sum(axis=tuple(a for a in range(3) if a != k)) * np.arange(2 * r + 1)).sum() / box.sum()
                  for k in range(3)]
        np.testing.assert_allclose(np.array(centre) + lo, [z, y, x], atol=1.0)
        checked += 1
    assert checked >= 2


def test_a_low_frequency_background_is_added_on_request():
    base = settings_for_preset("invitro", shape=(32, 64, 64), seed=2, mode="fast")
    from scipy import ndimage

    smooth = [ndimage.gaussian_filter(simulate(dataclasses.replace(base, background=b)).tomogram, 6).std()
              for b in (0.0, 1.0)]
    assert smooth[1] > 3 * smooth[0]


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


def test_a_templates_radius_is_its_own_whatever_grid_it_is_resampled_to():
    # measured on the resampled grid, 3gl1's radius moved by 7 % between voxel sizes that --randomize draws
    # (43.1 Å at 10 Å, 46 Å at the 10.9 Å that seed 1000 draws second): a randomised folder refused its second
    for name in ("4v94", "1bxn", "3gl1"):
        assert len({load_template(name, v).radius for v in (9.0, 9.39, 10.0, 10.6, 11.0)}) == 1, name


def test_a_randomised_training_set_simulates_into_one_folder(tmp_path):
    # tools/retrain_bundled.sh's recipe: seed 1000 draws 9.4 Å and 10.9 Å, and the second was refused
    result = run_cli("simulate", "--preset", "shrec", "--randomize", "--shape", "32", "64", "64", "--count", "2",
                     "--seed", "1000", "--mode", "fast", "--out", tmp_path / "r")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "r" / "tomo_01.mrc").is_file()


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


@pytest.mark.parametrize("classes", [("4v94", "1bxn", "3gl1", "3qm1"),
                                     ("4v94", "1bxn", "3gl1", "3qm1", "3h84", "3j9i", "3cf3", "1u6g")])
def test_every_class_takes_its_turns_whatever_the_class_count(classes):
    # The distractor share (0.2: one distractor turn per four labelled ones) once fell on the same class's turn
    # every time with four classes (or eight): that class was never placed, and simulate still exited 0.
    settings = dataclasses.replace(settings_for_preset("shrec", shape=(48, 128, 128), seed=5, mode="fast"),
                                   classes=classes, occupancy=0.12)
    sim = simulate(settings)
    counts = {name: int((sim.particles.class_name == name).sum()) for name in classes}
    assert min(counts.values()) >= 3, counts  # large ones fit less often in so small a slab, but every one fits
    assert len(sim.distractors) > 0


def test_b_factor_and_defocus_reach_the_microscope_from_the_command_line(tmp_path):
    power = {}
    for b in ("0", "3000"):
        out = tmp_path / b
        result = run_cli("simulate", "--shape", "24", "48", "48", "--mode", "fast", "--snr", "100", "--b-factor", b,
                         "--defocus", "3", "3.5", "--out", out, "--seed", "4")
        assert result.returncode == 0, result.stderr
        recorded = json.loads((out / "tomo_settings.json").read_text())["microscope"]
        assert recorded["b_factor"] == float(b) and recorded["defocus_range"] == [3.0, 3.5]
        spectrum = np.abs(np.fft.rfftn(read_volume(out / "tomo.mrc").data)) ** 2
        k = np.sqrt(sum(f ** 2 for f in np.meshgrid(np.fft.fftfreq(24), np.fft.fftfreq(48), np.fft.rfftfreq(48),
                                                    indexing="ij")))
        power[b] = spectrum[k > 0.3].sum() / spectrum[(k > 0.02) & (k < 0.1)].sum()
    assert power["3000"] < 0.5 * power["0"]  # a larger B blurs: less power at high frequency
    for bad in (["--defocus", "5", "2"], ["--randomize", "--b-factor", "100"]):
        result = run_cli("simulate", "--size", "small", "--out", tmp_path / "bad", *bad)
        assert result.returncode == 2 and ("--defocus" in result.stderr or "--b-factor" in result.stderr), result.stderr
        assert not (tmp_path / "bad" / "tomo.mrc").exists()


def test_a_second_simulation_with_other_classes_does_not_relabel_the_folder(tmp_path):
    # classes.json maps the label maps' values to names for every tomogram of the folder: one of other
    # classes written over it would turn the first tomogram's 4v94s into 3j9is without a word.
    small = ["--shape", "16", "32", "32", "--mode", "fast", "--out", tmp_path]
    assert run_cli("simulate", "--preset", "shrec", *small).returncode == 0
    before = (tmp_path / "classes.json").read_text()
    result = run_cli("simulate", "--preset", "invitro", "--name", "other", *small)
    assert result.returncode == 2 and "classes.json" in result.stderr and len(result.stderr.splitlines()) == 1
    assert (tmp_path / "classes.json").read_text() == before and not list(tmp_path.glob("other*"))
    # The same classes again (another seed, other radii by a fraction of a voxel) share the folder.
    assert run_cli("simulate", "--preset", "shrec", "--name", "again", "--seed", "4", *small).returncode == 0
    assert (tmp_path / "again.mrc").is_file()


def test_two_simulations_of_other_classes_run_at_once_into_one_folder_leave_one_consistent_folder(tmp_path):
    import subprocess
    import sys

    small = ["--shape", "16", "32", "32", "--mode", "fast", "--out", str(tmp_path)]
    jobs = {preset: subprocess.Popen([sys.executable, "-m", "keras_ucaps", "simulate", "--preset", preset, "--name",
                                      preset, *small], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for preset in ("shrec", "invitro")}
    codes = {preset: job.wait() for preset, job in jobs.items()}
    assert sorted(codes.values()) == [0, 2]
    winner = next(p for p, c in codes.items() if c == 0)
    loser = next(p for p, c in codes.items() if c == 2)
    names = {c["name"] for c in json.loads((tmp_path / "classes.json").read_text())["classes"]}
    assert names == {"shrec": {"4v94", "1bxn", "3gl1"}, "invitro": {"3j9i", "4v4r"}}[winner]
    assert set(read_particles(tmp_path / f"{winner}_particles.csv").class_name) <= names
    assert not list(tmp_path.glob(f"{loser}*"))
