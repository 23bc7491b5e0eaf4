"""GFlash: the classical parametrised electromagnetic shower, fitted to a reference sample.

Grindhammer & Peters, "The parameterized simulation of electromagnetic showers in homogeneous and
sampling calorimeters", arXiv hep-ex/0001020, as implemented in Geant4 (repository Geant4/geant4,
source/parameterisations/gflash/: GFlashSamplingShowerParameterisation.cc, GVFlashHomoShowerTuning.hh and
GFlashSamplingShowerTuning.hh hold the published constants, used here as start values). What experiments
ran before machine learning; here a baseline that reports score beside the GAN. Our code and notation.

The model, per shower of incident energy E (y = E / Ec of the effective sampling medium):

- longitudinal: the deposited energy follows a Gamma distribution in depth t (radiation lengths),
  dE/dt = E (beta t)^(alpha-1) beta exp(-beta t) / Gamma(alpha), shower maximum T = (alpha-1)/beta.
  (ln T, ln alpha) is drawn from a correlated 2-D Gaussian: <ln T> = ln(t0 + t1 ln y),
  <ln alpha> = ln(a0 + a1 ln y), sigma = 1 / (s0 + s1 ln y) for each, correlation rho0 + rho1 ln y
  (GFlash's forms). The profile is normalised over the calorimeter's depth (leakage is in the response);
- response and sampling fluctuations: each readout layer's visible energy is Gamma distributed with mean
  m(E) E f_layer and variance a^2 (1 GeV) m(E) E f_layer (GFlash's ApplySampling, with the resolution's
  units made explicit), so the total has mean m(E) E with m(E) = m0 + m1 ln(E/GeV) and a stochastic
  resolution a / sqrt(E/GeV); a per-shower Gaussian factor 1 + c z adds the constant term c;
- radial: within a layer at scaled depth tau, f(r) = p 2r Rc^2/(r^2+Rc^2)^2 + (1-p) 2r Rt^2/(r^2+Rt^2)^2
  (r in Moliere radii), with GFlash's forms for Rc(tau, E), Rt(tau, E), p(tau, E) including the
  sampling-calorimeter terms; tau = t / <t>_shower * abar/(abar-1), abar = exp(<ln alpha>) (GFlash's
  ComputeTau). f is truncated at the readout disc's radius, so energy is conserved within the voxels;
- spots: a layer's energy is carried by Poisson(N_spot f_layer) spots (at least one), N_spot =
  n1 (E/GeV)^n2 (GFlash: 93/0.11 (E/GeV)^0.876), each at a radius drawn from f(r) and an azimuth uniform
  in [0, 2 pi), then binned into the (layer, alpha, r) voxels; voxels below the readout threshold are
  zeroed. GFlash gives every spot of a step the same energy; here spot energies may instead follow a
  Gamma distribution (``Spots.shape``; 0 = GFlash's equal energies), scaled to the layer's energy: with
  equal spots every shower's layer looks like the mean profile, wider than single Geant4 showers.

:func:`fit` determines every parameter from reference showers in seconds: a Gamma fit (moments, with
Sheppard's correction for the layer width) to each shower's longitudinal profile, least squares of the
(ln T, ln alpha) means, widths and correlation against ln y; m and a, c from E_tot/E_inc in energy bins;
one least-squares fit of the radial forms to the mean radial profiles in (tau, energy) cells; n1, n2 by
matching the mean number of voxels above threshold per shower in energy bins, and the spot-energy shape
by matching the mean radial width of the layers (bisections on trial showers).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from surrogate.baselines import BaselineSpec
from surrogate.domains.calorimeter.schema import THRESHOLD_MEV, Geometry, dataset2_geometry

FORMAT = "surrogate-gflash-v1"
SEED_BLOCK = 256  # showers per random stream of GFlash.generate: the output is independent of batch sizes
ES_MEV = 21.2  # the scale energy Es of the Moliere radius, as in Geant4's sampling parameterisation
GEV = 1000.0  # MeV


# --------------------------------------------------------------------------------------------------
# The effective medium


@dataclass(frozen=True)
class Material:
    """A pure element: Z, A (g/mol), density (g/cm3), radiation length (mm)."""

    name: str
    z: float
    a: float
    density: float
    x0_mm: float

    @property
    def ec_mev(self) -> float:
        """Critical energy, Geant4's GFlash formula 2.66 (X0 [g/cm2] Z / A)^1.1 MeV."""
        return 2.66 * (self.x0_mm / 10.0 * self.density * self.z / self.a) ** 1.1


# PDG material tables (pdg.lbl.gov/AtomicNuclearProperties): radiation lengths 3.504 mm (W), 93.7 mm (Si).
TUNGSTEN = Material("W", 74.0, 183.84, 19.3, 3.504)
SILICON = Material("Si", 14.0, 28.0855, 2.329, 93.7)


@dataclass(frozen=True)
class Medium:
    """The homogeneous medium GFlash replaces a sampling calorimeter by, and its readout layer depth."""

    x0_mm: float  # effective radiation length
    rm_mm: float  # effective Moliere radius
    ec_mev: float  # effective critical energy
    z_eff: float  # mass-weighted Z
    fs: float  # X0_eff / (absorber + active thickness): GFlash's F_S
    ehat: float  # e/mip estimate 1 / (1 + 0.007 (Z_absorber - Z_active))
    layer_depth_mm: float  # depth of one readout layer (the calorimeter's longitudinal bin)


def sampling_medium(absorber: Material, active: Material, d_absorber_mm: float, d_active_mm: float,
                    periods_per_layer: int) -> Medium:
    """Effective X0, R_M, Ec, Z of an absorber/active stack, GFlashSamplingShowerParameterisation's formulas."""
    m1, m2 = d_absorber_mm * absorber.density, d_active_mm * active.density
    w1, w2 = m1 / (m1 + m2), m2 / (m1 + m2)  # mass fractions
    rho = (m1 + m2) / (d_absorber_mm + d_active_mm)
    x0 = 1.0 / (w1 * rho / (absorber.x0_mm * absorber.density) + w2 * rho / (active.x0_mm * active.density))
    ec_per_x0 = w1 * absorber.ec_mev / absorber.x0_mm + w2 * active.ec_mev / active.x0_mm
    return Medium(x0_mm=x0, rm_mm=ES_MEV / ec_per_x0, ec_mev=x0 * ec_per_x0, z_eff=w1 * absorber.z + w2 * active.z,
                  fs=x0 / (d_absorber_mm + d_active_mm), ehat=1.0 / (1.0 + 0.007 * (absorber.z - active.z)),
                  layer_depth_mm=periods_per_layer * (d_absorber_mm + d_active_mm))


