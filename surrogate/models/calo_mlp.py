"""``calo_mlp``: fully connected conditional generator and critic for flattened calorimeter showers.

Sized so that CPU training stays practical: with the default widths (512) one step at batch 128 on the
6480 dataset-2 voxels is a few tens of GFLOP. No BatchNorm in the critic: the WGAN-GP penalty is defined
per sample, and batch statistics would couple samples (Gulrajani et al. 2017, sec. 4).
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn

NEGATIVE_SLOPE = 0.2  # LeakyReLU slope used by DCGAN/WGAN-GP reference models


def _init_linear(layer: nn.Linear, generator: torch.Generator) -> None:
    """He-uniform weights for LeakyReLU, small uniform bias; drawn from ``generator``, not the global RNG."""
    nn.init.kaiming_uniform_(layer.weight, a=NEGATIVE_SLOPE, nonlinearity="leaky_relu", generator=generator)
    bound = 1.0 / math.sqrt(layer.in_features)
    nn.init.uniform_(layer.bias, -bound, bound, generator=generator)


class Generator(nn.Module):
    """z ++ cond -> hidden -> 2 hidden -> n_features; linear output (the data live in a transformed space).

    forward(z: (B, latent_dim), cond: (B, n_cond)) -> (B, n_features)
    """

    def __init__(self, n_features: int, n_cond: int, latent_dim: int, hidden: int, layer_norm: bool) -> None:
        super().__init__()
        widths = [latent_dim + n_cond, hidden, 2 * hidden]
        layers: list[nn.Module] = []
        for w_in, w_out in itertools.pairwise(widths):
            layers.append(nn.Linear(w_in, w_out))
            if layer_norm:
                layers.append(nn.LayerNorm(w_out))
            layers.append(nn.LeakyReLU(NEGATIVE_SLOPE))
        layers.append(nn.Linear(widths[-1], n_features))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([z, cond], dim=1))


class Discriminator(nn.Module):
    """x ++ cond -> hidden -> hidden/2 -> 1 logit (critic value for WGAN-GP).

    forward(x: (B, n_features), cond: (B, n_cond)) -> (B, 1)
    """

    def __init__(self, n_features: int, n_cond: int, hidden: int) -> None:
        super().__init__()
        half = max(hidden // 2, 1)
        self.net = nn.Sequential(
            nn.Linear(n_features + n_cond, hidden), nn.LeakyReLU(NEGATIVE_SLOPE),
            nn.Linear(hidden, half), nn.LeakyReLU(NEGATIVE_SLOPE),
            nn.Linear(half, 1),
        )

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, cond], dim=1))


def build(*, n_features: int, n_cond: int, latent_dim: int, hidden_g: int, hidden_d: int, layer_norm: bool,
          generator: torch.Generator) -> tuple[nn.Module, nn.Module]:
    # nn.Linear initialises itself from the global RNG on construction; fork it so building a model
    # leaves the global stream untouched, then draw the real initialisation from ``generator``.
    with torch.random.fork_rng(devices=[]):
        g = Generator(n_features, n_cond, latent_dim, hidden_g, layer_norm)
        d = Discriminator(n_features, n_cond, hidden_d)
    for module in (*g.modules(), *d.modules()):
        if isinstance(module, nn.Linear):
            _init_linear(module, generator)
    return g, d
