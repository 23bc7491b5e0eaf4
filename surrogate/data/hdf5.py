"""HDF5 helpers shared by every domain: safe opening, atomic streamed writing, a picklable lazy reader.

Writers go to a temporary name beside the target and are renamed into place only when complete, so a
failure never leaves a partial file and an existing file is never replaced.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from surrogate.errors import InputError, OutputExistsError

SCHEMA_VERSION = 1  # bumped whenever the layout written by surrogate changes


def open_h5(path: str | Path) -> h5py.File:
    """Open an HDF5 file read-only, turning every low-level failure into a one-line InputError."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, None, "no such file")
    if path.is_dir():
        raise InputError(path, None, "is a directory, expected an HDF5 file")
    if not h5py.is_hdf5(path):
        raise InputError(path, None, "not an HDF5 file")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise InputError(path, None, f"cannot be read as HDF5 (truncated or corrupt?): {exc}") from None


def require_dataset(f: h5py.File, name: str) -> h5py.Dataset:
    """The dataset ``name`` of ``f``, or an InputError listing what the file does hold."""
    obj = f.get(name)
    if not isinstance(obj, h5py.Dataset):
        held = ", ".join(sorted(f.keys())) or "nothing"
        raise InputError(f.filename, name, f"missing dataset (file holds: {held})")
    return obj


@contextlib.contextmanager
def atomic_h5(path: str | Path, **attrs: Any) -> Iterator[h5py.File]:
    """Create ``path`` via a temporary file renamed on success; refuse to replace an existing file."""
    path = Path(path)
    if path.exists():
        raise OutputExistsError(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["surrogate_schema_version"] = SCHEMA_VERSION
            for key, value in attrs.items():
                f.attrs[key] = value
            yield f
        if path.exists():
            raise OutputExistsError(path)
        tmp.rename(path)
    finally:
        tmp.unlink(missing_ok=True)


class H5Slice:
    """A picklable stand-in for an HDF5 dataset that opens the file per read.

    h5py handles cannot cross process boundaries, so dask.distributed workers receive this object and
    open the file themselves (../shared/STACK.md, Dask + h5py facts).
    """

    def __init__(self, path: str | Path, name: str) -> None:
        self.path = str(path)
        self.name = name
        with h5py.File(self.path, "r") as f:
            ds = f[name]
            self.shape: tuple[int, ...] = tuple(ds.shape)
            self.dtype = ds.dtype
            self.chunks = ds.chunks
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        with h5py.File(self.path, "r") as f:
            return np.asarray(f[self.name][key])

    def __reduce__(self) -> tuple[Any, ...]:
        return (H5Slice, (self.path, self.name))


def lazy_dataset(path: str | Path, name: str, chunk_events: int) -> Any:
    """A dask array over ``path[name]`` chunked along the first (event) axis; nothing is read yet.

    Blocks hold whole HDF5 chunks where the file's chunks are no longer than ``chunk_events`` (rounded
    down to a multiple): a compressed chunk split between two blocks is decompressed twice (prepare's
    read took 1.5x as long with 1024-event blocks over 1000-event gzip chunks).
    """
    import dask.array as da

    src = H5Slice(path, name)
    rows = chunk_events
    if src.chunks and src.chunks[0] <= chunk_events:
        rows = chunk_events // src.chunks[0] * src.chunks[0]
    chunks = (min(rows, max(src.shape[0], 1)), *src.shape[1:])
    return da.from_array(src, chunks=chunks, name=f"h5-{Path(path).resolve()}-{name}", asarray=True)
