"""An array on disk that is read and written one region at a time.

A memory map held open keeps every page it has touched in the process's resident set: accumulating
13 classes of a 500×1000×1000 tomogram in one would show 26 GB resident although the kernel could
write most of it back. :class:`DiskArray` maps its ``.npy`` file only for the duration of one access
(copy a region out, or update a region in place) and unmaps it again, so what stays resident is the
region at hand, whatever the array's size; the pages themselves live in the page cache, which the
kernel reclaims under memory pressure.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np


class DiskArray:
    """A ``.npy`` file accessed a region at a time (basic indexing only).

    Args:
        path: the ``.npy`` file; created (zero-filled, sparse) when ``shape`` is given, else opened.
        shape: the shape of a new array.
        dtype: its element type.

    Example:
        >>> import tempfile
        >>> a = DiskArray(Path(tempfile.mkdtemp()) / "a.npy", (4, 5, 6))
        >>> a.add((slice(0, 2),), 1.5)
        >>> float(a[0:3].sum())
        90.0
    """

    def __init__(self, path: str | os.PathLike, shape: tuple[int, ...] | None = None, dtype=np.float32):
        self.path = Path(path)
        self.offset = None  # a .npy file; else the byte offset of raw data (see :meth:`over`)
        if shape is not None:
            created = np.lib.format.open_memmap(self.path, mode="w+", dtype=dtype, shape=tuple(shape))
            del created
            _reserve(self.path)
        header = np.load(self.path, mmap_mode="r")
        self.shape, self.dtype = tuple(header.shape), header.dtype
        del header

    @classmethod
    def over(cls, array):
        """A C-ordered memory map (an MRC file's data, say) as a DiskArray over the same bytes, mapped per access;
        any other array is returned as it is."""
        if not isinstance(array, np.memmap) or not array.flags.c_contiguous or array.filename is None:
            return array
        view = cls.__new__(cls)
        view.path, view.offset = Path(array.filename), int(array.offset)
        view.shape, view.dtype = tuple(array.shape), array.dtype
        return view

    def _map(self, mode: str):
        if self.offset is None:
            return np.load(self.path, mmap_mode=mode)
        return np.memmap(self.path, dtype=self.dtype, mode=mode, offset=self.offset, shape=self.shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> np.ndarray:
        mapped = self._map("r")
        try:
            return np.array(mapped[index])
        finally:
            del mapped

    def __setitem__(self, index, values) -> None:
        mapped = self._map("r+")
        try:
            mapped[index] = values
        finally:
            del mapped

    def add(self, index, values) -> None:
        """``self[index] += values``, mapping the file once."""
        mapped = self._map("r+")
        try:
            mapped[index] += values
        finally:
            del mapped

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        data = self[...]
        return data if dtype is None else data.astype(dtype, copy=False)


def slabs(length: int, bytes_per_plane: int, budget: int = 256 * 2**20):
    """(start, stop) of consecutive slabs along an axis of ``length`` planes, each within ``budget`` bytes."""
    step = max(1, budget // max(1, bytes_per_plane))
    for start in range(0, length, step):
        yield start, min(length, start + step)


def _reserve(path: Path) -> None:
    """Give the (sparse) file its disk blocks now: a memory map written on a full disk dies of SIGBUS, where this
    raises OSError (ENOSPC) before any work. The file is removed then. Filesystems that cannot reserve keep it
    sparse."""
    with open(path, "r+b") as f:
        try:
            os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
        except OSError as err:
            if err.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                return  # EOPNOTSUPP, EINVAL: no reservation on this filesystem
            f.close()
            path.unlink(missing_ok=True)
            raise
        except AttributeError:  # no posix_fallocate on this platform
            return
