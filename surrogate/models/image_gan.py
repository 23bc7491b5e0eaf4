"""``image_gan``: conditional convolutional GAN for single-channel square images (sky maps, detector images).

The project's flat interface holds: x is (B, H*W) in model space, reshaped inside to (B, 1, H, W) with
(H, W) = ``ModelSpec.event_shape`` (or the square root of ``n_features`` when the store gives no shape),
so the generic training loop, EMA, checkpoints and sampler treat it like any other model.

Generator: [z ++ e] -> linear -> (C_4, 4, 4) -> FiLM -> act, then log2(H / 4) blocks of
[nearest upsampling x2 -> conv 3x3 -> FiLM -> act], then conv 3x3 -> 1 channel (linear output: the data
live in a transformed space). e = MLP(cond) is the condition embedding; it enters every block through
FiLM (Perez et al. 2018, arXiv:1709.07871) on a per-sample GroupNorm, h <- GN(h) (1 + gamma(e)) + beta(e).
Per-sample rather than BigGAN's conditional BatchNorm: with no batch statistics the training-mode and
eval-mode generators are one function (a sample at batch 1 equals the same sample at batch 1000), the EMA
generator needs no re-estimated statistics, and DDP ranks hold no rank-local buffers.

Discriminator: conv 3x3 (1 -> C_H) -> act, then per level [conv 4x4 stride 2 -> act] (DCGAN's and SNGAN's
downsampling; 0.44x the FLOPs of conv 3x3 + average pooling, which it replaced) down to 4x4, flatten ->
linear -> act = h (B, F); logit = psi(h) + <V cond, h>, the projection discriminator (Miyato & Koyama 2018,
arXiv:1802.05637, eq. 3) with a linear map V for continuous conditions. The flattened 4x4 map (not global
pooling) keeps where things are, which an image centred on its object needs. No batch statistics anywhere in D:
WGAN-GP's penalty is per sample (Gulrajani et al. 2017, sec. 4). Spectral normalisation (Miyato et al. 2018,
arXiv:1802.05957) of every weight is an option, on for D.

Instrument noise (option ``noise: instrument``): for images of a counting detector whose noise is known
physics, the generator draws the noise-free image and the noise is added analytically, as the reference
simulator adds it, so the networks need not learn pixel speckle. The output conv gives u per pixel; the
noise-free image (the data's units) is I = scale sinh(softplus(u)) >= 0 (arcsinh units as the store's
transform, positive as a count rate); then I + sqrt(sigma^2 + max(I, 0) / exposure) eps with eps one N(0, 1)
latent per pixel (``train.feature_noise``: reproducible from the sampling seed, never the global RNG),
mapped to model space by the store's transform (arcsinh(x / scale) - mean) / std. sigma (background), the
exposure time and the transform's constants come from the fitted transform (``noise_sigma``,
``noise_exposure_s``) and are kept as buffers, so a checkpoint rebuilds the generator alone.

Widths: C_r = min(channels * H / r, hidden) channels at resolution r: ``channels_g`` / ``channels_d`` at
full resolution, doubling at each halving, capped at ``train.hidden_g`` / ``train.hidden_d``; this keeps
the cost per block about equal (16 channels at 64x64: ~38 MFLOP per generator block per image, ~17 per
discriminator level).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from surrogate.config import POSITIVE
from surrogate.errors import ConfigError
from surrogate.models import Option

NEGATIVE_SLOPE = 0.2  # LeakyReLU slope (DCGAN, SNGAN)
START = 4  # side of the generator's first feature map and of the discriminator's last
MIN_SIDE = 16  # smallest image: two upsampling blocks
FILM_GAIN = 0.1  # FiLM weights start at this fraction of He init: every block begins near plain GroupNorm
POWER_ITERATIONS_AT_INIT = 15  # power iterations that settle u, v at build (torch's own spectral_norm: 15)

OPTIONS = {
    "channels_g": Option(16, "generator channels at full resolution, doubled per halving, capped at "
                         "train.hidden_g", POSITIVE),
    "channels_d": Option(16, "discriminator channels at full resolution, doubled per halving, capped at "
                         "train.hidden_d", POSITIVE),
    "cond_embed": Option(64, "width of the generator's condition embedding that drives every block's FiLM",
                         POSITIVE),
    "spectral_norm_d": Option(True, "spectral normalisation of every discriminator weight"),
    "spectral_norm_g": Option(False, "spectral normalisation of every generator weight"),
    "circular": Option(False, "circular (periodic) padding in every convolution, for maps on a torus"),
    "noise": Option("none", "none: G draws the noisy image itself; instrument: G draws the noise-free image and "
                    "Gaussian noise of the transform's noise model is added (needs train.feature_noise)",
                    choices=("none", "instrument")),
}
MAX_ASINH = 20.0  # arcsinh units the noise-free image is capped at (scale sinh(20) ~ 2.4e8 x scale): overflow guard


def FEATURE_NOISE(options: dict[str, Any]) -> bool:  # the registry reads this name (surrogate.models)
    """G takes one N(0, 1) latent per pixel exactly when it draws instrument noise."""
    return options.get("noise") == "instrument"


def image_shape(n_features: int, event_shape: tuple[int, ...], model: str = "image_gan") -> tuple[int, int]:
    """(H, W) of the images: ``event_shape``, or a square of ``n_features`` pixels when it is (); the error
    names ``model``, the model that needs them."""
    side = math.isqrt(n_features)
    shape = tuple(int(v) for v in event_shape) or (side, side)
    ok = (len(shape) == 2 and shape[0] == shape[1] and shape[0] >= MIN_SIDE
          and shape[0] & (shape[0] - 1) == 0 and shape[0] * shape[1] == n_features)
    if not ok:
        raise ConfigError(f"train.model: {model} takes square images whose side is a power of two >= "
                          f"{MIN_SIDE}, got event shape {shape or ()} for {n_features} features")
    return shape[0], shape[1]


def widths(side: int, channels: int, cap: int) -> dict[int, int]:
    """Channels at each resolution from ``START`` to ``side``: channels * side / r, at most ``cap``."""
    out = {}
    r = START
    while r <= side:
        out[r] = min(channels * side // r, cap)
        r *= 2
    return out


class SpectralNorm(nn.Module):
    """Parametrisation W -> W / sigma(W), sigma from one power iteration per training-mode forward.

    Miyato et al. 2018, algorithm 1, on W reshaped to (out, in * k * k). u and v are buffers (they travel in
    the state_dict, so a resume continues the same iteration) drawn from the build's generator; torch's own
    ``spectral_norm`` draws them from the global RNG. Computed in float32 with autocast off: sigma is a
    ratio of sums that bfloat16 would round, and mixing autocast's bfloat16 ``mv`` into a float32 ``dot``
    fails. u, v enter sigma as detached copies, so the gradient penalty's double backward sees sigma(W) as
    a smooth function of W and later in-place updates do not touch a saved graph.
    """

    u: torch.Tensor
    v: torch.Tensor

    def __init__(self, weight: torch.Tensor, generator: torch.Generator) -> None:
        super().__init__()
        mat = weight.detach().flatten(1).float()
        self.register_buffer("u", F.normalize(torch.randn(mat.shape[0], generator=generator), dim=0))
        self.register_buffer("v", F.normalize(torch.randn(mat.shape[1], generator=generator), dim=0))
        with torch.no_grad():
            for _ in range(POWER_ITERATIONS_AT_INIT):
                self._power_iteration(mat)

    def _power_iteration(self, mat: torch.Tensor) -> None:
        self.v.copy_(F.normalize(mat.t() @ self.u, dim=0, eps=1e-12))
        self.u.copy_(F.normalize(mat @ self.v, dim=0, eps=1e-12))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        with torch.autocast(weight.device.type, enabled=False):
            w = weight.float()
            mat = w.flatten(1)
            if self.training:
                with torch.no_grad():
                    self._power_iteration(mat)
            sigma = torch.dot(self.u.clone(), mat @ self.v.clone())
            return (w / sigma).to(weight.dtype)


class FiLM(nn.Module):
    """GroupNorm without its own affine, then a scale and shift from the condition embedding.

    forward(h: (B, C, H, W), e: (B, E)) -> (B, C, H, W) = GN(h) * (1 + gamma(e)) + beta(e)
    """

    def __init__(self, channels: int, embed: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(math.gcd(channels, 8), channels, affine=False)
        self.film = nn.Linear(embed, 2 * channels)

    def forward(self, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.film(e)[:, :, None, None].chunk(2, dim=1)
        return self.norm(h) * (1.0 + gamma) + beta


def _upsample(h: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour x2 of (B, C, H, W): F.interpolate's result, 3x faster on CPU (measured at
    (100, 32, 32, 32), 2 threads: 68 ms against 192 ms)."""
    b, c, height, width = h.shape
    return h[:, :, :, None, :, None].expand(b, c, height, 2, width, 2).reshape(b, c, 2 * height, 2 * width)


