"""Faults a careless admin or a full disk brings: one-line errors (exit 2), no half-written or replaced files."""

import errno
import os
import stat

import pytest
from conftest import run_cli

from keras_ucaps.errors import InputError
from keras_ucaps.io import ParticleTable, write_particles
from keras_ucaps.io.atomic import atomic_path


@pytest.fixture
def table_csv(tmp_path):
    path = tmp_path / "in.csv"
    write_particles(ParticleTable.from_columns([[1.0, 2.0, 3.0]], "a", "t"), path)
    return path


def _bad_outputs(tmp_path):
    (tmp_path / "a_folder.csv").mkdir()
    (tmp_path / "a_file").write_text("x")
    target = tmp_path / "target.csv"
    target.write_text("keep me\n")
    (tmp_path / "link.csv").symlink_to(target)
    return {
        "is a folder": tmp_path / "a_folder.csv",
        "lies under": tmp_path / "a_file" / "out.csv",
        "symbolic link": tmp_path / "link.csv",
        "not a regular file": "/dev/null",
        "cannot be written": "/proc/keras-ucaps-test/out.csv",
    }


@pytest.mark.parametrize("problem", ["is a folder", "lies under", "symbolic link", "not a regular file",
                                     "cannot be written"])
def test_bad_output_paths_are_one_line_errors(tmp_path, table_csv, problem):
    out = _bad_outputs(tmp_path)[problem]
    result = run_cli("convert", table_csv, out, "--to", "csv")
    assert result.returncode == 2, result.stderr
    assert problem in result.stderr and "Traceback" not in result.stderr
    assert (tmp_path / "target.csv").read_text() == "keep me\n"  # a link's target is never replaced
    assert os.path.exists("/dev/null") and stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_a_full_disk_leaves_the_old_file_and_no_scratch(tmp_path, monkeypatch):
    out = tmp_path / "out.csv"
    out.write_text("old\n")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(InputError, match="out.csv: cannot be written \\(No space left on device\\)"):
        with atomic_path(out) as tmp:
            tmp.write_text("half")
            full()
    assert out.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


def test_outputs_follow_the_umask(tmp_path, table_csv):
    old = os.umask(0o022)
    try:
        write_particles(ParticleTable.from_columns([[1.0, 2.0, 3.0]], "a", "t"), tmp_path / "o.csv")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "o.csv").stat().st_mode) == 0o644


@pytest.mark.parametrize("name", ["../../x", "..", "a/b"])
def test_simulate_names_stay_inside_their_folder(tmp_path, name):
    result = run_cli("simulate", "--size", "small", "--out", tmp_path / "sim", "--name", name)
    assert result.returncode == 2 and "--name" in result.stderr
    assert not any(tmp_path.rglob("*.mrc"))


def test_export_name_cannot_leave_its_base(tmp_path):
    result = run_cli("export", "shrec-unet", "--base", tmp_path / "models", "--name", "..")
    assert result.returncode == 2 and "--name" in result.stderr
    assert not any(p for p in tmp_path.rglob("*") if p.is_file())


def test_a_version_made_meanwhile_is_not_renamed_over(tmp_path):
    from keras_ucaps.io.atomic import atomic_directory

    target = tmp_path / "m" / "1"
    with pytest.raises(FileExistsError):
        with atomic_directory(target) as tmp:
            (tmp / "saved_model.pb").write_text("second")
            target.mkdir(parents=True)
            (target / "saved_model.pb").write_text("first")
    assert (target / "saved_model.pb").read_text() == "first"
    assert [p.name for p in (tmp_path / "m").iterdir()] == ["1"]


def test_one_table_for_two_tomograms_is_refused(tmp_path):
    from conftest import make_sources

    from keras_ucaps.io import write_volume

    sources, registry = make_sources(2)
    registry.save(tmp_path / "classes.json")
    for s in sources:
        write_volume(tmp_path / f"{s.name}.mrc", s.volume.data, 10.0)
    write_particles(sources[0].particles, tmp_path / "t0.csv")  # names only tomogram t0
    result = run_cli("patches", "--tomogram", tmp_path / "t0.mrc", "--tomogram", tmp_path / "t1.mrc",
                     "--particles", tmp_path / "t0.csv", "--classes", tmp_path / "classes.json",
                     "--out", tmp_path / "p.h5", "--patch-size", "32")
    assert result.returncode == 2 and "t1" in result.stderr
    assert not (tmp_path / "p.h5").exists()


def test_a_float_volume_is_not_a_label_map(tmp_path):
    from conftest import make_sources

    from keras_ucaps.io import write_volume

    sources, registry = make_sources(1)
    registry.save(tmp_path / "classes.json")
    write_volume(tmp_path / "t0.mrc", sources[0].volume.data, 10.0)
    write_particles(sources[0].particles, tmp_path / "t0.csv")
    result = run_cli("patches", "--tomogram", tmp_path / "t0.mrc", "--particles", tmp_path / "t0.csv",
                     "--labels", tmp_path / "t0.mrc", "--classes", tmp_path / "classes.json",
                     "--out", tmp_path / "p.h5", "--patch-size", "32")
    assert result.returncode == 2 and "label" in result.stderr
    assert not (tmp_path / "p.h5").exists()


def test_a_star_file_with_two_particle_blocks(tmp_path):
    import pandas as pd
    import starfile

    from keras_ucaps.io import read_particles

    a = pd.DataFrame({"rlnTomoName": ["t"], "rlnCoordinateX": [1.0], "rlnCoordinateY": [2.0],
                      "rlnCoordinateZ": [3.0], "rlnClassNumber": [1]})
    starfile.write({"particles": a, "more": a.assign(rlnCoordinateX=[5.0])}, tmp_path / "two.star")
    assert read_particles(tmp_path / "two.star").coords[:, 0].tolist() == [1.0, 5.0]


@pytest.mark.parametrize("args, problem", [
    (["a=inf"], "a=inf"),
    (["a=10", "a=20"], "twice"),
    (["a=nan"], "a=nan"),
])
def test_classes_refuse_impossible_radii_and_repeats(tmp_path, args, problem):
    result = run_cli("classes", *args, "--out", tmp_path / "c.json")
    assert result.returncode == 2 and problem in result.stderr
    assert not (tmp_path / "c.json").exists()


def test_a_registry_label_beyond_int8(tmp_path):
    from keras_ucaps.classes import ClassRegistry

    (tmp_path / "c.json").write_text('{"classes": [{"name": "a", "label": 300, "radius": 30}]}')
    with pytest.raises(InputError, match="300"):
        ClassRegistry.load(tmp_path / "c.json")


def test_thresholds_that_are_not_numbers(tmp_path):
    from keras_ucaps.cli.pick import apply_thresholds

    (tmp_path / "t.json").write_text('{"thresholds": {"a": "high"}}')
    table = ParticleTable.from_columns([[1, 2, 3]], "a", "t", score=[0.5])
    with pytest.raises(InputError, match="threshold"):
        apply_thresholds(table, tmp_path / "t.json")


def test_voxel_size_nan_is_refused(tmp_path, table_csv):
    result = run_cli("convert", table_csv, tmp_path / "o.json", "--voxel-size", "nan")
    assert result.returncode == 2 and not (tmp_path / "o.json").exists()
