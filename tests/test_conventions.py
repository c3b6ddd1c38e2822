"""Other tools' particle files and maps, read by their conventions, checked against their own code.

The references are copick's readers (``copick.util.formats``, ``copick.util.relion``: RELION's
``ParticleSet::getPosition``/``getMatrix3x3``, the TOM convention), mrcfile's header fields, and
rotation matrices written out here from each tool's documentation, never our own writer.
"""

import json

import numpy as np
import pandas as pd
import pytest
import starfile
from conftest import run_cli

from keras_ucaps.classes import ClassRegistry
from keras_ucaps.errors import InputError
from keras_ucaps.io import FormatContext, ParticleTable, read_particles, read_volume, write_particles

copick_formats = pytest.importorskip("copick.util.formats")
copick_relion = pytest.importorskip("copick.util.relion")

DEG = np.pi / 180


def rz(a):
    c, s = np.cos(a * DEG), np.sin(a * DEG)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def rx(a):
    c, s = np.cos(a * DEG), np.sin(a * DEG)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def tom_matrix(phi, psi, the):
    """TOM/DeepFinder: a reference is rotated by Rz(psi)·Rx(the)·Rz(phi) (tom_rotate's active rotation)."""
    return rz(psi) @ rx(the) @ rz(phi)


def relion_matrix(rot, tilt, psi):
    """RELION's Euler_angles2matrix (src/euler.cpp), written out."""
    ca, cb, cg = np.cos(rot * DEG), np.cos(tilt * DEG), np.cos(psi * DEG)
    sa, sb, sg = np.sin(rot * DEG), np.sin(tilt * DEG), np.sin(psi * DEG)
    cc, cs, sc, ss = cb * ca, cb * sa, sb * ca, sb * sa
    return np.array([
        [cg * cc - sg * sa, cg * cs + sg * ca, -cg * sb],
        [-sg * cc - cg * sa, -sg * cs + cg * ca, sg * sb],
        [sc, ss, cb],
    ])


def our_matrix(angles):
    return relion_matrix(*angles)


TOM_ANGLES = [(30.0, 50.0, 70.0), (-120.0, 15.0, 100.0), (200.0, 140.0, -35.0)]  # (phi, psi, the)


def test_relion_matrix_is_what_copick_calls_relions(tmp_path):
    # the written-out RELION matrix equals copick's reading of RELION angles (object → tomogram)
    angles = np.array([[10.0, 60.0, -20.0], [150.0, 100.0, 45.0]])
    df = pd.DataFrame({"rlnAngleRot": angles[:, 0], "rlnAngleTilt": angles[:, 1], "rlnAnglePsi": angles[:, 2]})
    rotations, _ = copick_relion.relion_rows_to_poses(df)
    for a, r in zip(angles, rotations, strict=True):
        np.testing.assert_allclose(relion_matrix(*a), r, atol=1e-12)


def _deepfinder_xml(path, rows, with_tomo_idx=True):
    lines = ["<objlist>"]
    for i, (x, y, z, phi, psi, the) in enumerate(rows):
        tomo = ' tomo_idx="0"' if with_tomo_idx else ""
        lines.append(f'  <object{tomo} obj_id="{i}" class_label="1" x="{x}" y="{y}" z="{z}" '
                     f'phi="{phi}" psi="{psi}" the="{the}" cluster_size="{10 + i}"/>')
    lines.append("</objlist>")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_deepfinder_angles_are_the_tom_rotation(tmp_path):
    rows = [(10.0 + i, 20.0, 30.0, *a) for i, a in enumerate(TOM_ANGLES)]
    table = read_particles(_deepfinder_xml(tmp_path / "df.xml", rows))
    _, copick_tf = copick_formats.em_to_copick_transform(np.zeros((3, 3)), np.array(
        [[phi, the, psi] for phi, psi, the in TOM_ANGLES]), 1.0)
    for angles, (phi, psi, the), reference in zip(table.angles, TOM_ANGLES, copick_tf, strict=True):
        np.testing.assert_allclose(our_matrix(angles), tom_matrix(phi, psi, the), atol=1e-9)
        np.testing.assert_allclose(our_matrix(angles), reference[:3, :3], atol=1e-9)
    # and back: the angles we write for a RELION rotation are the TOM angles of the same matrix
    ours = ParticleTable.from_columns([[1, 2, 3]], "1", "0", angles=[[25.0, 70.0, -110.0]])
    write_particles(ours, tmp_path / "out.xml", context=FormatContext(classes=ClassRegistry.from_radii({"1": 50})))
    import xml.etree.ElementTree as ET

    obj = ET.parse(tmp_path / "out.xml").getroot().find("object")
    phi, psi, the = (float(obj.get(k)) for k in ("phi", "psi", "the"))
    np.testing.assert_allclose(tom_matrix(phi, psi, the), relion_matrix(25.0, 70.0, -110.0), atol=1e-9)


