"""JSON files: reading what the user gave us, writing ours atomically."""

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
    except OSError as err:
        raise InputError(path, f"cannot be read ({err.strerror})") from None


def write_json(path: str | os.PathLike, payload, indent: int = 2) -> Path:
    """Write ``payload`` as JSON, atomically (a reader sees the old file or the new one, never part of one)."""
    from keras_ucaps.io.atomic import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=indent) + "\n")
    return Path(path)
