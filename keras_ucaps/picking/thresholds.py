"""A model's picking settings, ``thresholds.json`` in its run folder: per-class score thresholds (written by
``keras-ucaps evaluate --model``), the fit radius and density weight its merged blobs are split with
(:mod:`keras_ucaps.picking.cluster`), and, for a fine-tuned run not tuned yet, ``from``: the model they were
tuned for."""

from __future__ import annotations

from pathlib import Path


def read_thresholds(path: Path) -> dict:
    """A thresholds.json, checked: per-class thresholds, and the fit radius its picks were made with (if any)."""
    from keras_ucaps.io.jsonfile import read_json

    return checked(read_json(path), path)


def write_thresholds(folder: Path, payload: dict) -> Path:
    """Write ``folder/thresholds.json`` (atomically), checked as :func:`read_thresholds` checks it: the one
    writer of picking settings (``evaluate --model``, ``fit --init-weights``, ``Picker.save_settings``)."""
    from keras_ucaps.io.jsonfile import write_json

    path = Path(folder) / "thresholds.json"
    write_json(path, checked(payload, path))
    return path


def checked(payload, path) -> dict:
    """``payload`` if it is a thresholds file's content, else an :class:`InputError` naming ``path``."""
    import numpy as np

    from keras_ucaps.errors import InputError

    if not isinstance(payload, dict) or not isinstance(payload.get("thresholds"), dict):
        raise InputError(path, "not a thresholds file (no 'thresholds' mapping)")
    for name, value in payload["thresholds"].items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
            raise InputError(path, f"threshold of class {name} is {value!r}, not a number")
    fit = payload.get("fit_radius", 1.0)
    if isinstance(fit, bool) or not isinstance(fit, int | float) or not 0.2 <= fit <= 1.5:
        raise InputError(path, f"fit_radius is {fit!r}, not a fraction of the class radius from 0.2 to 1.5")
    weight = payload.get("density_weight", 0.0)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 <= weight < float("inf"):
        raise InputError(path, f"density_weight is {weight!r}, not a number of at least 0")
    return payload