def test_deepfinder_angles_reach_copick_matrices(tmp_path):
    rows = [(10.0, 20.0, 30.0, *TOM_ANGLES[0])]
    _deepfinder_xml(tmp_path / "df.xml", rows)
    result = run_cli("convert", tmp_path / "df.xml", tmp_path / "picks", "--voxel-size", "10")
    assert result.returncode == 0, result.stderr
    payload = json.loads(next((tmp_path / "picks").rglob("*.json")).read_text())
    matrix = np.array(payload["points"][0]["transformation_"])[:3, :3]
    np.testing.assert_allclose(matrix, tom_matrix(*TOM_ANGLES[0]), atol=1e-9)


def test_deepfinder_cluster_output_has_no_tomo_idx(tmp_path):
    # DeepFinder's Cluster step writes objects without tomo_idx (its reader treats it as optional)
    path = _deepfinder_xml(tmp_path / "objlist_tomo7.xml", [(5.0, 6.0, 7.0, 0, 0, 0)], with_tomo_idx=False)
    table = read_particles(path)
    assert table.tomo.tolist() == ["objlist_tomo7"] and table.score.tolist() == [10.0]
    bad = tmp_path / "bad.xml"
    bad.write_text('<objlist><object tomo_idx="0" class_label="1.7" x="1" y="2" z="3"/></objlist>')
    with pytest.raises(InputError, match="class_label"):
        read_particles(bad)


def _relion_tables(tmp_path):
    rng = np.random.default_rng(3)
    n = 5
    particles = pd.DataFrame({
        "rlnTomoName": ["TS_01"] * n,
        "rlnCoordinateX": rng.uniform(500, 3000, n), "rlnCoordinateY": rng.uniform(500, 3000, n),
        "rlnCoordinateZ": rng.uniform(200, 800, n),
        "rlnOriginXAngst": rng.uniform(-20, 20, n), "rlnOriginYAngst": rng.uniform(-20, 20, n),
        "rlnOriginZAngst": rng.uniform(-20, 20, n),
        "rlnAngleRot": rng.uniform(-180, 180, n), "rlnAngleTilt": rng.uniform(10, 170, n),
        "rlnAnglePsi": rng.uniform(-180, 180, n),
        "rlnTomoSubtomogramRot": rng.uniform(-180, 180, n), "rlnTomoSubtomogramTilt": rng.uniform(10, 170, n),
        "rlnTomoSubtomogramPsi": rng.uniform(-180, 180, n),
        "rlnClassNumber": [1] * n, "rlnOpticsGroup": [1] * n,
    })
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnOpticsGroupName": ["optics1"],
                           "rlnTomoTiltSeriesPixelSize": [1.35], "rlnImagePixelSize": [5.4]})
    return particles, optics


def test_relion4_origins_and_subtomogram_orientations(tmp_path):
    particles, optics = _relion_tables(tmp_path)
    starfile.write({"optics": optics, "particles": particles}, tmp_path / "run_data.star")
    voxel_size = 1.35 * 8
    table = read_particles(tmp_path / "run_data.star", context=FormatContext(voxel_size=voxel_size))
    angst = copick_formats.relion_coordinates_to_angstrom(particles, optics=optics)
    rotations, offsets = copick_relion.relion_rows_to_poses(particles)
    np.testing.assert_allclose(table.coords, (angst - offsets) / voxel_size, atol=1e-4)
    for angles, reference in zip(table.angles, rotations, strict=True):
        np.testing.assert_allclose(our_matrix(angles), reference, atol=1e-6)


