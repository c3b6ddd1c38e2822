"""Turning probability and label maps into particle coordinates."""
