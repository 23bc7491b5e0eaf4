"""Finished shards of a long simulation kept on disk, so that an interrupted run resumes where it stopped.

A :class:`ShardStore` is one folder: each finished shard is one ``.npz`` (``shard_<index>.npz``, the index
zero-padded to ``digits``), written beside its final name and renamed into place, so a shard file exists
only once it is complete. A ``settings.key`` file says which settings the shards belong to
(:func:`settings_key`); a folder with another key (or none) is removed on opening, so shards of other
settings are never reused. What a shard holds is the simulator's business: named arrays in, the same out.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ShardStore", "local_client", "settings_key"]


def settings_key(settings: Any, exclude: Iterable[str] = ()) -> str:
    """16 hex digits of the SHA-256 of a settings dataclass's fields as sorted JSON, less ``exclude``.

    ``exclude``: the fields a shard's content does not depend on (how the work is spread: workers,
    scheduler), so that changing them keeps the shards.
    """
    skip = set(exclude)
    values = {k: v for k, v in asdict(settings).items() if k not in skip}
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


class ShardStore:
    """The shards of one run in ``folder``, all for the settings whose :func:`settings_key` is ``key``.

    ``digits``: the zero padding of the index in the file names (``shard_0000042.npz`` for 7).
    """

    def __init__(self, folder: Path, key: str, *, digits: int = 9) -> None:
        self.folder = Path(folder)
        self.digits = digits
        key_file = self.folder / "settings.key"
        if self.folder.exists() and (not key_file.exists() or key_file.read_text() != key):
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        if not key_file.exists():
            tmp = self.folder / ".settings.key.partial"
            tmp.write_text(key)
            tmp.rename(key_file)

    def _path(self, index: int) -> Path:
        return self.folder / f"shard_{index:0{self.digits}d}.npz"

    def has(self, index: int) -> bool:
        return self._path(index).exists()

    def save(self, index: int, arrays: Mapping[str, Any], *, compressed: bool = False) -> None:
        """Shard ``index`` as the named arrays (``np.savez``, or ``np.savez_compressed``), atomically."""
        # The pid keeps two processes that write the same shard from sharing a partial file.
        tmp = self.folder / f".shard_{index:0{self.digits}d}.{os.getpid()}.partial.npz"
        (np.savez_compressed if compressed else np.savez)(tmp, **arrays)
        os.replace(tmp, self._path(index))

    def load(self, index: int) -> dict[str, np.ndarray]:
        """Shard ``index``'s arrays by name, read into memory (a 0-d array for a saved scalar)."""
        with np.load(self._path(index)) as f:
            return {k: np.asarray(f[k]) for k in f.files}

    def remove(self) -> None:
        """The whole folder, once the run's output is written."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def remove_if_empty(self) -> None:
        """The folder, unless it holds a finished shard (an interrupted run keeps those for the next)."""
        if not any(self.folder.glob("shard_*.npz")):
            self.remove()


def local_client(stack: Any, *, n_workers: int, threads_per_worker: int, processes: bool) -> Any:
    """A dask.distributed Client on a new quiet LocalCluster, both closed by ``stack`` (an ExitStack).

    Worker processes talk over TCP on 127.0.0.1; an in-process cluster over inproc:// (no host). The
    scheduler's HTTP server always starts, so it takes a free port (a busy 8787 is no warning), and the
    workers' logs are silenced: a simulator reports progress and failures itself.
    """
    import logging

    from distributed import Client, LocalCluster

    where = {"host": "127.0.0.1"} if processes else {}
    cluster = stack.enter_context(LocalCluster(
        n_workers=n_workers, threads_per_worker=threads_per_worker, processes=processes, dashboard_address=":0",
        scheduler_kwargs={"dashboard": False}, memory_limit=0, silence_logs=logging.CRITICAL, **where))
    return stack.enter_context(Client(cluster))
