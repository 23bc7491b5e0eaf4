"""One strong-lensing image: drawn parameters -> lenstronomy image, per tier.

Units: angles in arcsec, image pixels in e-/s (count rate per pixel, background subtracted: the sky
enters only the noise, as in lenstronomy's ``SimAPI``), magnitudes AB with the band's zero point.

Everything random is drawn from numpy Generators made from ``SeedSequence([seed, image_index])``, so an
image depends only on (settings, seed, its index), never on which worker or shard drew it. pyHalo 1.4.5
has no generator argument (it draws from numpy's global RandomState): its realisations are drawn under
a lock with the global state seeded from the image's own stream and restored afterwards.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from surrogate.simulators.lenstronomy_lens.settings import Settings

# ---- condition columns (name, units); the first nine are the same for every tier, in this order --------
BASE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("theta_E", "arcsec"),  # Einstein radius of the main deflector
    ("lens_e1", "1"), ("lens_e2", "1"),  # lens mass ellipticity components (lenstronomy convention)
    ("gamma1", "1"), ("gamma2", "1"),  # external shear components
    ("source_x", "arcsec"), ("source_y", "arcsec"),  # source centre in the source plane
    ("source_mag", "mag"),  # source apparent magnitude (AB, the band's zero point)
    ("source_R_sersic", "arcsec"),  # source half-light radius
)
TIER_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "smooth": (),
    # expected number of TNFW subhalos per arcsec^2 of the rendering disc (the mass-function normalisation)
    "subhalos": (("sub_density", "arcsec^-2"),),
    # pyHalo's subhalo mass-function amplitude at 1e8 Msun (Gilman et al.), per kpc^2
    "pyhalo_cdm": (("sigma_sub", "kpc^-2"),),
    # ... and the warm-dark-matter half-mode mass (pyHalo's log_mc)
    "pyhalo_wdm": (("sigma_sub", "kpc^-2"), ("log10_m_hm", "log10 Msun")),
}

# ---- nuisance parameters: drawn per image, stored beside the conditions, never conditioned on ------------
# (name, units, low, high), uniform. Lens light is centred on the mass and aligned with it up to a small
# scatter (light traces mass in massive ellipticals); magnitudes chosen so that with the Euclid VIS zero
# point the lens light peaks at a few e-/s and the lensed arcs at a few tenths, well above the sky noise.
NUISANCE: tuple[tuple[str, str, float, float], ...] = (
    ("lens_light_mag", "mag", 19.0, 21.0),
    ("lens_light_R_sersic", "arcsec", 0.4, 1.0),
    ("lens_light_n_sersic", "1", 3.0, 5.0),
    ("lens_light_de1", "1", -0.05, 0.05),  # lens light e1 minus lens mass e1
    ("lens_light_de2", "1", -0.05, 0.05),
    ("source_n_sersic", "1", 0.7, 2.5),
    ("source_e1", "1", -0.3, 0.3),
    ("source_e2", "1", -0.3, 0.3),
    ("lens_gamma", "1", 1.9, 2.1),  # EPL power-law slope; 2 (isothermal) is stored for SIE lenses
)

# Subhalo concentration: Duffy et al. 2008 (MNRAS 390, L64), Table 1, NFW, M200c, full sample:
# c200 = A (M / M_pivot)^B (1 + z)^C with A = 5.71, B = -0.084, C = -0.47, M_pivot = 2e12 Msun/h.
DUFFY_A, DUFFY_B, DUFFY_C, DUFFY_PIVOT_MSUN_H = 5.71, -0.084, -0.47, 2e12
HUBBLE_H = 0.6766  # astropy's default (Planck 2018) cosmology, which lenstronomy's LensCosmo uses

# The lens light's ellipticity (the mass's plus the drawn offset) is scaled down to this modulus where above
# it: wide lens_e_max settings plus the offset could otherwise reach |e| >= 1, which is no ellipse.
LENS_LIGHT_MAX_ECC = 0.9

_GLOBAL_RNG_LOCK = threading.Lock()  # pyHalo draws from numpy's global RandomState


def columns(settings: Settings) -> tuple[tuple[str, str], ...]:
    """(name, units) of the condition columns for the settings' tier."""
    return BASE_COLUMNS + TIER_COLUMNS[tier_key(settings)]


def tier_key(settings: Settings) -> str:
    return f"pyhalo_{settings.pyhalo_model}" if settings.tier == "pyhalo" else settings.tier