def dataset2_medium() -> Medium:
    """CaloChallenge dataset 2 (Geant4 Par04): 1.4 mm W + 0.3 mm Si, two periods per readout layer."""
    return sampling_medium(TUNGSTEN, SILICON, 1.4, 0.3, 2)


# --------------------------------------------------------------------------------------------------
# Parameters


@dataclass(frozen=True)
class Longitudinal:
    """(ln T, ln alpha) per shower: a 2-D Gaussian whose moments depend on ln y, y = E / Ec (GFlash's forms)."""

    t0: float  # <ln T> = ln(t0 + t1 ln y), T in X0
    t1: float
    a0: float  # <ln alpha> = ln(a0 + a1 ln y)
    a1: float
    sigma_t0: float  # sigma(ln T) = 1 / (sigma_t0 + sigma_t1 ln y)
    sigma_t1: float
    sigma_a0: float  # sigma(ln alpha) = 1 / (sigma_a0 + sigma_a1 ln y)
    sigma_a1: float
    rho0: float  # correlation(ln T, ln alpha) = rho0 + rho1 ln y
    rho1: float

    def moments(self, ln_y: np.ndarray) -> tuple[np.ndarray, ...]:
        """(<ln T>, <ln alpha>, sigma ln T, sigma ln alpha, rho), each shaped like ``ln_y``."""
        mu_t = np.log(np.maximum(self.t0 + self.t1 * ln_y, 0.1))  # the floors are Geant4's
        mu_a = np.log(np.maximum(self.a0 + self.a1 * ln_y, 1.1))
        sig_t = np.clip(1.0 / np.maximum(self.sigma_t0 + self.sigma_t1 * ln_y, 1e-3), 0.0, 1.0)
        sig_a = np.clip(1.0 / np.maximum(self.sigma_a0 + self.sigma_a1 * ln_y, 1e-3), 0.0, 1.0)
        rho = np.clip(self.rho0 + self.rho1 * ln_y, -0.99, 0.99)
        return mu_t, mu_a, sig_t, sig_a, rho


