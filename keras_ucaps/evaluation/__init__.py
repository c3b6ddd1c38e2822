"""Scoring picks against ground truth, and pictures of tomograms and picks."""
