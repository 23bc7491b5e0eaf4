"""Time per strong-lensing image: each lenstronomy simulator tier vs the surrogate; and the run's fidelity.

Simulator (surrogate.simulators.lenstronomy_lens.run_block, in this process, one core: BLAS/OpenMP pools
limited to one thread): the tiers at the settings of ``--config`` (default the quickstart's 64x64
Euclid-VIS-like images, supersampling 3), each image's conditions drawn as ``simulate`` draws them:
``smooth`` (no substructure); ``subhalos`` (lenstronomy TNFW subhalos in the lens plane) at fixed
subhalo densities (``--sub-densities``, per arcsec^2 of the 2.5" disc); ``pyhalo`` (pyHalo CDM
subhalos + line-of-sight halos, multi-plane) at two lower mass cuts (``--log-mlows``). The figures are
run_block's own per-image clocks: realisation (drawing the substructure: pyHalo, or the TNFW draw) and
render (lenstronomy ray tracing, PSF and noise), timed apart; process CPU / wall over the block says
how much of a core the process got (below 1 on a shared machine: compare the CPU figures then).

Surrogate: ``surrogate.generation.Surrogate.generate`` (condition transform, latents, EMA generator,
copy to host, inverse arcsinh transform to e-/s) at batch 1, 100 and 10000 (``--quick``: 1, 100, 1000),
wall time with all torch threads and with one (``--torch-threads``), and process CPU time, conditions
uniform over the transform's fitted range; above ``--max-chunk`` images the generator runs in chunks
of that many (1000 64x64 images take ~1 GB on CPU). The model: ``--checkpoint`` (or the ``--run``
folder's last checkpoint), or else an untrained ``image_gan`` at the config's sizes built as training
builds it (its weights do not change its cost), with an ArcsinhTransform fitted on the smooth tier's
images.

Ratio = simulator ms per image (realisation + render, one core) / surrogate wall ms per image, per tier
and batch; the summary line also has it per CPU-second. ``--run`` adds the fidelity figures of issue 6
item 6 from that run's validate/metrics.json, each beside its reference-vs-reference floor and limit.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import _common
import numpy as np

EPILOG = """examples:
  python benchmarks/lensing.py --quick
  python benchmarks/lensing.py --skip-pyhalo                    # simulator tiers without pyHalo, ~1 min
  python benchmarks/lensing.py --run runs/quickstart-<stamp>    # its checkpoint, plus its fidelity figures
  python benchmarks/lensing.py --checkpoint runs/x/train/checkpoints/last.pt --device cuda