def test_relion3_pixel_origins(tmp_path):
    frame = pd.DataFrame({"rlnMicrographName": ["t.mrc"], "rlnCoordinateX": [100.0], "rlnCoordinateY": [50.0],
                          "rlnCoordinateZ": [20.0], "rlnOriginX": [2.5], "rlnOriginY": [-1.0], "rlnOriginZ": [0.5],
                          "rlnClassNumber": [1]})
    starfile.write(frame, tmp_path / "p.star")
    table = read_particles(tmp_path / "p.star")
    np.testing.assert_allclose(table.coords, [[97.5, 51.0, 19.5]])


def test_relion5_origins_orientations_and_tomograms_star_centre(tmp_path):
    particles, optics = _relion_tables(tmp_path)
    centred = particles.drop(columns=["rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ"])
    for axis in "XYZ":
        centred[f"rlnCenteredCoordinate{axis}Angst"] = np.random.default_rng(4).uniform(-2000, 2000, len(centred))
    starfile.write({"optics": optics, "particles": centred}, tmp_path / "run_data.star")
    # pytom's example: 4000 px at 1.35 Å, reconstructed at 10.9628775 Å (binning 8.12065) → 493 voxels
    tomograms = pd.DataFrame({"rlnTomoName": ["TS_01"], "rlnTomoSizeX": [4000], "rlnTomoSizeY": [4000],
                              "rlnTomoSizeZ": [1000], "rlnTomoTiltSeriesPixelSize": [1.35],
                              "rlnTomoTomogramBinning": [8.12065]})
    starfile.write({"global": tomograms}, tmp_path / "tomograms.star")
    voxel_size = 1.35 * 8.12065
    rotations, offsets = copick_relion.relion_rows_to_poses(centred)
    centres = copick_formats.read_relion5_tomogram_centers(str(tmp_path / "tomograms.star"))
    angst = copick_formats.relion_coordinates_to_angstrom(centred, tomogram_centers=centres)
    expected = (angst - offsets) / voxel_size
    result = run_cli("convert", tmp_path / "run_data.star", tmp_path / "out.csv", "--tomograms-star",
                     tmp_path / "tomograms.star")
    assert result.returncode == 0, result.stderr
    out = pd.read_csv(tmp_path / "out.csv")
    np.testing.assert_allclose(out[["x", "y", "z"]].to_numpy(), expected, atol=1e-4)
    for angles, reference in zip(out[["rot", "tilt", "psi"]].to_numpy(), rotations, strict=True):
        np.testing.assert_allclose(our_matrix(angles), reference, atol=1e-5)
    # a fractional size in voxels gives the same centre
    size = [4000 * 1.35 / voxel_size, 4000 * 1.35 / voxel_size, 1000 * 1.35 / voxel_size]
    table = read_particles(tmp_path / "run_data.star",
                           context=FormatContext(voxel_size=voxel_size, tomogram_size=tuple(size)))
    np.testing.assert_allclose(table.coords, expected, atol=1e-4)
    float_size = run_cli("convert", tmp_path / "run_data.star", tmp_path / "out2.csv", "--voxel-size",
                         str(voxel_size), "--tomogram-size", *map(str, size))
    assert float_size.returncode == 0, float_size.stderr


def test_relion4_output_states_its_pixel_size(tmp_path):
    table = ParticleTable.from_columns([[10.0, 20.0, 30.0]], "a", "TS_01", angles=[[10.0, 20.0, 30.0]])
    write_particles(table, tmp_path / "out.star", "relion4", FormatContext(voxel_size=10.0))
    df, optics = copick_formats.read_star_particles_with_optics(str(tmp_path / "out.star"))
    assert optics is not None
    np.testing.assert_allclose(copick_formats.relion_coordinates_to_angstrom(df, optics=optics), [[100, 200, 300]])
    back = read_particles(tmp_path / "out.star", context=FormatContext(voxel_size=10.0))
    np.testing.assert_allclose(back.coords, table.coords)


