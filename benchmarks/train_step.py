"""Steps per second of surrogate's training step vs a plain eager fp32 PyTorch WGAN-GP loop.

Ours: ``surrogate.training.loop.train_step`` on the state built by ``new_state`` (G, D, EMA, Adam,
latent generator), exactly as ``train`` calls it, with the config's loss, n_critic and gp_weight.
Baseline: the textbook loop written below on the same networks (``build_from_spec``, same initial
weights and Adam settings): separate D passes on real and fake, the penalty with autograd.grad, no EMA,
no autocast. Both read the same pre-made CPU batches, moved to the device inside the step as the loader's
batches are, so disk I/O is not part of either figure.

One step = n_critic critic updates + one generator update; events/s counts the real events the critic
consumes (batch_size x n_critic per step). Each variant is timed ``--repeats`` times, interleaved with
the others, and the fastest repeat is reported: other processes on a shared machine only ever slow a
repeat down, so the minimum is the least disturbed estimate.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import _common

EPILOG = """examples:
  python benchmarks/train_step.py --quick
  python benchmarks/train_step.py                     # quickstart and train.yaml sizes on CPU
  python benchmarks/train_step.py --device cuda       # adds bf16 autocast variants
"""

CONFIGS = {"quickstart": "configs/calorimeter/quickstart.yaml", "train": "configs/calorimeter/train.yaml"}
REPO = Path(__file__).resolve().parent.parent
# The train.yaml size at its batch of 512 (x n_critic 5) is a GPU workload; on CPU a smaller batch keeps
# the default run short while still timing the full-width networks.
CPU_TRAIN_BATCH = 32
N_BATCHES = 8  # distinct batches cycled through (enough that no step sees the same tensors twice in a row)


def main(argv: list[str] | None = None) -> None:
    p = _common.parser(__doc__.splitlines()[0], EPILOG)
    p.add_argument("--models", nargs="+", choices=sorted(CONFIGS), default=None,
                   help="model + training settings, named by config (default: both; --quick: quickstart)")
    p.add_argument("--min-seconds", type=float, default=0.0,
                   help="minimum timed seconds per variant and repeat (default: 4, --quick 1.5)")
    p.add_argument("--repeats", type=int, default=0, help="timed repeats per variant (default: 2, --quick 1)")
    p.add_argument("--batch-size", type=int, default=0,
                   help="override every config's batch size (default: the config's, except the train "
                        f"size on CPU: {CPU_TRAIN_BATCH}, as batch 512 x n_critic 5 takes ~40 s a step on "
                        "2 cores)")
    args = p.parse_args(argv)
    args.min_seconds = args.min_seconds or (1.5 if args.quick else 4.0)
    args.repeats = args.repeats or (1 if args.quick else 2)
    if args.models is None:
        args.models = ["quickstart"] if args.quick else ["quickstart", "train"]

    import torch

    device = _common.resolve_device(args.device)
    rows = []
    for name in args.models:
        rows.extend(_bench_config(name, args, device))
    _common.print_table(f"Training step ({device}, torch threads {torch.get_num_threads()}); "
                        "ratio = steps/s over the eager fp32 baseline's", rows,
                        ["config", "variant", "batch", "n_critic", "steps_per_s", "ms_per_step",
                         "events_per_s", "ratio", "steps_timed"])
    _common.print_summary("train_step", args, rows)


def _bench_config(name: str, args: argparse.Namespace, device: Any) -> list[dict[str, Any]]:
    import torch

    from surrogate.config import load_config
    from surrogate.domains.calorimeter import DOMAIN
    from surrogate.training.loop import model_spec

    cfg = load_config(REPO / CONFIGS[name])
    batch_size = args.batch_size or (CPU_TRAIN_BATCH if name == "train" and device.type == "cpu" else 0)
    if batch_size:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, batch_size=batch_size))
    t = cfg.train
    spec = model_spec(cfg, DOMAIN.n_features, DOMAIN.n_cond)
    batches = _batches(t.batch_size, spec.n_features, spec.n_cond, args.seed)

    variants: dict[str, Callable[[], Callable[[], object]]] = {
        "ours fp32": lambda: _ours(cfg, spec, device, batches, amp=False),
        "baseline fp32": lambda: _baseline(cfg, spec, device, batches, amp=False),
    }
    if device.type == "cuda":
        variants["ours bf16"] = lambda: _ours(cfg, spec, device, batches, amp=True)
        variants["baseline bf16"] = lambda: _baseline(cfg, spec, device, batches, amp=True)
    steps = {label: make() for label, make in variants.items()}
    for step in steps.values():  # warm-up: allocator, Adam state creation, (CUDA) kernel selection
        for _ in range(2):
            step()
    best: dict[str, tuple[float, int]] = {}
    for _ in range(args.repeats):
        for label, step in steps.items():
            wall, _cpu, calls = _common.time_calls(step, device, min_seconds=args.min_seconds, min_calls=2)
            if label not in best or wall < best[label][0]:
                best[label] = (wall, calls)
    del steps
    if device.type == "cuda":
        torch.cuda.empty_cache()
    base = best["baseline fp32"][0]
    config = f"{name} (h{spec.hidden_g}, z{spec.latent_dim})"
    return [{"config": config, "variant": label, "batch": t.batch_size, "n_critic": t.n_critic,
             "steps_per_s": 1.0 / wall, "ms_per_step": 1e3 * wall,
             "events_per_s": t.batch_size * t.n_critic / wall, "ratio": base / wall, "steps_timed": calls}
            for label, (wall, calls) in best.items()]


def _batches(batch_size: int, n_features: int, n_cond: int, seed: int) -> list[Any]:
    """CPU batches shaped like the loader's (x standardised per voxel, cond in [-1, 1])."""
    import torch

    from surrogate.data.loader import Batch

    gen = torch.Generator().manual_seed(seed)
    return [Batch(0, i, torch.randn(batch_size, n_features, generator=gen),
                  torch.rand(batch_size, n_cond, generator=gen) * 2 - 1) for i in range(N_BATCHES)]


