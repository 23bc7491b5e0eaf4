"""The four GAN objectives, written on discriminator logits.

Every loss takes raw logits (B, 1) and uses softplus forms, which are exact and never evaluate log(0):
    -log sigmoid(l) = softplus(-l),    -log(1 - sigmoid(l)) = softplus(l).
Losses return ``(loss, scalars)``: a 0-dim tensor to back-propagate plus named, detached 0-dim tensors for
logging (tensors, not floats, so that CUDA steps do not synchronise; the loop converts when it logs).

kinds:
- ``minimax``: Goodfellow et al. 2014, eq. 1. D maximises log D(x) + log(1 - D(G(z)));
  G minimises log(1 - D(G(z))) (saturates when D wins early).
- ``nonsaturating``: same D; G maximises log D(G(z)) (Goodfellow et al. 2014, sec. 3).
- ``wgan_gp``: critic loss E[D(fake)] - E[D(real)] + gp_weight * GP, G loss -E[D(fake)]
  (Gulrajani et al. 2017, algorithm 1).
- ``hinge``: D loss E[relu(1 - D(real))] + E[relu(1 + D(fake))], G loss -E[D(fake)]
  (Lim & Ye 2017; Miyato et al. 2018).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from surrogate.config import LOSSES
from surrogate.errors import ConfigError

Scalars = dict[str, torch.Tensor]


def _check_kind(kind: str) -> None:
    if kind not in LOSSES:
        raise ConfigError(f"train.loss: expected one of {', '.join(LOSSES)}, got {kind!r}")


def discriminator_loss(kind: str, d_real: torch.Tensor, d_fake: torch.Tensor, *,
                       gp: torch.Tensor | None = None,
                       gp_weight: float = 10.0) -> tuple[torch.Tensor, Scalars]:
    """Loss the discriminator minimises, from logits d_real (B, 1) and d_fake (B, 1).

    For ``wgan_gp``, ``gp`` is :func:`gradient_penalty`'s (unweighted) value and is added times ``gp_weight``.
    Scalars: loss_d, d_real, d_fake (mean logits), and gp for wgan_gp.
    """
    _check_kind(kind)
    d_real = d_real.float()
    d_fake = d_fake.float()
    if kind in ("minimax", "nonsaturating"):
        loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
    elif kind == "hinge":
        loss = F.relu(1.0 - d_real).mean() + F.relu(1.0 + d_fake).mean()
    else:
        if gp is None:
            raise ValueError("wgan_gp discriminator loss needs the gradient penalty `gp`")
        loss = d_fake.mean() - d_real.mean() + gp_weight * gp
    scalars = {"loss_d": loss.detach(), "d_real": d_real.detach().mean(), "d_fake": d_fake.detach().mean()}
    if kind == "wgan_gp" and gp is not None:
        scalars["gp"] = gp.detach()
    return loss, scalars


def generator_loss(kind: str, d_fake: torch.Tensor) -> tuple[torch.Tensor, Scalars]:
    """Loss the generator minimises, from the discriminator's logits on generated events (B, 1)."""
    _check_kind(kind)
    d_fake = d_fake.float()
    if kind == "minimax":
        loss = -F.softplus(d_fake).mean()  # log(1 - sigmoid(l)) = -softplus(l)
    elif kind == "nonsaturating":
        loss = F.softplus(-d_fake).mean()  # -log sigmoid(l)
    else:
        loss = -d_fake.mean()
    return loss, {"loss_g": loss.detach()}


def gradient_penalty(discriminator: nn.Module, real: torch.Tensor, fake: torch.Tensor, cond: torch.Tensor,
                     generator: torch.Generator | None) -> torch.Tensor:
    """WGAN-GP penalty E[(||grad_x D(x_hat, cond)||_2 - 1)^2] at x_hat = eps real + (1 - eps) fake.

    real, fake: (B, n_features); cond: (B, n_cond); eps ~ U(0, 1) per event, drawn from ``generator``
    (on the tensors' device). Computed in float32 with autocast disabled: the second-order gradient is
    what bfloat16 loses first. Returns a 0-dim tensor with a graph (create_graph) for the critic update.
    """
    device_type = real.device.type
    with torch.autocast(device_type=device_type, enabled=False):
        real = real.detach().float()
        fake = fake.detach().float()
        eps = torch.rand(real.shape[0], 1, device=real.device, generator=generator)
        x_hat = (eps * real + (1.0 - eps) * fake).requires_grad_(True)
        out = discriminator(x_hat, cond.float())
        (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
        return ((grad.norm(2, dim=1) - 1.0) ** 2).mean()
