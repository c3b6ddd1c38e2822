"""Fault contract of the command line, generated from the command registry: every float option of every
command refuses NaN and ±infinity (exit 2, naming the option) before any work, instead of passing them on (a
range check lets NaN through: every comparison with NaN is false)."""

import click
import pytest
from click.testing import CliRunner

from keras_ucaps.cli import main


def float_options():
    for name, command in sorted(main.commands.items()):
        for param in command.params:
            if isinstance(param, click.Option) and isinstance(param.type, click.types.FloatParamType):
                yield name, param


CASES = [(name, param.opts[0], param.nargs, value) for name, param in float_options()
         for value in ("nan", "inf", "-inf")]


def test_the_registry_has_float_options_to_check():
    assert len({(name, option) for name, option, _, _ in CASES}) >= 20


@pytest.mark.parametrize("command, option, nargs, value", CASES, ids=[f"{c}{o}={v}" for c, o, _, v in CASES])
def test_a_float_option_refuses_what_is_not_a_finite_number(tmp_path, command, option, nargs, value):
    result = CliRunner().invoke(main, [command, option, *[value] * nargs], catch_exceptions=True)
    assert result.exit_code == 2, (result.output, result.exception)
    assert f"'{option}'" in result.output and "finite" in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)  # no traceback


@pytest.mark.parametrize("command", [
    ["simulate", "--size", "small", "--out", "{target}"],
    ["fit", "--data", "{store}", "--out", "{target}", "--epochs", "1"],
    ["predict", "shrec-unet", "{tomogram}", "--out", "{target}"],
], ids=lambda c: c[0])
@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_an_output_folder_that_is_a_file_is_refused_in_one_line(tmp_path, store, tomogram, command, where):
    """simulate and fit raised FileExistsError (a traceback) where --out named an existing file."""
    (tmp_path / "afile").write_text("kept")
    target = tmp_path / "afile" if where == "a file" else tmp_path / "afile" / "run"
    args = [a.format(target=target, store=store, tomogram=tomogram) for a in command]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, (result.stderr, result.exception)
    assert "afile" in result.stderr and (tmp_path / "afile").read_text() == "kept"


@pytest.mark.parametrize("option", ["--report", "--json"])
@pytest.mark.parametrize("target", ["/dev/null", "a folder"])
def test_evaluate_refuses_an_output_it_cannot_write_before_printing_scores(tmp_path, table, option, target):
    """evaluate checked --report only after printing the scores (and /dev/null got as far as the PNG writer)."""
    from keras_ucaps.io import write_particles

    write_particles(table, tmp_path / "truth.csv")
    (tmp_path / "classes.json").write_text('{"classes": [{"name": "proteasome", "label": 1, "radius": 40},'
                                           ' {"name": "ribosome", "label": 2, "radius": 60}]}')
    if target == "a folder":
        (tmp_path / "out").mkdir()
    path = "/dev/null" if target == "/dev/null" else str(tmp_path / "out")
    result = CliRunner().invoke(main, ["evaluate", str(tmp_path / "truth.csv"), str(tmp_path / "truth.csv"),
                                       "--voxel-size", "10", option, path])
    assert result.exit_code == 2 and result.stdout == "", (result.stdout, result.stderr)
    assert len(result.stderr.strip().splitlines()) == 1


def test_convert_refuses_a_voxel_size_that_the_tomograms_star_contradicts(tmp_path, table):
    """--voxel-size 10 against a tomograms.star stating 3.5 Å × binning 4 = 14 Å won silently before."""
    import pandas as pd
    import starfile

    from keras_ucaps.io import write_particles

    write_particles(table, tmp_path / "picks.csv")
    starfile.write({"global": pd.DataFrame({"rlnTomoName": ["tomo"], "rlnTomoSizeX": [4000], "rlnTomoSizeY": [4000],
                                            "rlnTomoSizeZ": [1000], "rlnTomoTiltSeriesPixelSize": [3.5],
                                            "rlnTomoTomogramBinning": [4.0]})}, tmp_path / "tomograms.star")
    args = ["convert", str(tmp_path / "picks.csv"), str(tmp_path / "out.star"), "--to", "relion5",
            "--tomograms-star", str(tmp_path / "tomograms.star")]
    result = CliRunner().invoke(main, [*args, "--voxel-size", "10"])
    assert result.exit_code == 2 and "tomograms.star: states tomograms at 14 Å" in result.stderr, result.stderr
    assert not (tmp_path / "out.star").exists()
    assert CliRunner().invoke(main, [*args, "--voxel-size", "14"]).exit_code == 0


