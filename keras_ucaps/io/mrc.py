"""Read and write 3D volumes: MRC/MAP/REC through mrcfile, HDF5 through h5py, and
read OME-Zarr (NGFF multiscale images, as copick and the CZ cryoET Data Portal
store tomograms) through zarr.

An OME-Zarr folder (``NAME.zarr``) is read at its highest resolution (the first
dataset of its first multiscale) unless a scale is asked for; the voxel size
comes from that dataset's ``scale`` transformation and the axes' unit
(angstrom, nanometer or micrometer), the origin from its ``translation``.

Arrays are indexed (z, y, x): x is the fastest axis, as in the MRC file. The
voxel size is in Å per voxel; the origin is the MRC header's origin in Å
(x, y, z). A voxel size of 0 in a header means "unknown" and is returned as
``None``: keras-ucaps never writes 0 Å/px; a negative or non-finite one is an
error of the file.

MRC conventions honoured on reading: MAPC/MAPR/MAPS other than 1, 2, 3 (maps
stored with columns along y or z, as some EMDB entries are) are transposed to
(z, y, x); mode 0 holds signed bytes (MRC2014) unless the header's DMAX is
above 127, which only unsigned bytes reach (older writers, IMOD without its
signed-bytes flag): then they are read as uint8. NXSTART/NYSTART/NZSTART
(the grid index of the first voxel) are kept in ``Volume.start`` and written
back into maps derived from the volume, beside the origin.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from keras_ucaps.errors import InputError, KerasUcapsWarning
from keras_ucaps.io.atomic import atomic_path

HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")
ZARR_SUFFIX = ".zarr"
UNIT_ANGSTROM = {"angstrom": 1.0, "nanometer": 10.0, "micrometer": 1e4}
MMAP_ABOVE_BYTES = 256 * 2**20
WRITE_DTYPES = {"float32": np.float32, "float16": np.float16, "int8": np.int8}


@dataclasses.dataclass
class Volume:
    """A 3D volume and where it sits in space.

    Attributes
    ----------
    data : numpy.ndarray
        The voxels, shape (z, y, x). May be a read-only memory map.
    voxel_size : float or None
        Å per voxel, ``None`` where the file did not say.
    origin : tuple of float
        Header origin in Å, (x, y, z).
    path : Path or None
        The file it was read from.
    start : tuple of int
        Grid index of the first voxel (the MRC header's NXSTART, NYSTART, NZSTART).
    """

    data: np.ndarray
    voxel_size: float | None
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    path: Path | None = None
    start: tuple[int, int, int] = (0, 0, 0)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.data.shape)


def is_hdf5(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in HDF5_SUFFIXES


def read_volume(
    path: str | os.PathLike,
    *,
    mmap: bool | None = None,
    dataset: str = "dataset",
    check_finite: bool = True,
    scale: int = 0,
) -> Volume:
    """Read a 3D volume from MRC/MAP/REC or HDF5.

    Parameters
    ----------
    path : path-like
        The file. HDF5 is chosen by the suffix .h5/.hdf5/.hdf, MRC otherwise.
    mmap : bool, optional
        Memory-map the voxels instead of reading them. By default files larger
        than 256 MiB are memory-mapped.
    dataset : str
        HDF5 dataset holding the volume (DeepFinder uses ``"dataset"``).
    check_finite : bool
        Refuse volumes holding NaN or Inf voxels.
    scale : int
        For OME-Zarr: which scale of the multiscale image (0, the default, is the highest resolution).

    Raises
    ------
    InputError
        Missing, unreadable or corrupt file; not 3D; NaN or Inf voxels.
    """
    path = Path(path)
    if path.suffix.lower() == ZARR_SUFFIX and path.is_dir():
        volume = read_ome_zarr(path, scale=scale)
    elif not path.is_file():
        raise InputError(path, "no such file" if not path.exists() else "not a file")
    else:
        if mmap is None:
            mmap = path.stat().st_size > MMAP_ABOVE_BYTES
        volume = _read_hdf5(path, dataset) if is_hdf5(path) else _read_mrc(path, mmap)
    if volume.data.ndim != 3 or min(volume.data.shape) < 1:
        raise InputError(path, f"expected a 3D volume, found shape {volume.data.shape}")
    if check_finite and not _all_finite(volume.data):
        raise InputError(path, "volume holds NaN or Inf voxels")
    return volume


def _check_mrc_header(path: Path) -> None:
    """Sizes in the 1024-byte header that the file cannot hold: refused before mrcfile allocates for them."""
    size = path.stat().st_size
    if size < 1024:
        raise InputError(path, f"not a readable MRC file ({size} bytes, shorter than its 1024-byte header)")
    with open(path, "rb") as f:
        raw = f.read(1024)
    for order in ("<", ">"):
        words = np.frombuffer(raw, dtype=f"{order}i4")
        nx, ny, nz, mode = (int(v) for v in words[:4])
        if 0 <= mode <= 16:
            break
    else:
        return  # mrcfile will say what is wrong
    if min(nx, ny, nz) < 1:
        raise InputError(path, f"header size {nx}×{ny}×{nz} (x×y×z) is not a volume")
    extended = int(words[23])
    if extended < 0 or 1024 + extended > size:
        raise InputError(path, f"header announces a {extended}-byte extended header in a {size}-byte file")


def _read_mrc(path: Path, mmap: bool) -> Volume:
    import mrcfile

    _check_mrc_header(path)
    opener = mrcfile.mmap if mmap else mrcfile.open
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mrc = opener(path, mode="r", permissive=False)
    except (ValueError, OSError, EOFError) as err:
        raise InputError(path, f"not a readable MRC file ({_first_line(err)})") from None
    try:
        data = mrc.data
        if data is None:
            raise InputError(path, "MRC file holds no data")
        if np.iscomplexobj(data):
            raise InputError(path, f"holds complex voxels (MRC mode {int(mrc.header.mode)}, a Fourier transform?), "
                                   "not a real-valued volume")
        voxel_size = float(mrc.voxel_size.x)
        if not np.isfinite(voxel_size) or voxel_size < 0:
            raise InputError(path, f"header voxel size {voxel_size} Å is not a size")
        voxel_size = voxel_size or None
        if voxel_size is not None:
            vs = (float(mrc.voxel_size.x), float(mrc.voxel_size.y), float(mrc.voxel_size.z))
            if data.ndim == 3 and not np.allclose(vs, vs[0], rtol=1e-3):
                warnings.warn(
                    f"{path}: anisotropic voxel size {vs} Å, using x = {vs[0]} Å",
                    KerasUcapsWarning,
                    stacklevel=3,
                )
        origin = tuple(float(mrc.header.origin[axis]) for axis in ("x", "y", "z"))
        header = mrc.header
        if int(header.mode) == 0 and float(header.dmax) > 127:
            data = data.view(np.uint8)  # unsigned bytes: only they reach values above 127
        axes = (int(header.maps), int(header.mapr), int(header.mapc))  # what array axes 0, 1, 2 run along
        starts = (int(header.nzstart), int(header.nystart), int(header.nxstart))  # per array axis
        if data.ndim == 3 and axes != (3, 2, 1):
            if sorted(axes) != [1, 2, 3]:
                raise InputError(path, f"header axis order MAPC/MAPR/MAPS = {axes[::-1]} is not a permutation of "
                                       "1, 2, 3")
            order = [axes.index(3), axes.index(2), axes.index(1)]
            data = data.transpose(order)
            starts = tuple(starts[i] for i in order)
        start = (starts[2], starts[1], starts[0])
        if not mmap:
            data = np.ascontiguousarray(data)
    finally:
        if not mmap:
            mrc.close()
    return Volume(data=data, voxel_size=voxel_size, origin=origin, path=path, start=start)


def _read_hdf5(path: Path, dataset: str) -> Volume:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if dataset not in f:
                raise InputError(path, f"no HDF5 dataset '{dataset}' (found: {', '.join(f.keys())})")
            ds = f[dataset]
            data = ds[()]
            voxel_size = float(ds.attrs.get("voxel_size", f.attrs.get("voxel_size", 0.0))) or None
            origin = tuple(float(v) for v in ds.attrs.get("origin", (0.0, 0.0, 0.0)))
            start = tuple(int(v) for v in ds.attrs.get("start", (0, 0, 0)))
    except OSError as err:
        raise InputError(path, f"not a readable HDF5 file ({_first_line(err)})") from None
    return Volume(data=np.asarray(data), voxel_size=voxel_size, origin=origin, path=path, start=start)


def resolve_voxel_size(header: float | None, option: float | None, source: os.PathLike | str) -> float:
    """The voxel size to use, from a header and/or --voxel-size; they must agree."""
    if header is not None and option is not None and abs(header - option) > 1e-3 * max(header, option):
        raise InputError(source, f"voxel size {header:g} Å in the header differs from --voxel-size {option:g} Å")
    voxel_size = option if option is not None else header
    if voxel_size is None:
        raise InputError(source, "no voxel size in the header: give --voxel-size")
    return float(voxel_size)


def read_label_map(path: str | os.PathLike, classes) -> np.ndarray:
    """A label map's labels (int8), refusing volumes that hold anything but 0 and the registry's labels."""
    volume = read_volume(path)
    data = np.asarray(volume.data)
    if not np.issubdtype(data.dtype, np.integer):
        if not np.array_equal(data, np.round(data)):
            raise InputError(path, "holds fractional values: not a label map (a tomogram?)")
    values = np.unique(data)
    known = {0, *(c.label for c in classes.classes)}
    unknown = [v for v in values.tolist() if v not in known]
    if unknown:
        raise InputError(path, f"holds labels {unknown[:5]} that the class registry does not know (labels: "
                               f"{sorted(known)})")
    return data.astype(np.int8)


def read_ome_zarr(store, scale: int = 0, source: str | os.PathLike | None = None) -> Volume:
    """Read one scale of an OME-Zarr multiscale image (a folder path or a zarr store)."""
    try:
        import zarr
    except ImportError:  # pragma: no cover - zarr is a dependency; a broken install
        raise InputError(source or store, "reading OME-Zarr needs the zarr package (pip install zarr)") from None
    source = Path(source if source is not None else store)
    try:
        group = zarr.open_group(store if not isinstance(store, Path) else str(store), mode="r")
        attrs = dict(group.attrs)
    except Exception as err:  # zarr raises many kinds on a folder that is not a zarr group
        raise InputError(source, f"not a readable OME-Zarr group ({type(err).__name__}: {_first_line(err)})") from None
    multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    if not multiscales or not multiscales[0].get("datasets"):
        raise InputError(source, "zarr group has no OME-NGFF 'multiscales' metadata")
    meta = multiscales[0]
    datasets = meta["datasets"]
    if not 0 <= scale < len(datasets):
        raise InputError(source, f"has {len(datasets)} scales, not scale {scale}")
    axes = [a.get("name") if isinstance(a, dict) else a for a in meta.get("axes", ["z", "y", "x"])]
    if [a for a in axes if a in ("z", "y", "x")] != ["z", "y", "x"] or len(axes) != 3:
        raise InputError(source, f"axes {axes}: expected a 3D (z, y, x) image")
    units = {a.get("unit") or "angstrom" for a in meta.get("axes", []) if isinstance(a, dict)} or {"angstrom"}
    unit = UNIT_ANGSTROM.get(next(iter(units))) if len(units) == 1 else None
    if unit is None:
        raise InputError(source, f"axis units {sorted(units)}: expected one of {', '.join(UNIT_ANGSTROM)} for all")
    scale_zyx, translation_zyx = [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]
    for transform in datasets[scale].get("coordinateTransformations", []):
        if transform.get("type") == "scale":
            scale_zyx = [float(v) for v in transform["scale"]]
        elif transform.get("type") == "translation":
            translation_zyx = [float(v) for v in transform["translation"]]
    try:
        data = np.asarray(group[datasets[scale]["path"]][...])
    except Exception as err:
        raise InputError(source, f"cannot read scale {scale} ({type(err).__name__}: {_first_line(err)})") from None
    sizes = [v * unit for v in scale_zyx]
    if not np.allclose(sizes, sizes[2], rtol=1e-3):
        warnings.warn(f"{source}: anisotropic voxel size {sizes[::-1]} Å (x, y, z), using x = {sizes[2]} Å",
                      KerasUcapsWarning, stacklevel=2)
    origin = tuple(v * unit for v in translation_zyx[::-1])
    return Volume(data=data, voxel_size=sizes[2] if sizes[2] > 0 else None, origin=origin, path=source)


def _all_finite(data: np.ndarray) -> bool:
    if not np.issubdtype(data.dtype, np.floating):
        return True
    step = max(1, (64 * 2**20) // max(1, data[0].nbytes))
    return all(np.isfinite(data[z : z + step]).all() for z in range(0, data.shape[0], step))


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def write_volume(
    path: str | os.PathLike,
    data: np.ndarray,
    voxel_size: float,
    *,
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
    dtype: str = "float32",
    dataset: str = "dataset",
    start: tuple[int, int, int] = (0, 0, 0),
) -> Path:
    """Write a (z, y, x) volume atomically, keeping voxel size and origin.

    Parameters
    ----------
    path : path-like
        Destination; HDF5 by suffix (.h5/.hdf5/.hdf), MRC otherwise.
    data : numpy.ndarray
        Shape (z, y, x).
    voxel_size : float
        Å per voxel; must be positive (keras-ucaps never writes 0 Å/px).
    origin : tuple of float
        Header origin in Å, (x, y, z).
    dtype : {"float32", "float16", "int8"}
        Voxel type on disk. ``int8`` suits label maps; values must fit.
    dataset : str
        HDF5 dataset name.
    start : tuple of int
        Grid index of the first voxel (NXSTART, NYSTART, NZSTART), x, y, z.
    """
    path = Path(path)
    if dtype not in WRITE_DTYPES:
        raise ValueError(f"dtype must be one of {sorted(WRITE_DTYPES)}, not {dtype!r}")
    if voxel_size is None or not voxel_size > 0:
        raise ValueError(f"{path}: voxel size must be positive, got {voxel_size!r}")
    data = np.asarray(data)
    if data.ndim != 3:
        raise ValueError(f"{path}: expected a 3D (z, y, x) array, got shape {data.shape}")
    if dtype == "int8" and data.size and (data.min() < -128 or data.max() > 127):
        raise ValueError(f"{path}: values outside the int8 range cannot be written as int8")
    data = data.astype(WRITE_DTYPES[dtype], copy=False)
    with atomic_path(path) as tmp:
        if is_hdf5(path):
            import h5py

            with h5py.File(tmp, "w") as f:
                ds = f.create_dataset(dataset, data=data)
                ds.attrs["voxel_size"] = float(voxel_size)
                ds.attrs["origin"] = np.asarray(origin, dtype=np.float64)
                ds.attrs["start"] = np.asarray(start, dtype=np.int64)
        else:
            import mrcfile

            with mrcfile.new(tmp, overwrite=True) as mrc:
                mrc.set_data(data)
                mrc.voxel_size = float(voxel_size)
                mrc.header.origin = tuple(float(v) for v in origin)
                mrc.header.nxstart, mrc.header.nystart, mrc.header.nzstart = (int(v) for v in start)
                mrc.update_header_stats()
    return path


@contextlib.contextmanager
def volume_writer(
    path: str | os.PathLike,
    shape: tuple[int, int, int],
    voxel_size: float,
    *,
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
    dtype: str = "float32",
    start: tuple[int, int, int] = (0, 0, 0),
) -> Iterator[Callable[[np.ndarray], None]]:
    """Write an MRC volume slab by slab along z, for volumes larger than memory.

    Yields ``write(slab)``: call it with consecutive (k, y, x) slabs that together fill ``shape``. The
    header (voxel size, origin, NXSTART…, and the statistics of every voxel written) is completed at the
    end and the file moved onto ``path`` only then, as :func:`write_volume` does; on an error nothing is
    left behind.
    """
    import mrcfile

    if dtype not in WRITE_DTYPES:
        raise ValueError(f"dtype must be one of {sorted(WRITE_DTYPES)}, not {dtype!r}")
    if voxel_size is None or not voxel_size > 0:
        raise ValueError(f"{path}: voxel size must be positive, got {voxel_size!r}")
    kind = np.dtype(WRITE_DTYPES[dtype])
    shape = tuple(int(n) for n in shape)
    with atomic_path(path) as tmp:
        mode = {"float32": 2, "float16": 12, "int8": 0}[dtype]
        with mrcfile.new_mmap(tmp, shape=shape, mrc_mode=mode, overwrite=True) as mrc:
            offset = mrc.header.nbytes + int(mrc.header.nsymbt)
        done, total, total_sq, low, high = 0, 0.0, 0.0, np.inf, -np.inf

        with open(tmp, "r+b") as f:
            f.seek(offset)

            def write(slab: np.ndarray) -> None:
                nonlocal done, total, total_sq, low, high
                slab = np.asarray(slab)
                if slab.shape[1:] != shape[1:] or done + len(slab) > shape[0]:
                    raise ValueError(f"{path}: slab {slab.shape} does not continue a {shape} volume at plane {done}")
                if dtype == "int8" and slab.size and (slab.min() < -128 or slab.max() > 127):
                    raise ValueError(f"{path}: values outside the int8 range cannot be written as int8")
                stored = np.ascontiguousarray(slab.astype(kind, copy=False))
                f.write(stored.tobytes())
                if stored.size:
                    values = stored.astype(np.float64)
                    total += values.sum()
                    total_sq += np.square(values).sum()
                    low, high = min(low, values.min()), max(high, values.max())
                done += len(slab)

            yield write
        if done != shape[0]:
            raise ValueError(f"{path}: {done} of {shape[0]} planes were written")
        with mrcfile.mmap(tmp, mode="r+") as mrc:
            count = np.prod(shape)
            mean = total / count
            mrc.voxel_size = float(voxel_size)
            mrc.header.origin = tuple(float(v) for v in origin)
            mrc.header.nxstart, mrc.header.nystart, mrc.header.nzstart = (int(v) for v in start)
            mrc.header.dmin, mrc.header.dmax, mrc.header.dmean = low, high, mean
            mrc.header.rms = np.sqrt(max(total_sq / count - mean * mean, 0.0))