@dataclass(frozen=True)
class Radial:
    """Rc, Rt (Moliere radii) and the core weight p as functions of tau and ln(E/GeV) (GFlash's forms).

    Rc = rc0 + rc1 lnE + rc2 tau + rc3 exp(-tau)
    Rt = k1 (exp(k3 (tau - k2)) + exp(k4 (tau - k2))) + rt0 + rt1 exp(-tau),   k4 = k4a + k4b lnE
    p  = p1 exp((p2 - tau)/p3 - exp((p2 - tau)/p3)) + pw0 + pw1 exp(-(tau - 1)^2),   p3 = p3a + p3b lnE
    """

    rc0: float
    rc1: float
    rc2: float
    rc3: float
    k1: float
    k2: float
    k3: float
    k4a: float
    k4b: float
    rt0: float
    rt1: float
    p1: float
    p2: float
    p3a: float
    p3b: float
    pw0: float
    pw1: float

    def evaluate(self, tau: np.ndarray, ln_e_gev: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(Rc, Rt, p) at broadcastable tau and ln(E/GeV); radii floored at 1e-3 R_M, p clipped to [0, 1]."""
        rc = self.rc0 + self.rc1 * ln_e_gev + self.rc2 * tau + self.rc3 * np.exp(-tau)
        k4 = self.k4a + self.k4b * ln_e_gev
        rt = (self.k1 * (np.exp(np.clip(self.k3 * (tau - self.k2), -50, 50))
                         + np.exp(np.clip(k4 * (tau - self.k2), -50, 50)))
              + self.rt0 + self.rt1 * np.exp(-tau))
        p3 = self.p3a + self.p3b * ln_e_gev
        p3 = np.where(np.abs(p3) < 1e-3, 1e-3, p3)
        q = np.clip((self.p2 - tau) / p3, -50, 50)
        p = self.p1 * np.exp(q - np.exp(q)) + self.pw0 + self.pw1 * np.exp(-((tau - 1.0) ** 2))
        return np.maximum(rc, 1e-3), np.maximum(rt, 1e-3), np.clip(p, 0.0, 1.0)


@dataclass(frozen=True)
class Response:
    """Visible energy: mean m0 + m1 ln(E/GeV) of E_inc; resolution sqrt(a^2 / (E_vis/GeV) + c^2)."""

    m0: float
    m1: float
    stochastic: float  # a, in sqrt(GeV): the sampling term, applied per layer
    constant: float  # c: a per-shower scale fluctuation

    def mean(self, ln_e_gev: np.ndarray) -> np.ndarray:
        return np.maximum(self.m0 + self.m1 * ln_e_gev, 1e-3)


@dataclass(frozen=True)
class Spots:
    """Spots per shower: N = n1 (E/GeV)^n2."""

    n1: float
    n2: float
    shape: float = 0.0  # spot energies within a layer ~ Gamma(shape); 0 = all equal (GFlash)

    def number(self, e_mev: np.ndarray) -> np.ndarray:
        return self.n1 * (np.asarray(e_mev) / GEV) ** self.n2


@dataclass(frozen=True)
class GFlashParams:
    """Every number the model samples from; JSON round trip through :meth:`to_dict` / :meth:`from_dict`."""

    medium: Medium
    longitudinal: Longitudinal
    radial: Radial
    response: Response
    spots: Spots
    fitted_on: str = ""  # what the parameters were fitted to (empty: Geant4's published constants)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GFlashParams:
        if d.get("format") != FORMAT:
            raise ValueError(f"format {d.get('format')!r}, expected {FORMAT!r}")
        return cls(medium=Medium(**d["medium"]), longitudinal=Longitudinal(**d["longitudinal"]),
                   radial=Radial(**d["radial"]), response=Response(**d["response"]), spots=Spots(**d["spots"]),
                   fitted_on=str(d.get("fitted_on", "")))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> GFlashParams:
        from surrogate.errors import InputError

        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except OSError as exc:
            raise InputError(path, None, f"cannot read GFlash parameters ({exc.strerror})") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(path, None, f"not GFlash parameters written by surrogate: {exc}") from None


def geant4_defaults(medium: Medium | None = None) -> GFlashParams:
    """Geant4's GFlash constants for a sampling calorimeter (GFlashSamplingShowerParameterisation with
    GFlashSamplingShowerTuning), folded into our forms for ``medium`` (default: dataset 2's W/Si).

    Not fitted: the start values of :func:`fit`, and what GFlash would do out of the box.
    """
    m = medium or dataset2_medium()
    dz = 1.0 - m.ehat
    # <ln T>: ln(T_hom + ParsAveT1/Fs + ParsAveT2 (1 - ehat)) with T_hom = ln y + ParAveT1;
    # <ln alpha>: ln(alpha_hom + ParsAveA1/Fs) with alpha_hom = ParAveA1 + (ParAveA2 + ParAveA3/Z) ln y.
    longitudinal = Longitudinal(t0=-0.812 - 0.55 / m.fs - 0.69 * dz, t1=1.0,
                                a0=0.81 - 0.476 / m.fs, a1=0.458 + 2.26 / m.z_eff,
                                sigma_t0=-2.5, sigma_t1=1.25, sigma_a0=-0.82, sigma_a1=0.79,
                                rho0=0.784, rho1=-0.023)
    radial = Radial(rc0=0.0251 - 0.0203 * dz, rc1=0.00319, rc2=0.1162 - 0.000381 * m.z_eff, rc3=0.0397 / m.fs,
                    k1=0.659 - 0.00309 * m.z_eff, k2=0.645, k3=-2.59, k4a=0.3585, k4b=0.0412,
                    rt0=-0.14 * dz, rt1=-0.495 / m.fs,
                    p1=2.632 - 0.00094 * m.z_eff, p2=0.401 + 0.00187 * m.z_eff, p3a=1.313, p3b=-0.0686,
                    pw0=0.348 * dz, pw1=-0.642 * dz / m.fs)
    # Geant4's SamplingResolution 0.11 (in sqrt(GeV) here), full containment, no constant term;
    # NSpot = ParSpotN1 / SamplingResolution (E/GeV)^ParSpotN2 = 93 / 0.11 (E/GeV)^0.876.
    return GFlashParams(medium=m, longitudinal=longitudinal, radial=radial,
                        response=Response(m0=1.0, m1=0.0, stochastic=0.11, constant=0.0),
                        spots=Spots(n1=93.0 / 0.11, n2=0.876))


# --------------------------------------------------------------------------------------------------
# Sampling


@dataclass(frozen=True)
class Showers:
    """A sampled batch with its hidden variables (what the tests and the fit check against).

    showers: (N, n_voxels) MeV, threshold applied; layer_energy: (N, n_layers) MeV before thresholding;
    ln_t, ln_alpha: (N,) the drawn profile parameters; response: (N,) sum of layer_energy / E_inc.
    """

    showers: np.ndarray
    layer_energy: np.ndarray
    ln_t: np.ndarray
    ln_alpha: np.ndarray
    response: np.ndarray


def layer_edges_x0(medium: Medium, n_layers: int) -> np.ndarray:
    """Depth of the readout layers' boundaries in X0, (n_layers + 1,)."""
    return np.arange(n_layers + 1) * (medium.layer_depth_mm / medium.x0_mm)


def gamma_layer_fractions(alpha: np.ndarray, beta: np.ndarray, edges_x0: np.ndarray) -> np.ndarray:
    """Fraction of a Gamma(alpha, beta) depth profile in each layer, normalised over the stack: (N, n_layers)."""
    from scipy.special import gammainc

    cdf = gammainc(alpha[:, None], beta[:, None] * edges_x0[None, :])
    frac = np.diff(cdf, axis=1)
    total = cdf[:, -1:] - cdf[:, :1]
    # A profile that peaks far beyond the stack (never in practice) would have no mass: put it last.
    empty = total[:, 0] <= 0
    frac[empty, -1], total[empty] = 1.0, 1.0
    return np.maximum(frac, 0.0) / total


def scaled_depth(t_x0: np.ndarray, alpha: np.ndarray, beta: np.ndarray, mean_ln_alpha: np.ndarray) -> np.ndarray:
    """GFlash's tau = t / <t>_shower * abar / (abar - 1), abar = exp(<ln alpha>); broadcast (N, L)."""
    abar = np.exp(mean_ln_alpha)
    return t_x0 * (beta / alpha * abar / (abar - 1.0))[:, None]


def _truncated_cdf(r_mm: float | np.ndarray, radius_mm: np.ndarray) -> np.ndarray:
    """CDF of 2r R^2/(r^2+R^2)^2 at r: r^2 / (r^2 + R^2)."""
    r2 = np.asarray(r_mm) ** 2
    return r2 / (r2 + radius_mm**2)


def sample_showers(params: GFlashParams, e_inc_mev: np.ndarray, rng: np.random.Generator,
                   geometry: Geometry | None = None, *, threshold_mev: float = THRESHOLD_MEV,
                   max_spots: int = 2_000_000) -> Showers:
    """GFlash showers for incident energies ``e_inc_mev`` (N,) or (N, 1) MeV, with their hidden variables.

    Voxels in the CaloChallenge order (layer, alpha, r), r fastest; alpha bin j covers azimuths
    -pi + [j, j+1) 2 pi / n_alpha (the challenge's convention). Showers are made in blocks of at most
    ~``max_spots`` spots; the result depends only on ``rng``'s state, the energies and ``max_spots``.
    """
    geometry = geometry or dataset2_geometry()
    e = np.asarray(e_inc_mev, dtype=np.float64).reshape(-1)
    if not (np.isfinite(e).all() and (e > 0).all()):
        raise ValueError("e_inc_mev: expected finite incident energies > 0 MeV")
    per_shower = float(np.mean(params.spots.number(e))) if len(e) else 1.0
    # Blocks bound the spot arrays and the float64 voxel sums (52 kB per shower; 1024 showers = 53 MB).
    block = int(np.clip(max_spots / max(per_shower, 1.0), 1, 1024))
    parts = [_sample_block(params, e[i:i + block], rng, geometry, threshold_mev) for i in range(0, len(e), block)]
    if not parts:
        empty = np.zeros(0)
        return Showers(np.zeros((0, geometry.n_voxels), np.float32), np.zeros((0, geometry.n_layers)),
                       empty, empty, empty)
    return Showers(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(Showers)))


