import numpy as np
import pytest

from keras_ucaps.classes import ClassRegistry
from keras_ucaps.data.targets import sphere_targets
from keras_ucaps.errors import InputError
from keras_ucaps.io import ParticleTable


def test_ball_has_class_label_and_radius():
    classes = ClassRegistry.from_radii({"a": 30.0, "b": 50.0})
    table = ParticleTable.from_columns([[20, 20, 20]], "b", "t")
    labels = sphere_targets(table, (40, 40, 40), classes, voxel_size=10.0)
    assert labels[20, 20, 20] == 2
    assert labels[20, 20, 25] == 2 and labels[20, 20, 26] == 0  # radius 5 voxels along x
    zz, yy, xx = np.mgrid[:40, :40, :40]
    expected = ((zz - 20) ** 2 + (yy - 20) ** 2 + (xx - 20) ** 2) <= 25
    np.testing.assert_array_equal(labels == 2, expected)


def test_overlap_goes_to_the_nearest_centre_whatever_the_order():
    classes = ClassRegistry.from_radii({"a": 60.0, "b": 60.0})
    coords = [[10, 10, 10], [16, 10, 10]]
    for order in ([0, 1], [1, 0]):
        table = ParticleTable.from_columns(np.array(coords)[order], np.array(["a", "b"])[order], "t")
        labels = sphere_targets(table, (20, 20, 30), classes, voxel_size=10.0)
        assert labels[10, 10, 12] == 1 and labels[10, 10, 14] == 2  # x=12 nearer a, x=14 nearer b
        assert labels[10, 10, 4] == 1 and labels[10, 10, 22] == 2


def test_partly_outside_particles_are_clipped_not_dropped():
    classes = ClassRegistry.from_radii({"a": 40.0})
    table = ParticleTable.from_columns([[0, 0, 0], [9, 9, 9]], "a", "t")
    labels = sphere_targets(table, (10, 10, 10), classes, voxel_size=10.0)
    assert labels[0, 0, 0] == 1 and labels[9, 9, 9] == 1
    assert labels[0, 0, 4] == 1 and labels[0, 0, 5] == 0


def test_centres_outside_the_volume_and_unknown_classes_are_errors(classes):
    outside = ParticleTable.from_columns([[5, 5, 5], [50, 5, 5]], "ribosome", "t")
    with pytest.raises(InputError, match=r"picks.star: 1 particle\(s\) lie outside"):
        sphere_targets(outside, (10, 10, 10), classes, 10.0, source="picks.star")
    unknown = ParticleTable.from_columns([[5, 5, 5]], "chaperone", "t")
    with pytest.raises(InputError, match="unknown class 'chaperone'"):
        sphere_targets(unknown, (10, 10, 10), classes, 10.0, source="picks.star")
