"""``calo_param``: a learned GFlash. A GAN generator that can only bend the fitted mean shower, never replace it.

GFlash (Grindhammer & Peters, arXiv:hep-ex/0001020) describes an electromagnetic shower by a handful of
numbers per shower: a response, a longitudinal profile and, per depth, a radial scale, and draws them from
fitted distributions; on the quickstart it already meets every profile bar but misses the correlated
fluctuations (high-level classifier AUC 0.92, KPD 25x the floor). ``calo_shower``, which emits 6480 free
cell logits, starts at the mean shower and drifts away within a few hundred GAN steps (12 runs). This
generator keeps GFlash's few-number structure and lets the network choose the numbers, per shower, from
the condition and the latent:

    E_expected(l, a, r) / E_inc = R p(l) q_l(a, r),   then hits drawn around E_expected

- response R = R0 exp(LIM_RESPONSE tanh(.)), R0 the fitted mean response;
- the fitted mean shower is read at the shower's energy: the transform holds it per quarter decade of
  E_inc (fraction_by_energy); between two such energy nodes both are read and mixed linearly in ln E
  (:meth:`ParamGenerator.mean_profile`);
- longitudinal profile p: the fitted mean profile (its cumulative read at layer edges minus a depth), the
  depth being LAYERS_PER_E_FOLD x ln(E_inc / E_node) from each node's energy (the shower maximum moves
  1 X0 per e-fold of energy, as GFlash's T) plus a learned per-shower shift within +-LIM_DEPTH layers
  (where the shower starts), times exp(LIM_LAYER tanh(.)) per layer, renormalised;
- in-layer shape q_l: the fitted mean radial profile of layer l (alpha-averaged: electrons along the axis
  make every alpha bin equivalent), radially rescaled by lambda_l = exp(LIM_SCALE tanh(.)) through its
  cumulative profile (C'(r) = C(r / lambda), linear between bin edges) and tilted by exp(t . (x, y)) with
  t_l = LIM_SHIFT tanh(.) per bin: for a Gaussian core of width sigma the tilt is a centre shift of
  t sigma^2 (log N(r - d) = log N(r) + r . d / sigma^2 + const);
- hits: what a silicon layer records is charged particles crossing it, ~10 MeV each after the sampling
  fraction. A voxel expecting k = E_expected / quantum crossings is hit with the Poisson probability
  1 - e^-k, and a hit carries E_expected / (1 - e^-k) times a mean-one log-normal (the voxel's mean is
  kept), the quantum and the spread learned per shower and layer around their measured values. One N(0, 1)
  latent per voxel decides both (U = Phi(eps): hit if U < p_hit, and U / p_hit, uniform given a hit, the
  energy's own normal). This is what makes a layer's width, centre and sparsity fluctuate like Geant4's
  (a deep layer holds a few particles, so its energy-weighted width is small and its centre wanders),
  and what the smooth mean shower of GFlash or calo_shower cannot;
- then the readout threshold: voxels below 15.15 keV read exactly 0. The hit draw and the threshold are
  steps; the critic's gradient reaches the hit probabilities straight through (Bengio et al.,
  arXiv:1308.3432), with the layer energies held (calo_shower: summed over thousands of empty voxels that
  gradient drove the response away).

Every parameter is bounded (tanh x limit), so however the critic pushes, the shower stays within a factor
e^LIM of the fitted mean in each of them, and the depth, layer fractions and radial scales may move their
mean over showers only within the much smaller OPTIONS limits (their odd part in the latent is a
zero-mean fluctuation); the heads start near zero, so the untrained generator is the fitted mean shower
with Poisson hits (README.md, "Train", for what it scores).
The network is an MLP on (z, the condition) with the condition concatenated to every block and to the
head (energy conditioning throughout); it learns the correlated shower-to-shower fluctuations (a late
start shifts every layer, a wide shower is wide in every layer) that GFlash's independent draws lack.

The critic is ``calo_shower``'s: the voxels on one scale plus the challenge's high-level observables
(log E_layer, log E_tot, the radial profile, per-layer centres and widths in x, y and r), computed
differentiably from its input, and the alpha-symmetry augmentation of real showers.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from surrogate.config import Range
from surrogate.models import Option
from surrogate.models.calo_shower import NEGATIVE_SLOPE, ShowerCritic, TransformBuffers, _init_linear

FEATURE_NOISE = True  # G takes one extra N(0, 1) latent per voxel, its hits (train.feature_noise)
LIM_RESPONSE = 0.05  # log response within +-5% of the fitted mean: the hits alone give Geant4's 7-8% spread
LIM_LAYER = 0.5  # per-layer log fraction within +-0.5 e-folds of the (depth-shifted) mean profile
LIM_DEPTH = 2.0  # per-shower shift of the longitudinal profile within +-2 layers of the energy's mean depth
# The shower maximum sits at t_max = ln(E / E_c) + const radiation lengths (Rossi; GFlash's T, Grindhammer &
# Peters eq. 4): one e-fold of incident energy moves it 1 X0. One dataset-2 readout layer is two 1.4 mm W
# + 0.3 mm Si sheets, 2.8 / 3.504 + 0.6 / 93.7 = 0.805 X0 (PDG radiation lengths, as surrogate.baselines.gflash)
LAYERS_PER_E_FOLD = 1.0 / 0.805
LIM_SCALE = 0.5  # radial scale lambda in [0.61, 1.65] of the layer's mean profile
LIM_SHIFT = 2.0  # tilt per radial bin: a centre shift of up to ~2 bins for a core one bin wide
HEAD_GAIN = 0.01  # heads start near 0: the untrained generator draws the fitted mean shower
# Hits: a charged particle crossing a readout layer's two 0.3 mm Si sheets leaves ~0.2 MeV, several MeV
# after the 1/sampling-fraction scaling. Measured on the quickstart's 800 Geant4 test showers: in voxels hit
# in fewer than 5% of the showers (3400 of them; one hit when hit) the recorded energy has mean 10.0 MeV and
# median 7.1 MeV; a log-normal with that mean and median has sigma sqrt(2 ln(10.0 / 7.1)) = 0.83
QUANTUM_MEV = 10.0
SPREAD_START = 0.83  # e-folds: the log-normal spread of one hit's energy (Landau tail, several particles)
LIM_QUANTUM = 0.7  # per shower and layer, the quantum within e^+-0.7 of QUANTUM_MEV
LIM_SPREAD = 0.5  # and the spread within e^+-0.5 of SPREAD_START
S_CLAMP = 30.0  # e-folds: expected hits per voxel up to e^30 stay finite in exp()
P_FLOOR = 1e-12  # floor under hit probabilities (their logs stay finite)
U_CLAMP = 1e-6  # uniforms into ndtri kept within float32's reach of 0 and 1 (ndtri(1) = inf)
SHARE_FLOOR = 1e-7  # floor under each radial bin's mean share (a bin never seen hit keeps a finite log)
# The fitted mean shower per incident-energy bin (the transform's fraction_by_energy: quarter decades of
# E_inc, at most 32 of them over 1 MeV - 100 TeV) is held at up to this many energy nodes
MAX_ENERGY_NODES = 32


# How far the GAN may move the mean shower, as opposed to how far one shower may stray from it. Each of
# the depth, the per-layer fractions and the radial scales is split into its part even in the latent,
# f(z) + f(-z), which moves the mean over showers, and its odd part, f(z) - f(-z), whose mean over the
# symmetric latent is exactly 0 at every energy: a fluctuation. The odd part keeps the full limit above
# (showers start early or late, are wide or narrow); the even part saturates at the limit set here (with
# the unsplit generator's slope: the mean moves as fast as before, only not as far). Why: left free, the
# critic moved the quickstart's mean longitudinal profile 46% high in layer 1 and 20% low in layers 15-19
# and the radial profile's bin 5 18% low (README), while the fitted mean shower at each energy was within
# 5% and 4%.
_LIM = Range(0.0, lo_open=True)
OPTIONS = {
    "mean_depth": Option(0.03, "layers the mean depth of the showers may move at any energy (the odd, "
                               "per-shower part: +-LIM_DEPTH)", _LIM),
    "mean_layer": Option(0.02, "e-folds each layer's mean fraction may move (per shower: +-LIM_LAYER)", _LIM),
    "mean_scale": Option(0.1, "e-folds each layer's mean radial scale may move (per shower: +-LIM_SCALE)", _LIM),
}


class ParamGenerator(nn.Module):
    """(z, cond) -> bounded shower parameters -> rendered, thresholded shower in model space.

    forward(z: (B, latent_dim [+ n_features with voxel noise]), cond: (B, n_cond)) -> x (B, n_features).
    :meth:`parameters_of` gives the per-shower parameters, :meth:`log_fractions` the unthresholded
    log(E_voxel / E_inc) (B, n_features).
    """

    node_ln_e: torch.Tensor
    node_log_r: torch.Tensor
    node_cum: torch.Tensor
    node_cum_long: torch.Tensor
    edges: torch.Tensor
    edges_long: torch.Tensor
    cell_x: torch.Tensor
    cell_y: torch.Tensor

    def __init__(self, event_shape: tuple[int, int, int], n_cond: int, latent_dim: int, hidden: int,
                 layer_norm: bool, voxel_noise: bool = False, n_blocks: int = 2,
                 options: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.options = {key: option.default for key, option in OPTIONS.items()} | dict(options or {})
        self.event_shape = event_shape
        n_layers, n_alpha, n_r = event_shape
        self.n_features = n_layers * n_alpha * n_r
        self.latent_dim = latent_dim
        self.voxel_noise = voxel_noise
        self.transform = TransformBuffers(self.n_features)
        # the fitted mean shower at its energy nodes (start_at_mean_shower): node k at ln(E_inc / MeV)
        # node_ln_e[k] (ascending; the last node repeated up to MAX_ENERGY_NODES) has the response
        # exp(node_log_r[k]), the cumulative longitudinal profile node_cum_long[k] at the layer edges and per
        # layer the cumulative radial profile node_cum[k] at the radial edges. Neutral values until then:
        # flat profiles.
        m = MAX_ENERGY_NODES
        self.register_buffer("node_ln_e", torch.zeros(m))
        self.register_buffer("node_log_r", torch.zeros(m))
        self.register_buffer("node_cum", torch.linspace(0.0, 1.0, n_r + 1).repeat(m, n_layers, 1))  # (M, L, R + 1)
        self.register_buffer("node_cum_long", torch.linspace(0.0, 1.0, n_layers + 1).repeat(m, 1))  # (M, L + 1)
        self.register_buffer("edges", torch.arange(n_r + 1, dtype=torch.float32), persistent=False)
        self.register_buffer("edges_long", torch.arange(n_layers + 1, dtype=torch.float32), persistent=False)
        # cell centres in units of radial bins, alpha bin 0 starting at -pi (XMLHandler's convention)
        alpha = -math.pi + (torch.arange(n_alpha, dtype=torch.float32) + 0.5) * 2.0 * math.pi / n_alpha
        r = torch.arange(n_r, dtype=torch.float32) + 0.5
        self.register_buffer("cell_x", (r[None, :] * torch.cos(alpha)[:, None]).reshape(-1), persistent=False)
        self.register_buffer("cell_y", (r[None, :] * torch.sin(alpha)[:, None]).reshape(-1), persistent=False)
        self.blocks = nn.ModuleList()
        self.norms = nn.ModuleList()
        width = latent_dim
        for _ in range(n_blocks):
            self.blocks.append(nn.Linear(width + n_cond, hidden))
            self.norms.append(nn.LayerNorm(hidden) if layer_norm else nn.Identity())
            width = hidden
        # 1 response + 1 depth shift + L layer deltas + L radial scales + 2 L centre tilts + L hit quanta
        # + L hit spreads
        self.head = nn.Linear(hidden + n_cond, 2 + 6 * n_layers)

    @torch.no_grad()
    def start_at_mean_shower(self, mean_fraction: Any, fraction_by_energy: Any = None,
                             ln_e_by_energy: Any = None) -> None:
        """The buffers from the fit: ``fraction_by_energy`` (K, n_features) mean E / E_inc per voxel in K
        incident-energy bins of mean ln(E_inc / MeV) ``ln_e_by_energy`` (K,) (LogRatioTransform), or, for a
        transform fitted before they existed, ``mean_fraction`` (n_features,) as one node at the middle of
        the log-energy range; both None (a transform older still) keeps the flat start."""
        if fraction_by_energy is None or ln_e_by_energy is None:
            if mean_fraction is None:
                return
            fraction_by_energy = [mean_fraction]
            ln_e_by_energy = [float(self.transform.ln_e_lo + 0.5 * self.transform.ln_e_span)]
        n_layers, n_alpha, n_r = self.event_shape
        f = torch.as_tensor(np.asarray(fraction_by_energy), dtype=torch.float64).view(-1, n_layers, n_alpha, n_r)
        ln_e = torch.as_tensor(np.asarray(ln_e_by_energy), dtype=torch.float64)
        if len(f) > MAX_ENERGY_NODES or len(ln_e) != len(f) or not bool((ln_e[1:] > ln_e[:-1]).all()):
            raise ValueError(f"calo_param: {len(f)} energy bins at ln E {ln_e.tolist()}: expected 1 to "
                             f"{MAX_ENERGY_NODES}, one ascending ln E each")
        radial = f.sum(dim=2)  # (K, L, R)
        e_layer = radial.sum(dim=2)  # (K, L)
        floor = float(self.transform.floor)
        log_r = torch.log(e_layer.sum(dim=1).clamp(min=floor))
        p = e_layer / e_layer.sum(dim=1, keepdim=True) + SHARE_FLOOR
        cum_long = torch.cat([torch.zeros(len(f), 1, dtype=torch.float64), p.cumsum(dim=1)], dim=1)
        share = radial / (e_layer[:, :, None] + floor) + SHARE_FLOOR
        share = share / share.sum(dim=2, keepdim=True)
        cum = torch.cat([torch.zeros(len(f), n_layers, 1, dtype=torch.float64), share.cumsum(dim=2)], dim=2)
        index = torch.arange(MAX_ENERGY_NODES).clamp(max=len(f) - 1)  # the last node repeated
        self.node_ln_e.copy_(ln_e[index].float())
        self.node_log_r.copy_(log_r[index].float())
        self.node_cum_long.copy_((cum_long / cum_long[:, -1:])[index].float())
        self.node_cum.copy_((cum / cum[:, :, -1:])[index].float())

    def energy_nodes(self, ln_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, 1) ln(E_inc / MeV) -> the two energy nodes around it, (B,) indices lo and lo + 1, and the
        weight (B,) of the upper one: linear in ln E between them, 0 below the first node and 1 beyond the
        last (where a repeated last node makes both the same)."""
        nodes = self.node_ln_e
        lo = (torch.searchsorted(nodes, ln_e[:, 0].contiguous(), right=True) - 1).clamp(0, len(nodes) - 2)
        gap = (nodes[lo + 1] - nodes[lo]).clamp(min=1e-6)
        w = ((ln_e[:, 0] - nodes[lo]) / gap).clamp(0.0, 1.0)
        return lo, lo + 1, w

    def mean_profile(self, ln_e: torch.Tensor, depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor,
                                                                               torch.Tensor]:
        """The fitted mean shower at incident energies ln_e (B, 1) ln MeV, its longitudinal profile moved
        ``depth`` (B, 1) layers deeper: (log response (B, 1), layer shares (B, L), cumulative radial
        profiles (B, L, R + 1)).

        Between two energy nodes both are read, each shifted by LAYERS_PER_E_FOLD layers per e-fold from its
        own energy (the shower maximum's move), and mixed linearly in ln E; the radial profiles and the log
        response are mixed linearly in ln E; beyond the end nodes, the end node alone (shifted).
        """
        lo, hi, w = self.energy_nodes(ln_e)
        b = len(ln_e)
        shares = []
        for k in (lo, hi):
            shift = LAYERS_PER_E_FOLD * (ln_e - self.node_ln_e[k][:, None]) + depth
            shares.append(_read_cumulative(self.node_cum_long[k], self.edges_long.expand(b, -1) - shift))
        wl = w[:, None]
        log_r = ((1.0 - w) * self.node_log_r[lo] + w * self.node_log_r[hi])[:, None]
        cum = (1.0 - wl[:, :, None]) * self.node_cum[lo] + wl[:, :, None] * self.node_cum[hi]
        return log_r, (1.0 - wl) * shares[0] + wl * shares[1], cum

    def parameters_of(self, z: torch.Tensor, cond: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-shower parameters: log_r (B, 1), depth (B, 1) layers (relative to the middle of the log-energy
        range), log_p (B, L), cum_radial (B, L, R + 1) the mean cumulative radial profiles at this energy,
        scale (B, L), tilt (B, L, 2) per radial bin, log_quantum (B, L) ln MeV and spread (B, L) e-folds of
        the hits."""
        n_layers = self.event_shape[0]
        b = len(z)
        # the network at z and at -z in one pass: their half sum and half difference are the even and the
        # odd part of each output (OPTIONS)
        h = z[:, :self.latent_dim]
        h = torch.cat([h, -h])
        cond2 = torch.cat([cond, cond])
        for block, norm in zip(self.blocks, self.norms, strict=True):
            h = F.leaky_relu(norm(block(torch.cat([h, cond2], dim=1))), NEGATIVE_SLOPE)
        both = torch.tanh(self.head(torch.cat([h, cond2], dim=1)).float())
        out, mirror = both[:b], both[b:]
        even, odd = 0.5 * (out + mirror), 0.5 * (out - mirror)
        opt = self.options

        def split(sl: slice, lim: float, lim_mean: float) -> torch.Tensor:
            """lim x (even + odd) with the even part saturating at +-lim_mean: its slope at 0 stays lim, so
            the mean moves as fast as the unsplit lim x tanh(f(z)) until it reaches lim_mean (a plain
            lim_mean x even would slow it by lim / lim_mean). |result| < lim as |even| + |odd| < 1."""
            m = min(lim_mean, lim)
            return m * torch.tanh(even[:, sl] * (lim / m)) + lim * odd[:, sl]

        d_r = out[:, :1]
        depth = split(slice(1, 2), LIM_DEPTH, opt["mean_depth"])
        delta_p = split(slice(2, 2 + n_layers), LIM_LAYER, opt["mean_layer"])
        log_scale = split(slice(2 + n_layers, 2 + 2 * n_layers), LIM_SCALE, opt["mean_scale"])
        d_t = out[:, 2 + 2 * n_layers:2 + 4 * n_layers]
        d_q, d_sp = out[:, 2 + 4 * n_layers:2 + 5 * n_layers], out[:, 2 + 5 * n_layers:]
        # the fitted mean shower at this energy (between the energy nodes), moved by the learned depth
        ln_e = self.transform.ln_e_inc(cond)
        log_r, shares, cum = self.mean_profile(ln_e, depth)
        ln_mid = self.transform.ln_e_lo + 0.5 * self.transform.ln_e_span
        return {"log_r": log_r + LIM_RESPONSE * d_r,
                "depth": LAYERS_PER_E_FOLD * (ln_e - ln_mid) + depth,
                "log_p": F.log_softmax(torch.log(shares) + delta_p, dim=1),
                "cum_radial": cum, "scale": torch.exp(log_scale),
                "tilt": LIM_SHIFT * d_t.view(len(z), n_layers, 2),
                "log_quantum": math.log(QUANTUM_MEV) + LIM_QUANTUM * d_q,
                "spread": SPREAD_START * torch.exp(LIM_SPREAD * d_sp)}

    def radial_shares(self, scale: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """(B, L) radial scales, (B, L, R + 1) cumulative radial profiles -> (B, L, R) shares of each radial
        bin in its layer, summing to 1.

        The layer's mean cumulative profile C (``table``, at the bin edges 0..R) is read at edge / scale,
        linearly between edges and 1 beyond the last: scale > 1 widens, < 1 narrows; what a widened shower
        pushes beyond the last bin is renormalised back (the layer's energy is the layer head's business).
        """
        b, n_layers = scale.shape
        u = self.edges / scale[:, :, None]  # (B, L, R + 1)
        return _read_cumulative(table.reshape(b * n_layers, -1), u.reshape(b * n_layers, -1)).view(b, n_layers, -1)

    def log_fractions(self, z: torch.Tensor, cond: torch.Tensor,
                      p: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(expected log(E_voxel / E_inc) (B, n_features) before the hit sampling and the threshold,
        log R + log p (B, L)); ``p``: :meth:`parameters_of` (z, cond), if already computed."""
        n_layers, n_alpha, n_r = self.event_shape
        b = len(z)
        p = self.parameters_of(z, cond) if p is None else p
        share = self.radial_shares(p["scale"], p["cum_radial"])  # (B, L, R)
        # each alpha cell of a radial bin holds 1 / n_alpha of it, then the tilt moves the centre
        logit = torch.log(share / n_alpha)[:, :, None, :].expand(b, n_layers, n_alpha, n_r).reshape(b, n_layers, -1)
        tilt = p["tilt"]
        logit = logit + tilt[:, :, :1] * self.cell_x + tilt[:, :, 1:] * self.cell_y
        log_q = F.log_softmax(logit, dim=2)
        log_layer = p["log_r"] + p["log_p"]  # (B, L)
        return (log_layer[:, :, None] + log_q).reshape(b, -1), log_layer

    def forward(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        t = self.transform
        n_layers = self.event_shape[0]
        n = len(z)
        p = self.parameters_of(z, cond)
        log_f, log_layer = self.log_fractions(z, cond, p)
        ln_e = t.ln_e_inc(cond)  # (B, 1)
        # the layer energies enter the hit probabilities' surrogate gradient detached: summed over
        # thousands of empty voxels it would otherwise drive the response (calo_shower, measured)
        log_f_shape = (log_f.view(n, n_layers, -1) - log_layer[:, :, None]
                       + log_layer.detach()[:, :, None]).reshape(n, -1)
        if not self.voxel_noise:  # the expected shower, thresholded
            s = F.softplus(log_f - t.log_eps)
            hit = (log_f + ln_e) >= torch.log(t.threshold_mev)
            s_shape = F.softplus(log_f_shape - t.log_eps)
            return t.x_from_s(torch.where(hit, s, s_shape - s_shape.detach()))
        cells = self.n_features // n_layers
        log_quantum = p["log_quantum"].repeat_interleave(cells, dim=1)  # (B, F) ln MeV per hit
        eps = z[:, self.latent_dim:].float()
        log_u = torch.special.log_ndtr(eps)  # log U, U ~ uniform(0, 1)

        def hit_probability(log_fraction: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """(log p_hit, p_hit) with p_hit = 1 - exp(-k): Poisson, k = E_expected / quantum hits expected."""
            k = torch.exp((log_fraction + ln_e - log_quantum).clamp(max=S_CLAMP))
            p_hit = -torch.expm1(-k)
            return torch.log(p_hit.clamp(min=P_FLOOR)), p_hit

        log_p_hit, _ = hit_probability(log_f)
        hit = log_u < log_p_hit
        # U / p_hit is uniform on (0, 1) given a hit and independent of it: the hit energy's own normal
        eps_energy = torch.special.ndtri(torch.exp(log_u - log_p_hit).detach().clamp(U_CLAMP, 1.0 - U_CLAMP))
        spread = p["spread"].repeat_interleave(cells, dim=1)  # (B, F)
        # a hit carries E_expected / p_hit on average (the voxel's mean is kept), log-normally spread
        log_v = log_f - log_p_hit + spread * eps_energy - 0.5 * spread**2
        s_val = F.softplus(log_v - t.log_eps)
        recorded = hit & ((log_v + ln_e) >= torch.log(t.threshold_mev))
        # straight-through for the hit draw and the threshold: the critic's wish for more (less) energy in
        # a voxel raises (lowers) its hit probability, with the layer energies held
        _, p_shape = hit_probability(log_f_shape)
        s = torch.where(recorded, s_val, torch.zeros_like(s_val)) + (p_shape - p_shape.detach()) * s_val.detach()
        return t.x_from_s(s)


def _read_cumulative(table: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Bin shares of a cumulative profile read at shifted or scaled edges, renormalised to sum to 1.

    table (B, K + 1): cumulative fractions at the edges 0..K (0 at 0, 1 at K); u (B, K + 1): where to read
    them, in units of bins, linear between edges, 0 before the first and 1 beyond the last. Returns (B, K)
    shares, each at least SHARE_FLOOR before the renormalisation (logs stay finite).
    """
    n = table.shape[1] - 1
    u = u.clamp(0.0, float(n))
    i = u.floor().clamp(max=n - 1)
    frac = u - i
    lo = table.gather(1, i.long())
    hi = table.gather(1, i.long() + 1)
    cum = lo + frac * (hi - lo)
    share = (cum[:, 1:] - cum[:, :-1]).clamp(min=0.0) + SHARE_FLOOR
    return share / share.sum(dim=1, keepdim=True)


def build(*, n_features: int, n_cond: int, latent_dim: int, hidden_g: int, hidden_d: int, layer_norm: bool,
          generator: torch.Generator, feature_groups: int = 0, event_shape: tuple[int, ...] = (),
          transform: dict[str, Any] | None = None, feature_noise: bool = False,
          options: dict[str, Any] | None = None) -> tuple[nn.Module, nn.Module]:
    """``event_shape`` (layers, alpha, r) must multiply to ``n_features``; () = one layer of one alpha bin.

    ``feature_groups`` > 0 turns on the critic's observables; ``feature_noise``: G takes z of latent_dim +
    n_features values, the second part the per-voxel fluctuations. ``transform`` (a fitted ``log_ratio``
    transform's dict) fills both networks' buffers and the generator's mean shower; without it they are
    left for ``load_state_dict`` (a rebuild from a checkpoint).
    """
    shape = tuple(int(v) for v in event_shape) or (1, 1, n_features)
    if len(shape) != 3 or math.prod(shape) != n_features:
        raise ValueError(f"calo_param: event_shape {shape} does not hold {n_features} features")
    shape3 = (shape[0], shape[1], shape[2])
    # nn.Linear initialises itself from the global RNG on construction; fork it so building a model
    # leaves the global stream untouched, then draw the real initialisation from ``generator``.
    with torch.random.fork_rng(devices=[]):
        g = ParamGenerator(shape3, n_cond, latent_dim, hidden_g, layer_norm, feature_noise, options=options)
        d = ShowerCritic(shape3, n_cond, hidden_d, physics=feature_groups > 0)
    for module in itertools.chain(g.modules(), d.modules()):
        if isinstance(module, nn.Linear):
            _init_linear(module, generator, HEAD_GAIN if module is g.head else 1.0)
    with torch.no_grad():
        g.head.bias.mul_(HEAD_GAIN)
    if transform is not None:
        g.transform.load_transform(transform)
        d.transform.load_transform(transform)
        g.start_at_mean_shower(transform.get("mean_fraction"), transform.get("fraction_by_energy"),
                               transform.get("ln_e_by_energy"))
    return g, d
