import pytest

from keras_ucaps.classes import ClassRegistry, ParticleClass
from keras_ucaps.errors import InputError


def test_registry_json_round_trip_and_queries(tmp_path, classes):
    path = classes.save(tmp_path / "classes.json")
    again = ClassRegistry.load(path)
    assert again == classes
    assert again.label("ribosome") == 2 and again.name(2) == "ribosome" and again.name(0) == "background"
    assert again.radius_voxels("ribosome", voxel_size=12.0) == pytest.approx(5.0)
    assert again.num_classes == 3


@pytest.mark.parametrize(
    "classes, message",
    [
        ([ParticleClass("a", 1, 5.0), ParticleClass("a", 2, 5.0)], "duplicate"),
        ([ParticleClass("a", 0, 5.0)], "≥ 1"),
        ([ParticleClass("a", 1, -5.0)], "positive radius"),
        ([ParticleClass("background", 1, 5.0)], "reserved"),
    ],
)
def test_invalid_registries_are_refused(classes, message):
    with pytest.raises(InputError, match=message):
        ClassRegistry(classes)


def test_unknown_class_names_the_source(classes):
    with pytest.raises(InputError, match=r"picks.csv: unknown class 'chaperone'"):
        classes.check_names(["ribosome", "chaperone"], "picks.csv")
