"""Throughput and peak memory of ``prepare_store`` vs a raw sequential h5py read of the same file.

Writes a synthetic CaloChallenge-layout file (sparse showers, see _common.synthetic_showers) twice:
uncompressed, and gzip-compressed exactly as the project writes its files (schema.write_file: gzip 4 +
shuffle, 1000-event chunks). Then, per file, each case runs in its own Python process:

- ``raw``: h5py reads ``showers`` front to back in blocks of ``--chunk-events`` (the baseline);
- ``threads``: prepare_store under dask's threaded scheduler;
- ``distributed``: prepare_store on a dask.distributed LocalCluster (``--n-workers`` single-threaded
  worker processes), started before the clock (its start-up time is reported apart).

MB/s is uncompressed input MB (showers + incident energies) over wall seconds of the whole call, so
``ratio`` says how much longer than one plain read of the data the full preparation takes (prepare reads
its input twice, transforms it and writes the store and the reference files). Peak RSS is sampled every
20 ms over the case's process and all its descendants (summed), and also taken from getrusage for the
process itself and its largest worker process (distributed); an out-of-core prepare stays far below the
data size. Inputs are read from the page cache (they were just written), so reads measure CPU and copy
costs; outputs go to ``--workdir``, whose disk the store writes do depend on.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _common
import numpy as np

EPILOG = """examples:
  python benchmarks/prepare_throughput.py --quick
  python benchmarks/prepare_throughput.py                    # 20k events (518 MB uncompressed)
  python benchmarks/prepare_throughput.py --events 100000 --workdir /scratch
