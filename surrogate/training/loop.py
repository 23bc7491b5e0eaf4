"""The training loop: a conditional GAN trained on a prepared store, with exact resume.

Everything that changes during training lives in one :class:`TrainState` (networks, EMA, optimisers,
latent generator, step, loader position, metric history); a checkpoint is that state plus the config, the
model spec and the fitted transform, so resuming restores the run bit for bit on the same hardware.

One step = ``n_critic`` discriminator updates (each on a fresh batch) then one generator update
conditioned on the last batch's conditions, then one EMA update. The loop knows nothing about physics:
it reads ``n_features`` / ``n_cond`` from the store and hands the caller's ``evaluate`` a sampler that
returns physical units through the fitted transform.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from surrogate.config import Config, config_to_dict
from surrogate.data.hdf5 import open_h5
from surrogate.data.loader import StoreLoader
from surrogate.errors import InputError, SurrogateError
from surrogate.models import ModelSpec, build_from_spec, former_names, resolve_options, takes_feature_noise
from surrogate.training import distributed
from surrogate.training.checkpoint import load_checkpoint, save_checkpoint
from surrogate.training.ema import EMA
from surrogate.training.losses import discriminator_loss, generator_loss, gradient_penalty

LogMetrics = Callable[[dict[str, float], int], None]
Sampler = Callable[[np.ndarray], np.ndarray]
Evaluate = Callable[[Sampler, int], dict[str, float]]

# train.* keys a resume may change: they set how long and how often, not what is computed
RESUME_MAY_CHANGE = ("steps", "resume", "checkpoint_every", "validate_every", "validate_events",
                     "log_every", "num_threads", "select_by")
# train.* keys added after checkpoints existed, with the value an older checkpoint's absent key means
ADDED_KEYS: dict[str, Any] = {"model_options": {}, "lr_decay_start": 1.0}
SAMPLE_CHUNK = 4096  # events per generator call inside `sample` (bounds memory for 6480 features)


@dataclass(frozen=True)
class TrainResult:
    checkpoint: Path  # the last checkpoint written (same content as checkpoints/last.pt)
    steps: int  # generator updates done in total (including those before a resume)
    seconds: float  # wall time of this call's training loop
    steps_per_second: float  # steps done by this call / seconds
    device: str  # e.g. "cpu", "cuda:0"
    losses: dict[str, float]  # the last logged interval's scalars (loss_d, loss_g, d_real, d_fake, gp)
    best: Path | None = None  # checkpoints/best.pt (EMA generator of the best step by train.select_by), if any


@dataclass
class TrainState:
    """All mutable training state. Networks are the bare modules (not DDP wrappers)."""

    spec: ModelSpec
    generator: nn.Module
    discriminator: nn.Module
    ema: EMA
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    noise: torch.Generator  # latents and gradient-penalty mixing, on the training device
    step: int = 0  # generator updates done
    epoch: int = 0  # loader position of the next batch to read
    batch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)  # {"step": n, metric: value, ...}

    def checkpoint(self, *, config: dict[str, Any], transform: dict[str, Any], domain: str,
                   store: dict[str, Any], noise_states: list[torch.Tensor],
                   world_size: int) -> dict[str, Any]:
        """The full checkpoint dict (see surrogate.training.checkpoint for the layout)."""
        rng: dict[str, Any] = {"torch_cpu": torch.get_rng_state(), "noise": noise_states}
        if torch.cuda.is_available():
            rng["torch_cuda"] = torch.cuda.get_rng_state_all()
        return {
            "step": self.step,
            "loader": {"epoch": self.epoch, "batch": self.batch},
            "model_spec": self.spec.to_dict(),
            "G": self.generator.state_dict(),
            "D": self.discriminator.state_dict(),
            "G_ema": self.ema.model.state_dict(),
            "ema_updates": self.ema.updates,
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            # bfloat16 autocast needs no loss scaling (float32's exponent range), so no GradScaler
            "scaler": {},
            "rng": rng,
            "config": config,
            "transform": transform,
            "domain": domain,
            "store": store,
            "world_size": world_size,
            "history": self.history,
        }

    def restore(self, ckpt: dict[str, Any], rank: int) -> None:
        self.generator.load_state_dict(ckpt["G"])
        self.discriminator.load_state_dict(ckpt["D"])
        self.ema.model.load_state_dict(ckpt["G_ema"])
        self.ema.updates = int(ckpt["ema_updates"])
        self.opt_g.load_state_dict(ckpt["opt_g"])
        self.opt_d.load_state_dict(ckpt["opt_d"])
        self.noise.set_state(ckpt["rng"]["noise"][rank])
        torch.set_rng_state(ckpt["rng"]["torch_cpu"])
        if "torch_cuda" in ckpt["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ckpt["rng"]["torch_cuda"])
        self.step = int(ckpt["step"])
        self.epoch = int(ckpt["loader"]["epoch"])
        self.batch = int(ckpt["loader"]["batch"])
        self.history = list(ckpt["history"])


def _seed(*words: int) -> int:
    """A 63-bit seed derived from ``words`` (independent streams for init, latents per rank, evaluation)."""
    return int(np.random.SeedSequence(list(words)).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))


def store_identity(store_dir: Path) -> dict[str, Any]:
    """The store attributes that define the data a run trains on (checked again on resume)."""
    path = store_dir / "store.h5"
    with open_h5(path) as f:
        missing = [k for k in ("n_features", "n_cond") if k not in f.attrs]
        if missing:
            raise InputError(path, missing[0], "missing store attribute (was this store written by prepare?)")
        return {"n_features": int(f.attrs["n_features"]), "n_cond": int(f.attrs["n_cond"]),
                "seed": int(f.attrs.get("seed", 0)), "sources": str(f.attrs.get("sources", "[]")),
                "transform": str(f.attrs.get("transform", ""))}


def read_transform_dict(store_dir: Path) -> dict[str, Any]:
    path = store_dir / "transform.json"
    try:
        d = json.loads(path.read_text())
    except OSError as exc:
        raise InputError(path, None, f"cannot read the fitted transform ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise InputError(path, None, f"not valid JSON (line {exc.lineno})") from None
    if not isinstance(d, dict) or "name" not in d:
        raise InputError(path, "name", "expected a JSON object with the transform's name")
    return d


def model_spec(cfg: Config, n_features: int, n_cond: int) -> ModelSpec:
    from surrogate.domains import domain_for

    domain = domain_for(cfg)
    t = cfg.train
    groups = domain.critic_feature_groups if t.physics_critic else 0
    if groups and n_features % groups:
        raise SurrogateError(f"train.physics_critic: the store's {n_features} features do not split into the "
                             f"{cfg.domain} domain's {groups} groups; set train.physics_critic=false")
    # a store of another size than the domain's events (e.g. a synthetic test store) is one flat axis
    shape = tuple(domain.event_shape) if math.prod(domain.event_shape) == n_features else ()
    name = t.model or domain.default_model
    options = resolve_options(name, t.model_options)
    return ModelSpec(name=name, n_features=n_features, n_cond=n_cond,
                     latent_dim=t.latent_dim, hidden_g=t.hidden_g, hidden_d=t.hidden_d, layer_norm=t.layer_norm,
                     feature_groups=groups, event_shape=shape,
                     feature_noise=t.feature_noise and takes_feature_noise(name, options), options=options)


def new_state(cfg: Config, spec: ModelSpec, device: torch.device, rank: int,
              transform: dict[str, Any] | None = None) -> TrainState:
    """Freshly initialised state; initialisation is identical on every rank, latents differ per rank.

    ``transform`` (the store's fitted transform) is what a critic with group energies computes through.
    """
    t = cfg.train
    generator, discriminator = build_from_spec(spec, torch.Generator().manual_seed(_seed(t.seed, 0)),
                                               transform=transform)
    generator.to(device)
    discriminator.to(device)
    ema = EMA(generator, t.ema_decay)
    # fused Adam: one kernel for all parameters; on CPU 17x faster than the per-tensor default (measured:
    # 22 ms vs 380 ms per step for the 3.5M-parameter dataset-2 generator at width 256, 2 threads)
    opt_g = torch.optim.Adam(generator.parameters(), lr=t.lr_g, betas=(t.beta1, t.beta2), fused=True)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=t.lr_d, betas=(t.beta1, t.beta2), fused=True)
    noise = torch.Generator(device=device).manual_seed(_seed(t.seed, 1, rank))
    return TrainState(spec, generator, discriminator, ema, opt_g, opt_d, noise)


def check_resumable(ckpt: dict[str, Any], path: str, cfg: Config, store: dict[str, Any],
                    transform: dict[str, Any], world_size: int) -> None:
    """Refuse (one line) a resume whose config, data or process count differs from the checkpoint's."""
    old, new = ckpt["config"], config_to_dict(cfg)
    hint = f"only train.{{{','.join(RESUME_MAY_CHANGE)}}} may change on resume"
    if old.get("domain") != new["domain"]:
        raise SurrogateError(f"train.resume: {path} is a {old.get('domain')!r} run, this config is "
                             f"{new['domain']!r}")
    renamed = former_names()  # a checkpoint written before a train.* key was renamed holds the old key
    old_train = {renamed.get(key, key): value for key, value in old.get("train", {}).items()}
    new_train = new["train"]
    for key in sorted(set(old_train) | set(new_train)):
        old_value = old_train.get(key, ADDED_KEYS.get(key))
        if key not in RESUME_MAY_CHANGE and old_value != new_train.get(key):
            raise SurrogateError(f"train.resume: {path} was trained with train.{key}={old_value!r}, "
                                 f"this config has {new_train.get(key)!r}; {hint}")
    if ckpt.get("store") != store or ckpt["transform"] != transform:
        raise SurrogateError(f"train.resume: {path} was trained on another prepared store (its attributes "
                             "or transform.json differ)")
    if int(ckpt.get("world_size", 1)) != world_size:
        raise SurrogateError(f"train.resume: {path} was trained by {ckpt.get('world_size')} process(es), "
                             f"this run has {world_size}; batches would differ")


def _autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager[Any]:
    if device.type == "cuda" and amp:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _unwrap(module: nn.Module) -> nn.Module:
    inner = getattr(module, "module", None)
    return inner if isinstance(inner, nn.Module) else module


def train_step(state: TrainState, batches: Iterator[Any], *, loss: str, n_critic: int, gp_weight: float,
               g_model: nn.Module, d_model: nn.Module, device: torch.device, amp: bool,
               next_position: Callable[[int, int], tuple[int, int]],
               augment: bool = False) -> dict[str, torch.Tensor]:
    """One generator update after ``n_critic`` discriminator updates; returns detached scalars.

    A critic that defines ``matching_loss(real, fake, cond)`` and a positive ``matching_weight`` (a model's
    option) adds that feature-matching term to the generator's loss, against the last critic batch's real events
    (whose conditions the generator's fakes share). One whose ``interpolation_conditions(cond, noise)`` returns
    conditions draws the generator's maps there too, in the same pass, and adds its
    ``interpolation_loss(real, cond, maps, conditions)``.

    With ``augment``, each real batch passes through the critic's ``augment(x, generator)`` (a random
    symmetry of the data, drawn from the state's noise generator so that a resume repeats it) when the
    critic defines one.

    ``g_model`` / ``d_model`` are the (possibly DDP-wrapped) networks: each wrapper runs exactly one
    forward per backward (G in the generator update, D on real ++ fake in the critic update), so DDP
    averages exactly the gradients of that update. The penalty and the generator's pass through D use
    the bare discriminator; their gradients reach the same parameters within the same backward call.
    """
    generator, discriminator = state.generator, state.discriminator
    latent = state.spec.z_dim
    scalars: dict[str, torch.Tensor] = {}
    cond = real = torch.empty(0)
    symmetry = getattr(discriminator, "augment", None) if augment else None
    for _ in range(n_critic):
        batch = next(batches)
        state.epoch, state.batch = next_position(batch.epoch, batch.batch)
        real = batch.x.to(device, non_blocking=True)
        if symmetry is not None:
            real = symmetry(real, state.noise)
        cond = batch.cond.to(device, non_blocking=True)
        n = real.shape[0]
        z = torch.randn(n, latent, device=device, generator=state.noise)
        with _autocast(device, amp):
            with torch.no_grad():
                fake = generator(z, cond)
            both = torch.cat([real, fake.to(real.dtype)])
            logits = d_model(both, torch.cat([cond, cond]))
        real = both[:n]  # the same values, as a view of what the critic saw (a critic may cache per input)
        d_real, d_fake = logits[:n], logits[n:]
        gp = (gradient_penalty(discriminator, real, fake, cond, state.noise) if loss == "wgan_gp" else None)
        loss_d, scalars = discriminator_loss(loss, d_real, d_fake, gp=gp, gp_weight=gp_weight)
        state.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        state.opt_d.step()

    # D's parameters need no gradient in the generator update; freezing them skips that work
    discriminator.requires_grad_(False)
    between = getattr(discriminator, "interpolation_conditions", None)
    interpolation = getattr(discriminator, "interpolation_loss", None)
    cond_between = between(cond, state.noise) if between is not None and interpolation is not None else None
    cond_g = cond if cond_between is None else torch.cat([cond, cond_between])
    z = torch.randn(cond_g.shape[0], latent, device=device, generator=state.noise)
    matching = getattr(discriminator, "matching_loss", None)
    with _autocast(device, amp):
        fake_all = g_model(z, cond_g)
        fake_g = fake_all[:len(cond)]
        d_fake_g = discriminator(fake_g, cond)
    loss_g, g_scalars = generator_loss(loss, d_fake_g)
    if matching is not None and getattr(discriminator, "matching_weight", 0.0) > 0:
        # a critic with a feature-matching term compares the fakes with the last real batch (same conditions)
        loss_match = matching(real, fake_g, cond)
        loss_g = loss_g + loss_match
        g_scalars["loss_match"] = loss_match.detach()
    if cond_between is not None and interpolation is not None:
        # a critic that asks for maps between the batch's conditions matches their summaries to the reference's,
        # interpolated (one generator pass draws both, so a DDP wrapper sees one forward per backward)
        loss_between = interpolation(real, cond, fake_all[len(cond):], cond_between)
        loss_g = loss_g + loss_between
        g_scalars["loss_interpolation"] = loss_between.detach()
    state.opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    state.opt_g.step()
    discriminator.requires_grad_(True)
    state.ema.update(generator)
    state.step += 1
    return {**scalars, **g_scalars}


def lr_factor(step: int, steps: int, decay_start: float) -> float:
    """The learning rates' factor for the update from ``step`` (0-based) of ``steps``: 1 before
    ``decay_start`` x steps, then falling linearly to 1/(updates in the decay) at the last update. A function
    of the step alone, so a resume continues it exactly (a resume that changes train.steps moves it)."""
    start = math.floor(decay_start * steps)
    if step < start or start >= steps:
        return 1.0
    return (steps - step) / (steps - start)


def make_sampler(model: nn.Module, transform: Any, latent_dim: int, device: torch.device, amp: bool,
                 seed: int) -> Sampler:
    """``sample(cond_raw (n, n_cond) physical) -> (n, n_features) physical`` with the given generator.

    Latents come from a generator seeded by ``seed``, so evaluation never moves the training streams.
    """
    def sample(cond_raw: np.ndarray) -> np.ndarray:
        cond_raw = np.asarray(cond_raw, dtype=np.float32)
        cond_raw = cond_raw.reshape(len(cond_raw), -1)
        gen = torch.Generator(device=device).manual_seed(seed)
        out = []
        model.eval()
        for start in range(0, len(cond_raw), SAMPLE_CHUNK):
            chunk = cond_raw[start:start + SAMPLE_CHUNK]
            cond = torch.from_numpy(np.asarray(transform.forward_cond(chunk), dtype=np.float32)).to(device)
            z = torch.randn(len(chunk), latent_dim, device=device, generator=gen)
            with torch.no_grad(), _autocast(device, amp):
                x = model(z, cond)
            out.append(transform.inverse(x.float().cpu().numpy(), chunk))
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    return sample


def train(cfg: Config, store_dir: Path, out_dir: Path, *, log_metrics: LogMetrics | None = None,
          evaluate: Evaluate | None = None, progress: bool = True) -> TrainResult:
    """Train on ``store_dir/store.h5`` (+ ``transform.json``), writing ``out_dir/checkpoints/``.

    Checkpoints ``step_XXXXXXX.pt`` every ``train.checkpoint_every`` steps and at the end, each copied to
    ``last.pt``. Every ``train.log_every`` steps the interval means of loss_d, loss_g, d_real, d_fake
    (mean logits), gp (wgan_gp) and sec_per_step go to ``log_metrics(metrics, step)``; every
    ``train.validate_every`` steps and at the end ``evaluate(sample, step)`` is called with a sampler of
    the EMA generator in physical units and its dict is logged too. Under torchrun only rank 0 logs,
    evaluates and writes (see surrogate.training.distributed).
    """
    result, _state = run_training(cfg, store_dir, out_dir, log_metrics=log_metrics, evaluate=evaluate,
                                  progress=progress)
    return result


def run_training(cfg: Config, store_dir: Path, out_dir: Path, *, log_metrics: LogMetrics | None = None,
                 evaluate: Evaluate | None = None,
                 progress: bool = True) -> tuple[TrainResult, TrainState]:
    """:func:`train`, also returning this process's final :class:`TrainState` (tests, notebooks)."""
    info = distributed.init_distributed(cfg.train.device)
    threads = torch.get_num_threads()
    if cfg.train.num_threads > 0:
        torch.set_num_threads(cfg.train.num_threads)
    finished = False
    try:
        result = _run(cfg, Path(store_dir), Path(out_dir), info, log_metrics, evaluate, progress)
        finished = True
        return result
    finally:
        torch.set_num_threads(threads)  # a process-wide setting: leave it as the caller had it
        distributed.shutdown(info, finished=finished)


def _run(cfg: Config, store_dir: Path, out_dir: Path, info: distributed.DistInfo,
         log_metrics: LogMetrics | None, evaluate: Evaluate | None,
         progress: bool) -> tuple[TrainResult, TrainState]:
    t = cfg.train
    device = distributed.resolve_device(t.device, info)
    amp = t.amp and device.type == "cuda"
    store = store_identity(store_dir)
    transform_dict = read_transform_dict(store_dir)
    spec = model_spec(cfg, store["n_features"], store["n_cond"])
    state = new_state(cfg, spec, device, info.rank, transform_dict)
    if t.resume:
        ckpt = load_checkpoint(t.resume)  # CPU: RNG states must stay CPU tensors; modules copy to device
        check_resumable(ckpt, t.resume, cfg, store, transform_dict, info.world_size)
        state.restore(ckpt, info.rank)
        del ckpt

    loader = StoreLoader(store_dir / "store.h5", "train", batch_size=t.batch_size, seed=_seed(t.seed, 2),
                         buffer_blocks=t.buffer_blocks, rank=info.rank, world_size=info.world_size)
    g_model = distributed.wrap(state.generator, info, device)
    d_model = distributed.wrap(state.discriminator, info, device)
    transform = None
    if evaluate is not None and info.is_main:
        from surrogate.data.transforms import transform_from_dict

        transform = transform_from_dict(transform_dict)

    ckpt_dir = out_dir / "checkpoints"
    config_dict = config_to_dict(cfg)
    last_path = ckpt_dir / "last.pt"

    def write_checkpoint() -> Path:
        noise_states = distributed.gather_objects(state.noise.get_state(), info)
        if not info.is_main:
            return last_path
        path = save_checkpoint(ckpt_dir / f"step_{state.step:07d}.pt", state.checkpoint(
            config=config_dict, transform=transform_dict, domain=cfg.domain, store=store,
            noise_states=noise_states, world_size=info.world_size))
        tmp = last_path.with_name(f".last.pt.{os.getpid()}.partial")
        shutil.copyfile(path, tmp)
        os.replace(tmp, last_path)
        return path

    def record(metrics: dict[str, float]) -> None:
        state.history.append({"step": float(state.step), **metrics})
        if log_metrics is not None:
            log_metrics(metrics, state.step)

    best_path = ckpt_dir / "best.pt"

    def run_evaluation() -> None:
        if evaluate is None or not info.is_main:
            return
        sample = make_sampler(state.ema.model, transform, spec.z_dim, device, amp,
                              seed=_seed(t.seed, 3, state.step))
        metrics = {k: float(v) for k, v in evaluate(sample, state.step).items()}
        record(metrics)
        if t.select_by:
            keep_if_best(metrics)

    def keep_if_best(metrics: dict[str, float]) -> None:
        """EMA generator of this step to best.pt when train.select_by is lower than at every earlier
        evaluation (a GAN's trajectory is not monotonic: the last step need not be the best)."""
        if t.select_by not in metrics:
            raise SurrogateError(f"train.select_by: {t.select_by!r} is not an in-training metric (available: "
                                 f"{', '.join(sorted(metrics))})")
        value = metrics[t.select_by]
        earlier = [h[t.select_by] for h in state.history[:-1] if t.select_by in h and math.isfinite(h[t.select_by])]
        if not math.isfinite(value) or (earlier and value >= min(earlier)):
            return
        from surrogate.generation import export_generator

        ckpt_dir.mkdir(parents=True, exist_ok=True)
        tmp = best_path.with_name(f".best.pt.{os.getpid()}.partial")
        export_generator({"G_ema": state.ema.model.state_dict(), "model_spec": spec.to_dict(),
                          "transform": transform_dict, "domain": cfg.domain, "config": config_dict,
                          "step": state.step}, tmp)
        os.replace(tmp, best_path)

    from tqdm.auto import tqdm

    bar = tqdm(total=t.steps, initial=min(state.step, t.steps), desc="train", unit="step", file=sys.stderr,
               disable=not (progress and info.is_main), dynamic_ncols=True)
    batches = loader.stream(state.epoch, state.batch)
    sums: dict[str, torch.Tensor] = {}
    n_sum = 0
    losses: dict[str, float] = {}
    last_checkpoint = last_path
    start_step = state.step
    t0 = t_log = time.perf_counter()
    try:
        while state.step < t.steps:
            factor = lr_factor(state.step, t.steps, t.lr_decay_start)
            for opt, lr in ((state.opt_g, t.lr_g), (state.opt_d, t.lr_d)):
                for group in opt.param_groups:
                    group["lr"] = lr * factor
            scalars = train_step(state, batches, loss=t.loss, n_critic=t.n_critic, gp_weight=t.gp_weight,
                                 g_model=g_model, d_model=d_model, device=device, amp=amp,
                                 next_position=loader.next_position, augment=t.augment)
            for key, value in scalars.items():
                sums[key] = sums[key] + value if key in sums else value.clone()
            n_sum += 1
            bar.update(1)
            final = state.step == t.steps
            if state.step % t.log_every == 0 or final:
                now = time.perf_counter()
                losses = {key: float(value) / n_sum for key, value in sums.items()}
                if not all(math.isfinite(v) for v in losses.values()):
                    raise SurrogateError(f"train: losses became non-finite at step {state.step} ({losses}); "
                                         "lower train.lr_g/lr_d or check the prepared store")
                if info.is_main:
                    record({**losses, "sec_per_step": (now - t_log) / n_sum})
                    bar.set_postfix({k: f"{losses[k]:.3g}" for k in ("loss_d", "loss_g") if k in losses})
                sums, n_sum, t_log = {}, 0, now
            if t.validate_every > 0 and (state.step % t.validate_every == 0 or final):
                run_evaluation()
            if state.step % t.checkpoint_every == 0 or final:
                last_checkpoint = write_checkpoint()
        if state.step == start_step:  # nothing left to do (resumed at or past train.steps)
            last_checkpoint = write_checkpoint()
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    done = state.step - start_step
    result = TrainResult(checkpoint=last_checkpoint, steps=state.step, seconds=seconds,
                         steps_per_second=done / seconds if seconds > 0 else 0.0, device=str(device),
                         losses=losses, best=best_path if t.select_by and best_path.is_file() else None)
    return result, state
