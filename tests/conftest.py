"""Small synthetic fixtures shared by the tests."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from keras_ucaps.classes import ClassRegistry
from keras_ucaps.io import ParticleTable, write_volume

VOXEL_SIZE = 10.0
SHAPE_ZYX = (24, 32, 40)


@pytest.fixture
def classes() -> ClassRegistry:
    return ClassRegistry.from_radii({"proteasome": 40.0, "ribosome": 60.0})


@pytest.fixture
def tomogram(tmp_path):
    """A 24×32×40 (z, y, x) noise volume at 10 Å/voxel."""
    data = np.random.default_rng(0).normal(size=SHAPE_ZYX).astype(np.float32)
    return write_volume(tmp_path / "tomo.mrc", data, VOXEL_SIZE, origin=(5.0, 6.0, 7.0))


@pytest.fixture
def table() -> ParticleTable:
    return ParticleTable.from_columns(
        [[10.0, 12.0, 8.0], [30.5, 20.0, 12.0], [2.0, 3.0, 20.0]],
        ["proteasome", "ribosome", "ribosome"],
        "tomo",
        angles=[[10.0, 20.0, 30.0], [40.0, 50.0, 60.0], [-70.0, 80.0, 90.0]],
        score=[0.9, 0.5, 0.7],
    )


def metadata(names=("class_1", "class_2"), voxel_size: float = VOXEL_SIZE, patch_size: int = 32,
             normalization: str = "robust"):
    """What a trained model carries (:class:`keras_ucaps.models.metadata.ModelMetadata`), for untrained test
    models: classes ``names`` of radius 30 Å."""
    from keras_ucaps.models.metadata import ModelMetadata

    return ModelMetadata(ClassRegistry.from_radii({n: 30.0 for n in names}), voxel_size, normalization, patch_size)


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    """Run ``keras-ucaps ARGS`` in a fresh interpreter, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "keras_ucaps", *map(str, args)], capture_output=True, text=True, cwd=cwd
    )


def make_sources(n_tomograms: int, shape=(40, 48, 64), seed=0):
    """Tomograms of noise with bright balls at listed particles, and their sphere labels."""
    from keras_ucaps.data.patches import Source
    from keras_ucaps.data.targets import sphere_targets
    from keras_ucaps.io import Volume

    registry = ClassRegistry.from_radii({"big": 50.0, "small": 30.0})
    rng = np.random.default_rng(seed)
    sources = []
    for t in range(n_tomograms):
        coords = rng.uniform([8, 8, 8], [shape[2] - 8, shape[1] - 8, shape[0] - 8], size=(12, 3))
        table = ParticleTable.from_columns(coords, ["big", "small"] * 6, f"t{t}")
        labels = sphere_targets(table, shape, registry, VOXEL_SIZE)
        data = rng.normal(size=shape).astype(np.float32) + 3.0 * (labels > 0)
        sources.append(Source(f"t{t}", Volume(data, VOXEL_SIZE), table, labels))
    return sources, registry


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A 32³ patch store of three ``make_sources`` tomograms (classes big, small)."""
    from keras_ucaps.data.patches import PatchSettings, build_patch_store

    path = tmp_path_factory.mktemp("store") / "patches.h5"
    sources, classes = make_sources(3)
    build_patch_store(sources, classes, VOXEL_SIZE, path, PatchSettings(patch_size=32))
    return path
