"""Finished shards of a long simulation kept on disk, so that an interrupted run resumes where it stopped.

A :class:`ShardStore` is one folder: each finished shard is one ``.npz`` (``shard_<index>.npz``, the index
zero-padded to ``digits``), written beside its final name and renamed into place, so a shard file exists
only once it is complete. A ``settings.key`` file says which settings the shards belong to
(:func:`settings_key`); a folder with another key (or none) is removed on opening, so shards of other
settings are never reused. What a shard holds is the simulator's business: named arrays in, the same out.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
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


def run_shards(settings: Any, out_path: Path, n_events: int, run_block: Callable[[Any, int, int], Any],
               arrays: Callable[[Any], Mapping[str, np.ndarray]], *, what: str, unit: str,
               progress: bool) -> tuple[list[tuple[int, int]], ShardStore, int]:
    """Simulate every shard of ``n_events`` not already kept beside ``out_path``; return (shards, store, the
    number of events in shards kept from an earlier call).

    ``settings`` has ``shard_events``, ``scheduler`` ("threads" | "distributed"), ``n_workers`` and ``tier``;
    ``run_block(settings, start, stop)`` simulates one shard on a worker and returns a result with ``start``;
    ``arrays(result)`` is what the store keeps of it. A kept shard depends on every setting but how the work
    is spread (workers, scheduler). On any failure or interrupt the finished shards stay for the next call
    (an empty store folder does not). ``what`` and ``unit`` name the simulator and its events in the
    progress bar and in errors.
    """
    step = settings.shard_events
    shards = [(lo, min(lo + step, n_events)) for lo in range(0, n_events, step)]
    store = ShardStore(out_path.with_name(f".{out_path.name}.shards"),
                       settings_key(settings, exclude=("n_workers", "scheduler")), digits=9)
    todo = [s for s in shards if not store.has(s[0])]
    kept = n_events - sum(hi - lo for lo, hi in todo)
    try:
        with ShardPool(settings, run_block, what=what, unit=unit) as pool:
            for result in pool.map_ordered(todo, progress=progress, done=kept):
                store.save(result.start, arrays(result))
    except BaseException:
        store.remove_if_empty()
        raise
    return shards, store, kept


class ShardPool:
    """Shards on a dask.distributed LocalCluster: ``threads`` = one in-process worker with n_workers threads
    (the numerical libraries release the GIL only in part), ``distributed`` = n_workers processes.

    Futures are collected in shard order while later shards run (at most two per worker in flight), so
    shards stream to disk with bounded memory, whatever order they finish in.
    """

    def __init__(self, settings: Any, run_block: Callable[[Any, int, int], Any], *, what: str, unit: str) -> None:
        self.settings = settings
        self.run_block = run_block
        self.what, self.unit = what, unit
        self._stack = contextlib.ExitStack()
        self.client: Any = None

    def __enter__(self) -> ShardPool:
        s = self.settings
        processes = s.scheduler == "distributed"
        try:
            self.client = local_client(self._stack, n_workers=s.n_workers if processes else 1,
                                       threads_per_worker=1 if processes else s.n_workers, processes=processes)
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def map_ordered(self, shards: list[tuple[int, int]], *, progress: bool, done: int = 0) -> Iterator[Any]:
        from tqdm import tqdm

        from surrogate.errors import SurrogateError

        window = 2 * self.settings.n_workers
        pending: dict[int, Any] = {}
        submitted = 0
        total = done + sum(hi - lo for lo, hi in shards)
        bar = tqdm(total=total, initial=done, unit=self.unit, desc=f"{self.what} {self.settings.tier}",
                   file=sys.stderr, disable=not progress, dynamic_ncols=True)
        try:
            for position, (lo, hi) in enumerate(shards):
                while submitted < len(shards) and submitted < position + window:
                    a, b = shards[submitted]
                    pending[submitted] = self.client.submit(self.run_block, self.settings, a, b, pure=False)
                    submitted += 1
                future = pending.pop(position)
                try:
                    result = future.result()
                except Exception as exc:
                    raise SurrogateError(f"{self.what} failed on {self.unit}s {lo}-{hi - 1} ({self.settings.tier} "
                                         f"tier): {type(exc).__name__}: {exc}") from None
                future.release()
                bar.update(hi - lo)
                yield result
        finally:
            bar.close()
            for future in pending.values():
                future.cancel()