@dataclass(frozen=True)
class Substructure:
    """Extra lens models in lenstronomy's terms; ``redshifts`` None = single plane at the main lens."""

    names: list[str]
    kwargs: list[dict[str, Any]]
    redshifts: list[float] | None = None


def streams(seed: int, index: int) -> tuple[np.random.Generator, np.random.Generator, np.random.SeedSequence,
                                            np.random.Generator]:
    """Independent streams of image ``index``: conditions, nuisance, substructure (a SeedSequence, as pyHalo
    needs an integer seed), noise. Kept apart so that the same image without substructure or without noise
    has the same conditions and the same everything else."""
    cond_seq, nuisance_seq, sub_seq, noise_seq = np.random.SeedSequence([seed, index]).spawn(4)
    return (np.random.default_rng(cond_seq), np.random.default_rng(nuisance_seq), sub_seq,
            np.random.default_rng(noise_seq))


def draw_conditions(settings: Settings, rng: np.random.Generator) -> np.ndarray:
    """One condition row (K,) float64 in the units of ``columns``: uniform within the configured ranges."""
    s = settings
    base = [rng.uniform(s.theta_e_min_arcsec, s.theta_e_max_arcsec),
            rng.uniform(-s.lens_e_max, s.lens_e_max), rng.uniform(-s.lens_e_max, s.lens_e_max),
            rng.uniform(-s.shear_max, s.shear_max), rng.uniform(-s.shear_max, s.shear_max),
            rng.uniform(-s.source_offset_max_arcsec, s.source_offset_max_arcsec),
            rng.uniform(-s.source_offset_max_arcsec, s.source_offset_max_arcsec),
            rng.uniform(s.source_mag_min, s.source_mag_max),
            rng.uniform(s.source_r_sersic_min_arcsec, s.source_r_sersic_max_arcsec)]
    key = tier_key(s)
    if key == "subhalos":
        base.append(rng.uniform(s.sub_density_min_arcsec2, s.sub_density_max_arcsec2))
    elif key.startswith("pyhalo"):
        base.append(rng.uniform(s.sigma_sub_min, s.sigma_sub_max))
        if key == "pyhalo_wdm":
            base.append(rng.uniform(s.log10_m_hm_min, s.log10_m_hm_max))
    return np.asarray(base, dtype=np.float64)


def draw_nuisance(settings: Settings, rng: np.random.Generator) -> np.ndarray:
    """One nuisance row (M,) float64, columns of NUISANCE; the slope is 2 exactly for SIE lenses."""
    row = np.array([rng.uniform(lo, hi) for _, _, lo, hi in NUISANCE])
    if settings.lens_profile == "SIE":
        row[-1] = 2.0
    return row


def concentration_duffy(m200_msun: np.ndarray, z: float) -> np.ndarray:
    """Duffy et al. 2008 c200(M200c, z) (constants above); masses in Msun (not Msun/h)."""
    return DUFFY_A * (m200_msun * HUBBLE_H / DUFFY_PIVOT_MSUN_H) ** DUFFY_B * (1.0 + z) ** DUFFY_C


@functools.cache
def _lens_cosmo(z_lens: float, z_source: float) -> Any:
    from lenstronomy.Cosmo.lens_cosmo import LensCosmo

    return LensCosmo(z_lens, z_source)


def draw_subhalos(settings: Settings, density_arcsec2: float, seq: np.random.SeedSequence) -> Substructure:
    """TNFW subhalos in the main lens plane: Poisson number with mean density x disc area, masses from
    dN/dm ~ m^slope in [10^sub_log10_m_min, 10^sub_log10_m_max] Msun, positions uniform in the disc,
    Duffy et al. concentration, truncation at ``sub_truncation_rs`` scale radii."""
    s = settings
    rng = np.random.default_rng(seq)
    n = int(rng.poisson(density_arcsec2 * math.pi * s.sub_radius_arcsec**2))
    a1 = s.sub_mass_slope + 1.0  # inverse CDF of the truncated power law (slope != -1)
    lo, hi = 10.0 ** (a1 * s.sub_log10_m_min), 10.0 ** (a1 * s.sub_log10_m_max)
    mass = (lo + rng.uniform(size=n) * (hi - lo)) ** (1.0 / a1)
    r = s.sub_radius_arcsec * np.sqrt(rng.uniform(size=n))
    phi = rng.uniform(0.0, 2.0 * math.pi, size=n)
    rs, alpha_rs = _lens_cosmo(s.z_lens, s.z_source).nfw_physical2angle(mass, concentration_duffy(mass, s.z_lens))
    kwargs = [{"Rs": float(rs[i]), "alpha_Rs": float(alpha_rs[i]), "r_trunc": float(s.sub_truncation_rs * rs[i]),
               "center_x": float(r[i] * math.cos(phi[i])), "center_y": float(r[i] * math.sin(phi[i]))}
              for i in range(n)]
    return Substructure(names=["TNFW"] * n, kwargs=kwargs)


