"""Time per weak-lensing convergence map: the simulator's tiers vs the surrogate, at batch 1, 100 and 10k.

Simulator (surrogate.simulators.convergence_maps.run_block, in this process, one core: BLAS/OpenMP pools
limited to one thread) at the settings of ``--config`` (a weak-lensing config's simulate section) or the
simulator's defaults (128x128 over 3.5 deg, z_s = 1), all maps at one cosmology (``--cosmology``, default
Omega_m 0.3, sigma_8 0.8). A batch starts cold: the process's pyccl tables (C_ell; for halos the mass
function, concentrations, lens planes) are dropped first, so ``setup_ms`` is what one new cosmology costs a
worker, charged to that batch; ``map_ms`` is drawing (and painting) the maps; ``ms_per_map`` = (setup +
maps) / batch. Tiers: ``gaussian`` and ``lognormal`` (halofit C_ell) at every batch size; ``halos``
(linear field + painted NFW halos) measured up to ``--halo-max-measured`` maps (default 100): larger batches
are extrapolated from the largest measured one (setup / batch + its mean map_ms) and marked so.

Surrogate: ``surrogate.generation.Surrogate.generate`` of ``--run``'s train/checkpoints/last.pt (or
``--checkpoint``): any generator trained on the weak-lensing domain (its condition transform, latents,
generator, copy to host, inverse transform to kappa), conditions uniform over the transform's fitted range,
at the same batch sizes, wall and process-CPU time; above ``--max-chunk`` maps the generator runs in chunks.
Without a run or checkpoint that part is skipped (said so in the output) and no ratios are printed.

Ratio = simulator ms per map (one core) / surrogate wall ms per map, per tier and batch. Timings on a shared
machine are inflated by other load: compare ratios from one run, and the CPU columns.

Fidelity (issue 7 item 5): with ``--run``, the run's validation reports (validate/metrics.json and
validate/heldout/metrics.json) per cosmology: the largest power-spectrum deviation from reference A over
the bands (bar 5% at training cosmologies, 7% at held-out ones), the fractions of peak-count and
Minkowski bins off by more than one map's standard deviation (bar 0.1), and the recovered cosmology's
|bias| / scatter (bar 1), each beside the floor (reference B against A at the same sample size).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any

import _common
import numpy as np

EPILOG = """examples:
  python benchmarks/weak_lensing.py --quick                         # simulator tiers only, ~1 min
  python benchmarks/weak_lensing.py                                 # batch 1, 100, 10k; halos 10k extrapolated
  python benchmarks/weak_lensing.py --run runs/wl-quickstart-<stamp> --config configs/weak_lensing/quickstart.yaml
