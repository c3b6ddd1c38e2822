"""The chain inside a copick project built with copick's own API: patches → fit → predict → pick → picks back."""

import numpy as np
import pandas as pd
import pytest
from conftest import VOXEL_SIZE, make_sources, run_cli

from keras_ucaps.errors import InputError
from keras_ucaps.io import read_volume

copick = pytest.importorskip("copick")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Three runs of noise with bright balls; curator picks (session 1) of 'big' and 'small'."""
    from copick.models import PickableObject

    folder = tmp_path_factory.mktemp("copick")
    config = folder / "copick_config.json"
    objects = [PickableObject(name="big", is_particle=True, label=1, radius=50.0),
               PickableObject(name="small", is_particle=True, label=2, radius=30.0)]
    root = copick.new_config(str(config), str(folder / "overlay"), pickable_objects=objects)
    sources, _ = make_sources(3)
    for source in sources:
        run = root.new_run(f"TS_{source.name}")
        run.new_voxel_spacing(VOXEL_SIZE).new_tomogram("wbp").from_numpy(source.volume.data)
        for name in ("big", "small"):
            part = source.particles.where(class_name=name)
            run.new_picks(name, "1", "curator").from_numpy(part.coords * VOXEL_SIZE)
        run.new_picks("big", "7", "someone-else").from_numpy(np.array([[10.0, 10.0, 10.0]]))
    return config, sources


def _session_picks(config, user, session):
    root = copick.from_file(str(config))
    out = {}
    for run in root.runs:
        for picks in run.get_picks(user_id=user, session_id=session):
            out[(run.name, picks.pickable_object_name)] = picks.full_positions()
    return out


def test_ome_zarr_tomograms_read_without_copick(project):
    config, sources = project
    root = copick.from_file(str(config))
    tomogram = root.get_run("TS_t0").get_voxel_spacing(VOXEL_SIZE).get_tomogram("wbp")
    zarr_folder = config.parent / "overlay" / "ExperimentRuns" / "TS_t0" / "VoxelSpacing10.000" / "wbp.zarr"
    volume = read_volume(zarr_folder)
    assert volume.voxel_size == VOXEL_SIZE
    np.testing.assert_array_equal(volume.data, tomogram.numpy())
    np.testing.assert_allclose(volume.data, sources[0].volume.data, atol=1e-6)


def test_a_copick_store_is_the_store_of_the_same_picks_as_files(project, tmp_path):
    """`patches --copick` and `patches --tomogram … --particles …` of the same tomograms and picks write the same
    store (copick lists picks by class, the files in their own order)."""
    import h5py

    from keras_ucaps.io import Volume, write_particles, write_volume

    config, sources = project
    classes = tmp_path / "classes.json"
    assert run_cli("classes", "big=50", "small=30", "--out", classes).returncode == 0
    from_copick = run_cli("patches", "--copick", config, "--voxel-spacing", "10", "--user-id", "curator",
                          "--classes", classes, "--out", tmp_path / "a.h5", "--patch-size", "32")
    assert from_copick.returncode == 0, from_copick.stderr[-2000:]
    files = []
    for source in sources:
        name = f"TS_{source.name}"
        write_volume(tmp_path / f"{name}.mrc", np.asarray(source.volume.data), VOXEL_SIZE)
        write_particles(source.particles.replace(tomo=np.full(len(source.particles), name, dtype=object)),
                        tmp_path / f"{name}.csv")
        files += ["--tomogram", tmp_path / f"{name}.mrc", "--particles", tmp_path / f"{name}.csv"]
    from_files = run_cli("patches", *files, "--classes", classes, "--out", tmp_path / "b.h5", "--patch-size", "32")
    assert from_files.returncode == 0, from_files.stderr[-2000:]
    assert isinstance(sources[0].volume, Volume)
    with h5py.File(tmp_path / "a.h5") as a, h5py.File(tmp_path / "b.h5") as b:
        for key in ("centre", "class", "tomogram", "split", "images", "labels"):
            np.testing.assert_allclose(a[key][()], b[key][()], atol=1e-5, err_msg=key)


def test_the_chain_inside_a_copick_project(project, tmp_path):
    config, sources = project
    classes = tmp_path / "classes.json"
    assert run_cli("classes", "big=50", "small=30", "--out", classes).returncode == 0
    store = tmp_path / "p.h5"
    made = run_cli("patches", "--copick", config, "--voxel-spacing", "10", "--tomo-type", "wbp", "--user-id",
                   "curator", "--session-id", "1", "--classes", classes, "--out", store, "--patch-size", "32")
    assert made.returncode == 0, made.stderr[-2000:]
    fit = run_cli("fit", "--model", "unet", "--data", store, "--out", tmp_path / "run", "--epochs", "1",
                  "--batch-size", "2", "--steps-per-epoch", "2", "--validation-steps", "1", "--filters", "4,6,8")
    assert fit.returncode == 0, fit.stderr[-2000:]

    maps = tmp_path / "maps"
    predicted = run_cli("predict", tmp_path / "run", "--copick", config, "--voxel-spacing", "10", "--run", "TS_t1",
                        "--run", "TS_t2", "--out", maps)
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    assert sorted(p.name for p in maps.glob("*_labels.mrc")) == ["TS_t1_labels.mrc", "TS_t2_labels.mrc"]
    picked = run_cli("pick", maps / "TS_t1_labels.mrc", maps / "TS_t2_labels.mrc", "--copick", config,
                     "--voxel-spacing", "10", "--out", tmp_path / "picks.csv", "--min-size", "big=1",
                     "--min-size", "small=1")
    assert picked.returncode == 0, picked.stderr[-2000:]
    assert "session 0" in picked.stdout
    table = pd.read_csv(tmp_path / "picks.csv")
    written = _session_picks(config, "keras-ucaps", "0")
    assert len(table) and sum(len(v) for v in written.values()) == len(table)
    for (run, obj), positions in written.items():
        rows = table[(table.tomo == run) & (table.class_name == obj)]
        np.testing.assert_allclose(np.sort(positions / VOXEL_SIZE, 0), np.sort(rows[["x", "y", "z"]].to_numpy(), 0),
                                   atol=1e-4)
    # predict + pick in one go: the next session, the same picks
    again = run_cli("pick", "--copick", config, "--voxel-spacing", "10", "--run", "TS_t1", "--run", "TS_t2",
                    "--model", tmp_path / "run", "--min-size", "big=1", "--min-size", "small=1")
    assert again.returncode == 0 and "session 1" in again.stdout, again.stderr[-2000:]
    second = _session_picks(config, "keras-ucaps", "1")
    assert second.keys() == written.keys()
    for key in written:
        np.testing.assert_allclose(np.sort(second[key], 0), np.sort(written[key], 0), atol=1e-3)
    # other users' picks are untouched
    assert len(_session_picks(config, "curator", "1")) == 6


def test_copick_options_are_checked(project, tmp_path):
    config, _ = project
    missing = run_cli("patches", "--copick", config, "--classes", tmp_path / "c.json", "--out", tmp_path / "p.h5")
    assert missing.returncode == 2 and "--voxel-spacing" in missing.stderr
    wrong = run_cli("pick", "--copick", config, "--voxel-spacing", "10", "--run", "TS_nope")
    assert wrong.returncode == 2 and "TS_nope" in wrong.stderr
    spacing = run_cli("predict", "shrec-unet", "--copick", config, "--voxel-spacing", "7", "--out", tmp_path / "m")
    assert spacing.returncode == 2 and "no voxel spacing 7" in spacing.stderr
    assert not (tmp_path / "m").exists()


def test_a_run_gets_all_of_a_write_or_none(project, monkeypatch):
    from copick.models import CopickPicks

    from keras_ucaps.io import ParticleTable
    from keras_ucaps.io.copick_project import CopickProject

    config, _ = project
    target = CopickProject(config, VOXEL_SIZE, "wbp")
    first = ParticleTable.from_columns([[5, 5, 5], [9, 9, 9]], ["big", "small"], "TS_t0")
    target.write_particles(first, "90")
    assert set(_session_picks(config, "keras-ucaps", "90")) == {("TS_t0", "big"), ("TS_t0", "small")}
    calls = []
    real = CopickPicks.from_numpy

    def failing(self, *args, **kwargs):
        calls.append(self.pickable_object_name)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(CopickPicks, "from_numpy", failing)
    second = ParticleTable.from_columns([[1, 1, 1], [2, 2, 2]], ["big", "small"], "TS_t1")
    with pytest.raises(OSError):
        target.write_particles(second, "91")
    assert not _session_picks(config, "keras-ucaps", "91")
    monkeypatch.undo()
    # rewriting a session replaces it whole: no stale object stays
    target.write_particles(ParticleTable.from_columns([[3, 3, 3]], ["big"], "TS_t0"), "90")
    assert set(_session_picks(config, "keras-ucaps", "90")) == {("TS_t0", "big")}
    calls.clear()  # a failed rewrite puts back what the session held
    monkeypatch.setattr(CopickPicks, "from_numpy", failing)
    with pytest.raises(OSError):
        target.write_particles(ParticleTable.from_columns([[4, 4, 4], [6, 6, 6]], ["big", "small"], "TS_t0"), "90")
    monkeypatch.undo()
    kept = _session_picks(config, "keras-ucaps", "90")
    assert set(kept) == {("TS_t0", "big")}
    np.testing.assert_allclose(kept["TS_t0", "big"], [[30.0, 30.0, 30.0]])
    with pytest.raises(InputError, match="no pickable object"):
        target.write_particles(ParticleTable.from_columns([[3, 3, 3]], ["ribosome"], "TS_t0"), "92")


def test_picks_of_one_user_and_session(project):
    from keras_ucaps.io.copick_project import CopickProject

    config, _ = project
    table = CopickProject(config, VOXEL_SIZE, "wbp").particles("TS_t0", ["big"], "someone-else", "7")
    np.testing.assert_allclose(table.coords, [[1.0, 1.0, 1.0]])
    assert table.tomo.tolist() == ["TS_t0"] and table.class_name.tolist() == ["big"]
    curator = CopickProject(config, VOXEL_SIZE, "wbp").particles("TS_t0", ["big", "small"], "curator", "1")
    assert curator.counts() == {"big": 6, "small": 6}


def test_ome_zarr_scales(project):
    config, sources = project
    zarr_folder = config.parent / "overlay" / "ExperimentRuns" / "TS_t0" / "VoxelSpacing10.000" / "wbp.zarr"
    half = read_volume(zarr_folder, scale=1)
    assert half.voxel_size == 2 * VOXEL_SIZE and half.shape == tuple(n // 2 for n in sources[0].volume.shape)
    with pytest.raises(InputError, match="scale 9"):
        read_volume(zarr_folder, scale=9)