def test_a_copick_folder_written_whole_gets_the_permissions_of_the_umask(tmp_path, table):
    """Its top folder was made 0700 whatever the umask (the staging folder renamed into place), its subfolders
    and files 0755 and 0644."""
    import os
    import stat

    from keras_ucaps.io import FormatContext, write_particles

    old = os.umask(0o022)
    try:
        write_particles(table, tmp_path / "project", "copick", FormatContext(voxel_size=10.0))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "project").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "project" / "ExperimentRuns").stat().st_mode) == 0o755


def test_an_input_error_is_one_line_whatever_the_parsers_message_holds():
    """A STAR row cut short gave a two-line error: starfile's message carries a newline."""
    from keras_ucaps.errors import InputError

    err = InputError("picks.star", "not a readable STAR file (ValueError: expected 10 fields\n  in line 7)")
    assert "\n" not in str(err) and str(err) == "picks.star: not a readable STAR file (ValueError: expected 10 " \
                                                "fields in line 7)"


@pytest.mark.parametrize("fault", ["a truncated second tomogram", "a symbolic link as --pick"])
def test_predict_checks_every_input_before_the_first_tomogram(tmp_path, fault):
    """predict wrote the first tomogram's maps, then stopped on the second (or on --pick's path)."""
    import numpy as np
    from conftest import metadata

    from keras_ucaps.io import write_volume
    from keras_ucaps.models import UNet3D

    UNet3D(3, filters=(4, 8), bottom_convs=1, metadata=metadata()).save(tmp_path / "m.keras")
    rng = np.random.default_rng(0)
    good = write_volume(tmp_path / "good.mrc", rng.normal(size=(16, 24, 24)), 10.0)
    second = write_volume(tmp_path / "second.mrc", rng.normal(size=(16, 24, 24)), 10.0)
    args = ["predict", str(tmp_path / "m.keras"), str(good), str(second), "--out", str(tmp_path / "maps")]
    if fault == "a truncated second tomogram":
        second.write_bytes(second.read_bytes()[:2000])
    else:
        (tmp_path / "elsewhere.csv").write_text("")
        (tmp_path / "link.csv").symlink_to(tmp_path / "elsewhere.csv")
        args += ["--pick", str(tmp_path / "link.csv")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, (result.stderr, result.exception)
    assert not (tmp_path / "maps").exists()


def test_a_copick_write_over_a_folder_in_a_pick_files_place_is_refused_and_writes_nothing(tmp_path, table):
    """convert CSV DIR --to copick raised IsADirectoryError where a pick file's path was a folder, after moving
    in the picks of the runs before it: the write was not all-or-nothing."""
    from keras_ucaps.io import FormatContext, write_particles

    context = FormatContext(voxel_size=10.0)
    write_particles(table, tmp_path / "project", "copick", context)
    files = sorted((tmp_path / "project").rglob("*.json"))
    before = {p: p.read_bytes() for p in files}
    blocked = files[-1]
    blocked.unlink()
    blocked.mkdir()  # a folder where the second write puts a pick file
    del before[blocked]
    moved = table.replace(coords=table.coords + 1.0)
    result = CliRunner().invoke(main, ["convert", str(_csv(tmp_path, moved)), str(tmp_path / "project"), "--to",
                                       "copick", "--voxel-size", "10"])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, (result.stderr, result.exception)
    assert {p: p.read_bytes() for p in before} == before and blocked.is_dir()


def _csv(folder, table):
    from keras_ucaps.io import write_particles

    return write_particles(table, folder / "moved.csv")
