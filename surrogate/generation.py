"""Sampling from a trained generator: the in-memory :class:`Surrogate` API and streamed file output.

A :class:`Surrogate` is what an analysis uses in place of the slow simulator: same conditions in
(physical units), same data layout out (physical units, readout threshold applied).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from surrogate.errors import InputError

EXPORT_FORMAT = "surrogate-generator-v1"


class ExtrapolationWarning(UserWarning):
    """Conditions outside the training range were generated on purpose (``extrapolate=True``)."""


def resolve_device(name: str) -> Any:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Surrogate:
    """A trained generator plus the fitted transform that maps its output back to physical units."""

    def __init__(self, generator: Any, ckpt: dict[str, Any], device: Any) -> None:
        from surrogate.data.transforms import transform_from_dict
        from surrogate.domains import get_domain
        from surrogate.models import ModelSpec

        self.generator = generator
        self.device = device
        self.domain = _configured(get_domain(ckpt["domain"]), ckpt)
        self.transform = transform_from_dict(ckpt["transform"])
        self.latent_dim = ModelSpec.from_dict(ckpt["model_spec"]).z_dim  # length of z, noise included
        self.n_cond = int(ckpt["model_spec"]["n_cond"])
        self.n_features = int(ckpt["model_spec"]["n_features"])
        self.step = int(ckpt.get("step", 0))
        self.source = str(ckpt.get("source", ""))

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, device: str = "auto", use_ema: bool = True) -> Surrogate:
        """Rebuild from a training checkpoint or an exported generator (``torch.load(weights_only=True)``)."""
        from surrogate.training.checkpoint import generator_from_checkpoint

        dev = resolve_device(device)
        generator, ckpt = generator_from_checkpoint(path, use_ema=use_ema, device=str(dev))
        ckpt = dict(ckpt)
        ckpt["source"] = str(path)
        return cls(generator, ckpt, dev)

    def check_range(self, cond: np.ndarray, where: str | Path = "conditions", *,
                    extrapolate: bool = False) -> None:
        """Refuse (InputError) conditions outside the range the model was trained on, or warn if ``extrapolate``.

        A GAN has learned nothing outside its training range: events at conditions it never saw are an
        extrapolation, not a simulation. The range is the fitted transform's (the training data's).
        """
        cond = np.asarray(cond, dtype=np.float64).reshape(-1, self.n_cond)
        lo, hi = self.transform.condition_range()
        outside = outside_range(cond, lo, hi)
        if not outside.any():
            return
        event, column = (int(i) for i in np.argwhere(outside)[0])
        conditions = self.domain.conditions
        name = conditions[column].label if column < len(conditions) else f"condition {column}"
        what = (f"{int(outside.any(axis=1).sum())} of {len(cond)} conditions outside the training range of "
                f"{name}, {lo[column]:.6g} to {hi[column]:.6g} (first: {cond[event, column]:.6g} at event {event})")
        if not extrapolate:
            raise InputError(where, None, f"{what}; set generate.extrapolate=true (Python: extrapolate=True) "
                                          "to generate anyway")
        warnings.warn(f"{where}: {what}: extrapolating", ExtrapolationWarning, stacklevel=2)

    def generate(self, cond: np.ndarray, *, seed: int | None = 0, torch_generator: Any = None,
                 batch_size: int = 10000, extrapolate: bool = False) -> np.ndarray:
        """Events for the physical conditions ``cond`` ((N,) or (N, n_cond)), in physical units.

        ``cond`` columns as the domain's ``conditions`` name them, in their units; the result is
        (N, n_features) in the domain's layout, flattened from its ``event_shape``. Latents come from
        ``torch_generator`` if given, else from ``seed``.
        Conditions outside the training range raise an InputError unless ``extrapolate`` (then a warning).
        """
        blocks = list(self.iter_generate(cond, seed=seed, torch_generator=torch_generator,
                                         batch_size=batch_size, extrapolate=extrapolate))
        if not blocks:
            return np.zeros((0, self.n_features), dtype=np.float32)
        return np.concatenate([b for b, _ in blocks])

    def iter_generate(self, cond: np.ndarray, *, seed: int | None = 0, torch_generator: Any = None,
                      batch_size: int = 10000, extrapolate: bool = False,
                      where: str | Path = "conditions") -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(data, cond)`` blocks of at most ``batch_size`` events (see :meth:`generate`).

        The conditions are checked when this is called, not when the first block is drawn; errors and
        warnings name ``where`` (e.g. the file they came from).
        """
        cond = np.asarray(cond, dtype=np.float32).reshape(-1, self.n_cond)
        self.domain.check_conditions(cond, where)
        self.check_range(cond, where, extrapolate=extrapolate)
        return self._blocks(cond, seed, torch_generator, batch_size)

    def _blocks(self, cond: np.ndarray, seed: int | None, torch_generator: Any,
                batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        import torch

        gen = torch_generator
        if gen is None:
            gen = torch.Generator(device=self.device)
            gen.manual_seed(0 if seed is None else seed)
        autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda"
                    else torch.autocast("cpu", enabled=False))
        for start in range(0, len(cond), batch_size):
            c_raw = cond[start:start + batch_size]
            c = torch.from_numpy(self.transform.forward_cond(c_raw)).to(self.device)
            z = torch.randn(len(c_raw), self.latent_dim, generator=gen, device=self.device)
            with torch.no_grad(), autocast:
                x = self.generator(z, c)
            yield self.transform.inverse(x.float().cpu().numpy(), c_raw), c_raw


def read_conditions(domain: Any, path: str | Path) -> np.ndarray:
    """The physical conditions of a file in the domain's layout (small: (N, n_cond))."""
    events = domain.open_lazy((str(path),), 65536)
    cond = np.asarray(events.cond.compute(scheduler="synchronous"), dtype=np.float32)
    domain.check_conditions(cond, path)
    return cond


def export_generator(ckpt: dict[str, Any], path: Path) -> Path:
    """Write the inference-only part of a training checkpoint (EMA generator, spec, transform)."""
    import torch

    slim = {
        "format": EXPORT_FORMAT,
        "G_ema": ckpt["G_ema"],
        "model_spec": ckpt["model_spec"],
        "transform": ckpt["transform"],
        "domain": ckpt["domain"],
        "config": ckpt["config"],
        "step": ckpt["step"],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(slim, path)
    return path


def _configured(domain: Any, ckpt: dict[str, Any]) -> Any:
    """The domain set up for the simulate settings the checkpoint was trained with (its condition names);
    the plain domain where the checkpoint's settings no longer load (an older config)."""
    from surrogate.config import build_section
    from surrogate.errors import ConfigError

    simulate = (ckpt.get("config") or {}).get("simulate")
    if not isinstance(simulate, dict):
        return domain
    try:
        return domain.configured(build_section(domain.SimulateConfig, simulate, "simulate"))
    except ConfigError:
        return domain


def outside_range(cond: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(N, n_cond) bool: True where a condition lies outside [lo, hi] (n_cond,) each.

    The bounds come through a float32 round trip, so 1e-6 of the larger bound's magnitude is slack (a
    relative factor on the bound itself would shrink a negative lower bound's range instead of widening
    it: the lowest training value of a signed condition would count as outside).
    """
    slack = 1e-6 * np.maximum(np.abs(lo), np.abs(hi))
    return np.asarray((cond < lo - slack) | (cond > hi + slack))