def test_warp_fractional_coordinates(tmp_path):
    frame = pd.DataFrame({"rlnMicrographName": ["TS_1.tomostar"] * 2, "rlnCoordinateX": [0.25, 0.5],
                          "rlnCoordinateY": [0.5, 0.1], "rlnCoordinateZ": [0.5, 0.75],
                          "rlnAutopickFigureOfMerit": [5.0, 6.0]})
    starfile.write(frame, tmp_path / "TS_1_matches.star")
    table = read_particles(tmp_path / "TS_1_matches.star",
                           context=FormatContext(tomogram_size=(400, 200, 100), default_class="ribo"))
    np.testing.assert_allclose(table.coords, [[100, 100, 50], [200, 20, 75]])
    with pytest.raises(InputError, match="--tomogram"):
        read_particles(tmp_path / "TS_1_matches.star", context=FormatContext(default_class="ribo"))


def _copick_file(path, points, **fields):
    payload = {"pickable_object_name": "ribosome", "user_id": "u", "session_id": "1", "run_name": "TS_1",
               "points": points, **fields}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload))
    return path


def _point(x=100.0, matrix=None, score=None, instance_id=None):
    point = {"location": {"x": x, "y": 200.0, "z": 300.0}}
    if matrix is not None:
        point["transformation_"] = matrix
    if score is not None:
        point["score"] = score
    if instance_id is not None:
        point["instance_id"] = instance_id
    return point


def test_copick_object_names_are_mapped_to_what_copick_allows(tmp_path):
    from copick.util.escape import sanitize_name

    table = ParticleTable.from_columns([[1, 2, 3], [4, 5, 6]], ["large_ribosome", "fatty acid"], "TS_1")
    result_dir = tmp_path / "picks"
    with pytest.warns(UserWarning) as warned:
        write_particles(table, result_dir, "copick", FormatContext(voxel_size=10.0))
    assert {"large_ribosome → large-ribosome", "fatty acid → fatty-acid"} <= {
        str(w.message).split("class ")[-1] for w in warned}
    names = sorted(p.name for p in result_dir.rglob("*.json"))
    expected = sorted(f"keras-ucaps_0_{sanitize_name(n, suppress_warnings=True)}.json"
                      for n in ("large_ribosome", "fatty acid"))
    assert names == expected
    for path in result_dir.rglob("*.json"):
        user, session, obj = path.stem.split("_")
        assert json.loads(path.read_text())["pickable_object_name"] == obj
    write_particles(table, tmp_path / "in.csv")
    cli = run_cli("convert", tmp_path / "in.csv", tmp_path / "picks2", "--voxel-size", "10")
    assert cli.returncode == 0 and "large_ribosome → large-ribosome" in cli.stdout + cli.stderr


def test_copick_untrusted_orientation_instance_and_run_name(tmp_path):
    identity = np.eye(4).tolist()
    path = _copick_file(tmp_path / "loose" / "picks.json",
                        [_point(matrix=identity, score=1.0, instance_id=3), _point(x=50.0, matrix=identity, score=1.0)],
                        trust_orientation=False, run_name=None)
    table = read_particles(path, context=FormatContext(voxel_size=10.0))
    assert not np.isfinite(table.angles).any()  # untrusted: unknown, not 0, 0, 0
    assert not np.isfinite(table.score).any()  # copick's default score of manual picks, not a confidence
    assert set(table.tomo) == {"picks"}  # the file's stem, not the folder "loose"
    assert sorted(table.instance.tolist()) == [0, 3]
    write_particles(table, tmp_path / "out" / "one.json", "copick", FormatContext(voxel_size=10.0))
    written = json.loads((tmp_path / "out" / "one.json").read_text())
    assert sorted(p["instance_id"] for p in written["points"]) == [0, 3]
    assert written["trust_orientation"] is False
    write_particles(table, tmp_path / "t.csv")
    assert sorted(read_particles(tmp_path / "t.csv").instance.tolist()) == [0, 3]


