"""The ``prepare`` stage's data side: check and fit in one lazy pass, then write the split training store.

Out of core: the inputs are read as dask arrays a few chunks at a time, twice (pass 1 fits the transform
and checks the values; pass 2 transforms and writes). Whatever dask scheduler is active does the reading
and transforming (the caller picks it, e.g. with :func:`dask_scheduler`); this process does all writing,
because h5py writers can't be shared across processes (../shared/STACK.md).

Outputs in ``out_dir`` (the contract read by ``train``, ``generate`` and ``validate``):

- ``store.h5``: root attrs domain, transform, n_features, n_cond, seed, sources (JSON list),
  surrogate_schema_version; groups train/val/test with ``x`` (n, n_features), ``cond`` (n, n_cond)
  (model space) and ``cond_raw`` (n, n_cond) (physical units), float32, chunked (chunk_events, width)
  along events, uncompressed; group attr n_events. Events keep their input order within a split.
- ``transform.json``: the transform, fitted on the training split (its condition range spans all splits).
- ``reference_val.h5``, ``reference_test.h5``: the val and test events in the domain's native layout and
  physical units, bit-identical to the input values.
- ``reference_heldout.h5``, only where the domain holds events out (``Domain.heldout_mask``, e.g. maps at
  conditions kept out of training to test interpolation): those events, in the same layout. They are in
  no split of the store and nothing of them reaches the transform or training.

All appear together or not at all: they are written in a staging folder inside ``out_dir`` and moved
into place at the end.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import queue
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from surrogate.config import PrepareConfig
from surrogate.data.hdf5 import atomic_h5
from surrogate.data.transforms import Transform, save_transform
from surrogate.domains.base import Domain, LazyEvents
from surrogate.errors import InputError, OutputExistsError

STORE = "store.h5"
TRANSFORM = "transform.json"
REFERENCE = {"val": "reference_val.h5", "test": "reference_test.h5"}
SPLITS = ("train", "val", "test")  # label i of split_labels is SPLITS[i]
HELDOUT = "heldout"  # label len(SPLITS): events the domain holds out of training, in no split of the store
HELDOUT_FILE = "reference_heldout.h5"
OUTPUTS = (STORE, TRANSFORM, *REFERENCE.values())  # always written (HELDOUT_FILE where events are held out)


@contextlib.contextmanager
def dask_scheduler(cfg: PrepareConfig) -> Iterator[None]:
    """Make ``cfg.scheduler`` dask's scheduler inside the block.

    ``threads`` / ``synchronous``: dask's local schedulers. ``distributed``: connect to ``cfg.address``,
    or start a LocalCluster of ``cfg.n_workers`` single-threaded worker processes on 127.0.0.1 (no
    dashboard), closed again on exit.
    """
    import dask

    if cfg.scheduler != "distributed":
        with dask.config.set(scheduler=cfg.scheduler):
            yield
        return
    from distributed import Client, LocalCluster

    if cfg.address:
        with _quiet_distributed(), Client(cfg.address):
            yield
        return
    # silence_logs reaches the worker processes too: a bad value stops the computation while other tasks
    # are in flight, and their cancellation and the shutdown log CommClosedErrors (some 50 lines, in one
    # run of three) that would bury the one-line error.
    # The scheduler's HTTP server starts even without a dashboard, on 8787 unless told otherwise: a free
    # port, so that a second cluster on the machine (another run, a test) is no "Port 8787 is already in use".
    with _quiet_distributed(), LocalCluster(n_workers=cfg.n_workers, threads_per_worker=1, processes=True,
                                            dashboard_address=":0", scheduler_kwargs={"dashboard": False},
                                            host="127.0.0.1",
                                            silence_logs=logging.CRITICAL) as cluster, Client(cluster):
        yield


@contextlib.contextmanager
def _quiet_distributed() -> Iterator[None]:
    """Hold dask.distributed's and tornado's loggers in this process at CRITICAL inside the block (and while
    the cluster closes after it)."""
    loggers = [logging.getLogger(name) for name in ("distributed", "tornado")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def split_labels(n_events: int, cfg: PrepareConfig, heldout: np.ndarray | None = None) -> np.ndarray:
    """Split label per event (0 train, 1 val, 2 test, 3 held out): (n_events,) int8, seeded by cfg.seed.

    ``heldout``: (n_events,) bool of events the domain holds out (label 3), or None. The others are split:
    round(n * fraction) for val and test, the rest train, as a seeded permutation; sizes do not depend on
    chunking, and without held-out events the labels are those of a plain split of n_events.
    """
    keep = np.ones(n_events, dtype=bool) if heldout is None else ~np.asarray(heldout, dtype=bool)
    n = int(keep.sum())
    n_val = round(n * cfg.val_fraction)
    n_test = round(n * cfg.test_fraction)
    labels = np.full(n_events, len(SPLITS), dtype=np.int8)
    labels[keep] = np.random.default_rng(cfg.seed).permutation(
        np.repeat(np.arange(3, dtype=np.int8), [n - n_val - n_test, n_val, n_test]))
    return labels


def prepare_store(domain: Domain, cfg: PrepareConfig, inputs: tuple[str, ...], out_dir: Path, *,
                  progress: bool = True) -> dict[str, float | int]:
    """Check, fit and split ``inputs`` (files in the domain's layout) into ``out_dir`` (module docstring).

    ``out_dir`` may exist (empty, or holding none of the outputs); on any failure nothing this call
    created is left behind. Bad files or values raise one :class:`InputError` naming file, field and
    event. Returns n_events, n_train, n_val, n_test, seconds, input_mb (uncompressed input arrays),
    read_mb_per_s (input MB read per second, both passes counted), e_min_mev / e_max_mev (range of the
    first condition column, in its units).
    """
    start_time = time.perf_counter()
    out_dir = Path(out_dir)
    for name in OUTPUTS:
        if (out_dir / name).exists():
            raise OutputExistsError(out_dir / name)
    events = domain.open_lazy(tuple(inputs), cfg.chunk_events)
    n_events = int(events.data.shape[0])
    heldout = domain.heldout_mask(events)
    labels = split_labels(n_events, cfg, heldout)
    counts = np.bincount(labels, minlength=len(SPLITS) + 1)
    if counts[0] == 0 or counts[2] == 0:
        raise InputError(", ".join(events.sources), None,
                         f"{n_events} events are too few to split with val_fraction={cfg.val_fraction} "
                         f"and test_fraction={cfg.test_fraction}")

    made_dir = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = out_dir / f".prepare-{os.getpid()}.partial"
    staging.mkdir()
    moved: list[Path] = []
    done = False
    try:
        batch = 2 * _parallelism()
        # Fitted on the training split alone: nothing of the validation and test events reaches the model
        # (a transform that carries a mean event would otherwise hand the test sample's mean to the
        # generator). Its condition range spans every split's conditions (Transform.covering).
        transform = _fit_and_check(domain, events, batch, progress, accept_implausible=cfg.accept_implausible,
                                   keep=labels == 0)
        transform = transform.covering(*_condition_range(events, labels < len(SPLITS)))
        sources = json.dumps([str(Path(p).resolve()) for p in events.sources])
        provenance = {"seed": cfg.seed, "sources": sources}
        attrs = {"domain": domain.name, "transform": transform.name, "n_features": domain.n_features,
                 "n_cond": domain.n_cond, **provenance}
        e_range = _write_outputs(domain, events, labels, transform, cfg.chunk_events, staging, attrs,
                                 provenance, batch, progress)
        save_transform(transform, staging / TRANSFORM)
        # The store goes last: its presence marks a complete preparation.
        extra = (HELDOUT_FILE,) if counts[len(SPLITS)] else ()
        for name in (*REFERENCE.values(), *extra, TRANSFORM, STORE):
            if (out_dir / name).exists():
                raise OutputExistsError(out_dir / name)
            (staging / name).rename(out_dir / name)
            moved.append(out_dir / name)
        done = True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not done:
            for path in moved:
                path.unlink(missing_ok=True)
            if made_dir:
                with contextlib.suppress(OSError):
                    out_dir.rmdir()

    seconds = time.perf_counter() - start_time
    input_mb = (events.data.nbytes + events.cond.nbytes) / 1e6
    return {"n_events": n_events, "n_train": int(counts[0]), "n_val": int(counts[1]),
            "n_test": int(counts[2]), "n_heldout": int(counts[3]), "seconds": seconds, "input_mb": input_mb,
            "read_mb_per_s": 2 * input_mb / seconds, "e_min_mev": e_range[0], "e_max_mev": e_range[1]}


# --------------------------------------------------------------------------------------------------
# The two passes


def _parallelism() -> int:
    """Tasks the active dask scheduler runs at once (sizes the batches of blocks computed together)."""
    import dask

    scheduler = dask.config.get("scheduler", None)
    if scheduler in ("sync", "synchronous", "single-threaded"):
        return 1
    if scheduler not in ("threads", "threading") and "distributed" in sys.modules:
        from distributed import default_client

        with contextlib.suppress(ValueError):  # no client: dask's default local scheduler runs it
            return max(1, sum(default_client().nthreads().values()))
    return int(dask.config.get("num_workers", None) or os.cpu_count() or 1)


def _batches(n_blocks: int, batch: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n_blocks, batch):
        yield start, min(start + batch, n_blocks)


def _compute(events: LazyEvents, *collections: Any) -> Any:
    """dask.compute, with read failures of the inputs (e.g. a corrupt chunk) as one InputError."""
    import dask

    try:
        return dask.compute(*collections)
    except OSError as exc:
        raise InputError(", ".join(events.sources), None,
                         f"cannot be read (truncated or corrupt?): {exc}") from None


def _bar(progress: bool, total: int, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="block", file=sys.stderr, disable=not progress)


def _condition_range(events: LazyEvents, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lowest, highest) condition per column over the events at ``keep`` (bool (N,)), computed lazily."""
    import dask.array as da

    mask = da.from_array(keep[:, None], chunks=(events.cond.chunks[0], (1,)))
    cond = events.cond.astype(np.float64)
    lo, hi = _compute(events, da.where(mask, cond, np.inf).min(axis=0), da.where(mask, cond, -np.inf).max(axis=0))
    return np.asarray(lo), np.asarray(hi)


def _only(events: LazyEvents, keep: np.ndarray) -> LazyEvents:
    """The events at ``keep`` (bool (N,)), block for block: the same number of blocks (some maybe empty), so
    the fit's block i is read with the check's block i."""
    import dask.array as da

    offsets = np.cumsum((0,) + events.data.chunks[0])
    sizes = tuple(int(keep[a:b].sum()) for a, b in itertools.pairwise(offsets))
    mask = da.from_array(keep[:, None], chunks=(events.data.chunks[0], (1,)))

    def select(block: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return block[rows[:, 0]]

    data, cond = (da.map_blocks(select, x, mask, chunks=(sizes, x.chunks[1]), dtype=x.dtype,
                                meta=np.empty((0, 0), dtype=x.dtype)) for x in (events.data, events.cond))
    return LazyEvents(data=data, cond=cond, sources=events.sources)


def _fit_and_check(domain: Domain, events: LazyEvents, batch: int, progress: bool, *,
                   accept_implausible: bool, keep: np.ndarray) -> Transform:
    """Pass 1: the transform's statistics and the value check from the same reads, batch by batch.

    Bad values fail on the first bad batch; the plausibility rules, some of which count over the whole
    input, are applied once all of it has been read (unless ``accept_implausible``). ``keep``: bool (N,)
    of the events the transform is fitted on (the training split); every event is checked.
    """
    fit = domain.fit_transform_lazy(_only(events, keep))
    check = domain.check_values(events)
    rows = []
    with _bar(progress, fit.n_blocks, "prepare: check + fit") as bar:
        for start, stop in _batches(fit.n_blocks, batch):
            stats, result = _compute(events, fit.blocks(start, stop), check.blocks[start:stop])
            rows.append(result)
            # Fails on the first bad batch, naming the first bad event seen so far.
            domain.raise_bad_values(np.concatenate(rows), events)
            fit.update(stats)
            bar.update(stop - start)
    if not accept_implausible:
        domain.raise_implausible(np.concatenate(rows), events, setting="prepare.accept_implausible")
    return fit.finish()


def _split_block(data: np.ndarray, cond: np.ndarray, labels: np.ndarray,
                 transform: Transform) -> list[tuple[np.ndarray, ...]]:
    """One block, transformed and split: per split (x, c, cond_raw, data_raw); runs on a dask worker.

    Rows are grouped by split with a stable sort, so events keep their input order and each split's x is
    a view. data_raw (val, test and held out only) is copied out so the sorted block can be freed at once;
    held-out rows (label 3) are not transformed: they never reach the store.
    """
    order = np.argsort(labels, kind="stable")
    data = data[order]
    cond = np.asarray(cond[order], dtype=np.float32)
    ends = np.cumsum(np.bincount(labels, minlength=len(SPLITS) + 1))
    x, c = transform.forward(data[:ends[len(SPLITS) - 1]], cond[:ends[len(SPLITS) - 1]])  # held-out rows: raw only
    out: list[tuple[np.ndarray, ...]] = []
    for i, (a, b) in enumerate(zip((0, *ends[:-1]), ends, strict=True)):
        raw = data[a:b].copy() if i == len(SPLITS) or SPLITS[i] in REFERENCE else data[:0]
        out.append((x[a:b], c[a:b], cond[a:b], raw))
    return out


def _write_outputs(domain: Domain, events: LazyEvents, labels: np.ndarray, transform: Transform,
                   chunk_events: int, folder: Path, attrs: dict[str, Any], provenance: dict[str, Any],
                   batch: int, progress: bool) -> tuple[float, float]:
    """Pass 2: transform blocks on the workers, write store (``attrs``) and references (``provenance``)
    here. Returns the (min, max) of the first condition column."""
    import dask

    offsets = np.cumsum((0,) + events.data.chunks[0])
    data_blocks = events.data.to_delayed().ravel()
    cond_blocks = events.cond.to_delayed().ravel()
    shared = dask.delayed(transform)
    counts = np.bincount(labels, minlength=len(SPLITS) + 1)
    lo, hi = np.inf, -np.inf
    files = {**REFERENCE, **({HELDOUT: HELDOUT_FILE} if counts[len(SPLITS)] else {})}
    labelled = (*SPLITS, HELDOUT)
    sinks = {split: _StreamSink(_reference_writer(domain, folder / name, int(counts[labelled.index(split)]),
                                                  {**provenance, "split": split}))
             for split, name in files.items()}
    try:
        with atomic_h5(folder / STORE, **attrs) as f, \
                _bar(progress, len(data_blocks), "prepare: write") as bar:
            writers = [_SplitWriter(f.create_group(split), int(counts[i]), domain.n_features,
                                    domain.n_cond, chunk_events) for i, split in enumerate(SPLITS)]
            for start, stop in _batches(len(data_blocks), batch):
                tasks = [dask.delayed(_split_block)(data_blocks[i], cond_blocks[i],
                                                    labels[offsets[i]:offsets[i + 1]], shared)
                         for i in range(start, stop)]
                for parts in _compute(events, *tasks):
                    for split, (x, c, cond_raw, data_raw) in zip(labelled, parts, strict=True):
                        if split != HELDOUT:
                            writers[SPLITS.index(split)].append(x, c, cond_raw)
                        if split in sinks:
                            sinks[split].put((data_raw, cond_raw))
                        if len(cond_raw) and split != HELDOUT:
                            lo = min(lo, float(cond_raw[:, 0].min()))
                            hi = max(hi, float(cond_raw[:, 0].max()))
                    bar.update(1)
            for writer in writers:
                writer.close()
            for sink in sinks.values():
                sink.close()
    finally:
        for sink in sinks.values():
            sink.abort()
    return lo, hi


def _reference_writer(domain: Domain, path: Path, n_events: int,
                      attrs: dict[str, Any]) -> Callable[[Iterable[tuple[np.ndarray, np.ndarray]]], None]:
    def write(blocks: Iterable[tuple[np.ndarray, np.ndarray]]) -> None:
        domain.write_events(path, blocks, n_events, attrs)

    return write


# --------------------------------------------------------------------------------------------------
# Writers


class _SplitWriter:
    """Appends rows to one split group's x / cond / cond_raw in whole HDF5 chunks (no partial-chunk I/O)."""

    def __init__(self, group: h5py.Group, n_events: int, n_features: int, n_cond: int, chunk: int) -> None:
        group.attrs["n_events"] = n_events
        self._n_events = n_events
        self._chunk = chunk
        widths = {"x": n_features, "cond": n_cond, "cond_raw": n_cond}
        self._datasets = []
        for name, w in widths.items():
            # h5py refuses a chunk longer than a fixed-size dataset: an empty split gets a growable one.
            layout: dict[str, Any] = ({"chunks": (min(chunk, n_events), w)} if n_events
                                      else {"chunks": (chunk, w), "maxshape": (None, w)})
            self._datasets.append(group.create_dataset(name, shape=(n_events, w), dtype="f4", **layout))
        self._buffers = [np.empty((chunk, w), dtype=np.float32) for w in widths.values()]
        self._fill = 0
        self._written = 0

    def append(self, *arrays: np.ndarray) -> None:
        """Append (x, c, cond_raw) rows, each (m, width) float32."""
        m = len(arrays[0])
        done = 0
        while done < m:
            take = min(self._chunk - self._fill, m - done)
            for buf, arr in zip(self._buffers, arrays, strict=True):
                buf[self._fill:self._fill + take] = arr[done:done + take]
            self._fill += take
            done += take
            if self._fill == self._chunk:
                self._flush()

    def _flush(self) -> None:
        end = self._written + self._fill
        if end > self._n_events:
            raise ValueError(f"more than the announced {self._n_events} events")
        for ds, buf in zip(self._datasets, self._buffers, strict=True):
            ds[self._written:end] = buf[:self._fill]
        self._written = end
        self._fill = 0

    def close(self) -> None:
        if self._fill:
            self._flush()
        if self._written != self._n_events:
            raise ValueError(f"wrote {self._written} events, announced {self._n_events}")


class _Aborted(Exception):
    """Raised inside a sink's consumer so that its atomic writer discards the partial file."""


class _StreamSink:
    """Pushes blocks into a writer that pulls them from an iterable, running the writer in a thread.

    Lets one pass over the data feed several ``domain.write_events`` calls at once. h5py serialises its
    calls with one lock, so the threads only overlap outside HDF5 (for example with dask's reads).
    """

    _DONE = object()
    _ABORT = object()

    def __init__(self, write: Callable[[Iterable[Any]], None]) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=2)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(write,), daemon=True)
        self._thread.start()

    def _items(self) -> Iterator[Any]:
        while True:
            item = self._queue.get()
            if item is self._DONE:
                return
            if item is self._ABORT:
                raise _Aborted
            yield item

    def _run(self, write: Callable[[Iterable[Any]], None]) -> None:
        try:
            write(self._items())
        except _Aborted:
            pass
        except BaseException as exc:
            self._error = exc

    def _send(self, item: Any) -> None:
        while self._thread.is_alive():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def put(self, item: Any) -> None:
        self._raise()
        self._send(item)
        self._raise()

    def close(self) -> None:
        """Finish the file; re-raise the writer's error, if any."""
        self._send(self._DONE)
        self._thread.join()
        self._raise()

    def abort(self) -> None:
        """Stop the writer (its partial file is discarded); a no-op after close."""
        self._send(self._ABORT)
        self._thread.join()