"""

CASES = ("raw", "threads", "distributed")
VARIANTS = ("plain", "gzip")
CASE_PREFIX = "CASE "  # the child's result line
WRITE_BLOCK = 1000  # events generated and written at a time (also the files' HDF5 chunk length)


def main(argv: list[str] | None = None) -> None:
    p = _common.parser(__doc__.splitlines()[0], EPILOG)
    p.add_argument("--events", type=int, default=0, help="events in the synthetic file (default: 20000, "
                   "--quick 1000)")
    p.add_argument("--chunk-events", type=int, default=2048,
                   help="prepare.chunk_events and the raw read's block (default: 2048, as prepare.yaml)")
    p.add_argument("--n-workers", type=int, default=2, help="LocalCluster workers (default: 2)")
    p.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES),
                   help="cases to run (default: all)")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=None,
                   help="input files: plain (uncompressed) and/or gzip (default: both; --quick: gzip)")
    p.add_argument("--workdir", default="",
                   help="folder for the temporary files (default: the system's tmp)")
    p.add_argument("--_case", help=argparse.SUPPRESS)  # internal: run one case in this process
    p.add_argument("--_file", help=argparse.SUPPRESS)
    p.add_argument("--_out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._case:
        _run_case(args)
        return
    args.events = args.events or (1000 if args.quick else 20000)
    if args.variants is None:
        # --quick: the gzip file only (the layout simulate writes); process start-ups dominate a quick run
        args.variants = ["gzip"] if args.quick else list(VARIANTS)

    with tempfile.TemporaryDirectory(prefix="bench-prepare-", dir=args.workdir or None) as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        files = _write_inputs(folder, args.events, args.seed, args.variants)
        sizes = ", ".join(f"{k}: {_mb(v):.0f} MB on disk" for k, v in files.items())
        print(f"wrote {args.events} synthetic events ({sizes}) in {time.perf_counter() - t0:.1f} s")
        data_mb = args.events * (_common.N_VOXELS + 1) * 4 / 1e6
        rows = []
        for variant, path in files.items():
            base = None
            for case in args.cases:
                result = _spawn(args, case, path, folder)
                mb_per_s = data_mb / result["seconds"]
                base = mb_per_s if case == "raw" else base
                rows.append({"file": variant, "case": case, "seconds": result["seconds"],
                             "mb_per_s": mb_per_s,
                             "ratio": mb_per_s / base if base else None,
                             "startup_s": result.get("startup_s"),
                             "start_rss_mb": result["start_tree_mb"],
                             "peak_rss_mb": result["peak_tree_mb"],
                             "rss_over_data": result["peak_tree_mb"] / data_mb,
                             "maxrss_self_mb": result["maxrss_self_mb"],
                             "maxrss_worker_mb": result.get("maxrss_child_mb"),
                             "prepare_read_mb_per_s": result.get("read_mb_per_s")})
    _common.print_table(f"prepare throughput: {args.events} events, {data_mb:.0f} MB uncompressed, "
                        f"chunk_events {args.chunk_events}; ratio = MB/s over raw h5py's on the same file",
                        rows, ["file", "case", "seconds", "mb_per_s", "ratio", "startup_s", "start_rss_mb",
                               "peak_rss_mb", "rss_over_data", "maxrss_self_mb", "maxrss_worker_mb"])
    _common.print_summary("prepare_throughput", args, rows, data_mb=data_mb)


def _mb(path: Path) -> float:
    return path.stat().st_size / 1e6


# --------------------------------------------------------------------------------------------------
# Inputs


def _write_inputs(folder: Path, n_events: int, seed: int, variants: list[str]) -> dict[str, Path]:
    """The synthetic file in each variant, from one pass of generated blocks (identical contents)."""
    import h5py

    from surrogate.domains.calorimeter import schema

    rng = np.random.default_rng(seed)
    paths = {v: folder / f"showers_{v}.h5" for v in variants}

    def blocks(plain: h5py.File | None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, n_events, WRITE_BLOCK):
            showers, e_inc = _common.synthetic_showers(rng, min(WRITE_BLOCK, n_events - start))
            if plain is not None:
                plain[schema.SHOWERS][start:start + len(showers)] = showers
                plain[schema.INCIDENT][start:start + len(showers)] = e_inc
            yield showers, e_inc

    with contextlib.ExitStack() as stack:
        plain = None
        if "plain" in paths:
            plain = stack.enter_context(h5py.File(paths["plain"], "w"))
            chunk = min(WRITE_BLOCK, n_events)
            plain.create_dataset(schema.SHOWERS, (n_events, _common.N_VOXELS), dtype="f4",
                                 chunks=(chunk, _common.N_VOXELS))
            plain.create_dataset(schema.INCIDENT, (n_events, 1), dtype="f4", chunks=(chunk, 1))
        if "gzip" in paths:
            schema.write_file(paths["gzip"], blocks(plain), n_events, schema.dataset2_geometry(),
                              {"note": "synthetic benchmark showers"}, chunk_events=WRITE_BLOCK)
        else:
            for _ in blocks(plain):
                pass
    return paths


# --------------------------------------------------------------------------------------------------
# One case per process, so that each peak RSS belongs to that case alone


def _spawn(args: argparse.Namespace, case: str, path: Path, folder: Path) -> dict[str, Any]:
    out = folder / f"out-{case}-{path.stem}"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_case", case, "--_file", str(path),
           "--_out", str(out), "--chunk-events", str(args.chunk_events), "--n-workers", str(args.n_workers)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    shutil.rmtree(out, ignore_errors=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(CASE_PREFIX)]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"case {case} on {path.name} failed (exit {proc.returncode}):\n"
                         f"{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len(CASE_PREFIX):])


class _TreeRss:
    """Samples the summed RSS of this process and all its descendants in a background thread."""

    def __init__(self, interval_s: float = 0.02) -> None:
        import psutil

        self._me = psutil.Process()
        self._interval = interval_s
        self._stop = threading.Event()
        self.peak_bytes = 0
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> int:
        import psutil

        total = 0
        with contextlib.suppress(psutil.Error):
            procs = [self._me, *self._me.children(recursive=True)]
            for proc in procs:
                with contextlib.suppress(psutil.Error):  # a worker may exit between listing and reading
                    total += proc.memory_info().rss
        return total

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak_bytes = max(self.peak_bytes, self._sample())

    def __enter__(self) -> _TreeRss:
        self.peak_bytes = self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, self._sample())


def _run_case(args: argparse.Namespace) -> None:
    # Imports first (prepare imports dask, dask.array and tqdm lazily, ~1-2 s here): the clock measures
    # the data work, and every case pays its import RSS before the sampling starts.
    import dask
    import dask.array
    import h5py
    import tqdm

    from surrogate.config import PrepareConfig
    from surrogate.data.prepare import dask_scheduler, prepare_store
    from surrogate.domains.calorimeter import DOMAIN, schema

    del dask, tqdm  # imported for their side effect (loaded modules) only
    if args._case == "distributed":
        import distributed  # noqa: F401
    result: dict[str, Any] = {}
    with _TreeRss() as rss:
        result["start_tree_mb"] = rss.peak_bytes / 1e6
        if args._case == "raw":
            t0 = time.perf_counter()
            with h5py.File(args._file, "r") as f:
                ds = f[schema.SHOWERS]
                total = 0.0
                for lo in range(0, ds.shape[0], args.chunk_events):
                    block = ds[lo:lo + args.chunk_events]
                    total += float(block[:, 0].sum())  # touch the block so nothing can skip the read
                np.asarray(f[schema.INCIDENT][:])
            result["seconds"] = time.perf_counter() - t0
        else:
            cfg = PrepareConfig(chunk_events=args.chunk_events, scheduler=args._case,
                                n_workers=args.n_workers, inputs=(args._file,))
            t_start = time.perf_counter()
            with dask_scheduler(cfg):
                t0 = time.perf_counter()
                out = prepare_store(DOMAIN, cfg, cfg.inputs, Path(args._out), progress=False)
                result["seconds"] = time.perf_counter() - t0
                result["read_mb_per_s"] = out["read_mb_per_s"]
            result["startup_s"] = t0 - t_start
    result["peak_tree_mb"] = rss.peak_bytes / 1e6
    # ru_maxrss is in KiB on Linux; the children's figure is the largest single (waited-for) descendant.
    result["maxrss_self_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6
    # Only meaningful for the worker processes: interpreter start-up already leaves a ~150 MB child figure.
    if args._case == "distributed":
        result["maxrss_child_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 1e6
    print(CASE_PREFIX + json.dumps(result))


if __name__ == "__main__":
    main()
