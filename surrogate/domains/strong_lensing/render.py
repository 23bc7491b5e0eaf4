"""Differentiable PyTorch renderer of the smooth-tier SIE strong-lensing image.

Re-implements what ``surrogate.simulators.lenstronomy_lens.physics.render`` computes with lenstronomy 1.14.2
for ``tier == "smooth"`` and ``lens_profile == "SIE"``, noise-free: SIE + external shear ray shooting,
elliptical Sersic lens light and source with amplitudes from magnitudes, supersampled pixel grid, Gaussian
PSF. Batched over images, differentiable with respect to every parameter, float64 or float32, any device
(no numpy in the forward path). lenstronomy is not imported here; each formula or convention taken from it
cites the lenstronomy file (paths relative to ``site-packages/lenstronomy/``).

Units: angles in arcsec, magnitudes AB with the instrument's zero point, images in e-/s per pixel.
Coordinates: x (RA-like) grows with the column index, y grows with the row index, the grid centred on 0
(lenstronomy's default pixel grid, East to the right); the lens is at the origin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from surrogate.simulators.lenstronomy_lens.physics import BASE_COLUMNS, LENS_LIGHT_MAX_ECC, NUISANCE

if TYPE_CHECKING:
    from surrogate.simulators.lenstronomy_lens.settings import Settings

__all__ = ["Instrument", "LensRenderer", "gaussian_kernel_1d", "lens_light_ellipticity", "magnitude_to_amplitude",
           "render", "sersic_b_n", "sersic_ellipse", "sersic_total_flux", "shear_deflection", "sie_deflection",
           "subpixel_axis"]

# Column positions, looked up by name so that a reordering of the simulator's tables fails loudly here.
_COND = {name: i for i, (name, _) in enumerate(BASE_COLUMNS)}
_NUIS = {name: i for i, (name, *_) in enumerate(NUISANCE)}

# SIE = NIE with a vanishing core: s_scale = 1e-10 arcsec (LensModel/Profiles/sie.py, ``_s_scale``).
SIE_CORE_ARCSEC = 1e-10
# The NIE deflection is evaluated at q = 0.99999999 where q >= 1 (LensModel/Profiles/nie.py,
# NIEMajorAxis.derivatives); |e| = 5e-9 gives that q.
SIE_MIN_ECC = 1e-8 / (2.0 - 1e-8)
# ellipticity2phi_q caps |e| at 0.9999 (Util/param_util.py).
MAX_ECC = 0.9999
# Sersic: radii are floored at 1e-4 arcsec and the profile is zero beyond 1000 R_sersic
# (LensModel/Profiles/sersic_utils.py, SersicUtil ``smoothing`` and ``_r_sersic`` max_R_frac).
SERSIC_SMOOTHING_ARCSEC = 1e-4
SERSIC_MAX_R_FRAC = 1000.0
# Gaussian PSF truncated at 5 sigma: SingleBand's and PSF's default ``truncation``
# (SimulationAPI/observation_api.py, Data/psf.py).
PSF_TRUNCATION_SIGMA = 5.0


@dataclass(frozen=True)
class Instrument:
    """The pixel grid, sampling and PSF of ``physics.render``'s lenstronomy ``SimAPI``.

    num_pix: image side in pixels; pixel_scale_arcsec: pixel side (arcsec); supersampling: sub-pixels per
    pixel side at which surface brightness is evaluated; psf_fwhm_arcsec: Gaussian PSF FWHM (arcsec);
    magnitude_zero_point: AB magnitude of a source giving 1 e-/s; psf_truncation_sigma: kernel half-width
    in PSF sigmas (lenstronomy's default 5).
    """

    num_pix: int
    pixel_scale_arcsec: float
    supersampling: int
    psf_fwhm_arcsec: float
    magnitude_zero_point: float
    psf_truncation_sigma: float = PSF_TRUNCATION_SIGMA

    @classmethod
    def from_settings(cls, settings: Settings) -> Instrument:
        """The instrument of the simulator's settings (as ``physics.band_kwargs`` hands it to lenstronomy)."""
        return cls(num_pix=int(settings.num_pix), pixel_scale_arcsec=float(settings.pixel_scale_arcsec),
                   supersampling=int(settings.supersampling), psf_fwhm_arcsec=float(settings.psf_fwhm_arcsec),
                   magnitude_zero_point=float(settings.magnitude_zero_point))

    @property
    def psf_sigma_pix(self) -> float:
        """PSF standard deviation in (regular) pixels: FWHM / (2 sqrt(2 ln 2)) / pixel scale
        (Util/util.py ``fwhm2sigma``; ImSim/Numerics/convolution.py MultiGaussianConvolution)."""
        return self.psf_fwhm_arcsec / (2.0 * math.sqrt(2.0 * math.log(2.0))) / self.pixel_scale_arcsec

    @property
    def psf_radius_pix(self) -> int:
        """Kernel half-width in pixels, int(truncation sigma + 0.5), as scipy.ndimage.gaussian_filter1d sizes it."""
        return int(self.psf_truncation_sigma * self.psf_sigma_pix + 0.5)


# ---- coordinates and kernels (built once per instrument) -----------------------------------------------------


def subpixel_axis(instrument: Instrument, dtype: torch.dtype = torch.float64,
                  device: torch.device | str | None = None) -> Tensor:
    """Sub-pixel centre coordinates (arcsec) along one image axis, (num_pix * supersampling,).

    lenstronomy's default grid puts pixel i at (i - (N - 1) / 2) * scale (Util/util.py
    ``make_grid_with_coordtransform`` with inverse=False, as SimulationAPI/data_api.py builds it) and splits
    each pixel into s x s sub-pixels at offsets (-1/2 + (j + 1/2) / s) * scale (Util/util.py ``make_subgrid``):
    sub-pixel k sits at ((k + 1/2) / s - N / 2) * scale.
    """
    n, s = instrument.num_pix, instrument.supersampling
    k = torch.arange(n * s, dtype=torch.float64, device=device)
    return (((k + 0.5) / s - n / 2.0) * instrument.pixel_scale_arcsec).to(dtype)


def gaussian_kernel_1d(instrument: Instrument, dtype: torch.dtype = torch.float64,
                       device: torch.device | str | None = None) -> Tensor:
    """The normalised 1-d PSF kernel on the regular pixel grid, (2 r + 1,).

    lenstronomy's GAUSSIAN PSF with default numerics (supersampling_convolution False) convolves the binned
    image with scipy.ndimage.gaussian_filter(sigma_pix, mode="nearest", truncate=truncation)
    (ImSim/Numerics/convolution.py MultiGaussianConvolution); scipy samples exp(-x^2 / 2 sigma^2) at integer
    x in [-r, r] and divides by the sum, and filters each axis in turn.
    """
    r, sigma = instrument.psf_radius_pix, instrument.psf_sigma_pix
    x = torch.arange(-r, r + 1, dtype=torch.float64, device=device)
    w = torch.exp(-0.5 * (x / sigma) ** 2)
    return (w / w.sum()).to(dtype)


# ---- lens model ------------------------------------------------------------------------------------------------


def _ellipse_angle_ecc(e1: Tensor, e2: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(cos phi, sin phi, |e|) of lenstronomy's ellipticity (e1, e2): phi = atan2(e2, e1) / 2 and
    |e| = hypot(e1, e2) capped at 0.9999 (Util/param_util.py ``ellipticity2phi_q``, where the axis ratio
    is q = (1 - |e|) / (1 + |e|)). Gradients are finite (zero) at e = 0."""
    ecc2 = e1 * e1 + e2 * e2
    round_ = ecc2 <= 0.0
    ecc = torch.where(round_, torch.zeros_like(ecc2), torch.sqrt(torch.where(round_, torch.ones_like(ecc2), ecc2)))
    # at e = 0 the angle still matters to lenstronomy's q = 0.99999999 bracket (below): atan2 of the signed
    # zeros as numpy takes it, without a gradient (torch's atan2 has a 0/0 one there)
    phi = 0.5 * torch.where(round_, torch.atan2(e2.detach(), e1.detach()),
                            torch.atan2(e2, torch.where(round_, torch.ones_like(e1), e1)))
    return torch.cos(phi), torch.sin(phi), ecc.clamp(max=MAX_ECC)


def sie_deflection(x: Tensor, y: Tensor, theta_e: Tensor, e1: Tensor, e2: Tensor) -> tuple[Tensor, Tensor]:
    """Deflection (alpha_x, alpha_y) in arcsec of lenstronomy's ``SIE`` centred at the origin.

    x, y: image-plane positions (arcsec); theta_e (arcsec, lenstronomy's product-averaged Einstein radius),
    e1, e2: broadcastable against x, y. SIE = NIE with core s_scale = 1e-10 (LensModel/Profiles/sie.py).
    NIE (LensModel/Profiles/nie.py, after Keeton & Kochanek 1998 eq. 8): rotate by phi into the major-axis
    frame; b = theta_E sqrt(q) (theta_E / sqrt((1 + q^2) / 2q) * sqrt((1 + q^2) / 2)), s = s_scale / sqrt(q),
    psi = sqrt(q^2 (s^2 + x^2) + y^2),
    alpha_x = b / sqrt(1 - q^2) atan(sqrt(1 - q^2) x / (psi + s)),
    alpha_y = b / sqrt(1 - q^2) atanh(sqrt(1 - q^2) y / (psi + q^2 s)); rotate back.

    Stable as q -> 1: 1 - q^2 = 4 |e| / (1 + |e|)^2 has no cancellation, and atan(k u) / k, atanh(k u) / k
    keep full precision for small k. Where q rounds to 1, lenstronomy evaluates the bracket above at
    q = 0.99999999 but keeps b (and s) of q = 1 (nie.py, NIEMajorAxis.derivatives); so does this.
    """
    cos_phi, sin_phi, ecc = _ellipse_angle_ecc(e1, e2)
    q_param = (1.0 - ecc) / (1.0 + ecc)  # b and s: lenstronomy's q unclamped (NIE._param_conv)
    ecc = torch.where(q_param >= 1.0, torch.full_like(ecc, SIE_MIN_ECC), ecc)
    q = (1.0 - ecc) / (1.0 + ecc)
    root = torch.sqrt(4.0 * ecc / (1.0 + ecc) ** 2)  # sqrt(1 - q^2)
    # rotation convention of Util/util.py ``rotate``: (x cos + y sin, -x sin + y cos)
    xr = x * cos_phi + y * sin_phi
    yr = -x * sin_phi + y * cos_phi
    b = theta_e * torch.sqrt(q_param)
    s = SIE_CORE_ARCSEC / torch.sqrt(q_param)
    psi = torch.sqrt(q * q * (s * s + xr * xr) + yr * yr)
    ax_r = b / root * torch.atan(root * xr / (psi + s))
    ay_r = b / root * torch.atanh(root * yr / (psi + q * q * s))
    return ax_r * cos_phi - ay_r * sin_phi, ax_r * sin_phi + ay_r * cos_phi


def shear_deflection(x: Tensor, y: Tensor, gamma1: Tensor, gamma2: Tensor) -> tuple[Tensor, Tensor]:
    """Deflection (arcsec) of lenstronomy's ``SHEAR`` with ra_0 = dec_0 = 0:
    (g1 x + g2 y, g2 x - g1 y) (LensModel/Profiles/shear.py)."""
    return gamma1 * x + gamma2 * y, gamma2 * x - gamma1 * y


# ---- light profiles -----------------------------------------------------------------------------------------


def sersic_b_n(n_sersic: Tensor) -> Tensor:
    """lenstronomy's b_n = max(1.9992 n - 0.3271, 1e-5) (LensModel/Profiles/sersic_utils.py ``b_n``)."""
    return torch.clamp(1.9992 * n_sersic - 0.3271, min=1e-5)


def sersic_ellipse(x: Tensor, y: Tensor, amp: Tensor, r_sersic: Tensor, n_sersic: Tensor, e1: Tensor, e2: Tensor,
                   center_x: Tensor | float = 0.0, center_y: Tensor | float = 0.0) -> Tensor:
    """Surface brightness of lenstronomy's ``SERSIC_ELLIPSE`` at (x, y) (arcsec), in units of ``amp``
    (the surface brightness at the half-light radius).

    Product-average ellipse (LightModel default, sersic_major_axis=False; Util/param_util.py
    ``transform_e1e2_product_average``): with dx = x - center_x, dy = y - center_y and
    norm = sqrt(max(|1 - e1^2 - e2^2|, 1e-6)), R = |((1 - e1) dx - e2 dy, -e2 dx + (1 + e1) dy)| / norm.
    Profile (LensModel/Profiles/sersic_utils.py ``_r_sersic``): R and R_sersic floored at 1e-4,
    amp exp(-b_n ((R / R_sersic)^(1/n) - 1)), zero where R / R_sersic > 1000.
    """
    dx, dy = x - center_x, y - center_y
    norm2 = torch.clamp(torch.abs(1.0 - e1 * e1 - e2 * e2), min=1e-6)
    u = (1.0 - e1) * dx - e2 * dy
    v = -e2 * dx + (1.0 + e1) * dy
    # max(R, eps) as sqrt(max(R^2, eps^2)): finite gradients at R = 0
    r = torch.sqrt(torch.clamp((u * u + v * v) / norm2, min=SERSIC_SMOOTHING_ARCSEC**2))
    r_frac = r / torch.clamp(r_sersic, min=SERSIC_SMOOTHING_ARCSEC)
    b_n = sersic_b_n(n_sersic)
    profile = torch.exp(-b_n * (torch.pow(r_frac, 1.0 / n_sersic) - 1.0))
    return amp * torch.where(r_frac <= SERSIC_MAX_R_FRAC, profile, torch.zeros_like(profile))


def sersic_total_flux(r_sersic: Tensor, n_sersic: Tensor) -> Tensor:
    """Total flux (amp units x arcsec^2) of a Sersic profile with amp = 1, to infinity.

    2 pi n R^2 e^{b_n} b_n^{-2n} Gamma(2n) (LensModel/Profiles/sersic_utils.py ``_total_flux``), with the
    lenstronomy b_n; independent of e1, e2 (the product-average ellipse preserves area).
    """
    n = n_sersic
    b_n = sersic_b_n(n)
    log_flux = b_n - 2.0 * n * torch.log(b_n) + torch.lgamma(2.0 * n)
    return 2.0 * math.pi * n * r_sersic * r_sersic * torch.exp(log_flux)


def magnitude_to_amplitude(magnitude: Tensor, r_sersic: Tensor, n_sersic: Tensor,
                           magnitude_zero_point: float) -> Tensor:
    """Sersic ``amp`` (e-/s per arcsec^2 at R_sersic) of a profile of this total AB magnitude:
    10^(-0.4 (m - zp)) / total flux of amp = 1 (SimulationAPI/sim_api.py ``magnitude2amplitude``,
    Util/data_util.py ``magnitude2cps``; data in e-, so no gain)."""
    cps = torch.pow(10.0, -0.4 * (magnitude - magnitude_zero_point))
    return cps / sersic_total_flux(r_sersic, n_sersic)


def lens_light_ellipticity(e1: Tensor, e2: Tensor, de1: Tensor, de2: Tensor) -> tuple[Tensor, Tensor]:
    """Lens light (e1, e2) = lens mass e + drawn offset, scaled down to modulus 0.9 where above it, as
    ``physics.render`` does (its 1e-12 floor of the modulus kept)."""
    le1, le2 = e1 + de1, e2 + de2
    modulus = torch.sqrt(torch.clamp(le1 * le1 + le2 * le2, min=1e-24))
    shrink = torch.clamp(LENS_LIGHT_MAX_ECC / modulus, max=1.0)
    return le1 * shrink, le2 * shrink


# ---- the renderer -------------------------------------------------------------------------------------------


class LensRenderer(nn.Module):
    """Noise-free smooth-tier SIE images (B, num_pix, num_pix) in e-/s, as ``physics.render`` draws them.

    The sub-pixel grid and the PSF kernel are buffers: ``.to(device, dtype)`` moves them; parameters are cast to
    the buffers' dtype. ``forward(cond, nuisance)``: cond (B, >= 9) with ``BASE_COLUMNS`` first (extra tier
    columns ignored), nuisance (B, 9) in ``NUISANCE`` order (lens_gamma ignored: SIE).
    """

    x_sub: Tensor
    y_sub: Tensor
    psf_1d: Tensor

    def __init__(self, instrument: Instrument, dtype: torch.dtype = torch.float64,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        self.instrument = instrument
        axis = subpixel_axis(instrument, dtype, device)
        # x along columns, y along rows: image[row, col] (Data/coord_transforms.py ``coordinate_grid``)
        y_sub, x_sub = torch.meshgrid(axis, axis, indexing="ij")
        self.register_buffer("x_sub", x_sub.contiguous(), persistent=False)
        self.register_buffer("y_sub", y_sub.contiguous(), persistent=False)
        self.register_buffer("psf_1d", gaussian_kernel_1d(instrument, dtype, device), persistent=False)

    def forward(self, cond: Tensor, nuisance: Tensor, *, lens_light: bool = True) -> Tensor:
        dtype = self.x_sub.dtype
        cond, nuisance = cond.to(dtype), nuisance.to(dtype)
        surface = self.surface_brightness(cond, nuisance, lens_light=lens_light)
        return self.pixelate(surface)

    def surface_brightness(self, cond: Tensor, nuisance: Tensor, *, lens_light: bool = True) -> Tensor:
        """Surface brightness (e-/s per arcsec^2) on the sub-pixel grid, (B, N s, N s)."""

        def col(table: Tensor, index: int) -> Tensor:
            return table[:, index].reshape(-1, 1, 1)

        c, u, zp = _COND, _NUIS, self.instrument.magnitude_zero_point
        x, y = self.x_sub, self.y_sub
        theta_e, e1, e2 = col(cond, c["theta_E"]), col(cond, c["lens_e1"]), col(cond, c["lens_e2"])
        ax_sie, ay_sie = sie_deflection(x, y, theta_e, e1, e2)
        ax_sh, ay_sh = shear_deflection(x, y, col(cond, c["gamma1"]), col(cond, c["gamma2"]))
        beta_x, beta_y = x - (ax_sie + ax_sh), y - (ay_sie + ay_sh)  # single-plane ray shooting
        src_r, src_n = col(cond, c["source_R_sersic"]), col(nuisance, u["source_n_sersic"])
        src_amp = magnitude_to_amplitude(col(cond, c["source_mag"]), src_r, src_n, zp)
        image = sersic_ellipse(beta_x, beta_y, src_amp, src_r, src_n, col(nuisance, u["source_e1"]),
                               col(nuisance, u["source_e2"]), col(cond, c["source_x"]), col(cond, c["source_y"]))
        if lens_light:
            ll_r, ll_n = col(nuisance, u["lens_light_R_sersic"]), col(nuisance, u["lens_light_n_sersic"])
            ll_amp = magnitude_to_amplitude(col(nuisance, u["lens_light_mag"]), ll_r, ll_n, zp)
            le1, le2 = lens_light_ellipticity(e1, e2, col(nuisance, u["lens_light_de1"]),
                                              col(nuisance, u["lens_light_de2"]))
            image = image + sersic_ellipse(x, y, ll_amp, ll_r, ll_n, le1, le2)
        return image

    def pixelate(self, surface: Tensor) -> Tensor:
        """Sub-pixel surface brightness (B, N s, N s) -> PSF-convolved pixel fluxes (B, N, N) in e-/s.

        As ImSim/Numerics/numerics.py ``re_size_convolve`` with supersampling_convolution False: average the
        s x s sub-pixels (Util/image_util.py ``re_size``), convolve the binned image with the Gaussian kernel,
        edges extended by their nearest pixel (scipy mode "nearest"), then multiply by the pixel area.
        """
        s = self.instrument.supersampling
        binned = F.avg_pool2d(surface.unsqueeze(1), kernel_size=s, stride=s) if s > 1 else surface.unsqueeze(1)
        k, r = self.psf_1d, self.instrument.psf_radius_pix
        if r > 0:
            padded = F.pad(binned, (r, r, r, r), mode="replicate")
            padded = F.conv2d(padded, k.reshape(1, 1, -1, 1))  # rows (scipy filters axis 0 first)
            binned = F.conv2d(padded, k.reshape(1, 1, 1, -1))  # columns
        return binned.squeeze(1) * self.instrument.pixel_scale_arcsec**2


def render(instrument: Instrument, cond: Tensor, nuisance: Tensor, *, lens_light: bool = True) -> Tensor:
    """Noise-free images (B, num_pix, num_pix) in e-/s of the parameter rows: cond (B, >= 9) in
    ``BASE_COLUMNS`` order, nuisance (B, 9) in ``NUISANCE`` order; dtype and device of ``cond``.

    Builds the grid and kernel on each call: hold a ``LensRenderer`` to render many batches.
    """
    dtype = cond.dtype if cond.dtype in (torch.float32, torch.float64) else torch.float64
    return LensRenderer(instrument, dtype, cond.device)(cond, nuisance, lens_light=lens_light)
