import h5py
import numpy as np
import pytest
from conftest import VOXEL_SIZE, make_sources

from keras_ucaps.data.patches import PatchSettings, build_patch_store
from keras_ucaps.errors import InputError


@pytest.mark.parametrize("normalization", ["robust", "tomogram z-score"])
def test_store_layout_chunks_and_metadata(tmp_path, normalization):
    import json

    from keras_ucaps.data.normalization import Normalization

    sources, classes = make_sources(3)
    summary = build_patch_store(sources, classes, VOXEL_SIZE, tmp_path / "p.h5",
                                PatchSettings(patch_size=32, normalization=normalization))
    with h5py.File(tmp_path / "p.h5") as f:
        assert f["images"].chunks == (1, 32, 32, 32) and f["images"].compression is None
        assert f["labels"].chunks == (1, 32, 32, 32) and f["labels"].compression == "lzf"
        assert f["images"].dtype == np.float16 and f["labels"].dtype == np.uint8
        assert f.attrs["voxel_size"] == VOXEL_SIZE and f.attrs["patch_size"] == 32
        n = len(f["split"])
        assert f.attrs["normalization"] == normalization
        stats = json.loads(f.attrs["tomogram_stats"])
        # Labels in each patch are the tomogram's labels at that place.
        for i in range(0, n, 7):
            t, (x, y, z) = f["tomogram"][i], f["centre"][i]
            expected = sources[t].labels[z - 16:z + 16, y - 16:y + 16, x - 16:x + 16]
            np.testing.assert_array_equal(f["labels"][i], expected)
            # Images are normalised with statistics of the whole tomogram, recorded in the store, as prediction does.
            data = sources[t].volume.data
            region = (slice(z - 16, z + 16), slice(y - 16, y + 16), slice(x - 16, x + 16))
            recorded = Normalization.from_dict(stats[sources[t].name])
            np.testing.assert_allclose(f["images"][i], recorded.apply(data[region], region), atol=2e-2)
            if normalization == "tomogram z-score":
                np.testing.assert_allclose(f["images"][i], (data[region] - data.mean()) / data.std(), atol=2e-2)
        held_out = set(f["tomogram"][f["split"][()] == 1])
    assert held_out == {2}  # split by tomogram: the last one
    assert summary["train"]["big"] > 0 and summary["validation"]["small"] > 0
    assert summary["train"]["background"] > 0


def test_single_tomogram_splits_by_region_without_overlap(tmp_path):
    sources, classes = make_sources(1, shape=(40, 48, 160))
    build_patch_store(sources, classes, VOXEL_SIZE, tmp_path / "p.h5", PatchSettings(patch_size=32))
    with h5py.File(tmp_path / "p.h5") as f:
        x, split = f["centre"][:, 0], f["split"][()]
    assert (split == 0).any() and (split == 1).any()
    train_right = (x[split == 0] + 16).max()  # patch covers [x - 16, x + 16)
    val_left = (x[split == 1] - 16).min()
    assert train_right <= val_left, "training and validation patches overlap"


def test_bad_settings_and_inputs(tmp_path):
    with pytest.raises(InputError, match="--patch-size"):
        PatchSettings(patch_size=40)
    sources, classes = make_sources(1, shape=(20, 48, 64))
    with pytest.raises(InputError, match="smaller than a 32³ patch"):
        build_patch_store(sources, classes, VOXEL_SIZE, tmp_path / "p.h5", PatchSettings(patch_size=32))
    assert not (tmp_path / "p.h5").exists()


def _negatives(sources, n=5, seed=1):
    """n points per source, as a table with class names the registry does not know."""
    from keras_ucaps.io import ParticleTable

    rng = np.random.default_rng(seed)
    tables = []
    for s in sources:
        nz, ny, nx = s.volume.shape
        tables.append(ParticleTable.from_columns(rng.uniform([0, 0, 0], [nx - 1, ny - 1, nz - 1], size=(n, 3)),
                                                 "2cg9", s.name))
    return tables


def test_negatives_get_background_patches_centred_on_them(tmp_path):
    """Patches around negatives: class -1, flagged, at the negative (no jitter; clipped to the volume), their labels
    the tomogram's; the particle and random background patches are those of a store without negatives."""
    import dataclasses

    sources, classes = make_sources(2)
    settings = PatchSettings(patch_size=32, jitter=0.0, per_negative=2)
    plain = build_patch_store(sources, classes, VOXEL_SIZE, tmp_path / "plain.h5", settings)
    negatives = _negatives(sources)
    with_negatives = [dataclasses.replace(s, negatives=t) for s, t in zip(sources, negatives, strict=True)]
    summary = build_patch_store(with_negatives, classes, VOXEL_SIZE, tmp_path / "neg.h5", settings)
    assert summary["train"]["on negatives"] == 10 and summary["validation"]["on negatives"] == 10
    assert summary["train"]["background"] == plain["train"]["background"] + 10
    assert "on negatives" not in plain["train"]
    with h5py.File(tmp_path / "plain.h5") as a, h5py.File(tmp_path / "neg.h5") as b:
        flagged = b["negative"][()] == 1
        assert (b["class"][()][flagged] == -1).all() and not a["negative"][()].any()
        np.testing.assert_array_equal(b["centre"][()][~flagged], a["centre"][()])
        for i in np.flatnonzero(flagged):
            t, (x, y, z) = b["tomogram"][i], b["centre"][i]
            nz, ny, nx = sources[t].volume.shape
            points = np.clip(np.round(negatives[t].coords), 16, [nx - 16, ny - 16, nz - 16])
            assert (np.abs(points - [x, y, z]).sum(axis=1) == 0).any()
            box = sources[t].labels[z - 16:z + 16, y - 16:y + 16, x - 16:x + 16]
            np.testing.assert_array_equal(b["labels"][i], box)
            assert b["split"][i] == (1 if t == 1 else 0)


