"""Images per second of the image_gan generator and seconds per training step, per network width.

Generator: the EMA generator (eval mode, no_grad) at batch 1, 100 and 1000 on --side x --side images.
Training: ``surrogate.training.loop.train_step`` on the state ``new_state`` builds (G, D with spectral
norm, EMA, Adam), exactly as ``train`` calls it, at --batch-size, n_critic 1, for wgan_gp (with its
penalty's double backward) and hinge. Batches are pre-made CPU tensors: no disk reads in the figures.
Widths are ``train.model_options.channels_g = channels_d`` (channels at full resolution, doubled per
halving, capped at train.hidden_g / hidden_d = 512). Ratios are against the default width (16 channels).
Each variant is timed --repeats times, interleaved, and the fastest repeat kept (other processes on a
shared machine only ever slow a repeat down). CPU seconds (all threads of this process) are given beside
wall seconds: on a loaded machine the CPU figure is the steadier one, and at --threads 1 it is about the
wall time the same work takes on one free core.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import _common

EPILOG = """examples:
  python benchmarks/image_gan_speed.py --quick
  python benchmarks/image_gan_speed.py --channels 16 8 4      # widths to compare at 64x64
  python benchmarks/image_gan_speed.py --device cuda
"""

DEFAULT_CHANNELS = 16  # image_gan's default channels_g / channels_d: the ratios' baseline


@dataclasses.dataclass
class _Batch:  # what StoreLoader.stream yields, as train_step reads it
    x: Any
    cond: Any
    epoch: int = 0
    batch: int = 0


def main(argv: list[str] | None = None) -> None:
    p = _common.parser(__doc__.splitlines()[0], EPILOG)
    p.add_argument("--channels", type=int, nargs="+", default=None,
                   help="channels_g = channels_d values to time (default: 16 8; --quick: 16)")
    p.add_argument("--side", type=int, default=64, help="image side in pixels (default: 64)")
    p.add_argument("--n-cond", type=int, default=8, help="condition vector length (default: 8)")
    p.add_argument("--batch-size", type=int, default=64, help="training batch (default: 64)")
    p.add_argument("--repeats", type=int, default=0, help="timed repeats per variant (default: 3, --quick 1)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's default)")
    args = p.parse_args(argv)
    args.channels = args.channels or ([DEFAULT_CHANNELS] if args.quick else [DEFAULT_CHANNELS, 8])
    args.repeats = args.repeats or (1 if args.quick else 3)

    import torch

    from surrogate.config import Config, TrainConfig
    from surrogate.models import ModelSpec, resolve_options
    from surrogate.training.loop import new_state, train_step

    if args.threads:
        torch.set_num_threads(args.threads)
    device = _common.resolve_device(args.device)
    gen = torch.Generator().manual_seed(args.seed)
    n_pix = args.side * args.side
    pool = [_Batch(torch.randn(args.batch_size, n_pix, generator=gen), torch.rand(args.batch_size, args.n_cond,
                                                                                   generator=gen))
            for _ in range(4)]

    def batches() -> Iterator[_Batch]:
        while True:
            yield from pool

    states = {}
    for ch in args.channels:
        options = {"channels_g": ch, "channels_d": ch}
        t = TrainConfig(model="image_gan", physics_critic=False, model_options=options, seed=args.seed)
        spec = ModelSpec(name="image_gan", n_features=n_pix, n_cond=args.n_cond, latent_dim=t.latent_dim,
                         hidden_g=t.hidden_g, hidden_d=t.hidden_d, event_shape=(args.side, args.side),
                         options=resolve_options("image_gan", options))
        states[ch] = new_state(dataclasses.replace(Config(), train=t), spec, device, 0)
    stream = batches()
    best: dict[tuple[int, str], float] = {}
    best_cpu: dict[tuple[int, str], float] = {}

    def keep(key: tuple[int, str], wall: float, cpu: float) -> None:
        best[key] = min(best.get(key, float("inf")), wall)
        best_cpu[key] = min(best_cpu.get(key, float("inf")), cpu)

    for repeat in range(args.repeats + 1):  # repeat 0 warms up (allocator, oneDNN kernel choice)
        for ch, state in states.items():
            for n in (1, 100, 1000):
                z = torch.randn(n, state.spec.z_dim, generator=gen).to(device)
                cond = torch.rand(n, args.n_cond, generator=gen).to(device)
                with torch.no_grad():
                    wall, cpu, _ = _common.time_calls(lambda z=z, cond=cond, g=state.ema.model: g(z, cond), device,
                                                      min_seconds=0.0 if repeat == 0 else 1.0)
                if repeat:
                    keep((ch, f"g{n}"), wall, cpu)
            for loss in ("wgan_gp", "hinge"):
                def step(state: Any = state, loss: str = loss) -> None:
                    train_step(state, stream, loss=loss, n_critic=1, gp_weight=10.0, g_model=state.generator,
                               d_model=state.discriminator, device=device, amp=False,
                               next_position=lambda epoch, batch: (epoch, batch + 1))

                wall, cpu, _ = _common.time_calls(step, device, min_seconds=0.0 if repeat == 0 else 2.0)
                if repeat:
                    keep((ch, loss), wall, cpu)

    rows, results = [], []
    for ch, state in states.items():
        row: dict[str, Any] = {
            "channels": ch, "params_G": sum(q.numel() for q in state.generator.parameters()),
            "params_D": sum(q.numel() for q in state.discriminator.parameters())}
        for n in (1, 100, 1000):
            row[f"img/s b{n}"] = n / best[(ch, f"g{n}")]
            row[f"img/cpu-s b{n}"] = n / best_cpu[(ch, f"g{n}")]
        for loss in ("wgan_gp", "hinge"):
            row[f"s/step {loss}"] = best[(ch, loss)]
            row[f"cpu-s/step {loss}"] = best_cpu[(ch, loss)]
            if DEFAULT_CHANNELS in states:
                row[f"x vs {DEFAULT_CHANNELS}ch {loss}"] = best[(DEFAULT_CHANNELS, loss)] / best[(ch, loss)]
        rows.append(row)
        results.append(row)
    _common.print_table(f"image_gan at {args.side}x{args.side}, train batch {args.batch_size}, device {device}",
                        rows, list(rows[0]))
    _common.print_summary("image_gan_speed", args, results)


if __name__ == "__main__":
    main()
