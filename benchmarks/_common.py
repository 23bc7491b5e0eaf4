"""Helpers shared by the benchmark scripts: tables, the JSON summary line, timing, synthetic showers.

Not part of the ``surrogate`` package on purpose: benchmarks measure the package from the outside and
nothing in it may depend on them. The scripts import this module as ``_common`` because Python puts the
script's own folder first on ``sys.path``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

# The CaloChallenge dataset-2 readout (schema.dataset2_geometry): 45 layers x 16 angular x 9 radial bins.
N_LAYERS, N_ALPHA, N_R = 45, 16, 9
N_VOXELS = N_LAYERS * N_ALPHA * N_R
THRESHOLD_MEV = 0.5e-3 / 0.033  # readout threshold of dataset 2 (surrogate.domains.calorimeter.schema)
SUMMARY_PREFIX = "SUMMARY "  # the JSON line starts with this, so `grep ^SUMMARY` pulls it out of a log


def parser(description: str, epilog: str) -> argparse.ArgumentParser:
    """An argparse parser with the flags every benchmark has (--quick, --device, --seed)."""
    p = argparse.ArgumentParser(description=description, epilog=epilog,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a ~20 s run with smaller sizes (smoke level)")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--seed", type=int, default=0, help="seeds synthetic data and latents (default: 0)")
    return p


def machine() -> dict[str, Any]:
    """What the numbers were measured on (goes into every summary line)."""
    info: dict[str, Any] = {"python": platform.python_version(), "cpus": os.cpu_count(),
                            "load_1min": round(os.getloadavg()[0], 2)}
    try:
        import torch
    except ImportError:
        return info
    info["torch"] = torch.__version__
    info["torch_threads"] = torch.get_num_threads()
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name()
    return info


def resolve_device(name: str) -> Any:
    """torch.device(name), refusing cuda when there is none (a clear message instead of a deep error)."""
    import torch

    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: no CUDA device is available here")
    return device


def synchronize(device: Any) -> None:
    """Wait for queued CUDA work: without it a timer measures only the kernel launches."""
    import torch

    if getattr(device, "type", str(device)).startswith("cuda"):
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], object], device: Any, *, min_seconds: float, min_calls: int = 1,
               max_calls: int = 1000) -> tuple[float, float, int]:
    """Call ``fn`` until ``min_seconds`` of wall time and ``min_calls`` calls have passed.

    Returns (wall seconds per call, process CPU seconds per call, calls). CPU time counts every thread
    of this process, so CPU / wall shows how many cores a call kept busy.
    """
    synchronize(device)
    calls = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    while calls < max_calls:
        fn()
        calls += 1
        synchronize(device)
        if calls >= min_calls and time.perf_counter() - wall0 >= min_seconds:
            break
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return wall / calls, cpu / calls, calls


def fmt(value: Any) -> str:
    """Numbers with 3-4 significant digits, so columns stay narrow and nothing reads falsely precise."""
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value == 0:
            return "0"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 0.01:
            return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
        return f"{value:.2e}"
    return str(value)


def print_table(title: str, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """A plain-text table of ``rows`` (dicts) with the given columns, aligned, under ``title``."""
    cells = [[fmt(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) if cells else len(c) for i, c in enumerate(columns)]
    print(f"\n{title}")
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)))


def print_summary(benchmark: str, args: argparse.Namespace, results: Any, **extra: Any) -> None:
    """The one-line JSON summary that ends every benchmark's output (for pasting into notes)."""
    options = {k: v for k, v in vars(args).items() if not k.startswith("_")}
    line = {"benchmark": benchmark, "options": options, "machine": machine(), **extra, "results": results}
    print("\n" + SUMMARY_PREFIX + json.dumps(line, default=_json_default, separators=(",", ":")))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def synthetic_showers(rng: np.random.Generator, n: int, e_min_mev: float = 1e3,
                      e_max_mev: float = 1e6) -> tuple[np.ndarray, np.ndarray]:
    """Sparse, shower-like events in the dataset-2 layout: (showers (n, 6480) float32 MeV, e_inc (n, 1)).

    Only the statistics that matter for I/O and transform cost are imitated: incident energies
    log-uniform over the challenge's 1 GeV - 1 TeV, a longitudinal profile whose maximum moves deeper with
    log E, a radial fall-off, hits with a probability that grows with the expected deposit (so low
    energies leave most voxels empty, as in the real files), log-normal fluctuations, and the 15.15 keV
    readout threshold. It is not a physics model.
    """
    e_inc = np.exp(rng.uniform(math.log(e_min_mev), math.log(e_max_mev), n))
    layer = np.arange(N_LAYERS, dtype=np.float64) + 0.5
    # gamma-shaped longitudinal profile, shape parameter growing with log E (shower maximum ~ ln E)
    shape = 2.0 + 0.6 * np.log(e_inc / 1e3)[:, None]
    profile = np.exp((shape - 1.0) * np.log(layer / 3.0) - layer / 3.0)
    profile /= profile.sum(axis=1, keepdims=True)
    radial = np.exp(-np.arange(N_R) / 1.3)
    radial /= radial.sum()
    # float32 from here on: these arrays are (n, 6480) and float64 would double the time to make them
    mean = (e_inc[:, None, None] * profile[:, :, None] * radial[None, None, :] / N_ALPHA).astype(np.float32)
    mean = np.broadcast_to(mean[:, :, None, :], (n, N_LAYERS, N_ALPHA, N_R)).reshape(n, N_VOXELS)
    # ~3 MeV per charged track crossing a Si cell after the 1/0.033 sampling-fraction scaling: the
    # expected number of tracks sets the hit probability.
    hit_prob = -np.expm1(mean * np.float32(-1.0 / 3.0))
    hit = rng.random(mean.shape, dtype=np.float32) < hit_prob
    noise = rng.standard_normal(mean.shape, dtype=np.float32)
    noise *= np.float32(0.5)
    np.exp(noise, out=noise)  # log-normal fluctuation of each hit
    showers = np.divide(mean, np.maximum(hit_prob, np.float32(1e-30)), dtype=np.float32)
    showers *= noise
    showers[~hit] = 0.0
    showers[showers < THRESHOLD_MEV] = 0.0
    return showers, e_inc.astype(np.float32).reshape(n, 1)
