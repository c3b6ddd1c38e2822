"""Keras layers of keras-ucaps (capsules); importing this registers them with Keras."""