def sample(params: GFlashParams, e_inc_mev: np.ndarray, rng: np.random.Generator,
           geometry: Geometry | None = None, *, threshold_mev: float = THRESHOLD_MEV) -> np.ndarray:
    """(N, n_voxels) float32 voxel energies in MeV for incident energies (N,) MeV: see :func:`sample_showers`."""
    return sample_showers(params, e_inc_mev, rng, geometry, threshold_mev=threshold_mev).showers


def _draw_profiles(long: Longitudinal, ln_y: np.ndarray,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ln T, ln alpha, <ln alpha>) per shower; GFlash's correlated draw and its floors T >= 1, alpha >= 1.1."""
    mu_t, mu_a, sig_t, sig_a, rho = long.moments(ln_y)
    z1, z2 = rng.standard_normal((2, len(ln_y)))
    c1, c2 = np.sqrt((1.0 + rho) / 2.0), np.sqrt((1.0 - rho) / 2.0)
    ln_t = np.maximum(mu_t + sig_t * (c1 * z1 + c2 * z2), 0.0)
    ln_a = np.maximum(mu_a + sig_a * (c1 * z1 - c2 * z2), np.log(1.1))
    return ln_t, ln_a, mu_a


def _sample_layers(long: Longitudinal, response: Response, medium: Medium, n_layers: int, e: np.ndarray,
                   rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """(ln T, ln alpha, <ln alpha>, layer fractions (N, L), visible layer energies (N, L) MeV) for energies e."""
    ln_t, ln_a, mu_a = _draw_profiles(long, np.log(e / medium.ec_mev), rng)
    alpha = np.exp(ln_a)
    frac = gamma_layer_fractions(alpha, (alpha - 1.0) / np.exp(ln_t), layer_edges_x0(medium, n_layers))
    # Visible energy per layer: Gamma with mean m E f and variance a^2 GeV m E f; then the constant term.
    mean_layer = (response.mean(np.log(e / GEV)) * e)[:, None] * frac
    theta = max(response.stochastic, 0.0) ** 2 * GEV
    layer = rng.gamma(np.maximum(mean_layer / theta, 1e-300), theta) if theta > 0 else mean_layer.copy()
    layer *= np.maximum(1.0 + response.constant * rng.standard_normal(len(e)), 0.0)[:, None]
    return ln_t, ln_a, mu_a, frac, layer


def _sample_block(p: GFlashParams, e: np.ndarray, rng: np.random.Generator, geometry: Geometry,
                  threshold_mev: float) -> Showers:
    n, n_layers = len(e), geometry.n_layers
    m = p.medium
    ln_e = np.log(e / GEV)
    ln_t, ln_a, mu_a, frac, layer = _sample_layers(p.longitudinal, p.response, m, n_layers, e, rng)
    alpha = np.exp(ln_a)
    beta = (alpha - 1.0) / np.exp(ln_t)
    edges = layer_edges_x0(m, n_layers)

    # Spots per layer: Poisson(N_spot f), at least one where the layer holds energy.
    n_spots = rng.poisson(p.spots.number(e)[:, None] * frac)
    n_spots = np.where(layer > 0, np.maximum(n_spots, 1), 0)
    cell = np.repeat(np.arange(n * n_layers), n_spots.ravel())  # (shower, layer) of every spot
    if p.spots.shape > 0:  # spot energies ~ Gamma(shape), scaled to the layer's energy
        weight = rng.gamma(p.spots.shape, 1.0, len(cell))
        total = np.bincount(cell, weight, n * n_layers)
        spot_energy = layer.ravel()[cell] * weight / np.maximum(total[cell], 1e-300)
    else:  # GFlash: equal energies
        spot_energy = (layer / np.maximum(n_spots, 1)).ravel()[cell]

    # Radial parameters per (shower, layer) at the layer's mid depth, truncated at the readout disc.
    t_mid = 0.5 * (edges[:-1] + edges[1:])
    tau = scaled_depth(t_mid[None, :], alpha, beta, mu_a)
    rc, rt, w_core = p.radial.evaluate(tau, ln_e[:, None])
    r_max = geometry.r_edges_mm[-1]
    f_core, f_tail = _truncated_cdf(r_max, m.rm_mm * rc), _truncated_cdf(r_max, m.rm_mm * rt)
    w_core = w_core * f_core / np.maximum(w_core * f_core + (1.0 - w_core) * f_tail, 1e-300)

    u = rng.random((3, len(cell)))
    core = u[0] < w_core.ravel()[cell]
    radius = np.where(core, rc.ravel()[cell], rt.ravel()[cell]) * m.rm_mm
    u_r = u[1] * np.where(core, f_core.ravel()[cell], f_tail.ravel()[cell])  # within the disc
    r = radius * np.sqrt(u_r / (1.0 - u_r))
    showers = bin_spots(cell, 2.0 * np.pi * u[2], r, spot_energy, n, geometry)
    showers[showers < threshold_mev] = 0.0
    return Showers(showers, layer, ln_t, ln_a, layer.sum(axis=1) / e)


def bin_spots(cell: np.ndarray, phi: np.ndarray, r_mm: np.ndarray, energy_mev: np.ndarray, n_showers: int,
              geometry: Geometry) -> np.ndarray:
    """Sum spots into voxels: (n_showers, n_voxels) float32 MeV in the CaloChallenge order.

    cell: (S,) shower * n_layers + layer of each spot; phi: (S,) azimuth from +x in radians, any turn
    (alpha bin j covers -pi + [j, j+1) 2 pi / n_alpha: the CaloChallenge's convention, our simulator's and
    the features'); r_mm: (S,) radius within the readout disc (larger radii are put in the last bin);
    energy_mev: (S,).
    """
    n_alpha, n_r = geometry.n_alpha, geometry.n_r
    r_bin = np.clip(np.searchsorted(np.asarray(geometry.r_edges_mm), r_mm, side="right") - 1, 0, n_r - 1)
    from_minus_pi = np.mod(np.asarray(phi, dtype=np.float64) + np.pi, 2.0 * np.pi)  # [0, 2 pi) from -x
    a_bin = np.minimum((from_minus_pi * (n_alpha / (2.0 * np.pi))).astype(np.int64), n_alpha - 1)
    index = (cell * n_alpha + a_bin) * n_r + r_bin  # (layer, alpha, r) with r fastest, showers outermost
    showers = np.bincount(index, weights=energy_mev, minlength=n_showers * geometry.n_voxels)
    return showers.reshape(n_showers, geometry.n_voxels).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# Fitting


@dataclass(frozen=True)
class Summary:
    """What the fit needs from each reference shower (a few hundred numbers, so samples can be streamed).

    e_inc: (N,) MeV; layer: (N, L) MeV per layer; radial: (N, L, n_r) MeV per layer and radial bin;
    n_hit: (N,) voxels above zero.
    """

    e_inc: np.ndarray
    layer: np.ndarray
    radial: np.ndarray
    n_hit: np.ndarray

    @classmethod
    def of(cls, showers: np.ndarray, e_inc_mev: np.ndarray, geometry: Geometry) -> Summary:
        """Summarise showers (N, n_voxels) MeV in the CaloChallenge order with energies (N,) or (N, 1) MeV."""
        x = np.asarray(showers, dtype=np.float32).reshape(len(showers), *geometry.shape)
        radial = x.sum(axis=2, dtype=np.float64)
        return cls(np.asarray(e_inc_mev, dtype=np.float64).reshape(-1), radial.sum(axis=2), radial,
                   (x > 0).reshape(len(x), -1).sum(axis=1))

    @classmethod
    def concat(cls, parts: list[Summary]) -> Summary:
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(cls)))