@pytest.mark.parametrize("point, problem", [
    (_point(matrix=(np.eye(4) * [2, 1, 1, 1]).tolist()), "not a rotation"),
    (_point(matrix=[[1, 0, 0, 0], None, [0, 0, 1, 0], [0, 0, 0, 1]]), "transformation_"),
    (_point(score="high"), "score"),
])
def test_copick_bad_points_are_one_line_errors(tmp_path, point, problem):
    path = _copick_file(tmp_path / "p.json", [point])
    with pytest.raises(InputError, match=problem):
        read_particles(path, context=FormatContext(voxel_size=10.0))


def test_copick_folder_garbled_file_is_an_error(tmp_path):
    root = tmp_path / "proj"
    _copick_file(root / "ExperimentRuns" / "TS_1" / "Picks" / "u_1_ribosome.json", [_point()])
    bad = root / "ExperimentRuns" / "TS_1" / "Picks" / "u_1_proteasome.json"
    bad.write_text('{"pickable_object_name": "proteasome", "points": [')
    result = run_cli("convert", root, tmp_path / "out.csv", "--voxel-size", "10")
    assert result.returncode == 2 and "u_1_proteasome.json" in result.stderr
    assert not (tmp_path / "out.csv").exists()


def test_copick_folder_rewrite_leaves_no_stale_files(tmp_path):
    out = tmp_path / "picks"
    first = ParticleTable.from_columns([[1, 2, 3], [4, 5, 6]], ["a", "b"], ["TS_1", "TS_2"])
    write_particles(first, out, "copick", FormatContext(voxel_size=10.0))
    second = ParticleTable.from_columns([[7, 8, 9]], ["a"], ["TS_1"])
    write_particles(second, out, "copick", FormatContext(voxel_size=10.0))
    back = read_particles(out, "copick", FormatContext(voxel_size=10.0))
    assert len(back) == 1 and back.tomo.tolist() == ["TS_1"]


def test_copick_folder_write_failure_leaves_nothing(tmp_path, monkeypatch):
    from keras_ucaps.io.formats import copick as handler

    out = tmp_path / "picks"
    table = ParticleTable.from_columns([[1, 2, 3], [4, 5, 6]], ["a", "b"], ["TS_1", "TS_2"])
    calls = []
    real = handler._payload

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(handler, "_payload", failing)
    with pytest.raises(OSError):
        write_particles(table, out, "copick", FormatContext(voxel_size=10.0))
    assert not out.exists() or not any(out.rglob("*.json"))


def _raw_mrc(path, data, mode, mapcrs=(1, 2, 3), dmax=None, nxstart=(0, 0, 0)):
    import mrcfile

    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(data)
        mrc.voxel_size = 10.0
        mrc.header.mapc, mrc.header.mapr, mrc.header.maps = mapcrs
        mrc.header.nxstart, mrc.header.nystart, mrc.header.nzstart = nxstart
        if dmax is not None:
            mrc.header.dmax = dmax
    return path


def test_mrc_mode0_unsigned_bytes(tmp_path):
    import mrcfile

    values = np.array([0, 100, 200, 255], dtype=np.uint8).reshape(1, 2, 2).repeat(2, 0)
    path = tmp_path / "u8.mrc"
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(values.view(np.int8))  # mode 0 bytes, as an unsigned-byte writer leaves them
        mrc.voxel_size = 10.0
        mrc.header.dmin, mrc.header.dmax = 0, 255
    volume = read_volume(path)
    np.testing.assert_array_equal(volume.data, values)
    signed = tmp_path / "s8.mrc"
    with mrcfile.new(signed, overwrite=True) as mrc:
        mrc.set_data(np.array([-5, 3], dtype=np.int8).reshape(1, 1, 2))
        mrc.voxel_size = 10.0
    assert read_volume(signed).data.min() == -5