def _conv(c_in: int, c_out: int, circular: bool, *, down: bool = False) -> nn.Conv2d:
    """3x3 stride 1 (same size), or with ``down`` 4x4 stride 2 (half size: DCGAN's and SNGAN's downsampling)."""
    mode: Literal["circular", "zeros"] = "circular" if circular else "zeros"
    if down:
        return nn.Conv2d(c_in, c_out, 4, stride=2, padding=1, padding_mode=mode)
    return nn.Conv2d(c_in, c_out, 3, padding=1, padding_mode=mode)


class InstrumentNoise(nn.Module):
    """u (B, H*W) and eps (B, H*W) -> model-space images: noise-free scale sinh(softplus(u)) plus Gaussian noise.

    Buffers (from the fitted transform's dict; a checkpoint restores them): ``scale``, ``mean``, ``std`` of
    x = (arcsinh(image / scale) - mean) / std, ``sigma`` (background noise per pixel, the data's units) and
    ``exposure`` (Poisson variance = image / exposure).
    """

    scale: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    sigma: torch.Tensor
    exposure: torch.Tensor

    def __init__(self, transform: dict[str, Any] | None) -> None:
        super().__init__()
        values = {"scale": 1.0, "mean": 0.0, "std": 1.0, "sigma": 1.0, "exposure": 1.0}  # overwritten by a checkpoint
        if transform is not None:
            keys = {"scale": "scale", "mean": "mean", "std": "std", "sigma": "noise_sigma",
                    "exposure": "noise_exposure_s"}
            if transform.get("name") != "arcsinh" or not all(float(transform.get(k, 0.0)) > 0
                                                              for k in ("scale", "std", "noise_sigma",
                                                                        "noise_exposure_s")):
                raise ConfigError("train.model_options.noise=instrument: the store's transform must be arcsinh "
                                  "with a noise model (noise_sigma, noise_exposure_s > 0: inputs whose attributes "
                                  f"state their noise); got {transform.get('name')!r} with noise_sigma "
                                  f"{transform.get('noise_sigma', 0.0)}, noise_exposure_s "
                                  f"{transform.get('noise_exposure_s', 0.0)}")
            values = {name: float(transform[key]) for name, key in keys.items()}
        for name, value in values.items():
            self.register_buffer(name, torch.tensor(value, dtype=torch.float32))

    def clean(self, u: torch.Tensor) -> torch.Tensor:
        """The noise-free image in the data's units, >= 0."""
        return self.scale * torch.sinh(F.softplus(u).clamp(max=MAX_ASINH))

    def observe(self, image: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """A noise-free image (the data's units, >= 0) seen by the instrument, in model space."""
        noisy = image + torch.sqrt(self.sigma**2 + image.clamp(min=0.0) / self.exposure) * eps
        return (torch.asinh(noisy / self.scale) - self.mean) / self.std

    def forward(self, u: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return self.observe(self.clean(u), eps)


class ImageGenerator(nn.Module):
    """forward(z: (B, latent_dim [+ H * W with instrument noise]), cond: (B, n_cond)) -> (B, H * W), model space."""

    def __init__(self, side: int, n_cond: int, latent_dim: int, channels: int, cap: int, embed: int,
                 circular: bool, noise: InstrumentNoise | None = None) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.noise = noise
        width = widths(side, channels, cap)
        self.c0 = width[START]
        self.embed = nn.Sequential(nn.Linear(n_cond, embed), nn.LeakyReLU(NEGATIVE_SLOPE),
                                   nn.Linear(embed, embed), nn.LeakyReLU(NEGATIVE_SLOPE))
        self.project = nn.Linear(latent_dim + embed, self.c0 * START * START)
        self.film0 = FiLM(self.c0, embed)
        sides = sorted(width)
        self.convs = nn.ModuleList(_conv(width[r], width[2 * r], circular) for r in sides[:-1])
        self.films = nn.ModuleList(FiLM(width[2 * r], embed) for r in sides[:-1])
        self.out = _conv(width[side], 1, circular)
        self.act = nn.LeakyReLU(NEGATIVE_SLOPE)

    def _draw(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """(B, H * W): the output conv's value per pixel, from the first latent_dim values of z."""
        e = self.embed(cond)
        h = self.project(torch.cat([z[:, :self.latent_dim], e], dim=1)).view(len(z), self.c0, START, START)
        h = self.act(self.film0(h, e))
        for conv, film in zip(self.convs, self.films, strict=True):
            h = self.act(film(conv(_upsample(h)), e))
        return self.out(h).flatten(1)

    def forward(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        u = self._draw(z, cond)
        return u if self.noise is None else self.noise(u, z[:, self.latent_dim:])

    def noise_free(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """(B, H * W) noise-free images in the data's units (instrument noise only)."""
        if self.noise is None:
            raise ValueError("noise_free: this generator draws no instrument noise (option noise: none)")
        return self.noise.clean(self._draw(z, cond))


class ImageDiscriminator(nn.Module):
    """forward(x: (B, H * W) model space, cond: (B, n_cond)) -> (B, 1) logit (critic value for WGAN-GP)."""

    def __init__(self, side: int, n_cond: int, channels: int, cap: int, circular: bool) -> None:
        super().__init__()
        width = widths(side, channels, cap)
        self.side = side
        self.stem = _conv(1, width[side], circular)
        sides = sorted(width, reverse=True)
        self.convs = nn.ModuleList(_conv(width[r], width[r // 2], circular, down=True) for r in sides[:-1])
        features = width[START]
        self.dense = nn.Linear(features * START * START, features)
        self.psi = nn.Linear(features, 1)
        self.embed = nn.Linear(n_cond, features, bias=False)  # V of the projection term
        self.act = nn.LeakyReLU(NEGATIVE_SLOPE)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """h (B, F): the convolutional trunk's features, before the logit."""
        h = self.act(self.stem(x.reshape(len(x), 1, self.side, self.side)))
        for conv in self.convs:
            h = self.act(conv(h))
        return self.act(self.dense(h.flatten(1)))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        return self.psi(h) + (self.embed(cond) * h).sum(dim=1, keepdim=True)


def _init(module: nn.Linear | nn.Conv2d, generator: torch.Generator, gain: float = 1.0) -> None:
    """He-uniform weights for LeakyReLU (times ``gain``), small uniform bias; drawn from ``generator``."""
    nn.init.kaiming_uniform_(module.weight, a=NEGATIVE_SLOPE, nonlinearity="leaky_relu", generator=generator)
    with torch.no_grad():
        module.weight.mul_(gain)
    if module.bias is not None:
        bound = 1.0 / math.sqrt(module.weight[0].numel())
        nn.init.uniform_(module.bias, -bound, bound, generator=generator)


def _spectral_norm(network: nn.Module, generator: torch.Generator) -> None:
    for module in list(network.modules()):
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            parametrize.register_parametrization(module, "weight", SpectralNorm(module.weight, generator))


def build(*, n_features: int, n_cond: int, latent_dim: int, hidden_g: int, hidden_d: int, layer_norm: bool,
          generator: torch.Generator, feature_groups: int = 0, event_shape: tuple[int, ...] = (),
          transform: dict[str, Any] | None = None, options: dict[str, Any] | None = None,
          feature_noise: bool = False) -> tuple[nn.Module, nn.Module]:
    """(G, D) for (H, W) = ``event_shape`` images (see :func:`image_shape`); ``options`` resolved by
    surrogate.models.resolve_options. ``layer_norm`` is unused (FiLM normalises); ``transform`` (the
    store's fitted transform) gives instrument noise its constants (a rebuild from a checkpoint needs
    none); ``feature_noise``: G takes z of latent_dim + H * W, the noise's latents (only with
    ``noise: instrument``, which needs it). A physics critic (``feature_groups``) does not exist here."""
    if feature_groups:
        raise ConfigError("train.physics_critic: image_gan has no critic on feature-group sums; "
                          "set train.physics_critic=false")
    opts = {key: option.default for key, option in OPTIONS.items()} | dict(options or {})
    side, _ = image_shape(n_features, event_shape)
    if (opts["noise"] == "instrument") != feature_noise:
        raise ConfigError("train.feature_noise: image_gan takes per-pixel latents exactly with "
                          "train.model_options.noise=instrument (set both, or neither)")
    # modules initialise themselves from the global RNG on construction; fork it so building a model
    # leaves the global stream untouched, then draw the real initialisation from ``generator``.
    with torch.random.fork_rng(devices=[]):
        noise = InstrumentNoise(transform) if opts["noise"] == "instrument" else None
        g = ImageGenerator(side, n_cond, latent_dim, opts["channels_g"], hidden_g, opts["cond_embed"],
                           opts["circular"], noise)
        d = ImageDiscriminator(side, n_cond, opts["channels_d"], hidden_d, opts["circular"])
    films = {module.film for module in g.modules() if isinstance(module, FiLM)}
    for module in (*g.modules(), *d.modules()):
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            _init(module, generator, FILM_GAIN if module in films else 1.0)
    if opts["spectral_norm_g"]:
        _spectral_norm(g, generator)
    if opts["spectral_norm_d"]:
        _spectral_norm(d, generator)
    return g, d