def draw_pyhalo(settings: Settings, cond: np.ndarray, seq: np.random.SeedSequence) -> Substructure:
    """A pyHalo realisation (subhalos + line-of-sight halos, multi-plane) for the row's sigma_sub (and
    log10 half-mode mass for WDM), with numpy's global state seeded from ``seq`` under a lock."""
    s = settings
    common = {"sigma_sub": float(cond[len(BASE_COLUMNS)]), "log_mlow": s.log_mlow, "log_mhigh": s.log_mhigh,
              "cone_opening_angle_arcsec": s.cone_opening_angle_arcsec, "LOS_normalization": s.los_normalization}
    with _GLOBAL_RNG_LOCK:
        saved = np.random.get_state()  # noqa: NPY002 -- pyHalo reads the global state
        try:
            np.random.seed(int(seq.generate_state(1, dtype=np.uint32)[0]))  # noqa: NPY002
            _reset_pyhalo_tables()
            if s.pyhalo_model == "wdm":
                from pyHalo.PresetModels.wdm import WDM

                realization = WDM(s.z_lens, s.z_source, log_mc=float(cond[len(BASE_COLUMNS) + 1]), **common)
            else:
                from pyHalo.PresetModels.cdm import CDM

                realization = CDM(s.z_lens, s.z_source, **common)
            names, redshifts, kwargs, _ = realization.lensing_quantities()
        finally:
            np.random.set_state(saved)  # noqa: NPY002
    return Substructure(names=list(names), kwargs=[dict(k) for k in kwargs],
                        redshifts=[float(z) for z in redshifts])


def _reset_pyhalo_tables() -> None:
    """Put pyHalo's module-level truncation-radius table back to its import-time range.

    pyHalo 1.4.5 (Halos/galacticus_truncation/transfer_function_density_profile.py) keeps one global
    interpolation table whose range only grows (x_min halves, x_max doubles) as masses outside it arrive,
    so a halo's r_trunc depended on the images drawn before it in the same process (measured: up to 2e-7
    arcsec): files differed with the number of workers. Reset, the table depends on this realisation only.
    """
    from pyHalo.Halos.galacticus_truncation import transfer_function_density_profile as table

    table.x_min, table.x_max = 1.0e-6, 1.0e4  # the module's initial values
    table.Mass_table_Initialized = False


def band_kwargs(settings: Settings) -> dict[str, Any]:
    """lenstronomy ``SingleBand`` settings: a Gaussian PSF and the sky, read noise and exposures (e-)."""
    s = settings
    return {"pixel_scale": s.pixel_scale_arcsec, "exposure_time": s.exposure_time_s,
            "num_exposures": s.num_exposures, "magnitude_zero_point": s.magnitude_zero_point,
            "read_noise": s.read_noise_e, "sky_brightness": s.sky_brightness_mag_arcsec2,
            "seeing": s.psf_fwhm_arcsec, "psf_type": "GAUSSIAN", "data_count_unit": "e-"}


def background_sigma(settings: Settings) -> float:
    """Per-pixel sky + read noise of the co-added image (e-/s), as lenstronomy computes it
    (SimulationAPI/observation_api.py ``background_noise``): sqrt(sky counts + N_exp read^2) / T."""
    s = settings
    t_total = s.exposure_time_s * s.num_exposures
    sky_cps = 10.0 ** (-0.4 * (s.sky_brightness_mag_arcsec2 - s.magnitude_zero_point)) * s.pixel_scale_arcsec**2
    return math.sqrt(sky_cps * t_total + s.num_exposures * s.read_noise_e**2) / t_total


