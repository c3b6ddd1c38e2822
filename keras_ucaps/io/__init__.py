"""Reading and writing tomograms, label maps and particle tables (no TensorFlow)."""

from keras_ucaps.io.formats import FORMATS, FormatContext, read_particles, write_particles
from keras_ucaps.io.mrc import Volume, read_volume, write_volume
from keras_ucaps.io.particles import ParticleTable

__all__ = [
    "FORMATS",
    "FormatContext",
    "ParticleTable",
    "Volume",
    "read_particles",
    "read_volume",
    "write_particles",
    "write_volume",
]
