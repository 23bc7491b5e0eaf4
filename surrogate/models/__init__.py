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
# models whose generator can take one extra latent per feature (ModelSpec.voxel_noise)
VOXEL_NOISE_MODELS = frozenset({"calo_shower", "calo_param"})


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
    event_shape: tuple[int, ...] = ()  # (layers, alpha, r) of a structured model's output; () = flat
    voxel_noise: bool = False  # z also holds one N(0, 1) value per feature (models in VOXEL_NOISE_MODELS)

    def __post_init__(self) -> None:
        object.__setattr__(self, "event_shape", tuple(int(v) for v in self.event_shape))  # lists from JSON

    @property
    def z_dim(self) -> int:
        """Length of the z the generator takes: latent_dim, plus n_features with voxel_noise."""
        return self.latent_dim + (self.n_features if self.voxel_noise else 0)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, where: str = "checkpoint") -> ModelSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(d, dict) or not names >= set(d) or "name" not in d:
            raise InputError(where, "model_spec", f"expected a mapping with keys {sorted(names)}, got {d!r}")
        return cls(**d)


def _registry() -> dict[str, Builder]:
    from surrogate.models import calo_mlp, calo_param, calo_shower

    return {"calo_mlp": calo_mlp.build, "calo_shower": calo_shower.build, "calo_param": calo_param.build}


def available() -> list[str]:
    return sorted(_registry())


def build_models(name: str, *, n_features: int, n_cond: int, latent_dim: int, hidden_g: int,
                 hidden_d: int, layer_norm: bool = True, feature_groups: int = 0,
                 event_shape: tuple[int, ...] = (), voxel_noise: bool = False,
                 transform: dict[str, Any] | None = None,
                 generator: Generator | None = None) -> tuple[nn.Module, nn.Module]:
    """Build ``(G, D)`` of the registered model ``name``, initialised from ``generator``.

    ``generator`` (a CPU ``torch.Generator``) makes initialisation reproducible without the global RNG;
    None means a generator seeded with 0. ``transform`` (the fitted transform's dict) is what a critic
    with ``feature_groups`` computes its energy sums through, and what a structured generator maps its
    showers into model space with; a rebuild from a checkpoint needs none (the networks hold it as
    buffers). ``event_shape`` (layers, alpha, r) is what a structured model shapes its output by; flat
    models ignore it. ``voxel_noise`` (only for VOXEL_NOISE_MODELS): G takes z of latent_dim +
    n_features values.
    """
    import torch

    registry = _registry()
    if name not in registry:
        raise ConfigError(f"train.model: unknown model {name!r} (available: {', '.join(sorted(registry))})")
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    if voxel_noise and name not in VOXEL_NOISE_MODELS:
        raise ConfigError(f"train.voxel_noise: model {name!r} takes no per-voxel noise "
                          f"(models that do: {', '.join(sorted(VOXEL_NOISE_MODELS))})")
    extra = {"voxel_noise": True} if voxel_noise else {}
    return registry[name](n_features=n_features, n_cond=n_cond, latent_dim=latent_dim, hidden_g=hidden_g,
                          hidden_d=hidden_d, layer_norm=layer_norm, generator=generator,
                          feature_groups=feature_groups, event_shape=tuple(event_shape), transform=transform,
                          **extra)


def build_from_spec(spec: ModelSpec, generator: Generator | None = None, *,
                    transform: dict[str, Any] | None = None) -> tuple[nn.Module, nn.Module]:
    return build_models(spec.name, n_features=spec.n_features, n_cond=spec.n_cond,
                        latent_dim=spec.latent_dim, hidden_g=spec.hidden_g, hidden_d=spec.hidden_d,
                        layer_norm=spec.layer_norm, feature_groups=spec.feature_groups,
                        event_shape=spec.event_shape, voxel_noise=spec.voxel_noise, transform=transform,
                        generator=generator)