def _cycle(batches: list[Any]) -> Iterator[Any]:
    while True:
        yield from batches


# --------------------------------------------------------------------------------------------------
# Ours: the loop's own step on the loop's own state


def _ours(cfg: Any, spec: Any, device: Any, batches: list[Any], *, amp: bool) -> Callable[[], object]:
    from surrogate.training.loop import new_state, train_step

    t = cfg.train
    state = new_state(cfg, spec, device, rank=0)
    stream = _cycle(batches)

    def step() -> object:
        return train_step(state, stream, loss=t.loss, n_critic=t.n_critic, gp_weight=t.gp_weight,
                          g_model=state.generator, d_model=state.discriminator, device=device, amp=amp,
                          next_position=lambda epoch, batch: (epoch, batch + 1))

    return step


# --------------------------------------------------------------------------------------------------
# Baseline: a plain WGAN-GP loop (Gulrajani et al. 2017, algorithm 1) in eager PyTorch


def _baseline(cfg: Any, spec: Any, device: Any, batches: list[Any], *, amp: bool) -> Callable[[], object]:
    import contextlib

    import torch

    from surrogate.models import build_from_spec

    t = cfg.train
    if t.loss != "wgan_gp":
        raise SystemExit(f"the baseline is a WGAN-GP loop; config has train.loss={t.loss}")
    g, d = build_from_spec(spec, torch.Generator().manual_seed(t.seed))
    g.to(device)
    d.to(device)
    opt_g = torch.optim.Adam(g.parameters(), lr=t.lr_g, betas=(t.beta1, t.beta2))
    opt_d = torch.optim.Adam(d.parameters(), lr=t.lr_d, betas=(t.beta1, t.beta2))
    stream = _cycle(batches)

    def autocast() -> Any:
        return torch.autocast("cuda", dtype=torch.bfloat16) if amp else contextlib.nullcontext()

    def step() -> object:
        for _ in range(t.n_critic):
            batch = next(stream)
            real, cond = batch.x.to(device), batch.cond.to(device)
            z = torch.randn(len(real), spec.z_dim, device=device)
            with autocast():
                with torch.no_grad():
                    fake = g(z, cond).float()
                d_real = d(real, cond).float().mean()
                d_fake = d(fake, cond).float().mean()
            alpha = torch.rand(len(real), 1, device=device)
            x_hat = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
            (grad,) = torch.autograd.grad(d(x_hat, cond).sum(), x_hat, create_graph=True)
            gp = ((grad.norm(2, dim=1) - 1) ** 2).mean()
            loss_d = d_fake - d_real + t.gp_weight * gp
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
        z = torch.randn(len(real), spec.z_dim, device=device)
        with autocast():
            loss_g = -d(g(z, cond), cond).float().mean()
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        return loss_g

    return step


if __name__ == "__main__":
    main()
