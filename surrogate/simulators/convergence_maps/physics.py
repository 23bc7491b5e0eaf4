"""One weak-lensing convergence map: cosmology -> C_ell (pyccl 3.3) -> flat-sky map, per tier.

Units: angles in radians unless a name says otherwise, comoving distances in Mpc, masses in Msun (no h),
kappa dimensionless. A map is an (N, N) periodic grid of side L = map_size_deg; pixel (row y, column x).

Fourier convention (flat sky, continuous): kappa(theta) = int d^2 ell / (2 pi)^2 kappa~(ell) e^{i ell theta},
<kappa~(ell) kappa~*(ell')> = (2 pi)^2 delta(ell - ell') C_ell. On the grid, with the discrete transform
K = DFT(kappa) (numpy's fft2, no normalisation) and pixel solid angle Omega_p = (L / N)^2, kappa~ = Omega_p K,
so <|K_ell|^2> = N^4 C_ell / L^2 (the L^2 being the finite-area delta(0)), and the correlation function of
the periodic field is xi(theta_j) = (1 / L^2) sum_ell C_ell e^{i ell theta_j}. A Gaussian map is white noise
(unit variance per pixel, so <|W|^2> = N^2) filtered by sqrt(C_ell) N / L; the monopole is zero (C_0 = 0:
kappa averages to zero over the sky and the grid has no mode longer than the map). The map is band-limited
to the grid's modes, with no pixel window.

Tiers:
- ``gaussian``: the halofit C_ell of a single source plane.
- ``lognormal``: kappa = kappa0 (exp(y - var_y / 2) - 1) with y Gaussian, xi_y = ln(1 + xi_kappa / kappa0^2),
  so that xi_kappa is the halofit one (Hilbert, Hartlap & Schneider 2011, A&A 536, A85, section 6; the
  transform done exactly on the periodic grid; modes where it turns negative, the monopole among them,
  are set to zero). The shift kappa0 is the smallest kappa; cosmology enters only through C_ell (kappa0
  is the Hilbert et al. fit in source redshift alone, or a fixed number).
- ``halos``: a Gaussian field with the *linear* C_ell (the 2-halo, large-scale part) plus halos drawn as
  Poisson counts per (mass, redshift) bin from the Tinker et al. 2008 mass function (M200c) times the
  comoving volume of the light cone over the map, placed uniformly (periodic: a halo across an edge
  wraps round), each painted as a 3D-truncated NFW (Duffy et al. 2008 concentration) projected and divided
  by Sigma_crit for the source plane. The halos supply the non-linear power (the 1-halo term) that the
  linear field lacks, so nothing is counted twice at small scales; unclustered halo positions add no
  2-halo power, so large scales are not counted twice either. Missing: the 1-halo power of halos below
  ``halo_log10_m_min``, the halos' clustering, and the non-linear 2-halo correction. The expected mean of
  the painted halos is subtracted (kappa is a density contrast; a map's own mean still fluctuates with its
  halo count).

Everything random comes from ``SeedSequence([seed, map_index])``: one stream for the Gaussian field, one for
the halos, one for the shape noise, so a map depends on (settings, seed, index) only.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from surrogate.simulators.convergence_maps.settings import Settings

# Fixed cosmological parameters: Planck 2018 (arXiv:1807.06209) Table 2, TT,TE,EE+lowE+lensing+BAO.
HUBBLE_H = 0.6766
OMEGA_B = 0.02242 / HUBBLE_H**2  # 0.0490
N_S = 0.9665
CL_SAMPLES = 160  # multipoles at which pyccl computes C_ell; the grid interpolates in log-log between them
KERNEL_SAMPLES = 200  # pyccl CMBLensingTracer: samples of the lensing kernel in comoving distance
ARCMIN_PER_RAD = 60.0 * 180.0 / math.pi

BASE_COLUMNS: tuple[tuple[str, str], ...] = (("Omega_m", ""), ("sigma_8", ""))


# ---- cosmology and C_ell ------------------------------------------------------------------------------


def kappa0_hilbert2011(z_source: float) -> float:
    """Lognormal shift (minimum kappa) for a source plane at ``z_source``: Hilbert, Hartlap & Schneider
    2011 (A&A 536, A85) eq. 38, fitted to the Millennium Simulation: 0.008 z + 0.029 z^2 - 0.0079 z^3
    + 0.00065 z^4 (0.0298 at z = 1)."""
    z = float(z_source)
    return 0.008 * z + 0.029 * z**2 - 0.0079 * z**3 + 0.00065 * z**4


def lognormal_shift(settings: Settings) -> float:
    """The shift kappa0 the lognormal tier uses: the setting, or the Hilbert et al. 2011 fit when it is 0."""
    return settings.lognormal_shift if settings.lognormal_shift > 0 else kappa0_hilbert2011(settings.z_source)


def cosmology(omega_m: float, sigma_8: float, *, nonlinear: bool = True) -> Any:
    """A flat LambdaCDM pyccl Cosmology (Eisenstein & Hu transfer; halofit, or linear power)."""
    import pyccl

    return pyccl.Cosmology(Omega_c=float(omega_m) - OMEGA_B, Omega_b=OMEGA_B, h=HUBBLE_H, sigma8=float(sigma_8),
                           n_s=N_S, transfer_function="eisenstein_hu",
                           matter_power_spectrum="halofit" if nonlinear else "linear")


def convergence_cl(cosmo: Any, ell: np.ndarray, z_source: float) -> np.ndarray:
    """C_ell of the convergence of one source plane at ``z_source`` (Limber, the cosmology's matter power).

    pyccl's ``CMBLensingTracer`` is the convergence kernel of a single source plane (CCL paper,
    arXiv:1812.05995, eq. 31), whatever the redshift; the ``WeakLensingTracer`` of a narrow n(z) gives the
    shear spectrum, the same to (l+2)(l+1)l(l-1)/(l+1/2)^4 (within 0.5% above ell = 100; tested).
    """
    import pyccl

    tracer = pyccl.CMBLensingTracer(cosmo, z_source=float(z_source), n_samples=KERNEL_SAMPLES)
    return np.asarray(pyccl.angular_cl(cosmo, tracer, tracer, np.asarray(ell, dtype=np.float64)))


def ell_grid(num_pix: int, map_size_deg: float) -> np.ndarray:
    """|ell| of each discrete Fourier mode of the map, (N, N), numpy's fft2 order."""
    L = math.radians(map_size_deg)
    k = 2 * math.pi * np.fft.fftfreq(num_pix, d=L / num_pix)
    return np.hypot(k[:, None], k[None, :])


