"""Write files so that readers never see half of one.

Every writer in keras-ucaps writes to a temporary file in the destination's
folder and renames it into place only when the write succeeded: a crash or an
error leaves either the old file or nothing, never a truncated file. The
destination is checked first: a folder, a symbolic link, a device or other
non-regular file is refused (never renamed over), as is a path under a file.
A write that the system refuses (read-only or full filesystem, no permission)
is an :class:`~keras_ucaps.errors.InputError` naming the destination. Files get
the permissions the umask allows (as ``open`` would give), not the temporary
file's 0600.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from keras_ucaps.errors import InputError


def check_output(path: str | os.PathLike, *, folder: bool = False) -> Path:
    """Refuse an output path that cannot or must not be replaced, before any work is done."""
    path = Path(path)
    if path.is_symlink():
        raise InputError(path, "is a symbolic link: refusing to replace it (give the real path)")
    if path.exists():
        mode = path.stat().st_mode
        if folder and not stat.S_ISDIR(mode):
            raise InputError(path, "exists and is not a folder")
        if not folder and stat.S_ISDIR(mode):
            raise InputError(path, "is a folder, not a file")
        if not folder and not stat.S_ISREG(mode):
            raise InputError(path, "is not a regular file (a device, pipe or socket): refusing to replace it")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(path, f"lies under {parent}, which is a file")
            break
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _cannot_write(path: Path, err: OSError) -> InputError:
    return InputError(path, f"cannot be written ({err.strerror or type(err).__name__})")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` on success.

    The temporary name keeps ``path``'s suffix so that libraries choosing a format
    by extension behave the same. On an exception the temporary file is removed
    and ``path`` is left untouched.
    """
    path = check_output(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".part{path.suffix}", dir=path.parent)
        os.close(fd)
    except OSError as err:
        raise _cannot_write(path, err) from None
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        check_output(path)  # nothing replaced it by a link or folder meanwhile
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise _cannot_write(path, err) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; rename it to ``path`` on success.

    ``path`` must not exist yet (a folder that appears whole, as TF Serving
    expects of a model version).
    """
    path = Path(path)
    if path.exists() or path.is_symlink():
        raise FileExistsError(f"{path}: already exists")
    check_output(path, folder=True)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent))
    except OSError as err:
        raise _cannot_write(path, err) from None
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        try:
            os.rename(tmp, path)
        except OSError:
            if path.exists():  # another writer made it meanwhile
                raise FileExistsError(f"{path}: already exists") from None
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
