"""Data preparation: synthetic tomograms, training targets, patch stores, tf.data."""
