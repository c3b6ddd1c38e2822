"""Keras models of keras-ucaps; importing this registers them with Keras."""
