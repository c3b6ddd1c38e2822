"""The command line as a user meets it: help, convert, targets, and bad input."""

import subprocess
import sys

import mrcfile
import numpy as np
import pytest
from conftest import VOXEL_SIZE, run_cli

from keras_ucaps.io import FormatContext, read_particles, read_volume, write_particles, write_volume


def test_help_lists_commands_without_importing_tensorflow():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("convert", "targets", "classes"):
        assert command in result.stdout
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, keras_ucaps.cli, keras_ucaps.io, keras_ucaps.data.targets;"
         "print(sorted(m for m in ('tensorflow', 'keras', 'jax') if m in sys.modules))"],
        capture_output=True, text=True, check=True,
    )
    assert probe.stdout.strip() == "[]"


def test_classes_convert_and_targets_work_together(tmp_path, tomogram, table):
    assert run_cli("classes", "proteasome=40", "ribosome=60", "--out", tmp_path / "classes.json").returncode == 0
    write_particles(table, tmp_path / "picks.csv")
    result = run_cli("convert", tmp_path / "picks.csv", tmp_path / "picks.star", "--to", "relion5",
                     "--tomogram", tomogram)
    assert result.returncode == 0, result.stderr
    assert "wrote 3 particles" in result.stdout
    back = read_particles(tmp_path / "picks.star", context=FormatContext(voxel_size=VOXEL_SIZE,
                                                                         tomogram_size=(40, 32, 24)))
    np.testing.assert_allclose(back.sorted().coords, table.sorted().coords, atol=1e-4)

    result = run_cli("targets", tmp_path / "picks.star", "--tomogram", tomogram, "--classes",
                     tmp_path / "classes.json", "--out", tmp_path / "labels.mrc")
    assert result.returncode == 0, result.stderr
    labels = read_volume(tmp_path / "labels.mrc")
    assert labels.voxel_size == VOXEL_SIZE and labels.origin == (5.0, 6.0, 7.0)
    assert labels.data[8, 12, 10] == 1 and labels.data[12, 20, 30] == 2  # (z, y, x) of the particles


def _mrc(path, data, voxel_size=VOXEL_SIZE):
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(np.asarray(data, dtype=np.float32))
        mrc.voxel_size = voxel_size
    return path


def _case(tmp_path, name, table, classes):
    """Return (args, file named in the error) for one bad-input case of `targets`."""
    good = _mrc(tmp_path / "tomo.mrc", np.zeros((24, 32, 40)))
    reg = classes.save(tmp_path / "classes.json")
    picks = write_particles(table, tmp_path / "picks.csv")
    tomo = good
    if name == "missing":
        tomo = tmp_path / "absent.mrc"
    elif name == "corrupt":
        tomo = tmp_path / "corrupt.mrc"
        tomo.write_bytes(good.read_bytes()[:2000])
    elif name == "not-3d":
        tomo = _mrc(tmp_path / "flat.mrc", np.zeros((32, 40)))
    elif name == "nan":
        data = np.zeros((24, 32, 40))
        data[3, 4, 5] = np.nan
        with pytest.warns(RuntimeWarning):
            tomo = _mrc(tmp_path / "nan.mrc", data)
    elif name == "missing-column":
        picks.write_text("tomo,class_name,x,y\ntomo,ribosome,1,2\n")
    elif name == "outside":
        picks.write_text("tomo,class_name,x,y,z\ntomo,ribosome,10,10,99\n")
    elif name == "unknown-class":
        picks.write_text("tomo,class_name,x,y,z\ntomo,chaperone,10,10,10\n")
    elif name == "voxel-size":
        tomo = _mrc(tmp_path / "binned.mrc", np.zeros((24, 32, 40)), voxel_size=20.0)
        return ["targets", picks, "--tomogram", tomo, "--classes", reg, "--voxel-size", "10",
                "--out", tmp_path / "out.mrc"], tomo
    return ["targets", picks, "--tomogram", tomo, "--classes", reg, "--out", tmp_path / "out.mrc"], {
        "missing-column": picks, "outside": picks, "unknown-class": picks}.get(name, tomo)


@pytest.mark.parametrize("name, message", [
    ("missing", "no such file"),
    ("corrupt", "not a readable MRC file"),
    ("not-3d", "expected a 3D volume"),
    ("nan", "NaN or Inf"),
    ("missing-column", "missing column"),
    ("outside", "outside"),
    ("unknown-class", "unknown class 'chaperone'"),
    ("voxel-size", "differs from --voxel-size"),
])
def test_bad_input_gives_one_line_exit_2_and_no_output(tmp_path, classes, table, name, message):
    args, culprit = _case(tmp_path, name, table, classes)
    result = run_cli(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"Error: {culprit}: ") and message in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out.mrc").exists()
    assert not [p for p in tmp_path.iterdir() if ".part" in p.name]


def test_convert_bad_input(tmp_path, table):
    picks = write_particles(table, tmp_path / "picks.csv")
    result = run_cli("convert", picks, tmp_path / "picks.json")
    assert result.returncode == 2 and "give the voxel size" in result.stderr
    result = run_cli("convert", picks, tmp_path / "out.star", "--to", "relion5", "--voxel-size", "10")
    assert result.returncode == 2 and "relative to the tomogram's size" in result.stderr
    assert not (tmp_path / "out.star").exists()
    tomo = write_volume(tmp_path / "t.mrc", np.zeros((2, 2, 2)), 12.0)
    result = run_cli("convert", picks, tmp_path / "out.star", "--tomogram", tomo, "--voxel-size", "10")
    assert result.returncode == 2 and f"{tomo}: voxel size 12 Å in the header differs" in result.stderr