def cl_on_grid(ell: np.ndarray, cl: np.ndarray, num_pix: int, map_size_deg: float) -> np.ndarray:
    """C_ell at every mode of the grid, (N, N): log-log interpolation of (ell, cl); 0 at ell = 0."""
    grid = ell_grid(num_pix, map_size_deg)
    out = np.zeros_like(grid)
    nz = grid > 0
    if grid[nz].min() < ell[0] or grid.max() > ell[-1]:
        raise ValueError(f"C_ell given on [{ell[0]:g}, {ell[-1]:g}], the grid needs [{grid[nz].min():g}, "
                         f"{grid.max():g}]")
    out[nz] = np.exp(np.interp(np.log(grid[nz]), np.log(ell), np.log(cl)))
    return out


def cl_samples(num_pix: int, map_size_deg: float) -> np.ndarray:
    """The multipoles to ask pyccl for: log-spaced over (just beyond) the grid's range of |ell|."""
    grid = ell_grid(num_pix, map_size_deg)
    return np.geomspace(0.9 * grid[grid > 0].min(), 1.02 * grid.max(), CL_SAMPLES)


# ---- maps from a spectrum -------------------------------------------------------------------------------


def gaussian_map(cl_grid: np.ndarray, map_size_deg: float, rng: np.random.Generator) -> np.ndarray:
    """A periodic Gaussian field with power ``cl_grid`` (N, N; C_ell at each mode), (N, N) float64.

    Filtering real white noise keeps the Hermitian symmetry of a real field; rfft2 does half the work.
    """
    n = cl_grid.shape[0]
    amplitude = np.sqrt(cl_grid[:, : n // 2 + 1]) * n / math.radians(map_size_deg)
    white = rng.standard_normal((n, n))
    return np.fft.irfft2(np.fft.rfft2(white) * amplitude, s=(n, n))


def grid_power(maps: np.ndarray, map_size_deg: float) -> np.ndarray:
    """Power of each grid mode, averaged over maps (..., N, N) -> (N, N): |DFT|^2 L^2 / N^4, whose
    expectation is C_ell (module docstring)."""
    maps = np.asarray(maps, dtype=np.float64).reshape(-1, *np.shape(maps)[-2:])
    n = maps.shape[-1]
    power = np.abs(np.fft.fft2(maps)) ** 2
    return power.mean(axis=0) * math.radians(map_size_deg) ** 2 / n**4


def correlation_on_grid(cl_grid: np.ndarray, map_size_deg: float) -> np.ndarray:
    """xi(theta_j) of the periodic field with power ``cl_grid``: (1 / L^2) sum_ell C_ell e^{i ell theta_j}."""
    n = cl_grid.shape[0]
    return np.fft.ifft2(cl_grid).real * n**2 / math.radians(map_size_deg) ** 2


def lognormal_spectrum(cl_grid: np.ndarray, map_size_deg: float, kappa0: float) -> tuple[np.ndarray, float]:
    """(C_ell of the Gaussian y, var_y) such that kappa0 (exp(y - var_y / 2) - 1) has power ``cl_grid``.

    xi_y = ln(1 + xi_kappa / kappa0^2) on the grid, back to a spectrum; negative modes are set to zero
    (the monopole always is: the mean of ln(1 + u) over the torus is negative when u averages to zero).
    var_y is the variance of the y that results, so <kappa> = 0 exactly.
    """
    n = cl_grid.shape[0]
    u = correlation_on_grid(cl_grid, map_size_deg) / kappa0**2
    if u.min() <= -1:
        raise ValueError(f"lognormal shift kappa0 = {kappa0:g} is too small for this spectrum: xi / kappa0^2 "
                         f"reaches {u.min():.3g} (needs > -1)")
    cl_y = np.fft.fft2(np.log1p(u)).real * math.radians(map_size_deg) ** 2 / n**2
    cl_y = np.clip(cl_y, 0.0, None)
    var_y = float(cl_y.sum() / math.radians(map_size_deg) ** 2)
    return cl_y, var_y


def lognormal_map(cl_y: np.ndarray, var_y: float, kappa0: float, map_size_deg: float,
                  rng: np.random.Generator) -> np.ndarray:
    """kappa0 (exp(y - var_y / 2) - 1) for y a Gaussian map of power ``cl_y``; (N, N) float64, > -kappa0."""
    y = gaussian_map(cl_y, map_size_deg, rng)
    return kappa0 * np.expm1(y - 0.5 * var_y)


# ---- NFW halos ------------------------------------------------------------------------------------------


def nfw_mass_factor(c: np.ndarray | float) -> np.ndarray:
    """m(c) = ln(1 + c) - c / (1 + c): NFW mass within c scale radii over 4 pi rho_s r_s^3."""
    c = np.asarray(c, dtype=np.float64)
    return np.log1p(c) - c / (1 + c)


def truncated_nfw_shape(x: np.ndarray, c_trunc: np.ndarray | float) -> np.ndarray:
    """F(x, C) = int dz / (s (1 + s)^2) along the line of sight, s = sqrt(x^2 + z^2) <= C: the projected NFW
    cut sharply in 3D at C scale radii, so Sigma(R) = 2 rho_s r_s F(R / r_s, C), 0 beyond C.

    Closed form: Takada & Jain 2003 (MNRAS 340, 580) eq. 27; at x = 1 its limit. Integrates to
    2 pi m(C) over the disc (tested against direct quadrature).
    """
    x = np.asarray(x, dtype=np.float64)
    C = np.broadcast_to(np.asarray(c_trunc, dtype=np.float64), x.shape)
    out = np.zeros_like(x)
    inside = x < C
    near1 = inside & (np.abs(x - 1) < 1e-6)  # the two terms cancel as 1/|x - 1|: the limit is within 1e-6
    lo = inside & (x < 1) & ~near1
    hi = inside & (x > 1) & ~near1
    xl, cl = np.maximum(x[lo], 1e-12), C[lo]
    out[lo] = (-np.sqrt(cl**2 - xl**2) / ((1 - xl**2) * (1 + cl))
               + np.arccosh((xl**2 + cl) / (xl * (1 + cl))) / (1 - xl**2) ** 1.5)
    xh, ch = x[hi], C[hi]
    out[hi] = (np.sqrt(ch**2 - xh**2) / ((xh**2 - 1) * (1 + ch))
               - np.arccos(np.clip((xh**2 + ch) / (xh * (1 + ch)), -1.0, 1.0)) / (xh**2 - 1) ** 1.5)
    c1 = C[near1]
    out[near1] = np.sqrt(c1**2 - 1) / (3 * (1 + c1)) * (1 + 1 / (c1 + 1))
    return out


def nfw_convergence(r_mpc: np.ndarray, m200: float, conc: float, r200_mpc: float, a_lens: float,
                    sigma_crit: float, truncation_r200: float = 1.0) -> np.ndarray:
    """kappa at comoving transverse radii ``r_mpc`` of an NFW halo (M200c ``m200`` Msun, concentration
    ``conc``, comoving R200c ``r200_mpc``) at scale factor ``a_lens``, cut at ``truncation_r200`` R200c.

    Sigma_comoving(R) = M / (2 pi r_s^2 m(c)) F(R / r_s, tau c); the physical surface density is that over
    a^2 (pyccl HaloProfile.convergence does the same); kappa = Sigma_physical / Sigma_crit (Msun / Mpc^2).
    """
    r_s = r200_mpc / conc
    sigma = m200 / (2 * math.pi * r_s**2 * nfw_mass_factor(conc)) * truncated_nfw_shape(
        np.asarray(r_mpc, dtype=np.float64) / r_s, truncation_r200 * conc)
    return sigma / (a_lens**2 * sigma_crit)


@dataclass(frozen=True)
class HaloTables:
    """The halo tier's per-cosmology numbers, S redshift slices by B mass bins."""

    a: np.ndarray  # (S,) scale factor of each lens plane (the slice's middle in comoving distance)
    chi_mpc: np.ndarray  # (S,) comoving distance of each lens plane
    sigma_crit: np.ndarray  # (S,) critical surface density for the source plane, Msun / Mpc^2 (physical)
    log10_m_edges: np.ndarray  # (B + 1,) mass bin edges, log10 M200c [Msun]
    expected: np.ndarray  # (S, B) expected halos per map in each bin
    conc: np.ndarray  # (S, B + 1) Duffy et al. 2008 c200c at the bin edges
    log_r200_mpc: np.ndarray  # (S, B + 1) ln of comoving R200c at the bin edges
    mean_kappa: float  # expected mean over a map of the painted halos' kappa


def halo_properties(t: HaloTables, slices: np.ndarray, log10_m: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(concentration, comoving R200c) of halos in ``slices`` at ``log10_m``: linear in log10 M between the
    bin edges (R200c ~ M^(1/3) is exactly linear in log-log)."""
    edges = t.log10_m_edges
    step = edges[1] - edges[0]
    pos = np.clip((log10_m - edges[0]) / step, 0, len(edges) - 1 - 1e-9)
    b = pos.astype(np.int64)
    f = pos - b
    conc = t.conc[slices, b] * (1 - f) + t.conc[slices, b + 1] * f
    r200 = np.exp(t.log_r200_mpc[slices, b] * (1 - f) + t.log_r200_mpc[slices, b + 1] * f)
    return conc, r200


def _total_kappa_pixels(t: HaloTables, settings: Settings, slices: np.ndarray, log10_m: np.ndarray,
                        conc: np.ndarray) -> np.ndarray:
    """Sum over pixels of a halo's painted kappa: M m(tau c) / m(c) / (a^2 Sigma_crit chi^2 Omega_pixel)."""
    pixel_rad = math.radians(settings.map_size_deg) / settings.num_pix
    mass = 10.0**log10_m * nfw_mass_factor(settings.halo_truncation_r200 * conc) / nfw_mass_factor(conc)
    return mass / (t.a[slices] ** 2 * t.sigma_crit[slices] * t.chi_mpc[slices] ** 2 * pixel_rad**2)


def halo_tables(cosmo: Any, settings: Settings) -> HaloTables:
    """Lens planes, expected counts, concentrations and radii for ``cosmo`` (pyccl, the linear one will do:
    the mass function and concentrations use the linear sigma(M))."""
    import pyccl

    s = settings
    mass_def = pyccl.halos.MassDef200c
    mass_function = pyccl.halos.MassFuncTinker08(mass_def=mass_def)
    concentration = pyccl.halos.ConcentrationDuffy08(mass_def=mass_def)
    a_source = 1.0 / (1.0 + s.z_source)
    chi_source = float(pyccl.comoving_radial_distance(cosmo, a_source))
    chi_edges = np.linspace(0.0, chi_source, s.halo_n_slices + 1)
    chi_mid = 0.5 * (chi_edges[1:] + chi_edges[:-1])
    a = np.asarray(pyccl.scale_factor_of_chi(cosmo, chi_mid), dtype=np.float64)
    sigma_crit = np.asarray([pyccl.sigma_critical(cosmo, a_lens=ai, a_source=a_source) for ai in a])
    n_bins = max(1, round((s.halo_log10_m_max - s.halo_log10_m_min) * s.halo_mass_bins_per_dex))
    edges = np.linspace(s.halo_log10_m_min, s.halo_log10_m_max, n_bins + 1)
    mids = 0.5 * (edges[1:] + edges[:-1])
    solid_angle = math.radians(s.map_size_deg) ** 2
    volume = solid_angle * (chi_edges[1:] ** 3 - chi_edges[:-1] ** 3) / 3  # (S,) comoving Mpc^3 (flat)
    expected = np.empty((s.halo_n_slices, n_bins))
    conc = np.empty((s.halo_n_slices, n_bins + 1))
    log_r200 = np.empty((s.halo_n_slices, n_bins + 1))
    for i, ai in enumerate(a):
        # dn/dlog10M [Mpc^-3, comoving] at the bin's middle times its width: midpoint rule per 1/20 dex
        expected[i] = np.asarray(mass_function(cosmo, 10.0**mids, ai)) * np.diff(edges) * volume[i]
        conc[i] = concentration(cosmo, 10.0**edges, ai)
        log_r200[i] = np.log(mass_def.get_radius(cosmo, 10.0**edges, ai) / ai)  # physical -> comoving
    t = HaloTables(a, chi_mid, sigma_crit, edges, expected, conc, log_r200, 0.0)
    # Expected mean kappa: each bin's halos at 8 masses spread evenly in log10 M across it (as drawn).
    sub = edges[:-1, None] + (np.arange(8) + 0.5)[None, :] / 8 * np.diff(edges)[:, None]  # (B, 8)
    sl = np.repeat(np.arange(s.halo_n_slices), n_bins * 8)
    lm = np.tile(sub.ravel(), s.halo_n_slices)
    c, _ = halo_properties(t, sl, lm)
    per_halo = _total_kappa_pixels(t, s, sl, lm, c).reshape(s.halo_n_slices, n_bins, 8).mean(axis=2)
    mean = float((per_halo * expected).sum() / s.num_pix**2)
    return HaloTables(a, chi_mid, sigma_crit, edges, expected, conc, log_r200, mean)


def draw_halos(t: HaloTables, settings: Settings, rng: np.random.Generator
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One map's halos: Poisson counts per (slice, mass bin), log10 M uniform within the bin, positions
    uniform on the map. Returns (slice index (n,) int64, log10 M200c (n,), position (n, 2) (x, y) pixels)."""
    counts = rng.poisson(t.expected)  # (S, B)
    flat = np.repeat(np.arange(counts.size), counts.ravel())
    slices, bins = np.divmod(flat, counts.shape[1])
    step = t.log10_m_edges[1] - t.log10_m_edges[0]
    log10_m = t.log10_m_edges[bins] + step * rng.uniform(size=len(flat))
    position = rng.uniform(0.0, settings.num_pix, size=(len(flat), 2))
    return slices, log10_m, position


def paint_halos(t: HaloTables, settings: Settings, slices: np.ndarray, log10_m: np.ndarray,
                position: np.ndarray) -> np.ndarray:
    """The summed kappa of the given halos, (N, N) float64, with the expected mean of a map's halos
    (``t.mean_kappa``) subtracted.

    A halo whose truncation radius is under half a pixel goes whole into the pixel holding its centre;
    a larger one is sampled on ``halo_supersampling``^2 points per pixel over a square stamp (at most the
    map) and its sampled total made exact by adding what the samples missed (the cusp, under-sampled) to
    its central pixel. Stamps wrap round the periodic map.
    """
    s = settings
    n = s.num_pix
    out = np.zeros(n * n)
    if len(slices):
        conc, r200 = halo_properties(t, slices, log10_m)
        pixel_rad = math.radians(s.map_size_deg) / n
        rs_pix = r200 / conc / t.chi_mpc[slices] / pixel_rad  # scale radius in pixels
        c_trunc = s.halo_truncation_r200 * conc
        total = _total_kappa_pixels(t, s, slices, log10_m, conc)
        centre = np.floor(position).astype(np.int64) % n
        small = c_trunc * rs_pix < 0.5
        np.add.at(out, centre[small, 1] * n + centre[small, 0], total[small])
        # kappa amplitude: M / (2 pi r_s^2 m(c)) / (a^2 Sigma_crit), r_s comoving
        amp = (10.0**log10_m / (2 * math.pi * (r200 / conc) ** 2 * nfw_mass_factor(conc))
               / (t.a[slices] ** 2 * t.sigma_crit[slices]))
        big = np.flatnonzero(~small)
        half = np.minimum(np.ceil(c_trunc[big] * rs_pix[big] + 0.5).astype(np.int64), (n - 1) // 2)
        for h in np.unique(half):
            members = big[half == h]
            _paint_stamps(out, n, int(h), s.halo_supersampling, members, position, centre, rs_pix, c_trunc, amp,
                          total, renormalise=bool(h < (n - 1) // 2))
    return out.reshape(n, n) - t.mean_kappa


def _paint_stamps(out: np.ndarray, n: int, h: int, ss: int, members: np.ndarray, position: np.ndarray,
                  centre: np.ndarray, rs_pix: np.ndarray, c_trunc: np.ndarray, amp: np.ndarray,
                  total: np.ndarray, *, renormalise: bool) -> None:
    """Add the (2h+1)^2-pixel stamps of ``members`` to ``out`` (flat N*N), in chunks of bounded memory."""
    side = 2 * h + 1
    offsets = np.arange(-h, h + 1)
    sub = (np.arange(ss) + 0.5) / ss - 0.5
    along = (offsets[:, None] + sub[None, :]).ravel()  # (side * ss,) sample positions from the centre pixel's centre
    chunk = max(1, 1_000_000 // (side * ss) ** 2)  # ~10 float64 temporaries of this size
    for lo in range(0, len(members), chunk):
        m = members[lo:lo + chunk]
        frac = position[m] - centre[m] - 0.5  # halo centre from its pixel's centre, in [-0.5, 0.5)
        dx = along[None, :] - frac[:, 0:1]
        dy = along[None, :] - frac[:, 1:2]
        r = np.sqrt(dy[:, :, None] ** 2 + dx[:, None, :] ** 2)  # (k, side*ss, side*ss) pixels
        x = r / rs_pix[m, None, None]
        kappa = amp[m, None, None] * truncated_nfw_shape(x, c_trunc[m, None, None])
        stamp = kappa.reshape(len(m), side, ss, side, ss).mean(axis=(2, 4))
        if renormalise:
            stamp[:, h, h] += total[m] - stamp.sum(axis=(1, 2))
        rows = (centre[m, 1, None] + offsets[None, :]) % n
        cols = (centre[m, 0, None] + offsets[None, :]) % n
        index = rows[:, :, None] * n + cols[:, None, :]
        out += np.bincount(index.ravel(), weights=stamp.ravel(), minlength=n * n)


# ---- per cosmology, per map -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tables:
    """Everything a map at one cosmology needs, computed once per process (pure numpy afterwards)."""

    cl_grid: np.ndarray  # (N, N) power of the Gaussian field drawn first (halofit; linear for halos; y's for lognormal)
    var_y: float  # lognormal: variance of y
    kappa0: float  # lognormal: shift
    halos: HaloTables | None
    seconds: float  # what computing them cost


_TABLES: dict[tuple[Any, ...], Tables] = {}
_TABLES_LOCK = threading.Lock()  # pyccl objects compute lazily: build each cosmology's tables once, under a lock


def tables_key(settings: Settings, omega_m: float, sigma_8: float) -> tuple[Any, ...]:
    s = settings
    key: tuple[Any, ...] = (float(omega_m), float(sigma_8), s.tier, s.num_pix, s.map_size_deg, s.z_source)
    if s.tier == "lognormal":
        key += (lognormal_shift(s),)
    if s.tier == "halos":
        key += (s.halo_log10_m_min, s.halo_log10_m_max, s.halo_mass_bins_per_dex, s.halo_n_slices,
                s.halo_truncation_r200)
    return key


def tables(settings: Settings, omega_m: float, sigma_8: float) -> Tables:
    """The cached :class:`Tables` of one cosmology (pyccl runs here only)."""
    import time

    key = tables_key(settings, omega_m, sigma_8)
    with _TABLES_LOCK:
        if key in _TABLES:
            return _TABLES[key]
        t0 = time.perf_counter()
        s = settings
        cosmo = cosmology(omega_m, sigma_8, nonlinear=s.tier != "halos")
        ell = cl_samples(s.num_pix, s.map_size_deg)
        cl_grid = cl_on_grid(ell, convergence_cl(cosmo, ell, s.z_source), s.num_pix, s.map_size_deg)
        var_y, kappa0, halos = 0.0, 0.0, None
        if s.tier == "lognormal":
            kappa0 = lognormal_shift(s)
            cl_grid, var_y = lognormal_spectrum(cl_grid, s.map_size_deg, kappa0)
        elif s.tier == "halos":
            halos = halo_tables(cosmo, s)
        if len(_TABLES) >= 64:
            _TABLES.clear()
        result = _TABLES[key] = Tables(cl_grid, var_y, kappa0, halos, time.perf_counter() - t0)
        return result


def clear_tables() -> None:
    """Forget every cosmology's tables (the next map at each pays for them again, as in a new process)."""
    with _TABLES_LOCK:
        _TABLES.clear()


def streams(seed: int, index: int) -> tuple[np.random.Generator, np.random.Generator, np.random.Generator]:
    """Independent generators of map ``index``: (Gaussian field, halos, shape noise)."""
    field, halos, noise = np.random.SeedSequence([int(seed), int(index)]).spawn(3)
    return np.random.default_rng(field), np.random.default_rng(halos), np.random.default_rng(noise)


def shape_noise_sigma(settings: Settings) -> float:
    """Per-pixel kappa noise from galaxy shapes: sigma_e / sqrt(n_gal A_pixel) (sigma_e per component;
    van Waerbeke 2000, MNRAS 313, 524, writes sigma_eps^2 / (2 n A) with the total dispersion)."""
    pixel_arcmin = settings.map_size_deg * 60.0 / settings.num_pix
    return settings.sigma_e / math.sqrt(settings.n_gal_arcmin2 * pixel_arcmin**2)


def draw_map(settings: Settings, t: Tables, index: int) -> tuple[np.ndarray, int]:
    """Map ``index`` of ``settings.seed`` at the cosmology of ``t``: ((N, N) float64 kappa, halos painted)."""
    s = settings
    field_rng, halo_rng, noise_rng = streams(s.seed, index)
    n_halos = 0
    if s.tier == "lognormal":
        kappa = lognormal_map(t.cl_grid, t.var_y, t.kappa0, s.map_size_deg, field_rng)
    else:
        kappa = gaussian_map(t.cl_grid, s.map_size_deg, field_rng)
    if t.halos is not None:
        slices, log10_m, position = draw_halos(t.halos, s, halo_rng)
        kappa += paint_halos(t.halos, s, slices, log10_m, position)
        n_halos = len(slices)
    if s.shape_noise:
        kappa += noise_rng.normal(0.0, shape_noise_sigma(s), size=kappa.shape)
    return kappa, n_halos