def render(settings: Settings, cond: np.ndarray, nuisance: np.ndarray, sub: Substructure | None,
           noise_rng: np.random.Generator | None, *, lens_light: bool = True) -> np.ndarray:
    """The image (num_pix, num_pix) float64 in e-/s of one parameter row.

    cond (K,): the condition row (units of ``columns``); nuisance (M,): NUISANCE columns; sub: extra lens
    models or None; noise_rng None = noise-free. ``lens_light`` False leaves only the lensed source.
    Noise is lenstronomy's Gaussian approximation: per pixel sigma^2 = background^2 + model / T.
    """
    from lenstronomy.SimulationAPI.sim_api import SimAPI

    s = settings
    theta_e, e1, e2, g1, g2, src_x, src_y, src_mag, src_r = (float(v) for v in cond[:len(BASE_COLUMNS)])
    ll_mag, ll_r, ll_n, ll_de1, ll_de2, src_n, src_e1, src_e2, slope = (float(v) for v in nuisance)
    main = {"theta_E": theta_e, "e1": e1, "e2": e2, "center_x": 0.0, "center_y": 0.0}
    if s.lens_profile == "EPL":
        main["gamma"] = slope
    lens_names = [s.lens_profile, "SHEAR"]
    lens_kwargs: list[dict[str, Any]] = [main, {"gamma1": g1, "gamma2": g2, "ra_0": 0.0, "dec_0": 0.0}]
    model: dict[str, Any] = {"lens_light_model_list": ["SERSIC_ELLIPSE"] if lens_light else [],
                             "source_light_model_list": ["SERSIC_ELLIPSE"]}
    if sub is not None:
        lens_names += sub.names
        lens_kwargs += sub.kwargs
        if sub.redshifts is not None:  # multi-plane: main deflector and shear at z_lens
            model.update(lens_redshift_list=[s.z_lens, s.z_lens, *sub.redshifts], z_lens=s.z_lens,
                         z_source=s.z_source, z_source_convention=s.z_source)
    model["lens_model_list"] = lens_names
    sim = SimAPI(num_pix=s.num_pix, kwargs_single_band=band_kwargs(s), kwargs_model=model)
    # Light aligned with the mass up to the drawn offset, kept below |e| = 0.9 (wide lens_e_max settings
    # plus the offset could otherwise reach |e| >= 1, which is no ellipse).
    le1, le2 = e1 + ll_de1, e2 + ll_de2
    shrink = min(1.0, LENS_LIGHT_MAX_ECC / max(math.hypot(le1, le2), 1e-12))
    light = [{"magnitude": ll_mag, "R_sersic": ll_r, "n_sersic": ll_n, "e1": le1 * shrink, "e2": le2 * shrink,
              "center_x": 0.0, "center_y": 0.0}] if lens_light else []
    source = [{"magnitude": src_mag, "R_sersic": src_r, "n_sersic": src_n, "e1": src_e1, "e2": src_e2,
               "center_x": src_x, "center_y": src_y}]
    light_amp, source_amp, _ = sim.magnitude2amplitude(light, source, None)
    image_model = sim.image_model_class({"supersampling_factor": s.supersampling})
    image = np.asarray(image_model.image(lens_kwargs, source_amp, light_amp or None, None), dtype=np.float64)
    if noise_rng is not None:
        image = image + sim.estimate_noise(image) * noise_rng.standard_normal(image.shape)
    return image


@dataclass(frozen=True)
class Drawn:
    """Everything random about one image except its noise."""

    cond: np.ndarray  # (K,) float64
    nuisance: np.ndarray  # (M,) float64
    sub: Substructure | None
    realisation_seconds: float  # time spent drawing the substructure


def draw(settings: Settings, index: int) -> tuple[Drawn, np.random.Generator]:
    """The parameters of image ``index`` and its noise stream."""
    cond_rng, nuisance_rng, sub_seq, noise_rng = streams(settings.seed, index)
    cond = draw_conditions(settings, cond_rng)
    nuisance = draw_nuisance(settings, nuisance_rng)
    t0 = time.perf_counter()
    sub = substructure(settings, cond, sub_seq)
    return Drawn(cond, nuisance, sub, time.perf_counter() - t0), noise_rng


def substructure(settings: Settings, cond: np.ndarray, seq: np.random.SeedSequence) -> Substructure | None:
    """The tier's substructure for a condition row (None for the smooth tier)."""
    if settings.tier == "subhalos":
        return draw_subhalos(settings, float(cond[len(BASE_COLUMNS)]), seq)
    if settings.tier == "pyhalo":
        return draw_pyhalo(settings, cond, seq)
    return None