"""

REPO = Path(__file__).resolve().parent.parent
CONFIG = "configs/strong_lensing/quickstart.yaml"
# Fidelity figures of issue 6 item 6 (metrics.json names): the limit comes from the verdict's entry
# (theta_E's limit is on the absolute bias, shown beside the signed bias).
FIDELITY = (("theta_E_bias_pct", "theta_E_abs_bias_pct", "theta_E mean bias, % (limit on |bias|)"),
            ("theta_E_scatter_ratio", "theta_E_scatter_ratio", "theta_E scatter, generated / reference"),
            ("auc_cnn", "auc_cnn", "CNN classifier AUC"))


def main(argv: list[str] | None = None) -> None:
    p = _common.parser(__doc__.splitlines()[0], EPILOG)
    p.add_argument("--config", default=CONFIG, help=f"simulate and train settings (default: {CONFIG})")
    p.add_argument("--images", type=int, default=0,
                   help="images per smooth / subhalos tier (default: 20, --quick 4)")
    p.add_argument("--pyhalo-images", type=int, default=0,
                   help="images per pyHalo tier, 2-10 s each (default: 3, --quick 1)")
    p.add_argument("--sub-densities", type=float, nargs="+", default=[1.0, 3.0],
                   help="subhalos tier: subhalos per arcsec^2 (default: 1 3)")
    p.add_argument("--log-mlows", type=float, nargs="+", default=[7.5, 7.0],
                   help="pyhalo tier: lightest halo rendered, log10 Msun (default: 7.5 7.0)")
    p.add_argument("--skip-pyhalo", action="store_true", help="leave the pyHalo tiers out")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=None,
                   help="surrogate batch sizes (default: 1 100 10000; --quick: 1 100 1000)")
    p.add_argument("--max-chunk", type=int, default=0,
                   help="largest batch the generator runs at once (Surrogate.generate's batch_size; "
                        "default: 1000 on CPU, where 1000 images take ~1 GB, 10000 on CUDA)")
    p.add_argument("--checkpoint", default="", help="time this trained checkpoint (train/checkpoints/last.pt)")
    p.add_argument("--run", default="",
                   help="a finished run folder: its validate/metrics.json gives the fidelity figures, and "
                        "its train/checkpoints/last.pt is timed unless --checkpoint is given")
    p.add_argument("--torch-threads", type=int, nargs="+", default=None,
                   help="torch CPU threads to time the surrogate at, 0 = torch's default (all cores) "
                        "(default on CPU: 0 1, all and one core like the simulator; on CUDA: 0)")
    p.add_argument("--min-seconds", type=float, default=0.0,
                   help="minimum timed wall seconds per surrogate batch (default: 2, --quick 0.5)")
    args = p.parse_args(argv)
    args.images = args.images or (4 if args.quick else 20)
    args.pyhalo_images = args.pyhalo_images or (1 if args.quick else 3)
    args.batch_sizes = args.batch_sizes or ([1, 100, 1000] if args.quick else [1, 100, 10000])
    args.min_seconds = args.min_seconds or (0.5 if args.quick else 2.0)
    fidelity = _fidelity(Path(args.run)) if args.run else None  # a bad --run fails before minutes of work
    if args.run and not args.checkpoint and (Path(args.run) / "train/checkpoints/last.pt").exists():
        args.checkpoint = str(Path(args.run) / "train/checkpoints/last.pt")

    import torch

    from surrogate.config import load_config

    device = _common.resolve_device(args.device)
    args.max_chunk = args.max_chunk or (10000 if device.type == "cuda" else 1000)
    args.torch_threads = args.torch_threads or ([0] if device.type == "cuda" else [0, 1])
    cfg = load_config(REPO / args.config if not Path(args.config).is_absolute() else args.config)
    base = dataclasses.replace(cfg.simulate, n_workers=1, seed=args.seed)

    tiers, smooth_images = _simulator_tiers(base, args)
    _common.print_table(
        f"lenstronomy simulator per image ({base.num_pix}x{base.num_pix}, {base.pixel_scale_arcsec}\"/px, "
        f"supersampling {base.supersampling}, noise {base.noise}; one core, in process): "
        "realisation = drawing the substructure, render = ray tracing + PSF + noise",
        tiers, ["tier", "images", "mean_halos", "realisation_ms", "render_ms", "ms_per_image", "cpu_ms_per_image",
                "cpu_over_wall"])

    label, surrogate = _surrogate(args, cfg, smooth_images, device)
    all_threads = torch.get_num_threads()
    rows = []
    for threads in dict.fromkeys(t or all_threads for t in args.torch_threads):
        torch.set_num_threads(threads)
        rows += [{"threads": threads, "batch": b, "chunk": min(b, args.max_chunk),
                  **_time_surrogate(surrogate, b, args, device)} for b in args.batch_sizes]
    torch.set_num_threads(all_threads)
    _common.print_table(f"Surrogate.generate, {label} ({device}): wall and process-CPU ms per image at "
                        f"{' and '.join(str(t) for t in dict.fromkeys(r['threads'] for r in rows))} torch "
                        "threads", rows, ["threads", "batch", "chunk", "params_g", "ms_per_image",
                                          "cpu_ms_per_image", "images_per_s", "calls"])

    ratios = []
    for tier in tiers:
        row: dict[str, Any] = {"tier": tier["tier"], "sim_ms": tier["ms_per_image"]}
        for r in rows:
            key = f"b{r['batch']}" + ("" if r["threads"] == all_threads else f" {r['threads']}t")
            row[f"x {key}"] = tier["ms_per_image"] / r["ms_per_image"]
            row[f"x_per_cpu_s {key}"] = tier["cpu_ms_per_image"] / r["cpu_ms_per_image"]
        ratios.append(row)
    _common.print_table(f"speed-up = simulator ms per image (one core) / surrogate wall ms per image, per batch "
                        f"(at {all_threads} torch threads; 't' = at that many)", ratios,
                        [c for c in ratios[0] if not c.startswith("x_per_cpu_s")])

    if fidelity is not None:
        _common.print_table(f"fidelity (issue 6 item 6) of {args.run}: surrogate vs test reference, floor = "
                            "reference vs reference", fidelity, ["metric", "surrogate", "floor", "limit", "passed"])
    else:
        print("\nfidelity: no --run given (a finished run folder with validate/metrics.json); skipped")
    _common.print_summary("lensing", args, {"simulator": tiers, "surrogate": rows, "ratios": ratios,
                                            "fidelity": fidelity}, surrogate_model=label)


# --------------------------------------------------------------------------------------------------
# Simulator


def _tier_settings(base: Any, args: argparse.Namespace) -> list[tuple[str, Any, int]]:
    """(label, settings, images) per tier; a fixed subhalo density is a range of zero width."""
    out = [("smooth", dataclasses.replace(base, tier="smooth"), args.images)]
    for d in args.sub_densities:
        out.append((f"subhalos {d:g}/arcsec2", dataclasses.replace(
            base, tier="subhalos", sub_density_min_arcsec2=d, sub_density_max_arcsec2=d), args.images))
    if not args.skip_pyhalo:
        for m in args.log_mlows:
            out.append((f"pyhalo cdm mlow {m:g}", dataclasses.replace(
                base, tier="pyhalo", pyhalo_model="cdm", log_mlow=m), args.pyhalo_images))
    return out


def _simulator_tiers(base: Any, args: argparse.Namespace
                     ) -> tuple[list[dict[str, Any]], tuple[np.ndarray, np.ndarray]]:
    """One row per tier and the smooth tier's (images (n, H*W) float32, cond (n, K)) for the transform."""
    from threadpoolctl import threadpool_limits

    from surrogate.simulators.lenstronomy_lens import run_block

    rows, smooth = [], None
    with threadpool_limits(limits=1):  # one core, as one simulate worker runs
        run_block(dataclasses.replace(base, tier="smooth"), 0, 1)  # warm-up: lenstronomy's first-call set-up
        for label, settings, n in _tier_settings(base, args):
            wall0, cpu0 = time.perf_counter(), time.process_time()
            r = run_block(settings, 0, n)
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            per_image = r.realisation_seconds + r.render_seconds
            rows.append({"tier": label, "images": n, "mean_halos": float(r.n_halos.mean()),
                         "realisation_ms": 1e3 * float(r.realisation_seconds.mean()),
                         "render_ms": 1e3 * float(r.render_seconds.mean()),
                         "ms_per_image": 1e3 * float(per_image.mean()),
                         "cpu_ms_per_image": 1e3 * cpu / n, "cpu_over_wall": cpu / wall,
                         "ms_each": [round(1e3 * float(t), 2) for t in per_image]})
            if settings.tier == "smooth":
                smooth = (r.images.reshape(n, -1), r.cond)
    assert smooth is not None
    return rows, smooth


