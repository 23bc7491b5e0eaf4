"""``kappa_field``: a learned halo model. A convergence map is a Gaussian field plus unclustered halos; the
GAN learns how each part's statistics depend on cosmology, from maps alone.

Why this shape. The reference's halos tier (surrogate.simulators.convergence_maps) paints Poisson halos
(Tinker08 mass function, NFW profiles) on a Gaussian field. On the quickstart's 3.3' pixels a halo's
R200c is under a pixel below 10^14.5 Msun and about two pixels at 10^15 (measured from the tier's tables
at Omega_m = 0.3, sigma_8 = 0.8), and the halos are placed independently, so the halo part of a map is,
to a good approximation, an independent per-pixel compound-Poisson variable smeared by a kernel a few
pixels wide: its one-point distribution (how many halos of which mass fall in a pixel) and the kernel
carry the cosmology. A convolutional generator must discover that sparse, heavy-tailed, white structure
from scratch and in practice paints a grid pattern instead (README, "The weak-lensing quickstart").

Generator, per map, from the conditions c (model space, or their logarithms: ``condition_features``) through
a two-layer MLP to the parameters, then:

    kappa = G + sum_k (X_k - E[X_k]) * K_k

- G: a periodic Gaussian field, one N(0, 1) latent per pixel filtered by sqrt(S(|k|)); log S is a base
  power law plus a learned piecewise-linear function of log|k| at ``spectrum_knots`` knots from the
  fundamental to the grid's corner. The monopole is zero, as in the reference.
- X_k (k < ``halo_channels``): one N(0, 1) latent v per pixel through a learned monotone quantile
  function, X = Q_k(v) with dQ_k/dv = exp(g_k(v)) and g_k piecewise linear at ``quantile_knots`` points
  over |v| <= V_MAX; any one-point distribution with a density can be written so, the heavy halo tail
  included. E[X_k] (a quadrature over v) is subtracted, as the reference subtracts its halos' expected
  mean, so a map's own mean still fluctuates with its "halo count".
- K_k: an isotropic kernel on the periodic grid within ``kernel_radius`` pixels, one weight per distinct
  distance, summing to one (mass is conserved): the halos' profiles, from a point (small halos) to a few
  pixels (clusters).

The map goes to model space through the store's transform, x = (arcsinh(kappa / scale) - mean) / std,
whose constants are buffers (a checkpoint rebuilds the generator alone). Nothing depends on z's first
``latent_dim`` values: at fixed cosmology the reference's maps differ only through their random fields.

Initialisation from the fitted transform only: G and the X_k share the data's pixel variance
(scale * std)^2 half and half, G with a 1/|k| spectrum, each X_k Gaussian, each kernel a point.

Critic: image_gan's convolutional projection discriminator (circular padding: the maps are periodic;
``conv_critic``) whose features are joined by each map's summary statistics (``summary_critic``): the
log band powers of kappa in SUMMARY_BANDS log-spaced |k| bands and the model-space pixel values at fixed
quantiles (a sorted map's entries, differentiable), what the validation's power-spectrum and pixel-PDF
bars measure; with ``smoothing_px`` also the quantiles of the map smoothed as the validation smooths it
before counting peaks and Minkowski functionals. With ``matching_weight`` > 0 the generator's loss adds a
feature-matching term on those summaries, conditional on the cosmology (SummaryDiscriminator.matching_loss).
With ``interpolation_maps`` and ``interpolation_weight`` it also draws maps at random conditions between the
training ones and matches their summaries to the reference's interpolated there, a quadratic per condition
fitted to the real batches as training goes (SummaryDiscriminator.interpolation_loss): the generator's
parameters need not be smooth in cosmology, the reference's statistics are.

What it cannot do: halo clustering and halo profiles that depend on mass (one kernel per channel, two
channels by default), and it takes one-channel square periodic maps only.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from surrogate.config import POSITIVE, Range
from surrogate.errors import ConfigError
from surrogate.models import Option
from surrogate.models.image_gan import NEGATIVE_SLOPE, ImageDiscriminator, _init, _spectral_norm, image_shape

FEATURE_NOISE = True  # per-pixel latents: the Gaussian field's white noise and each halo channel's v
V_MAX = 6.0  # the quantile functions are defined over |v| <= V_MAX (latents beyond are clamped: p ~ 2e-9)
QUANTILE_GRID = 241  # points of the quadrature that integrates dQ/dv and E[X]
HEAD_GAIN = 0.1  # the parameter head starts small: every map near the initial model
LOG_RANGE = 12.0  # learned log-offsets (spectrum, dQ/dv) are bounded to +-LOG_RANGE around the base
KERNEL_POINT = 4.0  # initial logit of the kernel's centre over the other distances: about a point
SUMMARY_BANDS = 12
SUMMARY_QUANTILES = (0.0005, 0.005, 0.025, 0.16, 0.5, 0.84, 0.975, 0.995, 0.9995)
RADIUS = Range(0, 16)
MAX_ASINH = 20.0  # arcsinh units the critic's summaries clamp at before sinh: an overflow guard
INTERPOLATION_DECAY = 0.99  # the interpolation term's running regression of the real summaries on the conditions
CACHED_INPUTS = 2  # SummaryDiscriminator._statistics keeps the statistics of this many recent inputs
MAX_PRODUCT_CONDITIONS = 3  # the matching term's condition basis is the full product up to this many columns

OPTIONS = {
    "halo_channels": Option(2, "independent per-pixel halo variables, each with its own one-point "
                            "distribution and kernel", Range(1, 8)),
    "spectrum_knots": Option(10, "knots of the Gaussian field's log power in log|k|", Range(2, 64)),
    "quantile_knots": Option(17, "knots of each halo channel's log dQ/dv over |v| <= 6", Range(2, 128)),
    "kernel_radius": Option(3, "halo kernels reach this many pixels from the centre", RADIUS),
    "activation": Option("silu", "the cosmology MLP's activation: leaky_relu (piecewise linear between "
                         "and beyond the grid points) or silu (smooth)", choices=("leaky_relu", "silu")),
    "condition_features": Option("linear", "what the cosmology MLP sees: the conditions (linear on [-1, 1] over "
                                 "the store's box) or their logarithms (in which the halos tier's log power is "
                                 "biquadratic to 1% between the quickstart's grid points; the GAN's held-out "
                                 "error was no smaller with them)", choices=("linear", "log")),
    "channels_d": Option(8, "discriminator channels at full resolution, doubled per halving, capped at "
                         "train.hidden_d", POSITIVE),
    "conv_critic": Option(True, "the critic includes image_gan's convolutional trunk (circular padding); off: "
                          "it sees the summaries alone, about 4x cheaper a step"),
    "summary_critic": Option(True, "the critic also sees each map's log band powers and pixel quantiles"),
    "spectral_norm_d": Option(True, "spectral normalisation of every discriminator weight"),
    "smoothing_px": Option(0.0, "the summaries also hold the pixel quantiles of each map smoothed by a Gaussian "
                           "of this sigma in pixels (what peak counts and Minkowski functionals see: the "
                           "validation smooths by 2', 0.61 px of the quickstart's maps); 0 = none",
                           Range(0, 8)),
    "matching_weight": Option(0.0, "weight of the generator's feature-matching term on the summaries "
                              "(SummaryDiscriminator.matching_loss); 0 = purely adversarial", Range(0, 1e6)),
    "interpolation_maps": Option(0, "maps drawn per step at random conditions between the training ones, "
                                 "whose summaries are matched to the reference's interpolated between them "
                                 "(SummaryDiscriminator.interpolation_loss); even; 0 = none", Range(0, 4096)),
    "interpolation_weight": Option(0.0, "weight of that term", Range(0, 1e6)),
    "angular_bands": Option(False, "each summary band of |k| split in two: modes within 22.5 degrees of a "
                            "diagonal, and the rest (a halo kernel's shape on the pixel grid, a '+' or a round "
                            "spot, shows as their ratio at high |k|)"),
}


def NOISE_PER_FEATURE(options: dict[str, Any]) -> int:  # the registry reads this name (surrogate.models)
    """One latent per pixel for the Gaussian field, one per halo channel."""
    return 1 + int(options["halo_channels"])


def _mode_k(side: int) -> torch.Tensor:
    """|k| of each rfft2 mode of a (side, side) map, in fundamentals, (side, side // 2 + 1) float64."""
    ky = torch.fft.fftfreq(side, dtype=torch.float64) * side
    kx = torch.fft.rfftfreq(side, dtype=torch.float64) * side
    return torch.hypot(ky[:, None], kx[None, :])


def _interp(x: torch.Tensor, knots: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation of ``values`` (B, C, M) given at increasing ``knots`` (M,) at points
    ``x`` (P,), constant beyond the ends; (B, C, P)."""
    pos = ((x - knots[0]) / (knots[1] - knots[0])).clamp(0, len(knots) - 1 - 1e-6)
    lo = pos.floor().long()
    frac = (pos - lo).to(values.dtype)
    return values[..., lo] * (1 - frac) + values[..., lo + 1] * frac


class KappaFieldGenerator(nn.Module):
    """forward(z: (B, latent_dim + (1 + K) H W), cond: (B, n_cond) model space) -> (B, H W) model space."""

    log_k: torch.Tensor
    base_log_s: torch.Tensor
    s_knots: torch.Tensor
    v_grid: torch.Tensor
    v_knots: torch.Tensor
    kernel_class: torch.Tensor
    class_count: torch.Tensor
    scale: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    log_sigma: torch.Tensor
    cond_lo: torch.Tensor
    cond_hi: torch.Tensor

    def __init__(self, side: int, n_cond: int, latent_dim: int, hidden: int, opts: dict[str, Any]) -> None:
        super().__init__()
        self.side = side
        self.latent_dim = latent_dim
        self.channels = int(opts["halo_channels"])
        k = _mode_k(side)
        k_max = float(k.max())
        self.register_buffer("log_k", torch.log(k.clamp(min=1.0)).float())
        offset = torch.fft.fftfreq(side, dtype=torch.float64) * side  # signed periodic offsets 0, 1, ..., -1
        d2 = (offset[:, None] ** 2 + offset[None, :] ** 2).round().long()  # also |k|^2 of the full-plane modes
        # base spectrum 1/|k| with unit pixel variance: var = (1 / N^2) sum over all N^2 modes of S
        norm = float((1.0 / d2[d2 > 0].double().sqrt()).sum()) / side**2
        base = torch.where(k > 0, -torch.log(k.clamp(min=1.0)) - math.log(norm), torch.full_like(k, -math.inf))
        self.register_buffer("base_log_s", base.float())
        self.register_buffer("s_knots", torch.linspace(0.0, math.log(k_max), int(opts["spectrum_knots"])))
        self.register_buffer("v_grid", torch.linspace(-V_MAX, V_MAX, QUANTILE_GRID))
        self.register_buffer("v_knots", torch.linspace(-V_MAX, V_MAX, int(opts["quantile_knots"])))
        # kernel: each pixel of the periodic grid within the radius belongs to the class of its distance
        radius = int(opts["kernel_radius"])
        classes = torch.unique(d2[d2 <= radius * radius])
        lookup = torch.full((int(d2.max()) + 1,), len(classes), dtype=torch.long)
        lookup[classes] = torch.arange(len(classes))
        self.register_buffer("kernel_class", lookup[d2].reshape(-1))  # (N * N,), len(classes) = outside
        self.register_buffer("class_count", torch.bincount(self.kernel_class, minlength=len(classes) + 1)[:-1]
                             .float())
        self.n_classes = len(classes)
        # the store's transform, and the initial scale of kappa
        self.register_buffer("scale", torch.tensor(1.0, dtype=torch.float64))
        self.register_buffer("mean", torch.tensor(0.0, dtype=torch.float64))
        self.register_buffer("std", torch.tensor(1.0, dtype=torch.float64))
        self.register_buffer("log_sigma", torch.tensor(0.0))
        self.log_conditions = opts["condition_features"] == "log"
        if self.log_conditions:  # the conditions' box, from the store's transform (load_transform)
            self.register_buffer("cond_lo", torch.ones(n_cond, dtype=torch.float64))
            self.register_buffer("cond_hi", torch.full((n_cond,), math.e, dtype=torch.float64))
        self.n_spectrum = int(opts["spectrum_knots"])
        self.n_quantile = int(opts["quantile_knots"])
        n_out = self.n_spectrum + self.channels * (self.n_quantile + self.n_classes)
        self.trunk = nn.ModuleList([nn.Linear(n_cond, hidden), nn.Linear(hidden + n_cond, hidden)])
        self.act = nn.SiLU() if opts["activation"] == "silu" else nn.LeakyReLU(NEGATIVE_SLOPE)
        self.head = nn.Linear(hidden + n_cond, n_out)

    def load_transform(self, transform: dict[str, Any]) -> None:
        """The store's kappa_arcsinh transform's constants (ConfigError for any other transform)."""
        if transform.get("name") != "kappa_arcsinh":
            raise ConfigError(f"train.model: kappa_field draws convergence maps and needs the store's kappa_arcsinh "
                              f"transform, the store has {transform.get('name')!r} (use image_gan)")
        with torch.no_grad():
            for key in ("scale", "mean", "std"):
                getattr(self, key).fill_(float(transform[key]))
            self.log_sigma.fill_(math.log(float(transform["scale"]) * float(transform["std"])))
        if self.log_conditions:
            lo, hi = (torch.as_tensor(transform[key], dtype=torch.float64).reshape(-1)
                      for key in ("cond_lo", "cond_hi"))
            if lo.shape != self.cond_lo.shape or not bool((lo > 0).all()):
                raise ConfigError(f"train.model_options.condition_features: 'log' needs positive conditions, the "
                                  f"store's range starts at {lo.tolist()} (set condition_features=linear)")
            with torch.no_grad():
                self.cond_lo.copy_(lo)
                self.cond_hi.copy_(hi)

    def features(self, cond: torch.Tensor) -> torch.Tensor:
        """What the MLP sees: the model-space conditions (linear on [-1, 1] over the store's box), or with
        ``condition_features`` = log the conditions' logarithms mapped linearly onto [-1, 1] over that box."""
        if not self.log_conditions:
            return cond.float()
        lo, hi = self.cond_lo, self.cond_hi
        raw = (lo + (cond.double() + 1) / 2 * (hi - lo)).clamp(min=1e-3 * lo)
        span = torch.log(hi / lo)
        u = 2 * torch.log(raw / lo) / torch.where(span > 0, span, torch.ones_like(span)) - 1
        return torch.where(span > 0, u, torch.zeros_like(u)).float()

    def parameters_of(self, cond: torch.Tensor) -> dict[str, torch.Tensor]:
        """The map model at conditions ``cond``: log S at the knots (B, S), log dQ/dv at the knots
        (B, K, Q) and kernel weights per distance class (B, K, D), each kernel summing to one."""
        c = self.features(cond)
        h = self.act(self.trunk[0](c))
        h = self.act(self.trunk[1](torch.cat([h, c], dim=1)))
        out = self.head(torch.cat([h, c], dim=1))
        s, rest = out[:, :self.n_spectrum], out[:, self.n_spectrum:].reshape(len(c), self.channels, -1)
        g, logits = rest[..., :self.n_quantile], rest[..., self.n_quantile:]
        # half the variance in G, half shared by the halo channels: log(sigma^2 / 2) for S, sigma / sqrt(2K) for X
        log_s = LOG_RANGE * torch.tanh(s / LOG_RANGE) + 2 * self.log_sigma - math.log(2.0)
        log_dq = (LOG_RANGE * torch.tanh(g / LOG_RANGE) + self.log_sigma
                  - 0.5 * math.log(2.0 * self.channels))
        point = torch.zeros(self.n_classes, device=c.device)
        point[0] = KERNEL_POINT
        weight = torch.softmax(logits + point, dim=-1) / self.class_count  # per pixel of each class
        return {"log_s": log_s, "log_dq": log_dq, "kernel": weight}

    def quantile_grid(self, log_dq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(Q on v_grid (B, K, G) with Q(0) = 0, E[X] (B, K)) from log dQ/dv at the knots (B, K, M)."""
        slope = torch.exp(_interp(self.v_grid, self.v_knots, log_dq))
        dv = self.v_grid[1] - self.v_grid[0]
        steps = 0.5 * (slope[..., 1:] + slope[..., :-1]) * dv
        q = torch.cat([torch.zeros_like(steps[..., :1]), torch.cumsum(steps, dim=-1)], dim=-1)
        q = q - q[..., QUANTILE_GRID // 2: QUANTILE_GRID // 2 + 1]
        density = torch.exp(-0.5 * self.v_grid**2)
        expected = (q * density).sum(dim=-1) / density.sum()
        return q, expected

    def kappa(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """(B, H, W) convergence maps."""
        n, b = self.side, len(z)
        with torch.autocast(z.device.type, enabled=False):
            p = self.parameters_of(cond)
            noise = z[:, self.latent_dim:].float().reshape(b, 1 + self.channels, n, n)
            log_s = _interp(self.log_k.flatten(), self.s_knots, p["log_s"][:, None, :]).reshape(b, *self.log_k.shape)
            amplitude = torch.exp(0.5 * (log_s + self.base_log_s))  # 0 at the monopole
            field = torch.fft.rfft2(noise[:, 0]) * amplitude
            q, expected = self.quantile_grid(p["log_dq"])
            v = noise[:, 1:].reshape(b, self.channels, n * n).clamp(-V_MAX, V_MAX)
            pos = (v + V_MAX) / (2 * V_MAX) * (QUANTILE_GRID - 1)
            lo = pos.floor().long().clamp(max=QUANTILE_GRID - 2)
            frac = pos - lo
            x = torch.gather(q, 2, lo) * (1 - frac) + torch.gather(q, 2, lo + 1) * frac - expected[..., None]
            zero = torch.zeros_like(p["kernel"][..., :1])
            kernel = torch.cat([p["kernel"], zero], dim=-1)[..., self.kernel_class].reshape(b, self.channels, n, n)
            field = field + (torch.fft.rfft2(x.reshape(b, self.channels, n, n)) * torch.fft.rfft2(kernel)).sum(dim=1)
            return torch.fft.irfft2(field, s=(n, n))

    def forward(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        kappa = self.kappa(z, cond).reshape(len(z), -1).double()
        return ((torch.asinh(kappa / self.scale) - self.mean) / self.std).float()


def _gaussian_filter(side: int, sigma_px: float) -> torch.Tensor:
    """(side, side // 2 + 1) rfft2 transfer function of periodic Gaussian smoothing by ``sigma_px`` pixels as
    the validation smooths (scipy.ndimage.gaussian_filter, mode wrap: a sampled Gaussian cut at 4 sigma,
    normalised, along each axis); at sub-pixel sigma it differs from a continuous Gaussian's transform."""
    if sigma_px <= 0:
        return torch.ones(side, side // 2 + 1)
    radius = int(4.0 * sigma_px + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * (x / sigma_px) ** 2)
    w = w / w.sum()
    f = torch.fft.fftfreq(side, dtype=torch.float64)
    response = (w[None, :] * torch.cos(2 * math.pi * f[:, None] * x[None, :])).sum(dim=1)  # (side,)
    return (response[:, None] * response[None, : side // 2 + 1]).float()


def whitened(phi: torch.Tensor, floor: float = 1e-3) -> torch.Tensor:
    """``phi`` (B, F) times G^(-1/2), G = phi^T phi / B over these rows (directions with eigenvalue below
    ``floor`` x the largest dropped): the columns become orthonormal over the batch's own conditions.
    Why: the Legendre polynomials are orthonormal for c uniform on [-1, 1], not on a grid of three values
    per column, where a squared moment weighs an error at the grid's centre 4x (per column) less than
    one at an edge; whitened, every condition of the batch counts by its share of the rows."""
    gram = (phi.double().T @ phi.double()) / len(phi)
    values, vectors = torch.linalg.eigh(gram)
    keep = values > floor * values.max()
    return (phi.double() @ (vectors[:, keep] / values[keep].sqrt())).to(phi.dtype)


def condition_basis(c: torch.Tensor) -> torch.Tensor:
    """(B, 3^n) products over the n condition columns of the Legendre polynomials 1, sqrt(3) c_i,
    sqrt(5) (3 c_i^2 - 1) / 2 (orthonormal for c uniform on [-1, 1], so no direction of the matching is
    ill-conditioned); on a grid of three values per column any function of the grid point is a
    combination of them. For n > MAX_PRODUCT_CONDITIONS: the degree-one terms only."""
    ones = torch.ones_like(c[:, :1])
    if c.shape[1] > MAX_PRODUCT_CONDITIONS:
        return torch.cat([ones, math.sqrt(3.0) * c], dim=1)
    phi = ones
    for i in range(c.shape[1]):
        column = torch.stack([torch.ones_like(c[:, i]), math.sqrt(3.0) * c[:, i],
                              math.sqrt(5.0) * (1.5 * c[:, i] ** 2 - 0.5)], dim=1)
        phi = (phi[:, :, None] * column[:, None, :]).flatten(1)
    return phi


def _leading_rows(x: torch.Tensor, whole: torch.Tensor, version: int) -> bool:
    """Whether ``x`` is ``whole`` or its first rows (a view of the same storage and strides), and ``whole`` has
    not been written to since it was at ``version``."""
    return (x.data_ptr() == whole.data_ptr() and x.stride() == whole.stride() and x.shape[1:] == whole.shape[1:]
            and len(x) <= len(whole) and x.dtype == whole.dtype and x.device == whole.device
            and whole._version == version)


class SummaryDiscriminator(nn.Module):
    """forward(x: (B, H W) model space, cond) -> (B, 1): image_gan's trunk features joined by summaries."""

    band: torch.Tensor
    band_count: torch.Tensor
    smoothing: torch.Tensor
    quantile_index: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    interp_gram: torch.Tensor
    interp_moment: torch.Tensor

    def __init__(self, side: int, n_cond: int, channels: int, cap: int, summaries: bool,
                 matching_weight: float = 0.0, convolutional: bool = True, smoothing_px: float = 0.0,
                 interpolation_maps: int = 0, interpolation_weight: float = 0.0,
                 angular_bands: bool = False) -> None:
        super().__init__()
        self.side = side
        self.n_bands = SUMMARY_BANDS * (2 if angular_bands else 1)
        self.smoothed = smoothing_px > 0
        self.interpolation_maps = int(interpolation_maps) if interpolation_weight > 0 else 0
        self.interpolation_weight = float(interpolation_weight)
        if self.interpolation_maps:
            # running sums of phi phi^T and phi s^T over the real batches (phi = condition_basis, s = summaries):
            # the least-squares fit of the reference's summaries, a quadratic in each condition, exact at the
            # nodes of a 3-point-per-column grid; in the checkpoint, so a resume continues it exactly
            n_basis = condition_basis(torch.zeros(1, n_cond)).shape[1]
            n_stats = self.n_bands + len(SUMMARY_QUANTILES) * (2 if self.smoothed else 1)
            self.register_buffer("interp_gram", torch.zeros(n_basis, n_basis, dtype=torch.float64))
            self.register_buffer("interp_moment", torch.zeros(n_basis, n_stats, dtype=torch.float64))
        self._cache: list[tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]] = []  # see _statistics
        self.register_buffer("smoothing", _gaussian_filter(side, smoothing_px), persistent=False)
        self.image = ImageDiscriminator(side, n_cond, channels, cap, circular=True) if convolutional else None
        features = self.image.psi.in_features if self.image is not None else cap
        self.summaries = summaries
        self.matching_weight = float(matching_weight)
        self.register_buffer("mean", torch.tensor(0.0))  # the store's transform (load_transform)
        self.register_buffer("std", torch.tensor(1.0))
        k = _mode_k(side).flatten()
        edges = torch.logspace(0.0, math.log10(float(k.max()) * 1.0001), SUMMARY_BANDS + 1, dtype=torch.float64)
        band = torch.bucketize(k, edges, right=True) - 1  # -1 for the monopole
        if angular_bands:  # 2 b + 1 for the modes within 22.5 degrees of a diagonal
            ky = (torch.fft.fftfreq(side, dtype=torch.float64) * side).abs()[:, None]
            kx = (torch.fft.rfftfreq(side, dtype=torch.float64) * side)[None, :]
            ratio = torch.minimum(kx, ky) / torch.maximum(kx, ky).clamp(min=1.0)
            band = 2 * band + (ratio > math.tan(math.pi / 8)).flatten().long()
        valid = (band >= 0) & (band < self.n_bands)
        band = torch.where(valid, band, torch.full_like(band, self.n_bands))
        self.register_buffer("band", band)
        self.register_buffer("band_count", torch.bincount(band, minlength=self.n_bands + 1)[:-1]
                             .clamp(min=1).float())
        index = [round(q * (side * side - 1)) for q in SUMMARY_QUANTILES]
        self.register_buffer("quantile_index", torch.tensor(index, dtype=torch.long))
        if summaries:
            n_summary = self.n_bands + len(SUMMARY_QUANTILES) * (2 if self.smoothed else 1)
            self.summary = nn.Linear(n_summary, features)
            self.joint = nn.Linear((2 if convolutional else 1) * features, features)
        self.psi = nn.Linear(features, 1)
        self.embed = nn.Linear(n_cond, features, bias=False)
        self.act = nn.LeakyReLU(NEGATIVE_SLOPE)

    def _kappa(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, N) kappa / scale of model-space maps."""
        s = (x.float() * self.std + self.mean).clamp(-MAX_ASINH, MAX_ASINH)
        return torch.sinh(s).reshape(len(x), self.side, self.side)

    def band_power(self, x: torch.Tensor) -> torch.Tensor:
        """(B, bands): mean |rfft2|^2 / N^2 per band of kappa / scale (what the validation's power bars
        measure: the bright halo pixels that arcsinh compresses dominate the small scales)."""
        with torch.autocast(x.device.type, enabled=False):
            power = torch.fft.rfft2(self._kappa(x)).abs().square().flatten(1) / self.side**2
            sums = torch.zeros(len(x), self.n_bands + 1, device=x.device).index_add_(1, self.band, power)
            return sums[:, :self.n_bands] / self.band_count

    def pixel_quantiles(self, x: torch.Tensor) -> torch.Tensor:
        """(B, quantiles): the model-space pixel values at SUMMARY_QUANTILES (a sorted map's entries)."""
        return torch.sort(x.float(), dim=1).values[:, self.quantile_index]

    def quantiles(self, x: torch.Tensor) -> torch.Tensor:
        """(B, quantiles): the pixel quantiles, then (``smoothing_px`` > 0) those of the smoothed map in the
        same model-space units (the transform is monotone: the smoothed kappa is sorted, and only its
        quantiles go through arcsinh)."""
        if not self.smoothed:
            return self.pixel_quantiles(x)
        with torch.autocast(x.device.type, enabled=False):
            smooth = torch.fft.irfft2(torch.fft.rfft2(self._kappa(x)) * self.smoothing, s=(self.side, self.side))
            picked = self.pixel_quantiles(smooth.reshape(len(x), -1))
            smooth_q = (torch.asinh(picked) - self.mean) / self.std
        return torch.cat([self.pixel_quantiles(x), smooth_q], dim=1)

    def _statistics(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(band powers, quantiles) of ``x``. The last CACHED_INPUTS inputs' are kept, and a leading slice of
        one of them (same storage, same strides, no write since) is answered from it: in one training step the
        critic update sees real ++ fake, the generator update's critic pass and its matching term the same
        fakes, and the matching term that real batch again; the sorts are most of a step's cost."""
        for entry in self._cache:
            if _leading_rows(x, entry[0], entry[1]):
                return entry[2][:len(x)], entry[3][:len(x)]
        power, quantiles = self.band_power(x), self.quantiles(x)
        self._cache = [(x, x._version, power, quantiles), *self._cache][:CACHED_INPUTS]
        return power, quantiles

    def summary_statistics(self, x: torch.Tensor) -> torch.Tensor:
        """(B, bands + quantiles): the log band powers and the pixel quantiles, the critic's summaries."""
        power, quantiles = self._statistics(x)
        return torch.cat([torch.log(power + 1e-6), quantiles], dim=1)

    def load_transform(self, transform: dict[str, Any]) -> None:
        with torch.no_grad():
            self.mean.fill_(float(transform["mean"]))
            self.std.fill_(float(transform["std"]))

    def matching_loss(self, real: torch.Tensor, fake: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The generator's feature-matching term: weight * mean over (phi, statistic) of m_1 m_2, where m_h =
        mean over half h of the batch of phi(c_b) (s(fake_b) - s(real_b)), phi = :func:`condition_basis`
        made orthonormal over the batch (:func:`whitened`) and s the summaries (band powers relative to the
        reference's, :meth:`_power_scale`; pixel quantiles). Real and fake rows share their conditions, so this
        matches the summaries' conditional means to second order per condition column (Salimans et al. 2016,
        arXiv:1606.03498, sec. 3.1, on fixed physics features instead of the critic's). With the interpolation
        term on, the real batch first joins that term's running fit of the reference."""
        with torch.autocast(fake.device.type, enabled=False):
            phi = whitened(condition_basis(cond.float()))
            # band powers relative to _power_scale's (not their logs: a log's mean depends on the power's
            # scatter, which the heavy halo tail makes larger in the reference), quantiles as they are
            power_fake, quantiles_fake = self._statistics(fake)  # the critic's pass on these fakes computed them
            with torch.no_grad():  # and the critic update those of the real batch, when it is their leading rows
                power_real, quantiles_real = self._statistics(real)
                if self.interpolation_maps:
                    self.observe_reference(real, cond)  # the real batch joins the interpolation term's fit
                scale = self._power_scale(real, cond)
            diff = torch.cat([(power_fake - power_real) / scale, quantiles_fake - quantiles_real], dim=1)
            # two halves of the batch estimate the moments independently: the mean of their product is
            # unbiased for the squared moment, where a squared batch mean would add the generator's own
            # scatter over the batch and reward maps that vary less than the reference's
            terms = phi[:, :, None] * diff[:, None, :]
            half = len(terms) // 2
            first, second = terms[:half].mean(dim=0), terms[half:2 * half].mean(dim=0)
            return self.matching_weight * (first * second).mean()

    @torch.no_grad()
    def _power_scale(self, real: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """What the matching terms divide band powers by: with the interpolation term on, the reference's mean
        band powers at each row's conditions from its running fit (B, bands), so that a 1% error weighs alike
        at every cosmology, as the validation's per-cosmology bar counts it; else the real batch's mean
        (1, bands), where the brightest cosmologies dominate (in the quickstart's highest bands the faintest
        grid point has 1/7 of the mean power, the brightest 2.8x: a 1% error there costs ~400x less)."""
        power = self._statistics(real)[0]
        mean = power.mean(dim=0, keepdim=True).clamp(min=1e-12)
        if not self.interpolation_maps:
            return mean
        # floor: a fit that has not yet seen every grid point can be far off for a few steps
        return self.interpolated_summaries(cond)[:, :self.n_bands].clamp(min=1e-2 * mean)

    def interpolation_conditions(self, cond: torch.Tensor, generator: torch.Generator) -> torch.Tensor | None:
        """(interpolation_maps, n_cond): interpolation_maps / 2 conditions drawn uniformly over the box of the
        batch's conditions ``cond`` (model space), twice over, block after block; None when the term is off."""
        if not self.interpolation_maps:
            return None
        lo, hi = cond.min(dim=0).values, cond.max(dim=0).values
        u = torch.rand(self.interpolation_maps // 2, cond.shape[1], device=cond.device, generator=generator)
        return (lo + u * (hi - lo)).repeat(2, 1)

    @torch.no_grad()
    def observe_reference(self, real: torch.Tensor, cond: torch.Tensor) -> None:
        """Adds the real batch to the running fit behind :meth:`interpolated_summaries` (an exponential moving
        average of its normal equations, decay INTERPOLATION_DECAY: about 100 batches)."""
        power, quantiles = self._statistics(real)
        stats = torch.cat([power, quantiles], dim=1).double()
        phi = condition_basis(cond.float()).double()
        self.interp_gram.mul_(INTERPOLATION_DECAY).add_(phi.T @ phi / len(phi), alpha=1 - INTERPOLATION_DECAY)
        self.interp_moment.mul_(INTERPOLATION_DECAY).add_(phi.T @ stats / len(phi), alpha=1 - INTERPOLATION_DECAY)

    @torch.no_grad()
    def interpolated_summaries(self, cond: torch.Tensor) -> torch.Tensor:
        """(B, bands + quantiles): the reference's mean band powers (kappa / scale) and pixel quantiles at
        ``cond`` (model space), from the running least-squares fit on :func:`condition_basis` (a decay-weighted
        average: no bias correction is needed, both sides of the normal equations carry the same factor)."""
        n = len(self.interp_gram)
        ridge = 1e-9 * torch.trace(self.interp_gram) * torch.eye(n, dtype=torch.float64, device=cond.device)
        coef = torch.linalg.solve(self.interp_gram + ridge, self.interp_moment)
        return (condition_basis(cond.float()).double() @ coef).float()

    def interpolation_loss(self, real: torch.Tensor, cond: torch.Tensor, fake: torch.Tensor,
                           fake_cond: torch.Tensor) -> torch.Tensor:
        """weight * mean over (condition, statistic) of (s(a) - t) (s(b) - t): a and b the two maps drawn at each
        of :meth:`interpolation_conditions`' conditions (``fake`` rows in that order), s the summaries (band
        powers relative to t's, pixel quantiles) and t the reference's conditional mean there, interpolated
        between the training conditions: the running least-squares fit of the real batches' summaries on
        :func:`condition_basis` (:meth:`observe_reference`; the matching term adds each real batch to it, so
        this term needs that one on).

        Why: the grid's matching term pins the summaries at the training conditions only, and the map from
        conditions to the generator's parameters need not be smooth between them (a held-out cosmology's power
        came out 10-15% low in every run without this). The reference's summaries are: a quadratic per
        condition through the quickstart's 3 x 3 grid, fitted to the halos tier's means, is within 2% of its
        band powers and 0.15 standard deviations of its quantiles at both held-out cosmologies (1000 maps
        each). Two maps per condition make the product unbiased for the squared error of the mean."""
        with torch.autocast(fake.device.type, enabled=False):
            target = self.interpolated_summaries(fake_cond)
            mean = self._statistics(real)[0].mean(dim=0, keepdim=True).clamp(min=1e-12).detach()
            scale = target[:, :self.n_bands].clamp(min=1e-2 * mean)
            bands = self.n_bands
            diff = torch.cat([(self.band_power(fake) - target[:, :bands]) / scale,
                              self.quantiles(fake) - target[:, bands:]], dim=1)
            half = len(diff) // 2
            return self.interpolation_weight * (diff[:half] * diff[half:2 * half]).mean()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        parts = [self.image.features(x)] if self.image is not None else []
        if self.summaries:
            parts.append(self.act(self.summary(self.summary_statistics(x).to(x.dtype))))
            h = self.act(self.joint(torch.cat(parts, dim=1)))
        else:
            h = parts[0]
        return self.psi(h) + (self.embed(cond) * h).sum(dim=1, keepdim=True)


def check_options(opts: dict[str, Any]) -> None:
    """ConfigError where the resolved options do not go together (surrogate.models.resolve_options calls it,
    so ``surrogate run`` refuses them before it simulates)."""
    if not (opts["conv_critic"] or opts["summary_critic"]):
        raise ConfigError("train.model_options: kappa_field's critic needs conv_critic or summary_critic (or both)")
    if float(opts["interpolation_weight"]) > 0 and not float(opts["matching_weight"]) > 0:
        raise ConfigError("train.model_options.interpolation_weight: the interpolation term extends the matching "
                          "term between the training conditions and needs matching_weight > 0")
    if float(opts["interpolation_weight"]) > 0 and not int(opts["interpolation_maps"]) > 0:
        raise ConfigError("train.model_options.interpolation_weight: the interpolation term needs maps to draw "
                          "between the training conditions; set interpolation_maps > 0")
    if int(opts["interpolation_maps"]) % 2:
        raise ConfigError(f"train.model_options.interpolation_maps: expected an even number (two maps per "
                          f"condition), got {opts['interpolation_maps']}")


def check_domain(domain: Any) -> None:
    """Only weak-lensing convergence maps (surrogate.models.check_domain): the generator draws kappa through the
    store's kappa_arcsinh transform."""
    if domain.name != "weak_lensing":
        raise ConfigError(f"train.model: kappa_field draws weak-lensing convergence maps, not the {domain.name} "
                          f"domain's events (use that domain's default model)")


def build(*, n_features: int, n_cond: int, latent_dim: int, hidden_g: int, hidden_d: int, layer_norm: bool,
          generator: torch.Generator, feature_groups: int = 0, event_shape: tuple[int, ...] = (),
          transform: dict[str, Any] | None = None, options: dict[str, Any] | None = None,
          feature_noise: bool = False) -> tuple[nn.Module, nn.Module]:
    """(G, D) for square periodic (H, W) = ``event_shape`` maps. ``transform`` (the store's fitted
    kappa_arcsinh transform) fills the buffers; a rebuild from a checkpoint needs none. ``feature_noise``
    must be on (the per-pixel latents); ``layer_norm`` unused."""
    if feature_groups:
        raise ConfigError("train.physics_critic: kappa_field has no critic on feature-group sums; "
                          "set train.physics_critic=false")
    if not feature_noise:
        raise ConfigError("train.feature_noise: kappa_field draws its random fields from per-pixel latents; "
                          "set train.feature_noise=true")
    opts = {key: option.default for key, option in OPTIONS.items()} | dict(options or {})
    side, _ = image_shape(n_features, event_shape, "kappa_field")
    check_options(opts)
    if 2 * int(opts["kernel_radius"]) + 1 > side:
        raise ConfigError(f"train.model_options.kernel_radius: {opts['kernel_radius']} pixels does not fit a "
                          f"{side}-pixel map (at most {(side - 1) // 2})")
    with torch.random.fork_rng(devices=[]):
        g = KappaFieldGenerator(side, n_cond, latent_dim, hidden_g, opts)
        d = SummaryDiscriminator(side, n_cond, opts["channels_d"], hidden_d, opts["summary_critic"],
                                 opts["matching_weight"], opts["conv_critic"], float(opts["smoothing_px"]),
                                 int(opts["interpolation_maps"]), float(opts["interpolation_weight"]),
                                 bool(opts["angular_bands"]))
    for module in (*g.modules(), *d.modules()):
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            _init(module, generator, HEAD_GAIN if module is g.head else 1.0)
    if transform is not None:
        g.load_transform(transform)
        d.load_transform(transform)
    if opts["spectral_norm_d"]:
        _spectral_norm(d, generator)
    return g, d