def test_mrc_axis_order_other_than_x_y_z(tmp_path):
    import mrcfile

    zyx = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)  # (z, y, x)
    # EMD-3001 style: MAPC=3, MAPR=2, MAPS=1 (columns along z, sections along x): stored array is (x, y, z)
    path = tmp_path / "zyx.map"
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(np.ascontiguousarray(zyx.transpose(2, 1, 0)))
        mrc.voxel_size = 10.0
        mrc.header.mapc, mrc.header.mapr, mrc.header.maps = 3, 2, 1
    np.testing.assert_array_equal(read_volume(path).data, zyx)


def test_targets_keep_the_tomograms_origin_and_start(tmp_path):
    import mrcfile

    data = np.random.default_rng(0).normal(size=(16, 20, 24)).astype(np.float32)
    tomo = tmp_path / "tomo.mrc"
    with mrcfile.new(tomo, overwrite=True) as mrc:
        mrc.set_data(data)
        mrc.voxel_size = 10.0
        mrc.header.origin = (100.0, 200.0, 300.0)
        mrc.header.nxstart, mrc.header.nystart, mrc.header.nzstart = 8, 16, 4
    pd.DataFrame({"tomo": ["tomo"], "class_name": ["a"], "x": [10.0], "y": [10], "z": [8]}).to_csv(
        tmp_path / "p.csv", index=False)
    ClassRegistry.from_radii({"a": 30.0}).save(tmp_path / "classes.json")
    result = run_cli("targets", tmp_path / "p.csv", "--tomogram", tomo, "--classes", tmp_path / "classes.json",
                     "--out", tmp_path / "labels.mrc")
    assert result.returncode == 0, result.stderr
    with mrcfile.open(tmp_path / "labels.mrc") as mrc:
        assert tuple(float(mrc.header.origin[a]) for a in "xyz") == (100.0, 200.0, 300.0)
        assert (int(mrc.header.nxstart), int(mrc.header.nystart), int(mrc.header.nzstart)) == (8, 16, 4)


def test_voxel_size_zero_blames_the_input_tomogram(tmp_path):
    import mrcfile

    tomo = tmp_path / "tomo.mrc"
    with mrcfile.new(tomo, overwrite=True) as mrc:
        mrc.set_data(np.zeros((8, 8, 8), dtype=np.float32))
    pd.DataFrame({"class_name": ["a"], "x": [1.0], "y": [1], "z": [1]}).to_csv(tmp_path / "p.csv", index=False)
    ClassRegistry.from_radii({"a": 30.0}).save(tmp_path / "classes.json")
    result = run_cli("targets", tmp_path / "p.csv", "--tomogram", tomo, "--classes", tmp_path / "classes.json",
                     "--out", tmp_path / "labels.mrc")
    assert result.returncode == 2
    assert "tomo.mrc" in result.stderr and "labels.mrc" not in result.stderr


def test_csv_with_a_cut_off_last_row(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("tomo,class_name,x,y,z,rot,tilt,psi,score\nt,a,1,2,3,10,20,30,0.5\nt,a,4,5,6,10")
    with pytest.raises(InputError, match="row 2"):
        read_particles(path)


@pytest.mark.parametrize("voxel_size", [-10.0, float("nan")])
def test_a_voxel_size_that_is_not_a_size_blames_the_input(tmp_path, voxel_size):
    import mrcfile

    tomo = tmp_path / "tomo.mrc"
    with mrcfile.new(tomo, overwrite=True) as mrc:
        mrc.set_data(np.zeros((8, 8, 8), dtype=np.float32))
        mrc.voxel_size = voxel_size
    with pytest.raises(InputError, match="tomo.mrc: header voxel size"):
        read_volume(tomo)


def test_a_tomogram_without_voxel_size_is_named_not_the_output(tmp_path):
    import mrcfile

    with mrcfile.new(tmp_path / "tomo.mrc") as mrc:
        mrc.set_data(np.zeros((8, 8, 8), dtype=np.float32))
    write_particles(ParticleTable.from_columns([[1.0, 2.0, 3.0]], "a", "tomo"), tmp_path / "p.csv")
    result = run_cli("convert", tmp_path / "p.csv", tmp_path / "out.json", "--tomogram", tmp_path / "tomo.mrc")
    assert result.returncode == 2 and "tomo.mrc: no voxel size in the header" in result.stderr
    assert "out.json" not in result.stderr
