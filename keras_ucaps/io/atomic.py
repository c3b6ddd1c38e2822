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
import re
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


def make_folder(path: str | os.PathLike) -> Path:
    """An output folder, made if needed (parents too); a path that is a file, lies under one, or cannot be made
    is an :class:`InputError` naming it."""
    path = check_output(path, folder=True)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(path, f"cannot be made: {err.strerror or err}") from None
    return path


def first_missing(path: str | os.PathLike) -> Path | None:
    """The highest of ``path`` and its ancestors that does not exist (what making ``path`` would create first), or
    None when ``path`` exists: remove it to leave the file system as it was."""
    path = Path(os.path.abspath(path))
    if path.exists() or path.is_symlink():
        return None
    missing = path
    for parent in path.parents:
        if parent.exists() or parent.is_symlink():
            return missing
        missing = parent
    return missing


@contextlib.contextmanager
def _parents_removed_on_failure(path: Path) -> Iterator[None]:
    """Folders made for ``path`` inside the block are removed again when it fails, those left empty only (another
    writer's files in one keep it)."""
    made = first_missing(path.parent)
    try:
        yield
    except BaseException:
        if made is not None:
            folder = Path(os.path.abspath(path.parent))
            while True:
                try:
                    folder.rmdir()
                except OSError:
                    break
                if folder == made:
                    break
                folder = folder.parent
        raise


_LIVE_SCRATCH: set[Path] = set()  # temporary files and folders this process is writing


@contextlib.contextmanager
def registered_scratch(path: Path) -> Iterator[Path]:
    """Mark ``path`` as scratch of this process while the block runs: a SIGTERM removes it (see
    :func:`remove_scratch_on_termination`)."""
    _LIVE_SCRATCH.add(Path(path))
    try:
        yield Path(path)
    finally:
        _LIVE_SCRATCH.discard(Path(path))


@contextlib.contextmanager
def scratch_folder(parent: str | os.PathLike, prefix: str = ".keras-ucaps-") -> Iterator[Path]:
    """A temporary folder of this process in ``parent``, named ``PREFIX<pid>-XXXX`` so that a later run can tell
    one a killed process left (:func:`remove_stale_scratch`); removed when the block ends and on SIGTERM."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent))
    with registered_scratch(folder):
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def remove_scratch_on_termination() -> None:
    """On SIGTERM (what schedulers and ``kill`` send), remove this process's scratch and exit 143.

    The handler does the cleaning itself rather than raising an exception: Python may run a signal handler
    inside a callback (a garbage-collection hook, say) that swallows exceptions.
    """
    import signal

    def terminate(signum, frame):
        for path in list(_LIVE_SCRATCH):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    path.unlink()
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)


def current_umask() -> int:
    """The process's umask (read by setting it and setting it back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def cannot_write(path: Path, err: OSError) -> InputError:
    """The one-line error for a write the system refused (a full disk, a read-only folder)."""
    return InputError(path, f"cannot be written ({err.strerror or type(err).__name__})")


_GROUPS: list[list[tuple[Path, Path]]] = []  # open atomic_group()s: (temporary, destination) pairs to commit


@contextlib.contextmanager
def atomic_group() -> Iterator[None]:
    """Several outputs written all or none: the files :func:`atomic_path` writes inside the block stay under
    their temporary names until the block ends, then all are renamed into place; an exception in the block
    removes every one of them, so a command with two outputs (a report and a JSON file) that fails on the second
    leaves neither."""
    group: list[tuple[Path, Path]] = []
    _GROUPS.append(group)
    try:
        yield
    except BaseException:
        for tmp, _ in group:
            tmp.unlink(missing_ok=True)
            _LIVE_SCRATCH.discard(tmp)
        raise
    finally:
        _GROUPS.remove(group)
    try:
        for _, path in group:
            check_output(path)
        for tmp, path in group:
            os.replace(tmp, path)
            _LIVE_SCRATCH.discard(tmp)
    except OSError as err:
        for tmp, _ in group:
            tmp.unlink(missing_ok=True)
            _LIVE_SCRATCH.discard(tmp)
        raise cannot_write(path, err) from None
    except BaseException:
        for tmp, _ in group:
            tmp.unlink(missing_ok=True)
            _LIVE_SCRATCH.discard(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` on success.

    The temporary name keeps ``path``'s suffix so that libraries choosing a format
    by extension behave the same. On an exception the temporary file is removed
    and ``path`` is left untouched.
    """
    path = check_output(path)
    with _parents_removed_on_failure(path):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=f".part{path.suffix}",
                                       dir=path.parent)
            os.close(fd)
        except OSError as err:
            raise cannot_write(path, err) from None
        tmp = Path(tmp)
        _LIVE_SCRATCH.add(tmp)
        deferred = False
        try:
            yield tmp
            os.chmod(tmp, 0o666 & ~current_umask())
            check_output(path)  # nothing replaced it by a link or folder meanwhile
            if _GROUPS:  # renamed into place with the rest of its group
                _GROUPS[-1].append((tmp, path))
                deferred = True
            else:
                os.replace(tmp, path)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise cannot_write(path, err) from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            if not deferred:
                _LIVE_SCRATCH.discard(tmp)


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
    with _parents_removed_on_failure(path):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".part", dir=path.parent))
        except OSError as err:
            raise cannot_write(path, err) from None
        _LIVE_SCRATCH.add(tmp)
        try:
            yield tmp
            os.chmod(tmp, 0o777 & ~current_umask())
            try:
                os.rename(tmp, path)
            except OSError as err:
                if path.exists():  # another writer made it meanwhile
                    raise FileExistsError(f"{path}: already exists") from None
                raise cannot_write(path, err) from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        finally:
            _LIVE_SCRATCH.discard(tmp)


# Scratch names carry their writer's process id: ``.NAME.PID.XXXX.part[.SUFFIX]`` (atomic writes) and
# ``.keras-ucaps-PID-XXXX`` (prediction scratch). What a killed process left can then be told from what a
# running one is writing.
_SCRATCH = (re.compile(r"^\..+\.(\d+)\.[^.]+\.part(\.[^.]+)?$"), re.compile(r"^\.keras-ucaps-(?:maps-)?(\d+)-"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_scratch(folder: str | os.PathLike) -> list[Path]:
    """Remove the scratch files and folders that killed keras-ucaps processes left in ``folder``."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        for pattern in _SCRATCH:
            match = pattern.match(entry.name)
            if match and int(match.group(1)) != os.getpid() and not _alive(int(match.group(1))):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
                removed.append(entry)
                break
    return removed
