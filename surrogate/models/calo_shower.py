"""``calo_shower``: a conditional generator and critic built for calorimeter showers.

The generator does not emit 6480 independent voxel values. It emits a shower the way a physicist
describes one, and multiplies the parts:

    E_voxel(l, a, r) / E_inc = R * p(l) * q_l(a, r)

with the response R = E_tot / E_inc (a positive number), the longitudinal profile p (a softmax over the
layers) and the shape within each layer q_l (a softmax over that layer's alpha x r cells). The sum of the
voxels is R E_inc by construction, so the total energy response and the longitudinal profile are one
output each instead of emerging from thousands of voxels whose errors add up (calo_mlp on the quickstart:
E_tot / E_inc 1.38 +- 1.50 where Geant4 gives 1.005 +- 0.078). The factorisation follows CaloFlow's
two-stage energy-then-shape split (Krause & Shih, arXiv:2106.05285, sec. 3) inside one GAN generator.

Exact zeros: a voxel whose energy falls below the readout threshold (15.15 keV for CaloChallenge dataset 2)
is set to exactly the value an empty voxel has in the data (s = 0), as the detector reports it, so the
critic never sees the small non-zero energies a softmax would leave everywhere. The cut is a step; its
gradient is passed straight through (Bengio, Leonard & Courville, arXiv:1308.3432), so the critic can still
ask for a voxel below threshold to rise.

Model space: the output is mapped through the fitted ``log_ratio`` transform
(surrogate.data.transforms.LogRatioTransform: s = log(E / (E_inc eps) + 1), x = (s - mean) / std), whose
arrays are buffers of both networks, so the loop, checkpoints, EMA and ``generate`` see the same x as for
any other model.

Energy conditioning throughout: the condition is concatenated to the input of every generator block and
of every output head.

The critic sees the voxels as s / S_SCALE (every voxel on one scale: per-voxel standardisation blows a
voxel that one shower in a thousand hits up to thousands of units), the condition, and, with
``feature_groups`` (the domain's layers), what the failures of earlier generators showed at a glance:
log energy per layer and in total, the log radial profile, and each layer's energy-weighted centre and
width in x and y and width in r, all computed differentiably from its input.

Status: not yet the calorimeter's default. Untrained (at the mean shower, with the per-voxel noise) it
gives the quickstart E_tot / E_inc 0.945 +- 0.038 and the radial profile within 13% in every bin; the
GAN objectives tried so far move it away from Geant4 within a few hundred steps (README.md, "Train").

Symmetry: electrons enter along the calorimeter axis, so every rotation by whole alpha bins and every
reflection alpha -> -alpha maps a shower onto an equally likely one. :meth:`ShowerCritic.augment` applies
a random one of these 2 x n_alpha maps to each real shower (the training loop calls it on real batches).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

NEGATIVE_SLOPE = 0.2  # LeakyReLU slope used by DCGAN/WGAN-GP reference models
S_SCALE = 4.0  # e-folds per unit of the critic's voxel view (ShowerCritic.voxel_view)
S_OVERFLOW = 40.0  # e-folds: E / E_inc up to e^40 eps ~ 2e9 stays finite in float32 exp()
SHAPE_OFFSET = 14.0  # a recorded voxel holds at least threshold / E_max ~ e^-13.4 of its layer
HEAD_GAIN = 0.1  # the output heads start small, so the first showers are the fitted mean shower
# E_tot / E_inc = R_MAX sigmoid(.): a sampling calorimeter calibrated to its incident energy reads about
# 1 (Geant4 here: 1.005 +- 0.078); unbounded, the response ran away to ~15 where the critic's gradient
# penalty, spent on thousands of voxels, had no slope left to stop it
R_MAX = 2.0
NOISE_START = 1.0  # starting per-voxel noise scale (e-folds): real hit energies spread by ~1-2 e-folds
FEATURE_NOISE = True  # G can take one extra N(0, 1) latent per voxel (train.feature_noise; the registry reads it)
# the generic setting was this model's own, under its old name, before the rename: old configs and checkpoints
FORMER_NAMES = {"voxel_noise": "feature_noise"}
WIDTH_FLOOR = 1e-2  # bins^2 added under the critic's width square roots: finite gradients in empty layers


def _init_linear(layer: nn.Linear, generator: torch.Generator, gain: float = 1.0) -> None:
    """He-uniform weights for LeakyReLU (times ``gain``), small uniform bias; drawn from ``generator``."""
    nn.init.kaiming_uniform_(layer.weight, a=NEGATIVE_SLOPE, nonlinearity="leaky_relu", generator=generator)
    with torch.no_grad():
        layer.weight.mul_(gain)
    bound = 1.0 / math.sqrt(layer.in_features)
    nn.init.uniform_(layer.bias, -bound, bound, generator=generator)


class TransformBuffers(nn.Module):
    """The fitted ``log_ratio`` transform as buffers (they travel in the state_dict), both directions.

    s (B, n_features) e-folds above empty: s = log(E / (E_inc eps) + 1); x = (s - mean) / std.
    Condition c in [-1, 1] <-> ln(E_inc / MeV) = ln_e_lo + (c + 1) ln_e_span / 2.
    """

    mean: torch.Tensor
    std: torch.Tensor
    log_eps: torch.Tensor
    threshold_mev: torch.Tensor
    ln_e_lo: torch.Tensor
    ln_e_span: torch.Tensor
    floor: torch.Tensor

    def __init__(self, n_features: int) -> None:
        super().__init__()
        # neutral values until a fitted transform (or a state_dict) fills them: x = s, no threshold
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))
        self.register_buffer("log_eps", torch.tensor(math.log(1e-8)))
        self.register_buffer("threshold_mev", torch.zeros(()))
        self.register_buffer("ln_e_lo", torch.zeros(()))
        self.register_buffer("ln_e_span", torch.ones(()))
        self.register_buffer("floor", torch.tensor(1e-8))

    @torch.no_grad()
    def load_transform(self, transform: dict[str, Any]) -> None:
        """Take the arrays of a fitted ``log_ratio`` transform (its ``to_dict()``)."""
        if transform.get("name") != "log_ratio":
            raise ValueError(f"calo_shower needs the log_ratio transform, got {transform.get('name')!r}")
        for name in ("mean", "std"):
            getattr(self, name).copy_(torch.as_tensor(transform[name], dtype=torch.float32))
        eps = float(transform["eps"])
        self.log_eps.fill_(math.log(eps))
        self.threshold_mev.fill_(float(transform["threshold_mev"]))
        lo, hi = math.log(float(transform["e_min_mev"])), math.log(float(transform["e_max_mev"]))
        self.ln_e_lo.fill_(lo)
        self.ln_e_span.fill_(hi - lo if hi > lo else 1.0)  # as LogRatioTransform._span
        # smallest energy fraction the detector records (at least eps): the floor under log sums
        self.floor.fill_(max(float(transform["threshold_mev"]) / float(transform["e_max_mev"]), eps))

    def ln_e_inc(self, cond: torch.Tensor) -> torch.Tensor:
        """(B, n_cond) model condition -> (B, 1) ln(E_inc / MeV)."""
        return self.ln_e_lo + (cond[:, :1].float() + 1.0) * 0.5 * self.ln_e_span

    def x_from_s(self, s: torch.Tensor) -> torch.Tensor:
        return (s - self.mean) / self.std

    def s_from_x(self, x: torch.Tensor) -> torch.Tensor:
        return x.float() * self.std + self.mean

    def fraction_from_s(self, s: torch.Tensor) -> torch.Tensor:
        """E / E_inc per voxel, for the critic's observables. Not capped at the fit's ``s_max`` as the
        numpy inverse is: above a cap the critic would see nothing and feel no gradient, and the generator learned to
        dump energy there (measured: one layer's core voxels at 15x Geant4's energy, E_tot / E_inc 2.5).
        The upper clamp only keeps exp() finite; the lower one catches the rounding of x -> s, which
        leaves empty voxels at |s| ~ 1e-6."""
        return torch.expm1(s.clamp(0.0, S_OVERFLOW)) * self.log_eps.exp()


class ShowerGenerator(nn.Module):
    """(z, cond) -> response, layer fractions, in-layer shapes -> thresholded shower in model space.

    forward(z: (B, latent_dim [+ n_features with voxel noise]), cond: (B, n_cond)) -> x (B, n_features);
    :meth:`log_fractions` gives the unthresholded log(E_voxel / E_inc), (B, n_features).
    """

    def __init__(self, event_shape: tuple[int, int, int], n_cond: int, latent_dim: int, hidden: int,
                 layer_norm: bool, voxel_noise: bool = False, n_blocks: int = 3) -> None:
        super().__init__()
        self.event_shape = event_shape
        n_layers, n_alpha, n_r = event_shape
        self.n_features = n_layers * n_alpha * n_r
        self.latent_dim = latent_dim
        # z[:, latent_dim:] (one N(0, 1) per voxel) times a learned per-voxel scale jitters each cell
        # logit: the shower-to-shower fluctuations of single cells, which a few dozen latents through
        # an MLP cannot make independent
        self.noise_scale = nn.Parameter(torch.full((self.n_features,), NOISE_START)) if voxel_noise else None
        self.transform = TransformBuffers(self.n_features)
        self.blocks = nn.ModuleList()
        self.norms = nn.ModuleList()
        width = latent_dim
        for _ in range(n_blocks):
            self.blocks.append(nn.Linear(width + n_cond, hidden))
            self.norms.append(nn.LayerNorm(hidden) if layer_norm else nn.Identity())
            width = hidden
        self.response = nn.Linear(hidden + n_cond, 1)  # logit of E_tot / (E_inc R_MAX)
        self.layers = nn.Linear(hidden + n_cond, n_layers)  # logits of the longitudinal profile
        self.cells = nn.Linear(hidden + n_cond, self.n_features)  # logits of each layer's shape

    @torch.no_grad()
    def start_at_mean_shower(self, mean_fraction: Any) -> None:
        """Head biases from the fit: the first showers are the training sample's mean shower.

        ``mean_fraction`` (n_features,): the mean E / E_inc per voxel (LogRatioTransform.mean_fraction),
        averaged over alpha (the showers' symmetry) so that no angular bin starts out favoured; None
        (a transform fitted before it existed) leaves the biases at their random start. Each cell's logit
        is the log of its share (floored at 1% of the smallest recorded fraction), each layer's the log of
        its energy, the response the mean total.
        """
        if mean_fraction is None:
            return
        n_layers, n_alpha, n_r = self.event_shape
        f = torch.as_tensor(mean_fraction, dtype=torch.float32).view(n_layers, n_alpha, n_r)
        f = f.mean(dim=1, keepdim=True).expand(n_layers, n_alpha, n_r)
        floor = 0.01 * self.transform.floor
        self.cells.bias.copy_(torch.log(f + floor).reshape(-1))
        self.layers.bias.copy_(torch.log(f.sum(dim=(1, 2)) + floor))
        share = min(max(float(f.sum()) / R_MAX, 1e-6), 1.0 - 1e-6)
        self.response.bias.fill_(math.log(share / (1.0 - share)))

    def components(self, z: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log R (B, 1), log p (B, L), log q (B, L, A R)): response, layer fractions, in-layer shapes."""
        h = z[:, :self.latent_dim]
        for block, norm in zip(self.blocks, self.norms, strict=True):
            h = F.leaky_relu(norm(block(torch.cat([h, cond], dim=1))), NEGATIVE_SLOPE)
        h = torch.cat([h, cond], dim=1)
        n_layers = self.event_shape[0]
        log_r = math.log(R_MAX) + F.logsigmoid(self.response(h).float())
        log_p = F.log_softmax(self.layers(h).float(), dim=1)
        cells = self.cells(h).float()
        if self.noise_scale is not None:
            cells = cells + self.noise_scale * z[:, self.latent_dim:].float()
        log_q = F.log_softmax(cells.view(len(h), n_layers, -1), dim=2)
        return log_r, log_p, log_q

    def log_fractions(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """log(E_voxel / E_inc) = log R + log p(l) + log q_l(a, r) before the readout threshold,
        (B, n_features); exp() of it sums to the response R over the voxels of an event."""
        log_r, log_p, log_q = self.components(z, cond)
        return (log_r[:, :, None] + log_p[:, :, None] + log_q).reshape(len(z), -1)

    def forward(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        t = self.transform
        log_r, log_p, log_q = self.components(z, cond)
        n = len(z)
        log_f = (log_r[:, :, None] + log_p[:, :, None] + log_q).reshape(n, -1)
        s = F.softplus(log_f - t.log_eps)  # log(f / eps + 1), stable for any log f
        # readout threshold: E = f E_inc below threshold_mev reads 0 (s = 0), with a straight-through
        # gradient that reaches only the in-layer shape: summed over the thousands of empty voxels it
        # would otherwise drive the response (measured: E_tot / E_inc fell to 0.24 in 500 steps while
        # the critic asked for more energy)
        hit = (log_f + t.ln_e_inc(cond)) >= torch.log(t.threshold_mev)
        log_f_shape = ((log_r + log_p).detach()[:, :, None] + log_q).reshape(n, -1)
        s_shape = F.softplus(log_f_shape - t.log_eps)
        s = torch.where(hit, s, s_shape - s_shape.detach())
        return t.x_from_s(s)


class ShowerCritic(nn.Module):
    """(x, cond) -> critic value; sees the voxels on one scale plus (optionally) shower observables.

    forward(x: (B, n_features), cond: (B, n_cond)) -> (B, 1). With ``physics`` the observables are
    (per event) log(E_layer / E_inc + floor) (L), log(E_tot / E_inc + floor) (1), log of the radial
    profile's fractions (n_r), and per layer the centres in x and y and widths in x, y and r (5 L), in
    units of radial bins (the critic needs a monotone view of the widths, not millimetres).
    """

    def __init__(self, event_shape: tuple[int, int, int], n_cond: int, hidden: int, physics: bool) -> None:
        super().__init__()
        self.event_shape = event_shape
        n_layers, n_alpha, n_r = event_shape
        n_features = n_layers * n_alpha * n_r
        self.transform = TransformBuffers(n_features)
        self.physics = physics
        alpha = (torch.arange(n_alpha, dtype=torch.float32) + 0.5) * 2.0 * math.pi / n_alpha
        r = torch.arange(n_r, dtype=torch.float32) + 0.5
        # moments of one layer's (alpha, r) cells: x, y, x^2, y^2, r, r^2; a constant, not a buffer
        coords = torch.stack([r[None, :] * torch.cos(alpha)[:, None], r[None, :] * torch.sin(alpha)[:, None]])
        self.moments: torch.Tensor
        self.register_buffer("moments", torch.stack([
            coords[0], coords[1], coords[0] ** 2, coords[1] ** 2,
            r[None, :].expand(n_alpha, n_r), (r ** 2)[None, :].expand(n_alpha, n_r),
        ]).reshape(6, -1).T.contiguous(), persistent=False)
        n_obs = (n_layers + 1 + n_r + 5 * n_layers) if physics else 0
        half = max(hidden // 2, 1)
        self.net = nn.Sequential(
            nn.Linear(n_features + n_cond + n_obs, hidden), nn.LeakyReLU(NEGATIVE_SLOPE),
            nn.Linear(hidden, half), nn.LeakyReLU(NEGATIVE_SLOPE),
            nn.Linear(half, 1),
        )

    def observables(self, s: torch.Tensor) -> torch.Tensor:
        """(B, n_features) s -> (B, 6 L + 1 + n_r) observables listed in the class docstring."""
        t = self.transform
        n_layers, _, n_r = self.event_shape
        f = t.fraction_from_s(s).view(len(s), n_layers, -1)  # (B, L, A R) energy / E_inc
        e_layer = f.sum(dim=2)  # (B, L)
        e_tot = e_layer.sum(dim=1, keepdim=True)
        radial = f.view(len(s), n_layers, -1, n_r).sum(dim=(1, 2))  # (B, n_r)
        m = (f @ self.moments) / (e_layer + t.floor)[:, :, None]  # (B, L, 6): energy-weighted means
        cx, cy, mr = m[..., 0], m[..., 1], m[..., 4]
        wx = torch.sqrt(torch.relu(m[..., 2] - cx**2) + WIDTH_FLOOR)
        wy = torch.sqrt(torch.relu(m[..., 3] - cy**2) + WIDTH_FLOOR)
        wr = torch.sqrt(torch.relu(m[..., 5] - mr**2) + WIDTH_FLOOR)
        return torch.cat([
            torch.log(e_layer + t.floor), torch.log(e_tot + t.floor),
            torch.log(radial / (e_tot + t.floor) + t.floor), cx, cy, wx, wy, wr,
        ], dim=1)

    def voxel_view(self, s: torch.Tensor) -> torch.Tensor:
        """(B, n_features) s -> what the critic reads per voxel: 0 for an empty voxel, and for a recorded
        one (log(E_voxel / E_layer) + SHAPE_OFFSET) / S_SCALE, about 0.1-3.5.

        Scale-free on purpose: the voxels show the shape within each layer, never the total, so the
        response and the layer energies are judged by the observables alone, not by thousands of voxels.

        Between empty (s = 0) and the lowest recorded value (the readout threshold at the highest
        incident energy: s = log(floor / eps + 1), 5.0 for the quickstart's 10 GeV) the view ramps
        linearly, so it is continuous in s: a jump would let the critic tell hit patterns apart with
        unbounded slope, which the gradient penalty cannot see (measured: the critic loss ran away to
        -1300 within 200 steps). Empty voxels pass the gradient d/ds = 1 / S_SCALE (straight through), so
        the critic can ask for a hit there.
        """
        n_layers = self.event_shape[0]
        f = self.transform.fraction_from_s(s).view(len(s), n_layers, -1)
        e_layer = f.sum(dim=2, keepdim=True)
        share = torch.log(f / (e_layer + self.transform.floor) + 1e-12).clamp(min=-SHAPE_OFFSET)
        s3 = s.view_as(f)
        hit_s = torch.log(self.transform.floor / self.transform.log_eps.exp() + 1.0)
        ramp = (s3 / hit_s).clamp(0.0, 1.0)
        straight = torch.where(s3 < 0.5 * hit_s, (s3 - s3.detach()) / S_SCALE, torch.zeros_like(s3))
        return (ramp * (share + SHAPE_OFFSET) / S_SCALE + straight).view(len(s), -1)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        s = self.transform.s_from_x(x)
        parts = [self.voxel_view(s), cond.float()]
        if self.physics:
            parts.append(self.observables(s))
        return self.net(torch.cat(parts, dim=1).to(x.dtype))

    @torch.no_grad()
    def augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A random alpha rotation (and, half the time, reflection) of each shower, in model space.

        x: (B, n_features) model space. Voxel (l, a, r) of the output is voxel (l, src(a), r) of the
        input with src(a) = (a - k) mod n_alpha, then reflected a -> n_alpha - 1 - a when the event's
        flip bit is set; k and the flip bit are drawn per event from ``generator`` (on x's device).
        """
        n_alpha = self.event_shape[1]
        if n_alpha == 1:
            return x
        b = len(x)
        k = torch.randint(n_alpha, (b, 1), generator=generator, device=x.device)
        flip = torch.randint(2, (b, 1), generator=generator, device=x.device).bool()
        a = torch.arange(n_alpha, device=x.device)[None, :]
        src = torch.remainder(a - k, n_alpha)
        src = torch.where(flip, n_alpha - 1 - src, src)  # (B, A)
        return rotate_alpha(x, src, self.transform, self.event_shape)


def rotate_alpha(x: torch.Tensor, src: torch.Tensor, transform: TransformBuffers,
                 event_shape: tuple[int, int, int]) -> torch.Tensor:
    """Voxel (l, a, r) of the result is voxel (l, src[b, a], r) of event b; x and result in model space.

    The map permutes physical voxels, so it acts on s = x std + mean (per-voxel statistics differ by alpha
    bin) and returns (s' - mean) / std.
    """
    n_layers, n_alpha, n_r = event_shape
    b = len(x)
    s = transform.s_from_x(x).view(b, n_layers, n_alpha, n_r)
    index = src.view(b, 1, n_alpha, 1).expand(b, n_layers, n_alpha, n_r)
    return transform.x_from_s(s.gather(2, index).reshape(b, -1)).to(x.dtype)


def build(*, n_features: int, n_cond: int, latent_dim: int, hidden_g: int, hidden_d: int, layer_norm: bool,
          generator: torch.Generator, feature_groups: int = 0, event_shape: tuple[int, ...] = (),
          transform: dict[str, Any] | None = None, feature_noise: bool = False) -> tuple[nn.Module, nn.Module]:
    """``event_shape`` (layers, alpha, r) must multiply to ``n_features``; () = one layer of one alpha bin.

    ``feature_groups`` > 0 turns on the critic's observables; ``feature_noise``: G takes z of latent_dim +
    n_features values, the second part per-voxel noise. ``transform`` (a fitted transform's dict)
    fills both networks' buffers and the generator's starting biases; without it they are left for
    ``load_state_dict`` (a rebuild from a checkpoint).
    """
    shape = tuple(int(v) for v in event_shape) or (1, 1, n_features)
    if len(shape) != 3 or math.prod(shape) != n_features:
        raise ValueError(f"calo_shower: event_shape {shape} does not hold {n_features} features")
    shape3 = (shape[0], shape[1], shape[2])
    # nn.Linear initialises itself from the global RNG on construction; fork it so building a model
    # leaves the global stream untouched, then draw the real initialisation from ``generator``.
    with torch.random.fork_rng(devices=[]):
        g = ShowerGenerator(shape3, n_cond, latent_dim, hidden_g, layer_norm, voxel_noise=feature_noise)
        d = ShowerCritic(shape3, n_cond, hidden_d, physics=feature_groups > 0)
    heads = {g.response, g.layers, g.cells}
    for module in itertools.chain(g.modules(), d.modules()):
        if isinstance(module, nn.Linear):
            _init_linear(module, generator, HEAD_GAIN if module in heads else 1.0)
    if transform is not None:
        g.transform.load_transform(transform)
        d.transform.load_transform(transform)
        g.start_at_mean_shower(transform.get("mean_fraction"))
    return g, d