# --------------------------------------------------------------------------------------------------
# Surrogate


def _surrogate(args: argparse.Namespace, cfg: Any, smooth: tuple[np.ndarray, np.ndarray],
               device: Any) -> tuple[str, Any]:
    """(label, Surrogate): the checkpoint, or an untrained generator at the config's sizes.

    The untrained model goes through training's own spec (``model_spec``) and builder, and the checkpoint
    dict a trained one carries, so ``Surrogate`` runs exactly its production path.
    """
    from surrogate.generation import Surrogate

    if args.checkpoint:
        return f"checkpoint {args.checkpoint}", Surrogate.from_checkpoint(args.checkpoint, device=str(device))

    import torch

    from surrogate.domains import domain_for
    from surrogate.domains.strong_lensing.transform import ArcsinhTransform
    from surrogate.models import build_from_spec
    from surrogate.training.loop import model_spec

    domain = domain_for(cfg)
    images, cond = smooth
    transform = ArcsinhTransform.fit(images, cond)
    spec = model_spec(cfg, domain.n_features, domain.n_cond)
    generator, _ = build_from_spec(spec, torch.Generator().manual_seed(args.seed))
    generator = generator.to(device).eval().requires_grad_(False)
    ckpt = {"domain": domain.name, "transform": transform.to_dict(), "model_spec": spec.to_dict(),
            "config": {"simulate": dataclasses.asdict(cfg.simulate)}}
    channels = spec.options.get("channels_g")
    return (f"untrained {spec.name} (channels_g {channels}, z {spec.latent_dim}; timing does not depend "
            f"on the weights)", Surrogate(generator, ckpt, device))


def _time_surrogate(surrogate: Any, batch: int, args: argparse.Namespace, device: Any) -> dict[str, Any]:
    rng = np.random.default_rng(args.seed)
    lo, hi = surrogate.transform.condition_range()
    cond = rng.uniform(lo, hi, (batch, len(lo))).astype(np.float32)
    chunk = min(batch, args.max_chunk)

    def call() -> object:
        return surrogate.generate(cond, seed=args.seed, batch_size=chunk)

    # Warm-up at the timed chunk size: first calls pay for allocator growth and kernel selection.
    for _ in range(2 if batch < 1000 else 1):
        surrogate.generate(cond[:chunk], seed=args.seed, batch_size=chunk)
    wall, cpu, calls = _common.time_calls(call, device, min_seconds=args.min_seconds,
                                          min_calls=1 if batch >= 1000 else 3)
    n_params = sum(q.numel() for q in surrogate.generator.parameters())
    return {"params_g": n_params, "ms_per_image": 1e3 * wall / batch, "cpu_ms_per_image": 1e3 * cpu / batch,
            "images_per_s": batch / wall, "calls": calls}


# --------------------------------------------------------------------------------------------------
# Fidelity


def _fidelity(run: Path) -> list[dict[str, Any]]:
    """Rows (metric, surrogate, floor, limit, passed) from ``run``/validate/metrics.json."""
    path = run / "validate" / "metrics.json"
    if not path.is_file():
        raise SystemExit(f"--run {run}: {path} not found; expected a finished run folder (after validate)")
    try:
        report = json.loads(path.read_text())
        metrics, floor = report["metrics"], report["floor"]
    except (ValueError, KeyError) as exc:
        raise SystemExit(f"{path}: expected a validate report with 'metrics' and 'floor' ({exc})") from None
    verdict = {c["metric"]: c for c in report.get("verdict", [])}
    rows = []
    for name, limit_name, text in FIDELITY:
        if name not in metrics:
            raise SystemExit(f"{path}: metrics.{name}: not found; expected a strong-lensing validate report")
        check = verdict.get(limit_name, {})
        rows.append({"metric": name, "description": text, "surrogate": metrics[name], "floor": floor.get(name),
                     "limit": check.get("bound"), "passed": check.get("passed")})
    return rows


if __name__ == "__main__":
    main()
