"""Time per shower: the surrogate (the configured generator + inverse transform to MeV) vs Geant4.

Geant4: the calorimeter domain's ``simulate`` (surrogate.simulators.geant4_calo) with one worker
process at fixed incident energies; the figure is the worker's CPU time per shower (Geant4 set-up
excluded, as in simulate()'s own ``ms_per_shower``). Surrogate: ``surrogate.generation.Surrogate.generate``
at several batch sizes, so the time includes the condition transform, latent sampling, the generator, the
copy to host and the inverse transform to MeV with the readout threshold, i.e. everything a user of
``Surrogate`` waits for.

Speed-up = Geant4 CPU ms per shower / surrogate wall ms per shower. On CPU the surrogate uses all torch
threads while Geant4 uses one core: the summary line also holds the ratio per CPU-second.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path
from typing import Any

import _common
import numpy as np

EPILOG = """examples:
  python benchmarks/generation_speed.py --quick
  python benchmarks/generation_speed.py                       # 20 showers at 1 and 10 GeV
  python benchmarks/generation_speed.py --with-100gev --device cuda
  python benchmarks/generation_speed.py --checkpoint runs/x/train/checkpoints/last.pt
"""

# Generator sizes of the shipped configs (configs/calorimeter/*.yaml, train section); read from the
# files at run time so that a change to a config changes what is benchmarked.
CONFIGS = {"quickstart": "configs/calorimeter/quickstart.yaml", "train": "configs/calorimeter/train.yaml"}
REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> None:
    p = _common.parser(__doc__.splitlines()[0], EPILOG)
    p.add_argument("--energies-gev", type=float, nargs="+", default=[1.0, 10.0],
                   help="Geant4 incident energies in GeV (default: 1 10)")
    p.add_argument("--with-100gev", action="store_true",
                   help="also simulate at 100 GeV (~1.3 s CPU per shower)")
    p.add_argument("--geant4-showers", type=int, default=0,
                   help="showers per Geant4 energy (default: 20, --quick 8)")
    p.add_argument("--no-geant4", action="store_true", help="skip Geant4 (surrogate timings only)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 100, 10000],
                   help="surrogate batch sizes (default: 1 100 10000)")
    p.add_argument("--models", nargs="+", choices=sorted(CONFIGS), default=None,
                   help="generator sizes to time, named by config (default: both; --quick: quickstart)")
    p.add_argument("--checkpoint", default="",
                   help="time this trained checkpoint instead of the config-sized untrained generators")
    p.add_argument("--min-seconds", type=float, default=0.0,
                   help="minimum timed wall seconds per (model, batch) (default: 2, --quick 0.5)")
    args = p.parse_args(argv)
    args.geant4_showers = args.geant4_showers or (8 if args.quick else 20)
    args.min_seconds = args.min_seconds or (0.5 if args.quick else 2.0)
    if args.models is None:
        args.models = ["quickstart"] if args.quick else ["quickstart", "train"]
    energies = list(args.energies_gev)
    if args.with_100gev and 100.0 not in energies:
        energies.append(100.0)

    import torch

    device = _common.resolve_device(args.device)
    geant4 = [] if args.no_geant4 else [_geant4(e, args.geant4_showers, args.seed) for e in energies]
    if geant4:
        _common.print_table(f"Geant4 (em_datafree, 1 worker, {args.geant4_showers} showers per energy)",
                            geant4, ["e_gev", "showers", "cpu_ms_per_shower", "ms_per_gev", "wall_s"])

    rows = []
    for label, surrogate in _surrogates(args, device):
        for batch in args.batch_sizes:
            rows.append({"model": label, "device": str(device), "batch": batch,
                         **_time_surrogate(surrogate, batch, device, args.min_seconds, args.seed)})
    for row in rows:
        for g in geant4:
            key = f"x_vs_g4_{_gev(g['e_gev'])}gev"
            row[key] = g["cpu_ms_per_shower"] / row["ms_per_shower"]
            row[f"{key}_per_cpu_s"] = g["cpu_ms_per_shower"] / row["cpu_ms_per_shower"]
    speedups = [f"x_vs_g4_{_gev(g['e_gev'])}gev" for g in geant4]
    _common.print_table(f"Surrogate.generate ({device}, torch threads {torch.get_num_threads()}): "
                        "wall ms per shower; x_vs_g4 = Geant4 CPU ms / surrogate wall ms",
                        rows, ["model", "params_g", "batch", "ms_per_shower", "cpu_ms_per_shower",
                               "showers_per_s", "calls", *speedups])
    print("\nreference (CaloChallenge, GPU): MDMA 6.4 ms/shower at batch 1, 1.2 ms at 100; "
          "CaloINN 0.65 ms at 10k")
    _common.print_summary("generation_speed", args, {"geant4": geant4, "surrogate": rows})


def _gev(e: float) -> str:
    return f"{e:g}"


# --------------------------------------------------------------------------------------------------
# Geant4


def _geant4(e_gev: float, n: int, seed: int) -> dict[str, Any]:
    """simulate() n showers at exactly e_gev with one worker; its CPU time per shower."""
    from surrogate.domains.calorimeter import DOMAIN, SimulateConfig

    e_mev = 1e3 * e_gev
    # e_min = e_max pins the energy; one shard so the single worker runs everything in one BeamOn loop
    cfg = SimulateConfig(n_events=n, e_min_mev=e_mev, e_max_mev=e_mev, n_workers=1, shard_events=n, seed=seed)
    with tempfile.TemporaryDirectory(prefix="bench-geant4-") as tmp:
        out = DOMAIN.simulate(cfg, Path(tmp) / f"g4_{_gev(e_gev)}gev.h5", progress=False)
    return {"e_gev": e_gev, "showers": n, "cpu_ms_per_shower": out["ms_per_shower"],
            "ms_per_gev": out["ms_per_shower"] / e_gev, "wall_s": out["wall_seconds"],
            "mean_response": out["mean_response"]}


# --------------------------------------------------------------------------------------------------
# Surrogate


def _surrogates(args: argparse.Namespace, device: Any) -> list[tuple[str, Any]]:
    """(label, Surrogate) pairs: the trained checkpoint, or untrained generators at the config sizes.

    Untrained weights time the same as trained ones (dense layers, no data-dependent control flow); the
    transform is fitted on synthetic showers so that the inverse transform does realistic work.
    """
    from surrogate.generation import Surrogate

    if args.checkpoint:
        s = Surrogate.from_checkpoint(args.checkpoint, device=str(device))
        return [(f"ckpt:{Path(args.checkpoint).name}", s)]

    import torch

    from surrogate.config import load_config
    from surrogate.domains.calorimeter import DOMAIN
    from surrogate.domains.calorimeter.transform import LogRatioTransform
    from surrogate.models import ModelSpec, build_from_spec
    from surrogate.training.loop import model_spec

    showers, e_inc = _common.synthetic_showers(np.random.default_rng(args.seed), 1000 if args.quick else 4000)
    transform = LogRatioTransform.fit(showers, e_inc, threshold=_common.THRESHOLD_MEV)
    out = []
    for name in args.models:
        cfg = load_config(REPO / CONFIGS[name])
        spec: ModelSpec = model_spec(cfg, DOMAIN.n_features, DOMAIN.n_cond)
        generator, _ = build_from_spec(spec, torch.Generator().manual_seed(args.seed))
        generator = generator.to(device).eval().requires_grad_(False)
        # The same dict a checkpoint carries, so Surrogate runs exactly its production path.
        ckpt = {"domain": DOMAIN.name, "transform": transform.to_dict(), "model_spec": spec.to_dict()}
        out.append((f"{name} (h{spec.hidden_g}, z{spec.latent_dim})", Surrogate(generator, ckpt, device)))
    return out


def _time_surrogate(surrogate: Any, batch: int, device: Any, min_seconds: float,
                    seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    e_min, e_max = surrogate.transform.e_min_mev, surrogate.transform.e_max_mev
    cond = np.exp(rng.uniform(math.log(e_min), math.log(e_max), batch)).astype(np.float32)
    # Warm-up: first calls pay for allocator growth, kernel selection and (CUDA) context / cuBLAS set-up.
    for _ in range(2 if batch < 1000 else 1):
        surrogate.generate(cond[:min(batch, 1000)], seed=seed, batch_size=batch)
    wall, cpu, calls = _common.time_calls(lambda: surrogate.generate(cond, seed=seed, batch_size=batch),
                                          device, min_seconds=min_seconds,
                                          min_calls=1 if batch >= 1000 else 3)
    n_params = sum(p.numel() for p in surrogate.generator.parameters())
    return {"params_g": n_params, "ms_per_shower": 1e3 * wall / batch, "cpu_ms_per_shower": 1e3 * cpu / batch,
            "showers_per_s": batch / wall, "calls": calls}


if __name__ == "__main__":
    main()
