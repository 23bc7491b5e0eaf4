"""The simulator's own plain settings (the strong-lensing domain's SimulateConfig extends this with ranges).

Instrument defaults are lenstronomy 1.14.2's Euclid VIS preset (SimulationAPI/ObservationConfig/Euclid.py,
which cites arXiv:2405.13496, 2405.13501, 2405.13493): 0.101"/px, Gaussian PSF FWHM 0.16", 4 x 566 s,
zero point 25.72 (e-/s), sky 22.3 mag/arcsec^2, read noise 4.2 e-.
"""

from __future__ import annotations

from dataclasses import dataclass

TIERS = ("smooth", "subhalos", "pyhalo")
LENS_PROFILES = ("SIE", "EPL")
PYHALO_MODELS = ("cdm", "wdm")
SCHEDULERS = ("threads", "distributed")


@dataclass(frozen=True)
class Settings:
    tier: str = "smooth"  # smooth (no substructure) | subhalos (lenstronomy TNFW) | pyhalo (CDM/WDM + line of sight)
    n_events: int = 2000  # images to simulate
    num_pix: int = 64  # image side in pixels
    pixel_scale_arcsec: float = 0.101  # Euclid VIS
    psf_fwhm_arcsec: float = 0.16  # Gaussian PSF FWHM
    exposure_time_s: float = 566.0  # per exposure
    num_exposures: int = 4  # co-added exposures
    magnitude_zero_point: float = 25.72  # AB magnitude giving 1 e-/s
    sky_brightness_mag_arcsec2: float = 22.3  # sky surface brightness
    read_noise_e: float = 4.2  # per exposure and pixel, e-
    supersampling: int = 3  # sub-pixels per pixel side when rendering
    noise: bool = True  # add sky + read + Poisson noise; false = noise-free images
    lens_profile: str = "SIE"  # SIE | EPL (slope drawn as a nuisance parameter in [1.9, 2.1])
    z_lens: float = 0.5  # main deflector redshift (subhalo masses, pyHalo)
    z_source: float = 1.5  # source redshift
    theta_e_min_arcsec: float = 0.8  # theta_E uniform in [min, max]
    theta_e_max_arcsec: float = 1.6
    lens_e_max: float = 0.3  # lens e1, e2 each uniform in [-max, max]
    shear_max: float = 0.05  # gamma1, gamma2 each uniform in [-max, max]
    source_offset_max_arcsec: float = 0.3  # source x, y each uniform in [-max, max]
    source_mag_min: float = 22.0  # source magnitude uniform in [min, max]
    source_mag_max: float = 24.5
    source_r_sersic_min_arcsec: float = 0.1  # source half-light radius uniform in [min, max]
    source_r_sersic_max_arcsec: float = 0.4
    sub_density_min_arcsec2: float = 0.0  # subhalos tier: expected subhalos per arcsec^2, uniform in [min, max]
    sub_density_max_arcsec2: float = 3.0
    sub_radius_arcsec: float = 2.5  # subhalos tier: radius of the disc they are placed in
    sub_log10_m_min: float = 7.0  # subhalos tier: mass range, log10 Msun (M200c)
    sub_log10_m_max: float = 10.0
    sub_mass_slope: float = -1.9  # subhalos tier: dN/dm ~ m^slope
    sub_truncation_rs: float = 10.0  # subhalos tier: TNFW truncation radius in scale radii
    pyhalo_model: str = "cdm"  # pyhalo tier: cdm | wdm (PresetModels.cdm.CDM / wdm.WDM)
    sigma_sub_min: float = 0.01  # pyhalo tier: sigma_sub [kpc^-2] uniform in [min, max]
    sigma_sub_max: float = 0.1
    log10_m_hm_min: float = 7.0  # pyhalo wdm: log10 half-mode mass [Msun] uniform in [min, max]
    log10_m_hm_max: float = 9.5
    log_mlow: float = 7.5  # pyhalo tier: lightest halo rendered, log10 Msun (cost grows fast below)
    log_mhigh: float = 10.0  # pyhalo tier: heaviest halo rendered, log10 Msun
    cone_opening_angle_arcsec: float = 8.0  # pyhalo tier: line-of-sight rendering cone
    los_normalization: float = 1.0  # pyhalo tier: line-of-sight halo abundance relative to the mass function
    scheduler: str = "threads"  # threads (one process) | distributed (LocalCluster worker processes)
    n_workers: int = 2  # threads or worker processes
    shard_events: int = 50  # images per shard (the unit of work, of progress and of resume)
    seed: int = 0  # image i is seeded from (seed, i): identical files for any n_workers and shard_events
