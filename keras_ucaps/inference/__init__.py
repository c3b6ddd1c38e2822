"""Whole-tomogram prediction: tiles, blending, probability maps."""
