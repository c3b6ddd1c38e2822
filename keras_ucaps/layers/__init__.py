"""Keras layers of keras-ucaps (capsules); importing this registers them with Keras."""

from keras_ucaps.layers.capsules import CapsuleLength, ChannelsToCapsule, ConvCapsule3D, FlattenCapsules, route, squash

__all__ = ["CapsuleLength", "ChannelsToCapsule", "ConvCapsule3D", "FlattenCapsules", "route", "squash"]