def gamma_moments(layer: np.ndarray, medium: Medium) -> tuple[np.ndarray, np.ndarray]:
    """Per-shower Gamma fit (alpha, beta) to layer energies (N, L) by moments in X0 of depth.

    Sheppard's correction d^2/12 removes the layers' own width from the variance; alpha is floored at
    1.1 as the sampler floors it, so T = (alpha - 1) / beta > 0.
    """
    d = medium.layer_depth_mm / medium.x0_mm
    t = (np.arange(layer.shape[1]) + 0.5) * d
    w = layer / np.maximum(layer.sum(axis=1, keepdims=True), 1e-300)
    mean = w @ t
    var = np.maximum(w @ t**2 - mean**2 - d * d / 12.0, 1e-3 * mean**2)
    alpha = np.maximum(mean**2 / var, 1.1)
    return alpha, alpha / np.maximum(mean, 1e-6)


def _energy_bins(ln_e: np.ndarray, per_bin: int, most: int) -> np.ndarray:
    """Bin index per event: up to ``most`` quantile bins of ln E with at least ``per_bin`` events each."""
    n_bins = int(np.clip(len(ln_e) // per_bin, 1, most))
    if np.ptp(ln_e) < 1e-6:
        n_bins = 1
    edges = np.quantile(ln_e, np.linspace(0, 1, n_bins + 1))
    return np.clip(np.searchsorted(edges, ln_e, side="right") - 1, 0, n_bins - 1)


def _line(x: np.ndarray, y: np.ndarray, w: np.ndarray, default_slope: float) -> tuple[float, float]:
    """Weighted least-squares (intercept, slope); with one distinct x the slope stays ``default_slope``."""
    if len(x) < 2 or np.ptp(x) < 1e-6:
        return float(np.average(y - default_slope * x, weights=w)), default_slope
    slope, intercept = np.polyfit(x, y, 1, w=np.sqrt(w))
    return float(intercept), float(slope)


@dataclass(frozen=True)
class _ProfileStats:
    """Per energy bin: mean ln y, mean residuals (ln T, ln alpha) from a model's means, their covariance."""

    ln_y: np.ndarray  # (B,)
    mean: np.ndarray  # (B, 2)
    cov: np.ndarray  # (B, 2, 2)
    n: np.ndarray  # (B,)


def _profile_stats(ln_t: np.ndarray, ln_a: np.ndarray, ln_y: np.ndarray, bins: np.ndarray,
                   means: Longitudinal) -> _ProfileStats:
    mu_t, mu_a = means.moments(ln_y)[:2]
    res = np.stack([ln_t - mu_t, ln_a - mu_a], axis=1)
    groups = [np.flatnonzero(bins == b) for b in range(int(bins.max()) + 1)]
    return _ProfileStats(np.array([ln_y[k].mean() for k in groups]), np.array([res[k].mean(axis=0) for k in groups]),
                         np.array([np.cov(res[k].T) if len(k) > 1 else np.zeros((2, 2)) for k in groups]),
                         np.array([len(k) for k in groups], dtype=np.float64))


def _model_cov(long: Longitudinal, ln_y: np.ndarray) -> np.ndarray:
    """(B, 2, 2) covariance of (ln T, ln alpha) the parameters say at each ln y."""
    _, _, s_t, s_a, rho = long.moments(ln_y)
    return np.stack([np.stack([s_t**2, rho * s_t * s_a], -1), np.stack([rho * s_t * s_a, s_a**2], -1)], -2)


def fit_longitudinal(alpha: np.ndarray, beta: np.ndarray, e_inc: np.ndarray, medium: Medium, start: Longitudinal,
                     noise: _ProfileStats | None = None) -> Longitudinal:
    """Means (least squares), widths and correlation (per energy bin, then lines in ln y) of (ln T, ln alpha).

    ``alpha``, ``beta``: per-shower Gamma fits (N,); ``e_inc`` (N,) MeV. ``noise`` (from showers sampled
    with known parameters at the same energies, see :func:`fit`) is what the per-shower fit adds: its
    mean is subtracted from the values and its covariance from each bin's covariance.
    """
    from scipy.optimize import least_squares

    ln_y = np.log(e_inc / medium.ec_mev)
    ln_t, ln_a = np.log((alpha - 1.0) / beta), np.log(alpha)
    bins = _energy_bins(ln_y, 250, 8)
    if noise is not None:
        ln_t, ln_a = ln_t - noise.mean[bins, 0], ln_a - noise.mean[bins, 1]
    spread = np.ptp(ln_y) > 1e-6

    def mean_fit(values: np.ndarray, c0: float, c1: float) -> tuple[float, float]:
        def resid(c: np.ndarray) -> np.ndarray:
            return np.log(np.maximum(c[0] + (c[1] if spread else c1) * ln_y, 1e-6)) - values

        c = least_squares(resid, [c0, c1]).x
        return float(c[0]), float(c[1] if spread else c1)

    t0, t1 = mean_fit(ln_t, start.t0, start.t1)
    a0, a1 = mean_fit(ln_a, start.a0, start.a1)
    means = dataclasses.replace(start, t0=t0, t1=t1, a0=a0, a1=a1)
    stats = _profile_stats(ln_t, ln_a, ln_y, bins, means)
    cov = stats.cov if noise is None else stats.cov - noise.cov
    # The noise estimate is itself noisy: never remove more than 3/4 of a measured variance.
    var_t = np.maximum(cov[:, 0, 0], 0.25 * stats.cov[:, 0, 0])
    var_a = np.maximum(cov[:, 1, 1], 0.25 * stats.cov[:, 1, 1])
    rho = np.clip(cov[:, 0, 1] / np.sqrt(var_t * var_a), -0.95, 0.95)
    st0, st1 = _line(stats.ln_y, 1.0 / np.sqrt(var_t), stats.n, start.sigma_t1)
    sa0, sa1 = _line(stats.ln_y, 1.0 / np.sqrt(var_a), stats.n, start.sigma_a1)
    r0, r1 = _line(stats.ln_y, rho, stats.n, 0.0)
    return Longitudinal(t0=t0, t1=t1, a0=a0, a1=a1, sigma_t0=st0, sigma_t1=st1, sigma_a0=sa0, sigma_a1=sa1,
                        rho0=r0, rho1=r1)


def fit_noise(long: Longitudinal, response: Response, e_inc: np.ndarray, medium: Medium, n_layers: int,
              rng: np.random.Generator, repeats: int = 2) -> _ProfileStats:
    """What the per-shower Gamma fit adds to (ln T, ln alpha): mean offset and covariance per energy bin.

    Layer energies are sampled with known (``long``, ``response``) at ``e_inc`` (repeated), fitted as the
    reference is, and compared with the drawn values' model (bins as in :func:`fit_longitudinal`).
    """
    e = np.tile(e_inc, repeats)
    ln_y = np.log(e / medium.ec_mev)
    ln_t, ln_a, _, _, layer = _sample_layers(long, response, medium, n_layers, e, rng)
    alpha, beta = gamma_moments(layer, medium)
    fitted = _profile_stats(np.log((alpha - 1.0) / beta), np.log(alpha), ln_y, _energy_bins(ln_y, 250 * repeats, 8),
                            long)
    drawn = _profile_stats(ln_t, ln_a, ln_y, _energy_bins(ln_y, 250 * repeats, 8), long)
    return _ProfileStats(fitted.ln_y, fitted.mean - drawn.mean, fitted.cov - drawn.cov, fitted.n)


def fit_response(summary: Summary) -> Response:
    """m0, m1 by least squares of E_tot/E_inc on ln(E/GeV); a^2, c^2 by non-negative least squares of the
    relative variance per energy bin on 1 / (E_vis/GeV) and 1."""
    from scipy.optimize import nnls

    ratio = summary.layer.sum(axis=1) / summary.e_inc
    ln_e = np.log(summary.e_inc / GEV)
    m0, m1 = _line(ln_e, ratio, np.ones_like(ln_e), 0.0)
    bins = _energy_bins(ln_e, 250, 8)
    rows = []
    for b in range(bins.max() + 1):
        k = bins == b
        mean = ratio[k].mean()
        rows.append((1.0 / (mean * np.exp(ln_e[k]).mean()), ratio[k].var() / mean**2, k.sum()))
    inv_e, rel_var, n = (np.array(c) for c in zip(*rows, strict=True))
    w = np.sqrt(n)[:, None]
    if len(rows) > 1 and np.ptp(inv_e) > 1e-9:
        (a2, c2), _ = nnls(w * np.stack([inv_e, np.ones_like(inv_e)], axis=1), w[:, 0] * rel_var)
    else:  # one energy: all of the spread is sampling
        a2, c2 = float(np.average(rel_var / inv_e, weights=n)), 0.0
    return Response(m0=m0, m1=m1, stochastic=float(np.sqrt(a2)), constant=float(np.sqrt(c2)))


TAU_EDGES = np.concatenate([np.arange(0.0, 3.0, 0.125), np.arange(3.0, 5.0, 0.5), [5.0, 6.5, 9.0, 1e9]])


def radial_cells(summary: Summary, alpha: np.ndarray, beta: np.ndarray, mean_ln_alpha: np.ndarray,
                 medium: Medium) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean radial profiles in (tau, energy) cells: (tau, ln E/GeV, weight, fractions (cells, n_r)).

    Weight: the cell's share of all energy. Only cells holding energy are returned.
    """
    _, n_layers, n_r = summary.radial.shape
    t_mid = (np.arange(n_layers) + 0.5) * medium.layer_depth_mm / medium.x0_mm
    tau = scaled_depth(t_mid[None, :], alpha, beta, mean_ln_alpha)  # (N, L)
    ln_e = np.log(summary.e_inc / GEV)
    e_bin = _energy_bins(ln_e, 400, 4)
    n_e = int(e_bin.max()) + 1
    cell = (np.searchsorted(TAU_EDGES, tau, side="right") - 1) * n_e + e_bin[:, None]  # (N, L)
    n_cells = (len(TAU_EDGES) - 1) * n_e
    weight = summary.layer.ravel()
    energy = np.stack([np.bincount(cell.ravel(), summary.radial[:, :, k].ravel(), n_cells) for k in range(n_r)], 1)
    total = energy.sum(axis=1)
    safe = np.maximum(total, 1e-300)
    mean_tau = np.bincount(cell.ravel(), weight * tau.ravel(), n_cells) / safe
    mean_ln_e = np.bincount(cell.ravel(), weight * np.broadcast_to(ln_e[:, None], tau.shape).ravel(), n_cells) / safe
    keep = total > 0
    return mean_tau[keep], mean_ln_e[keep], total[keep] / total.sum(), energy[keep] / total[keep, None]


def radial_fractions(radial: Radial, tau: np.ndarray, ln_e_gev: np.ndarray, medium: Medium,
                     r_edges_mm: tuple[float, ...]) -> np.ndarray:
    """Expected energy fraction per radial bin (cells, n_r) of the truncated two-component profile."""
    rc, rt, p = radial.evaluate(tau, ln_e_gev)
    edges = np.asarray(r_edges_mm)[None, :]
    cdf = p[:, None] * _truncated_cdf(edges, medium.rm_mm * rc[:, None]) + \
        (1.0 - p[:, None]) * _truncated_cdf(edges, medium.rm_mm * rt[:, None])
    return np.diff(cdf, axis=1) / np.maximum(cdf[:, -1:], 1e-300)


def fit_radial(tau: np.ndarray, ln_e: np.ndarray, weight: np.ndarray, frac: np.ndarray, medium: Medium,
               r_edges_mm: tuple[float, ...], start: Radial) -> Radial:
    """All radial constants by one weighted least-squares fit to the cells' mean radial profiles."""
    from scipy.optimize import least_squares

    names = [f.name for f in dataclasses.fields(Radial)]
    spread = np.ptp(ln_e) > 1e-6
    free = [n for n in names if spread or n not in ("rc1", "k4b", "p3b")]  # energy slopes need energies
    w = np.sqrt(weight)[:, None]

    def model(x: np.ndarray) -> Radial:
        return dataclasses.replace(start, **dict(zip(free, (float(v) for v in x), strict=True)))

    def resid(x: np.ndarray) -> np.ndarray:
        return (w * (radial_fractions(model(x), tau, ln_e, medium, r_edges_mm) - frac)).ravel()

    x0 = np.array([getattr(start, n) for n in free])
    return model(least_squares(resid, x0, x_scale=np.maximum(np.abs(x0), 0.05), max_nfev=400).x)


def mean_radial_width(summary: Summary, r_edges_mm: tuple[float, ...]) -> np.ndarray:
    """Per shower: the layers' radial widths (energy-weighted std of r, r at bin centres as the challenge
    places voxels) averaged with the layers' energies as weights, (N,) mm."""
    edges = np.asarray(r_edges_mm)
    r = 0.5 * (edges[1:] + edges[:-1])
    e_layer = np.maximum(summary.layer, 1e-300)
    mean = summary.radial @ r / e_layer
    width = np.sqrt(np.maximum(summary.radial @ r**2 / e_layer - mean**2, 0.0))
    return (width * summary.layer).sum(axis=1) / np.maximum(summary.layer.sum(axis=1), 1e-300)


def _trial_energies(summary: Summary, k: np.ndarray, n: int) -> np.ndarray:
    """Up to n of the energies of events k, spread evenly over them."""
    return summary.e_inc[k[np.linspace(0, len(k) - 1, min(n, len(k))).astype(int)]]


def fit_spot_number(params: GFlashParams, summary: Summary, geometry: Geometry, seed: int, threshold_mev: float,
                    per_bin: int = 200) -> Spots:
    """n1, n2 such that sampled showers hit as many voxels as the reference, per energy bin (bisection)."""
    ln_e = np.log(summary.e_inc / GEV)
    bins = _energy_bins(ln_e, 300, 3)
    log_e_bin, log_n_bin = [], []
    for b in range(bins.max() + 1):
        k = np.flatnonzero(bins == b)
        e = _trial_energies(summary, k, per_bin)
        target = summary.n_hit[k].mean()
        e_ref = float(np.exp(np.mean(np.log(e / GEV))))
        lo, hi = np.log(1.0), np.log(1e5)  # spots per shower at e_ref
        for _ in range(14):
            mid = 0.5 * (lo + hi)
            trial = dataclasses.replace(params, spots=dataclasses.replace(
                params.spots, n1=float(np.exp(mid)) / e_ref**params.spots.n2))
            hits = (sample(trial, e, np.random.default_rng(seed), geometry, threshold_mev=threshold_mev) > 0)
            lo, hi = (mid, hi) if hits.sum(axis=1).mean() < target else (lo, mid)
        log_e_bin.append(np.log(e_ref))
        log_n_bin.append(0.5 * (lo + hi))
    ln_n1, n2 = _line(np.array(log_e_bin), np.array(log_n_bin), np.ones(len(log_e_bin)), params.spots.n2)
    return dataclasses.replace(params.spots, n1=float(np.exp(ln_n1)), n2=n2)


def fit_spot_shape(params: GFlashParams, summary: Summary, geometry: Geometry, seed: int, threshold_mev: float,
                   n_trial: int = 600) -> Spots:
    """The Gamma shape of spot energies that gives the reference's mean radial width (bisection in ln shape).

    Equal spots make every shower's layer look like the mean profile, wider than single Geant4 showers,
    whose outer energy comes in fewer, larger deposits; a smaller shape lumps it.
    """
    target = mean_radial_width(summary, geometry.r_edges_mm).mean()
    e = _trial_energies(summary, np.argsort(summary.e_inc), n_trial)
    lo, hi = np.log(0.02), np.log(50.0)
    for _ in range(12):
        mid = 0.5 * (lo + hi)
        trial = dataclasses.replace(params, spots=dataclasses.replace(params.spots, shape=float(np.exp(mid))))
        showers = sample(trial, e, np.random.default_rng(seed), geometry, threshold_mev=threshold_mev)
        width = mean_radial_width(Summary.of(showers, e, geometry), geometry.r_edges_mm).mean()
        lo, hi = (mid, hi) if width < target else (lo, mid)
    return dataclasses.replace(params.spots, shape=float(np.exp(0.5 * (lo + hi))))


def fit(summary: Summary, geometry: Geometry | None = None, *, medium: Medium | None = None,
        rng: np.random.Generator | None = None, threshold_mev: float = THRESHOLD_MEV,
        fitted_on: str = "") -> GFlashParams:
    """Fit every GFlash parameter to reference showers summarised by :meth:`Summary.of`.

    Starts from :func:`geant4_defaults`; ``rng`` only drives the trial showers of the spot fit.
    """
    geometry = geometry or dataset2_geometry()
    medium = medium or dataset2_medium()
    rng = rng or np.random.default_rng(0)
    keep = summary.layer.sum(axis=1) > 0
    if keep.sum() < 2:
        raise ValueError("GFlash fit: fewer than two showers with any energy")
    s = Summary(*(getattr(summary, f.name)[keep] for f in dataclasses.fields(Summary)))
    start = geant4_defaults(medium)
    alpha, beta = gamma_moments(s.layer, medium)
    response = fit_response(s)
    first = fit_longitudinal(alpha, beta, s.e_inc, medium, start.longitudinal)
    # The per-shower fits see sampling fluctuations too, which widen (ln T, ln alpha): measure that on
    # layers sampled with the first fit's parameters and remove it (one step of indirect inference).
    noise = fit_noise(first, response, s.e_inc, medium, geometry.n_layers, rng)
    longitudinal = fit_longitudinal(alpha, beta, s.e_inc, medium, first, noise)
    mean_ln_a = longitudinal.moments(np.log(s.e_inc / medium.ec_mev))[1]
    cells = radial_cells(s, alpha, beta, mean_ln_a, medium)
    radial = fit_radial(*cells, medium, geometry.r_edges_mm, start.radial)
    params = GFlashParams(medium=medium, longitudinal=longitudinal, radial=radial, response=response,
                          spots=start.spots, fitted_on=fitted_on)
    # Hit counts depend mostly on the number of spots, widths on how their energies spread: alternate.
    seed = int(rng.integers(2**32))
    for fit_spots in (fit_spot_number, fit_spot_shape, fit_spot_number):
        params = dataclasses.replace(params, spots=fit_spots(params, s, geometry, seed, threshold_mev))
    return params


# --------------------------------------------------------------------------------------------------
# The baseline object: fit once, sample many


class GFlash:
    """A fitted GFlash model used like a surrogate: ``generate(e_inc_mev, seed=0)`` -> (N, n_voxels) MeV."""

    name = "gflash"
    description = "GFlash parametrised shower (Grindhammer & Peters, hep-ex/0001020)"

    def __init__(self, params: GFlashParams, geometry: Geometry | None = None,
                 threshold_mev: float = THRESHOLD_MEV) -> None:
        self.params = params
        self.geometry = geometry or dataset2_geometry()
        self.threshold_mev = threshold_mev

    @classmethod
    def fit_store(cls, store_dir: str | Path, *, seed: int = 0) -> GFlash:
        """Fit on the training split of a prepared calorimeter store (``prepare``'s output folder)."""
        from surrogate.baselines import iter_store_split
        from surrogate.data.hdf5 import open_h5
        from surrogate.data.prepare import STORE

        store_dir = Path(store_dir)
        geometry = dataset2_geometry()
        with open_h5(store_dir / STORE) as f:
            domain, n_features = f.attrs.get("domain"), int(f.attrs.get("n_features", -1))
        if domain != "calorimeter" or n_features != geometry.n_voxels:
            from surrogate.errors import InputError

            raise InputError(store_dir / STORE, "domain", f"{domain!r} with {n_features} features; GFlash expects "
                             f"a calorimeter store with {geometry.describe()}")
        summary = Summary.concat([Summary.of(x, c, geometry) for x, c in iter_store_split(store_dir, "train")])
        params = fit(summary, geometry, rng=np.random.default_rng(seed),
                     fitted_on=f"{store_dir / STORE}: train split, {len(summary.e_inc)} showers")
        return cls(params, geometry)

    @classmethod
    def load(cls, path: str | Path) -> GFlash:
        return cls(GFlashParams.load(path))

    def save(self, path: str | Path) -> Path:
        return self.params.save(path)

    def attrs(self) -> dict[str, Any]:
        """HDF5 file attributes: what made the showers, and every parameter (JSON)."""
        return {"simulator": self.description, "baseline": self.name,
                "gflash_fitted_on": self.params.fitted_on or "Geant4's published GFlash constants",
                "gflash_parameters": json.dumps(self.params.to_dict())}

    def iter_generate(self, cond: np.ndarray, *, seed: int = 0,
                      batch_size: int = 10000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (showers (n, n_voxels) MeV float32, e_inc (n, 1) MeV float32) blocks for energies ``cond``.

        Showers k * SEED_BLOCK ... (k + 1) * SEED_BLOCK - 1 have their own random stream, seeded by
        (seed, k), so the showers do not depend on ``batch_size`` (rounded to whole streams: blocks hold
        a multiple of SEED_BLOCK showers, at least one stream's).
        """
        e = np.asarray(cond, dtype=np.float32).reshape(-1, 1)
        step = max(SEED_BLOCK, batch_size - batch_size % SEED_BLOCK)
        for start in range(0, len(e), step):
            block = e[start:start + step]
            parts = [sample(self.params, block[i:i + SEED_BLOCK, 0],
                            np.random.default_rng([seed, (start + i) // SEED_BLOCK]), self.geometry,
                            threshold_mev=self.threshold_mev)
                     for i in range(0, len(block), SEED_BLOCK)]
            yield np.concatenate(parts), block

    def generate(self, cond: np.ndarray, *, seed: int = 0, batch_size: int = 10000) -> np.ndarray:
        """(N, n_voxels) float32 MeV, CaloChallenge order, threshold applied, for energies (N,) or (N, 1) MeV."""
        blocks = [b for b, _ in self.iter_generate(cond, seed=seed, batch_size=batch_size)]
        return np.concatenate(blocks) if blocks else np.zeros((0, self.geometry.n_voxels), np.float32)


SPEC = BaselineSpec("gflash", "calorimeter", __name__, "GFlash", FORMAT)  # the baselines registry's entry
