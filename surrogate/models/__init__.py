"""Generators and discriminators as plain ``nn.Module`` s, built by name from a registry.

``G(z, cond) -> x`` and ``D(x, cond) -> logit`` with z: (B, latent_dim), cond: (B, n_cond) in the model's
(transformed) condition space, x: (B, n_features) in the transformed data space, logit: (B, 1). A
:class:`ModelSpec` is everything needed to rebuild both networks; checkpoints store it, so a checkpoint
rebuilds its generator with no other input (nanoGPT's self-describing checkpoint).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from surrogate.errors import ConfigError, InputError

if TYPE_CHECKING:
    from torch import Generator, nn

Builder = Callable[..., "tuple[nn.Module, nn.Module]"]


@dataclass(frozen=True)
class ModelSpec:
    """Name in the registry plus the sizes that fix both networks' shapes."""

    name: str  # registry name, e.g. "calo_mlp"
    n_features: int  # length of one event's (transformed) data vector
    n_cond: int  # length of the (transformed) condition vector
    latent_dim: int  # size of z
    hidden_g: int  # generator width
    hidden_d: int  # discriminator width
    layer_norm: bool = True  # LayerNorm after the generator's hidden layers
    feature_groups: int = 0  # critic also sees the log energy of this many contiguous voxel groups; 0 = off

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, where: str = "checkpoint") -> ModelSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(d, dict) or not names >= set(d) or "name" not in d:
            raise InputError(where, "model_spec", f"expected a mapping with keys {sorted(names)}, got {d!r}")
        return cls(**d)


def _registry() -> dict[str, Builder]:
    from surrogate.models import calo_mlp

    return {"calo_mlp": calo_mlp.build}


def available() -> list[str]:
    return sorted(_registry())


def build_models(name: str, *, n_features: int, n_cond: int, latent_dim: int, hidden_g: int,
                 hidden_d: int, layer_norm: bool = True, feature_groups: int = 0,
                 transform: dict[str, Any] | None = None,
                 generator: Generator | None = None) -> tuple[nn.Module, nn.Module]:
    """Build ``(G, D)`` of the registered model ``name``, initialised from ``generator``.

    ``generator`` (a CPU ``torch.Generator``) makes initialisation reproducible without the global RNG;
    None means a generator seeded with 0. ``transform`` (the fitted transform's dict) is what a critic
    with ``feature_groups`` computes its energy sums through; a rebuild from a checkpoint needs none.
    """
    import torch

    registry = _registry()
    if name not in registry:
        raise ConfigError(f"train.model: unknown model {name!r} (available: {', '.join(sorted(registry))})")
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    extra: dict[str, Any] = {}
    if feature_groups:  # only builders that take group energies are asked for them
        extra = {"feature_groups": feature_groups, "transform": transform}
    return registry[name](n_features=n_features, n_cond=n_cond, latent_dim=latent_dim, hidden_g=hidden_g,
                          hidden_d=hidden_d, layer_norm=layer_norm, generator=generator, **extra)


def build_from_spec(spec: ModelSpec, generator: Generator | None = None, *,
                    transform: dict[str, Any] | None = None) -> tuple[nn.Module, nn.Module]:
    return build_models(spec.name, n_features=spec.n_features, n_cond=spec.n_cond,
                        latent_dim=spec.latent_dim, hidden_g=spec.hidden_g, hidden_d=spec.hidden_d,
                        layer_norm=spec.layer_norm, feature_groups=spec.feature_groups, transform=transform,
                        generator=generator)