"""

REPO = Path(__file__).resolve().parent.parent
TIERS = ("gaussian", "lognormal", "halos")
BLOCK = 500  # maps per run_block call at large batches: bounds memory (10k 128x128 maps are 655 MB)


def main(argv: list[str] | None = None) -> None:
    p = _common.parser(__doc__.splitlines()[0], EPILOG)
    p.add_argument("--config", default="", help="a weak-lensing config whose simulate section sets the maps "
                                                 "(default: the simulator's own defaults)")
    p.add_argument("--cosmology", type=float, nargs=2, default=[0.3, 0.8], metavar=("OMEGA_M", "SIGMA_8"),
                   help="the cosmology every timed map is drawn at (default: 0.3 0.8)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=None,
                   help="maps per batch (default: 1 100 10000; --quick: 1 100 1000)")
    p.add_argument("--halo-max-measured", type=int, default=0,
                   help="largest halos-tier batch actually run; larger ones are extrapolated (default: 100, "
                        "--quick 20)")
    p.add_argument("--tiers", nargs="+", default=list(TIERS), choices=TIERS, help="simulator tiers to time")
    p.add_argument("--run", default="", help="a trained weak-lensing run folder (its train/checkpoints/last.pt)")
    p.add_argument("--checkpoint", default="", help="time this checkpoint instead of --run's")
    p.add_argument("--max-chunk", type=int, default=0,
                   help="largest batch the generator runs at once (default: 1000 on CPU, 10000 on CUDA)")
    p.add_argument("--torch-threads", type=int, default=0,
                   help="torch CPU threads for the surrogate (default 0: torch's default, all cores)")
    p.add_argument("--min-seconds", type=float, default=0.0,
                   help="minimum timed wall seconds per surrogate batch (default: 2, --quick 0.5)")
    args = p.parse_args(argv)
    args.batch_sizes = args.batch_sizes or ([1, 100, 1000] if args.quick else [1, 100, 10000])
    args.halo_max_measured = args.halo_max_measured or (20 if args.quick else 100)
    args.min_seconds = args.min_seconds or (0.5 if args.quick else 2.0)
    if args.run and not args.checkpoint:
        ckpt = Path(args.run) / "train" / "checkpoints" / "last.pt"
        if not ckpt.is_file():  # a bad --run fails before minutes of simulation
            raise SystemExit(f"--run {args.run}: {ckpt} not found; expected a run folder trained by surrogate")
        args.checkpoint = str(ckpt)

    settings = _settings(args)
    sim_rows = _simulator(settings, args)
    _common.print_table(
        f"convergence-map simulator per map ({settings.num_pix}x{settings.num_pix}, {settings.map_size_deg} deg, "
        f"z_s {settings.z_source}, shape noise {settings.shape_noise}; Omega_m {args.cosmology[0]}, sigma_8 "
        f"{args.cosmology[1]}; one core, in process): setup = pyccl tables once per batch (a new cosmology), "
        "map = drawing + painting", sim_rows,
        ["tier", "batch", "measured", "mean_halos", "setup_ms", "map_ms", "ms_per_map", "cpu_ms_per_map"])

    sur_rows: list[dict[str, Any]] = []
    ratios: list[dict[str, Any]] = []
    label = None
    if args.checkpoint:
        label, sur_rows = _surrogate(args)
        _common.print_table(f"Surrogate.generate, {label} ({args.device}): wall and process-CPU ms per map",
                            sur_rows, ["batch", "chunk", "params_g", "ms_per_map", "cpu_ms_per_map", "maps_per_s",
                                       "calls"])
        surrogate_ms = {r["batch"]: r["ms_per_map"] for r in sur_rows}
        for tier in args.tiers:
            row: dict[str, Any] = {"tier": tier}
            for r in sim_rows:
                if r["tier"] == tier:
                    key, ratio = f"x b{r['batch']}", r["ms_per_map"] / surrogate_ms[r["batch"]]
                    row[key] = ratio if r["measured"] == "measured" else f"{_common.fmt(ratio)} (extrapolated)"
            ratios.append(row)
        _common.print_table("speed-up = simulator ms per map (one core) / surrogate wall ms per map, same batch",
                            ratios, list(ratios[0]))
    else:
        print("\nsurrogate: no --run or --checkpoint given (a run folder trained on the weak-lensing domain); "
              "surrogate timing and ratios skipped")
    fidelity = _fidelity(Path(args.run)) if args.run else []
    if fidelity:
        _common.print_table(f"fidelity per cosmology, {args.run}: surrogate (floor) against reference A; bars: power "
                            "5% training / 7% held out, peaks and Minkowski fractions 0.1, recovery |bias|/scatter 1",
                            fidelity, list(fidelity[0]))
    _common.print_summary("weak_lensing", args, {"simulator": sim_rows, "surrogate": sur_rows, "ratios": ratios,
                                                 "fidelity": fidelity}, surrogate_model=label)


FIDELITY = (("power_max_dev_pct", "power_dev_%"), ("peaks_frac_outside_1sigma", "peaks_off"),
            ("mf_frac_outside_1sigma", "mf_off"))


def _fidelity(run: Path) -> list[dict[str, Any]]:
    """Rows per cosmology (and the report's worst case) from a run's validation reports; [] without them."""
    import json

    rows: list[dict[str, Any]] = []
    for kind, path in (("training", run / "validate" / "metrics.json"),
                       ("held out", run / "validate" / "heldout" / "metrics.json")):
        if not path.is_file():
            continue
        report = json.loads(path.read_text())
        surrogate, floor = report["metrics"], report["floor"]
        labels = sorted(k.removeprefix("power_max_dev_pct_") for k in surrogate if k.startswith("power_max_dev_pct_"))
        for label in [*labels, ""]:
            suffix = f"_{label}" if label else ""
            row: dict[str, Any] = {"cosmologies": kind, "cosmology": label or "worst"}
            for key, column in FIDELITY:
                row[column] = f"{_common.fmt(surrogate.get(key + suffix))} ({_common.fmt(floor.get(key + suffix))})"
            for parameter in ("Omega_m", "sigma_8"):
                key = f"{parameter}_bias_over_scatter"
                row[f"{parameter}_bias/scatter"] = (f"{_common.fmt(surrogate.get(key))} ({_common.fmt(floor.get(key))})"
                                                   if not label else "")
            row["verdict"] = ("PASS" if report["passed"] else "FAIL") if not label else ""
            rows.append(row)
    return rows


def _settings(args: argparse.Namespace) -> Any:
    """The simulator's plain settings: the config's simulate section or the defaults, at one cosmology."""
    from surrogate.simulators.convergence_maps import Settings, plain

    if args.config:
        from surrogate.config import load_config

        path = Path(args.config)
        base = plain(load_config(path if path.is_absolute() else REPO / path).simulate)
    else:
        base = Settings()
    om, s8 = args.cosmology
    return dataclasses.replace(base, omega_m_grid=(om,), sigma_8_grid=(s8,), heldout=(), n_workers=1,
                               seed=args.seed)


def _simulator(base: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    from threadpoolctl import threadpool_limits

    from surrogate.simulators.convergence_maps import physics, run_block

    rows: list[dict[str, Any]] = []
    with threadpool_limits(limits=1):  # one core, as one simulate worker runs
        run_block(dataclasses.replace(base, tier="gaussian", n_per_cosmology=1), 0, 1)  # imports, first FFTs
        for tier in args.tiers:
            measured: dict[str, Any] | None = None
            for batch in args.batch_sizes:
                if tier == "halos" and batch > args.halo_max_measured and measured is not None:
                    rows.append({**measured, "batch": batch, "measured": "extrapolated",
                                 "setup_ms": measured["setup_ms"] * measured["batch"] / batch,
                                 "ms_per_map": measured["map_ms"] + measured["setup_ms"] * measured["batch"] / batch,
                                 "cpu_ms_per_map": None, "cpu_over_wall": None})
                    continue
                settings = dataclasses.replace(base, tier=tier, n_per_cosmology=batch)
                physics.clear_tables()  # cold: this batch pays for its cosmology's tables
                wall0, cpu0 = time.perf_counter(), time.process_time()
                setup = maps = halos = 0.0
                for lo in range(0, batch, BLOCK):
                    r = run_block(settings, lo, min(lo + BLOCK, batch))
                    setup += float(r.setup_seconds.sum())
                    maps += float(r.map_seconds.sum())
                    halos += float(r.n_halos.sum())
                wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
                row = {"tier": tier, "batch": batch, "measured": "measured", "mean_halos": halos / batch,
                       "setup_ms": 1e3 * setup / batch, "map_ms": 1e3 * maps / batch,
                       "ms_per_map": 1e3 * (setup + maps) / batch, "cpu_ms_per_map": 1e3 * cpu / batch,
                       "cpu_over_wall": cpu / wall}
                rows.append(row)
                measured = row
                print(f"  {tier} batch {batch}: {row['ms_per_map']:.2f} ms per map", flush=True)
    return rows


def _surrogate(args: argparse.Namespace) -> tuple[str, list[dict[str, Any]]]:
    import torch

    from surrogate.generation import Surrogate

    device = _common.resolve_device(args.device)
    args.max_chunk = args.max_chunk or (10000 if device.type == "cuda" else 1000)
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    surrogate = Surrogate.from_checkpoint(args.checkpoint, device=str(device))
    if surrogate.domain.name != "weak_lensing":
        raise SystemExit(f"--checkpoint {args.checkpoint}: trained on domain {surrogate.domain.name!r}, "
                         "expected weak_lensing")
    lo, hi = surrogate.transform.condition_range()
    rows = []
    for batch in args.batch_sizes:
        rng = np.random.default_rng(args.seed)
        cond = rng.uniform(lo, hi, (batch, len(lo))).astype(np.float32)
        chunk = min(batch, args.max_chunk)

        def call(cond: np.ndarray = cond, chunk: int = chunk) -> object:
            return surrogate.generate(cond, seed=args.seed, batch_size=chunk)

        # Warm-up at the timed chunk size: first calls pay for allocator growth and kernel selection.
        for _ in range(2 if batch < 1000 else 1):
            surrogate.generate(cond[:chunk], seed=args.seed, batch_size=chunk)
        wall, cpu, calls = _common.time_calls(call, device, min_seconds=args.min_seconds,
                                              min_calls=1 if batch >= 1000 else 3)
        rows.append({"batch": batch, "chunk": chunk,
                     "params_g": sum(q.numel() for q in surrogate.generator.parameters()),
                     "ms_per_map": 1e3 * wall / batch, "cpu_ms_per_map": 1e3 * cpu / batch,
                     "maps_per_s": batch / wall, "calls": calls})
    return f"checkpoint {args.checkpoint} (step {surrogate.step})", rows


if __name__ == "__main__":
    main()
