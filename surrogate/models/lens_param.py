"""``lens_param``: a learned lenstronomy. A GAN generator that chooses what the conditions leave open, and renders.

A smooth strong lens is fixed by its conditions (Einstein radius, mass ellipticity, external shear, source
position, magnitude and size) up to what a physicist does not condition on: the lens galaxy's light
(magnitude, half-light radius, Sersic index, a small misalignment with the mass) and the source's shape
(Sersic index, ellipticity). The simulator draws those nuisance parameters from priors; a surrogate must
reproduce their distribution without being told it. This generator is a small MLP on (z, the condition)
that outputs the eight nuisance parameters, each bounded to a broad physical box (``NUISANCE_BOX``), and
a differentiable renderer (surrogate.domains.strong_lensing.render: SIE + external shear ray shooting,
elliptical Sersic light, supersampling, the Gaussian PSF, as the reference simulator computes them) turns
conditions and nuisance into the noise-free image; the instrument's noise (sky, read, Poisson) is added
analytically, as in image_gan's ``noise: instrument``. The critic is image_gan's projection
discriminator on the images, so the nuisance priors are learned from images alone, as they would be from
observed lenses; the ring's radius and shape follow the conditions by construction, not by learning.

What it cannot do: substructure. Subhalos and line-of-sight halos perturb the deflection field, which
this renderer takes to be the smooth macro model; on the substructure tiers it refuses to build (their
extra condition columns name what it would ignore). README, "The lensing quickstart", for what it scores.

The instrument (pixel scale, PSF FWHM, supersampling, zero point) and the condition box travel as buffers
(read from the store's fitted transform, which carries what the input files state), so a checkpoint
rebuilds the generator alone; the renderer is rebuilt from them on first use and whenever they change.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from surrogate.config import POSITIVE
from surrogate.errors import ConfigError
from surrogate.models import Option
from surrogate.models.image_gan import (
    NEGATIVE_SLOPE,
    ImageDiscriminator,
    InstrumentNoise,
    _init,
    _spectral_norm,
    image_shape,
)

FEATURE_NOISE = True  # one N(0, 1) latent per pixel: the instrument noise
N_COND = 9  # the smooth tier's condition columns (surrogate.simulators.lenstronomy_lens.physics.BASE_COLUMNS)
# (name, low, high, log): the range the generator may put each nuisance parameter in, in the units of the
# simulator's NUISANCE columns; "log" ranges are mapped through log space (positive scale parameters).
# Broad physical boxes, several times the reference's priors (lens light 19-21 mag, 0.4-1.0", n 3-5; source
# n 0.7-2.5, |e| < 0.3): the GAN must find the priors, not be handed them.
NUISANCE_BOX: tuple[tuple[str, float, float, bool], ...] = (
    ("lens_light_mag", 16.0, 24.0, False),
    ("lens_light_R_sersic", 0.1, 3.0, True),
    ("lens_light_n_sersic", 0.5, 8.0, True),
    ("lens_light_de1", -0.2, 0.2, False),
    ("lens_light_de2", -0.2, 0.2, False),
    ("source_n_sersic", 0.3, 6.0, True),
    ("source_e1", -0.6, 0.6, False),
    ("source_e2", -0.6, 0.6, False),
)
SIE_SLOPE = 2.0  # the NUISANCE column lens_gamma of an SIE lens (isothermal)
HEAD_GAIN = 0.1  # the head starts small: every nuisance parameter near the middle of its box
INSTRUMENT = ("pixel_scale_arcsec", "psf_fwhm_arcsec", "supersampling", "magnitude_zero_point")

OPTIONS = {
    "channels_d": Option(16, "discriminator channels at full resolution, doubled per halving, capped at "
                         "train.hidden_d", POSITIVE),
    "spectral_norm_d": Option(True, "spectral normalisation of every discriminator weight"),
}


class NuisanceGenerator(nn.Module):
    """forward(z: (B, latent_dim + H * W), cond: (B, 9) model space) -> (B, H * W) model-space images.

    :meth:`nuisance` gives the drawn nuisance parameters (B, 9) in the simulator's NUISANCE order and
    units, :meth:`noise_free` the images before the noise (B, H * W) in e-/s.
    """

    cond_lo: torch.Tensor
    cond_hi: torch.Tensor
    instrument: torch.Tensor
    box_lo: torch.Tensor
    box_hi: torch.Tensor
    box_log: torch.Tensor

    def __init__(self, side: int, latent_dim: int, hidden: int, noise: InstrumentNoise) -> None:
        super().__init__()
        self.side = side
        self.latent_dim = latent_dim
        self.noise = noise
        self.blocks = nn.ModuleList([nn.Linear(latent_dim + N_COND, hidden), nn.Linear(hidden + N_COND, hidden)])
        self.head = nn.Linear(hidden + N_COND, len(NUISANCE_BOX))
        self.register_buffer("cond_lo", torch.zeros(N_COND, dtype=torch.float64))
        self.register_buffer("cond_hi", torch.ones(N_COND, dtype=torch.float64))
        self.register_buffer("instrument", torch.ones(len(INSTRUMENT), dtype=torch.float64))
        lo = [math.log(a) if log else a for _, a, _, log in NUISANCE_BOX]
        hi = [math.log(b) if log else b for _, _, b, log in NUISANCE_BOX]
        self.register_buffer("box_lo", torch.tensor(lo, dtype=torch.float32))
        self.register_buffer("box_hi", torch.tensor(hi, dtype=torch.float32))
        self.register_buffer("box_log", torch.tensor([log for *_, log in NUISANCE_BOX]))
        self._renderer: tuple[tuple[Any, ...], nn.Module] | None = None

    def load_transform(self, transform: dict[str, Any]) -> None:
        """Condition box and instrument from a fitted ``arcsinh`` transform's dict (ConfigError if it lacks them)."""
        instrument = transform.get("instrument")
        if not isinstance(instrument, dict):
            raise ConfigError("train.model: lens_param renders lenses itself and needs the instrument the store's "
                              "inputs state (pixel scale, PSF, supersampling, zero point); the fitted transform "
                              "has none (inputs without those attributes, or that disagree)")
        wrong = {key: instrument.get(key) for key, want in (("psf_type", "GAUSSIAN"), ("lens_profile", "SIE"),
                                                             ("tier", "smooth")) if instrument.get(key) != want}
        if wrong:
            raise ConfigError(f"train.model: lens_param renders smooth SIE lenses with a Gaussian PSF; the store's "
                              f"inputs state {wrong} (use image_gan)")
        if len(transform.get("cond_lo", ())) != N_COND:
            raise ConfigError(f"train.model: lens_param takes the smooth tier's {N_COND} conditions, the store has "
                              f"{len(transform.get('cond_lo', ()))}")
        with torch.no_grad():
            self.cond_lo.copy_(torch.as_tensor(transform["cond_lo"], dtype=torch.float64))
            self.cond_hi.copy_(torch.as_tensor(transform["cond_hi"], dtype=torch.float64))
            self.instrument.copy_(torch.tensor([float(instrument[key]) for key in INSTRUMENT], dtype=torch.float64))

    def renderer(self) -> nn.Module:
        """The renderer for the instrument in the buffers, on their device (rebuilt when they change)."""
        from surrogate.domains.strong_lensing.render import Instrument, LensRenderer

        values = [float(v) for v in self.instrument.tolist()]
        key = (*values, self.instrument.device)
        if self._renderer is None or self._renderer[0] != key:
            pixel_scale, fwhm, supersampling, zero_point = values
            instrument = Instrument(num_pix=self.side, pixel_scale_arcsec=pixel_scale, supersampling=int(supersampling),
                                    psf_fwhm_arcsec=fwhm, magnitude_zero_point=zero_point)
            # float32: 7e-6 of the image peak from float64 (0.004 sky sigma), several times faster on CPU
            self._renderer = (key, LensRenderer(instrument, dtype=torch.float32, device=self.instrument.device))
        return self._renderer[1]

    def physical_conditions(self, cond: torch.Tensor) -> torch.Tensor:
        """Model-space conditions ([-1, 1] over the fitted box) -> physical (B, 9) float32."""
        span = torch.where(self.cond_hi > self.cond_lo, self.cond_hi - self.cond_lo, torch.ones_like(self.cond_hi))
        return (self.cond_lo + 0.5 * (cond.double() + 1.0) * span).float()

    def nuisance(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """(B, 9) nuisance parameters in the simulator's NUISANCE order and units (the slope fixed at 2)."""
        h = z[:, :self.latent_dim].float()
        c = cond.float()
        for block in self.blocks:
            h = F.leaky_relu(block(torch.cat([h, c], dim=1)), NEGATIVE_SLOPE)
        u = torch.sigmoid(self.head(torch.cat([h, c], dim=1)).float())
        v = self.box_lo + u * (self.box_hi - self.box_lo)
        v = torch.where(self.box_log, torch.exp(v), v)
        return torch.cat([v, torch.full_like(v[:, :1], SIE_SLOPE)], dim=1)

    def noise_free(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """(B, H * W) noise-free images in e-/s."""
        with torch.autocast(z.device.type, enabled=False):  # pow and exp of the profiles want float32
            image = self.renderer()(self.physical_conditions(cond), self.nuisance(z, cond))
        return image.reshape(len(z), -1).float()

    def forward(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.noise.observe(self.noise_free(z, cond), z[:, self.latent_dim:].float())


def check_domain(domain: Any) -> None:
    """Only the strong-lensing smooth tier's images and conditions (surrogate.models.check_domain)."""
    if domain.name != "strong_lensing" or domain.n_cond != N_COND:
        what = (f"the {domain.name} domain" if domain.name != "strong_lensing"
                else f"this simulate.tier's {domain.n_cond} conditions")
        raise ConfigError(f"train.model: lens_param takes the smooth tier's {N_COND} conditions, not {what} "
                          f"(substructure tiers: use image_gan)")


def build(*, n_features: int, n_cond: int, latent_dim: int, hidden_g: int, hidden_d: int, layer_norm: bool,
          generator: torch.Generator, feature_groups: int = 0, event_shape: tuple[int, ...] = (),
          transform: dict[str, Any] | None = None, options: dict[str, Any] | None = None,
          feature_noise: bool = False) -> tuple[nn.Module, nn.Module]:
    """(G, D) for square (H, W) = ``event_shape`` images of the smooth tier (9 conditions). ``transform`` (the
    store's fitted arcsinh transform with its noise model and instrument) fills the buffers; a rebuild from a
    checkpoint needs none. ``feature_noise`` must be on (the per-pixel noise latents); ``layer_norm`` unused."""
    if feature_groups:
        raise ConfigError("train.physics_critic: lens_param has no critic on feature-group sums; "
                          "set train.physics_critic=false")
    if not feature_noise:
        raise ConfigError("train.feature_noise: lens_param draws the instrument noise from per-pixel latents; "
                          "set train.feature_noise=true")
    if n_cond != N_COND:
        raise ConfigError(f"train.model: lens_param takes the smooth tier's {N_COND} conditions, the store has "
                          f"{n_cond} (substructure tiers: use image_gan)")
    opts = {key: option.default for key, option in OPTIONS.items()} | dict(options or {})
    side, _ = image_shape(n_features, event_shape, "lens_param")
    with torch.random.fork_rng(devices=[]):
        g = NuisanceGenerator(side, latent_dim, hidden_g, InstrumentNoise(transform))
        d = ImageDiscriminator(side, n_cond, opts["channels_d"], hidden_d, circular=False)
    for module in (*g.modules(), *d.modules()):
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            _init(module, generator, HEAD_GAIN if module is g.head else 1.0)
    if transform is not None:
        g.load_transform(transform)
    if opts["spectral_norm_d"]:
        _spectral_norm(d, generator)
    return g, d
