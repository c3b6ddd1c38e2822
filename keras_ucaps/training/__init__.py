"""Losses, metrics and the training loop."""
