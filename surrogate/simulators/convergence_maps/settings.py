"""The simulator's own plain settings (the weak-lensing domain's SimulateConfig extends this with ranges).

Cosmology: flat LambdaCDM; Omega_m and sigma_8 are the conditions, the rest fixed at Planck 2018
(arXiv:1807.06209, Table 2, TT,TE,EE+lowE+lensing+BAO: Omega_b h^2 = 0.02242, h = 0.6766, n_s = 0.9665),
Eisenstein & Hu transfer function (pyccl's default needs CAMB), halofit non-linear power.
"""

from __future__ import annotations

from dataclasses import dataclass

TIERS = ("gaussian", "lognormal", "halos")
SCHEDULERS = ("threads", "distributed")


@dataclass(frozen=True)
class Settings:
    tier: str = "halos"  # gaussian | lognormal (fast, from the halofit C_ell) | halos (slow: painted NFW halos)
    num_pix: int = 128  # map side in pixels
    map_size_deg: float = 3.5  # map side in degrees (flat sky, periodic)
    z_source: float = 1.0  # redshift of the single source plane
    omega_m_grid: tuple[float, ...] = (0.2, 0.3, 0.4)  # training cosmologies: every (Omega_m, sigma_8) pair
    sigma_8_grid: tuple[float, ...] = (0.6, 0.8, 1.0)
    heldout: tuple[tuple[float, ...], ...] = ((0.25, 0.7), (0.35, 0.9))  # (Omega_m, sigma_8) kept out of training
    n_per_cosmology: int = 200  # maps per cosmology; map i belongs to cosmology i // n_per_cosmology
    lognormal_shift: float = 0.0  # lognormal kappa0 (minimum kappa); 0 = Hilbert et al. 2011 eq. 38 at z_source
    halo_log10_m_min: float = 12.5  # halos tier: mass range painted, log10 M200c [Msun]
    halo_log10_m_max: float = 15.5
    halo_mass_bins_per_dex: int = 20  # halos tier: Poisson counts per (mass bin, redshift slice)
    halo_n_slices: int = 20  # halos tier: lens planes, equal in comoving distance from 0 to the source
    halo_truncation_r200: float = 1.0  # halos tier: NFW cut at this many R200c (1 = pyccl's truncated profile)
    halo_supersampling: int = 4  # halos tier: sub-pixels per pixel side when painting a resolved halo
    shape_noise: bool = False  # add galaxy shape noise (Gaussian, per pixel)
    sigma_e: float = 0.26  # shape noise: intrinsic ellipticity dispersion per component
    n_gal_arcmin2: float = 30.0  # shape noise: source galaxies per arcmin^2
    scheduler: str = "threads"  # threads (one process) | distributed (LocalCluster worker processes)
    n_workers: int = 2  # threads or worker processes
    shard_events: int = 50  # maps per shard (the unit of work, of progress and of resume)
    seed: int = 0  # map i is seeded from (seed, i): identical files for any n_workers and shard_events