def test_negatives_outside_the_volume_are_refused(tmp_path):
    import dataclasses

    sources, classes = make_sources(1, shape=(40, 48, 160))
    bad = _negatives(sources)[0]
    bad.coords[2] = [3.0, 4.0, 40.0]  # z = 40 in a 40-deep volume
    with pytest.raises(InputError, match="negatives.*outside.*row 3"):
        build_patch_store([dataclasses.replace(sources[0], negatives=bad)], classes, VOXEL_SIZE, tmp_path / "p.h5",
                          PatchSettings(patch_size=32))
    assert not (tmp_path / "p.h5").exists()


def test_patches_cli_cuts_negatives_of_a_simulation(tmp_path):
    """`patches --simulation DIR --simulation-negatives`: one flagged patch per distractor the simulation wrote;
    without a distractors table, or with options that disagree, a one-line error and no store."""
    from conftest import run_cli

    from keras_ucaps.io import read_particles

    sim = tmp_path / "sim"
    assert run_cli("simulate", "--shape", "48", "64", "64", "--snr", "1", "--out", sim, "--seed", "2", "--count",
                   "2").returncode == 0
    tables = sorted(sim.glob("*_distractors.csv"))
    distractors = sum(len(read_particles(t)) for t in tables)
    assert len(tables) == 2 and distractors > 0
    result = run_cli("patches", "--simulation", sim, "--simulation-negatives", "--patch-size", "32", "--out",
                     tmp_path / "p.h5")
    assert result.returncode == 0, result.stderr
    with h5py.File(tmp_path / "p.h5") as f:
        assert int(f["negative"][()].sum()) == distractors
    assert "on negatives" in result.stdout
    # --negatives: one table for two tomograms names those that have negatives (here the first only)
    tomos = sorted(t.name.removesuffix("_distractors.csv") for t in tables)
    result = run_cli("patches", *[a for t in tomos for a in ("--tomogram", sim / f"{t}.mrc")],
                     *[a for t in tomos for a in ("--particles", sim / f"{t}_particles.csv")], "--negatives", tables[0],
                     "--per-negative", "3", "--classes", sim / "classes.json", "--patch-size", "32",
                     "--out", tmp_path / "n.h5")
    assert result.returncode == 0, result.stderr
    with h5py.File(tmp_path / "n.h5") as f:
        flagged = f["negative"][()] == 1
        assert flagged.sum() == 3 * len(read_particles(tables[0])) and (f["tomogram"][()][flagged] == 0).all()

    # a RELION STAR table that names no class (negatives need none)
    import pandas as pd
    import starfile

    starfile.write({"particles": pd.DataFrame({"rlnTomoName": [tomos[0]] * 2, "rlnCoordinateX": [20.0, 30.0],
                                               "rlnCoordinateY": [20.0, 40.0], "rlnCoordinateZ": [20.0, 25.0]})},
                   tmp_path / "classless.star")
    result = run_cli("patches", *[a for t in tomos for a in ("--tomogram", sim / f"{t}.mrc")],
                     *[a for t in tomos for a in ("--particles", sim / f"{t}_particles.csv")],
                     "--negatives", tmp_path / "classless.star", "--classes", sim / "classes.json",
                     "--patch-size", "32", "--out", tmp_path / "s.h5")
    assert result.returncode == 0, result.stderr
    with h5py.File(tmp_path / "s.h5") as f:
        assert int(f["negative"][()].sum()) == 2

    for args, problem in [(["--simulation-negatives"], "applies with --simulation only"),
                          (["--simulation", sim, "--simulation-negatives", "--negatives", sim / "tomo_particles.csv"],
                           "not both")]:
        result = run_cli("patches", *args, "--classes", sim / "classes.json", "--out", tmp_path / "q.h5")
        assert result.returncode == 2 and problem in result.stderr and "Traceback" not in result.stderr
    tables[1].unlink()
    result = run_cli("patches", "--simulation", sim, "--simulation-negatives", "--out", tmp_path / "q.h5")
    assert result.returncode == 2 and tables[1].name in result.stderr
    assert not (tmp_path / "q.h5").exists()


def test_the_store_does_not_depend_on_the_order_of_the_particle_rows(tmp_path):
    """The same picks give the same store whatever order their file lists them in (copick's picks come grouped by
    class, a CSV file's in the order it was written: their stores differed from the second patch on, each patch's
    jitter drawn for another particle)."""
    import dataclasses

    sources, classes = make_sources(2)
    negatives = _negatives(sources)
    sources = [dataclasses.replace(s, negatives=t) for s, t in zip(sources, negatives, strict=True)]
    rng = np.random.default_rng(1)
    shuffled = [dataclasses.replace(s, particles=s.particles[rng.permutation(len(s.particles))],
                                    negatives=s.negatives[rng.permutation(len(s.negatives))]) for s in sources]
    settings = PatchSettings(patch_size=32)
    build_patch_store(sources, classes, VOXEL_SIZE, tmp_path / "a.h5", settings)
    build_patch_store(shuffled, classes, VOXEL_SIZE, tmp_path / "b.h5", settings)
    with h5py.File(tmp_path / "a.h5") as a, h5py.File(tmp_path / "b.h5") as b:
        for key in ("centre", "class", "tomogram", "split", "negative", "images", "labels"):
            np.testing.assert_array_equal(a[key][()], b[key][()], err_msg=key)
