"""Reading JSON files the user gave us."""

from __future__ import annotations

import json
import os
from pathlib import Path

from keras_ucaps.errors import InputError


def read_json(path: str | os.PathLike):
    """The parsed content of ``path``; an InputError naming the file if it is missing or not JSON."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(path, f"not valid JSON ({err})") from None
