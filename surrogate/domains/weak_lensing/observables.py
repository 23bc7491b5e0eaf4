"""Weak-lensing observables of convergence maps: pure numpy functions on (N, H, W) maps, each tested.

Maps are flat-sky and square, ``map_size_deg`` on a side, periodic where the simulator makes them so (FFT
maps are); every filter and neighbour here wraps around the edges, so a periodic map has no boundary.

- :func:`moments`: per map mean, standard deviation, skewness and excess kurtosis of the pixel values;
- :func:`pixel_pdf`: the normalised histogram of pixel values over given edges;
- :func:`power_spectrum`: the band-averaged angular power spectrum C_ell in multipole bands, with the
  flat-sky FFT estimator C(ell) = |dA FFT(kappa)|^2 / A (A the map's area in sr, dA a pixel's);
- :func:`smooth`: a periodic Gaussian smoothing (sigma in arcmin);
- :func:`peak_counts`: local maxima (higher than all 8 neighbours) of a smoothed map per height bin;
- :func:`minkowski`: the Minkowski functionals V0 (area fraction), V1 (boundary length / 4 per unit area)
  and V2 (Euler characteristic per unit area) of the excursion sets kappa > nu, with the
  derivative estimator of Schmalzing & Buchert (1997) as written in Kratochvil et al. 2012 (PRD 85,
  103513, eqs. 5-7);
- :func:`gaussian_minkowski`: the analytic V0-V2 of a Gaussian random field (Tomita 1986; Kratochvil et
  al. 2012 eqs. 8-10), which the tests compare :func:`minkowski` against.

Units: kappa is dimensionless; lengths in V1 and V2 are in pixels (V1 [1/pixel], V2 [1/pixel^2]), so a
map's functionals do not depend on its angular size.
"""

from __future__ import annotations

import math

import numpy as np

ARCMIN_PER_DEG = 60.0


def _maps(maps: np.ndarray) -> np.ndarray:
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim == 2:
        maps = maps[None]
    if maps.ndim != 3:
        raise ValueError(f"maps of shape {maps.shape}, expected (N, H, W)")
    return maps


def moments(maps: np.ndarray) -> dict[str, np.ndarray]:
    """Per map (N,): ``mean``, ``std``, ``skewness`` (m3 / m2^1.5) and ``kurtosis`` (m4 / m2^2 - 3)."""
    m = _maps(maps).reshape(len(maps), -1)
    mean = m.mean(axis=1)
    d = m - mean[:, None]
    m2 = (d**2).mean(axis=1)
    safe = np.where(m2 > 0, m2, 1.0)
    skew = np.where(m2 > 0, (d**3).mean(axis=1) / safe**1.5, 0.0)
    kurt = np.where(m2 > 0, (d**4).mean(axis=1) / safe**2 - 3.0, 0.0)
    return {"mean": mean, "std": np.sqrt(m2), "skewness": skew, "kurtosis": kurt}


def pixel_pdf(maps: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """(N, len(edges) - 1): per map the fraction of pixels in each bin divided by the bin width (a density)."""
    m = _maps(maps).reshape(len(maps), -1)
    edges = np.asarray(edges, dtype=np.float64)
    out = np.empty((len(m), len(edges) - 1))
    for i, row in enumerate(m):
        counts, _ = np.histogram(row, edges)
        out[i] = counts / (row.size * np.diff(edges))
    return out


def ell_grid(shape: tuple[int, int], map_size_deg: float) -> np.ndarray:
    """|ell| of every FFT mode of a (H, W) map of ``map_size_deg`` on a side (ell = 2 pi |k| per radian)."""
    h, w = shape
    side_rad = math.radians(map_size_deg)
    ly = 2.0 * math.pi * np.fft.fftfreq(h, d=side_rad / h)
    lx = 2.0 * math.pi * np.fft.fftfreq(w, d=side_rad / w)
    return np.hypot(ly[:, None], lx[None, :])


def ell_edges(shape: tuple[int, int], map_size_deg: float, n_bands: int, ell_min: float = 0.0,
              ell_max: float = 0.0) -> np.ndarray:
    """(n_bands + 1,) log-spaced band edges from ``ell_min`` (default: twice the fundamental 2 pi / side) to
    ``ell_max`` (default: the Nyquist multipole of the shorter axis)."""
    fundamental = 2.0 * math.pi / math.radians(map_size_deg)
    lo = ell_min or 2.0 * fundamental
    hi = ell_max or fundamental * min(shape) / 2.0
    if not 0 < lo < hi:
        raise ValueError(f"ell range [{lo}, {hi}] is empty")
    return np.geomspace(lo, hi, n_bands + 1)


def power_spectrum(maps: np.ndarray, map_size_deg: float, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Band powers (N, n_bands) and the number of FFT modes per band (n_bands,).

    C(ell) per mode is |dA FFT(kappa)|^2 / A (A = side^2 in sr, dA = A / (H W)), the estimator whose
    expectation for a Gaussian field with spectrum C_ell is C_ell; a band's value is the mean over the modes
    with edges[i] <= |ell| < edges[i + 1]. The mean (ell = 0) is not in any band with edges[0] > 0.
    """
    m = _maps(maps)
    n, h, w = m.shape
    area = math.radians(map_size_deg) ** 2
    d_area = area / (h * w)
    power = np.abs(np.fft.fft2(m) * d_area) ** 2 / area  # (N, H, W)
    ell = ell_grid((h, w), map_size_deg).ravel()
    edges = np.asarray(edges, dtype=np.float64)
    band = np.digitize(ell, edges) - 1  # -1 below, n_bands above
    n_bands = len(edges) - 1
    inside = (band >= 0) & (band < n_bands)
    counts = np.bincount(band[inside], minlength=n_bands)
    out = np.zeros((n, n_bands))
    flat = power.reshape(n, -1)[:, inside]
    for i in range(n):
        out[i] = np.bincount(band[inside], weights=flat[i], minlength=n_bands)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = out / counts
    return out, counts


def smooth(maps: np.ndarray, sigma_arcmin: float, map_size_deg: float) -> np.ndarray:
    """Periodic Gaussian smoothing of (N, H, W) maps (sigma in arcmin; 0 = unchanged), float64."""
    from scipy.ndimage import gaussian_filter

    m = _maps(maps)
    if sigma_arcmin <= 0:
        return m.copy()
    pixel_arcmin = map_size_deg * ARCMIN_PER_DEG / m.shape[-1]
    sigma_px = sigma_arcmin / pixel_arcmin
    return np.stack([gaussian_filter(x, sigma_px, mode="wrap") for x in m])


def _neighbours(m: np.ndarray) -> list[np.ndarray]:
    """The 8 periodic neighbours of every pixel of (N, H, W) maps."""
    return [np.roll(m, (dy, dx), axis=(1, 2)) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]


def peak_heights(maps: np.ndarray) -> list[np.ndarray]:
    """Per map the values of its peaks: pixels strictly higher than their 8 (periodic) neighbours."""
    m = _maps(maps)
    is_peak = np.ones(m.shape, dtype=bool)
    for nb in _neighbours(m):
        is_peak &= m > nb
    return [x[p] for x, p in zip(m, is_peak, strict=True)]


def peak_counts(maps: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """(N, n_bins) peaks per height bin of each map (maps already smoothed, edges in kappa, per map or shared).

    ``edges``: (n_bins + 1,) shared by all maps, or (N, n_bins + 1) one row per map.
    """
    heights = peak_heights(maps)
    edges = np.asarray(edges, dtype=np.float64)
    rows = np.broadcast_to(edges, (len(heights), edges.shape[-1]))
    return np.stack([np.histogram(h, e)[0] for h, e in zip(heights, rows, strict=True)]).astype(np.float64)


def _gradients(m: np.ndarray) -> tuple[np.ndarray, ...]:
    """Periodic central differences (per pixel): kx, ky, kxx, kyy, kxy of (N, H, W) maps; x is axis 2."""
    def d(a: np.ndarray, axis: int) -> np.ndarray:
        return (np.roll(a, -1, axis=axis) - np.roll(a, 1, axis=axis)) / 2.0

    kx, ky = d(m, 2), d(m, 1)
    kxx = np.roll(m, -1, axis=2) - 2.0 * m + np.roll(m, 1, axis=2)
    kyy = np.roll(m, -1, axis=1) - 2.0 * m + np.roll(m, 1, axis=1)
    kxy = d(kx, 1)
    return kx, ky, kxx, kyy, kxy


def minkowski(maps: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """V0, V1, V2, each (N, n_thresholds), of the excursion sets {kappa > nu} of (N, H, W) maps.

    ``thresholds``: (T,) shared, or (N, T) per map; they must be increasing with at least 2 entries
    (the bin width of the delta function, d nu, is their spacing: central differences, one-sided at the
    ends). Kratochvil et al. 2012, eqs. 5-7:
    V0 = A^-1 integral Theta(kappa - nu) dA;
    V1 = (4 A)^-1 integral delta(kappa - nu) |grad kappa| dA;
    V2 = (2 pi A)^-1 integral delta(kappa - nu) (2 kx ky kxy - kx^2 kyy - ky^2 kxx) / |grad kappa|^2 dA,
    with delta(kappa - nu) as the indicator of |kappa - nu| < d nu / 2 divided by d nu. Lengths in pixels.
    The boundary's total curvature is 2 pi per component and -2 pi per hole (Gauss-Bonnet), so V2 is the
    Euler characteristic of the excursion set per pixel.
    """
    m = _maps(maps)
    n = len(m)
    nu = np.asarray(thresholds, dtype=np.float64)
    nu = np.broadcast_to(nu, (n, nu.shape[-1]))
    if nu.shape[1] < 2 or not (np.diff(nu, axis=1) > 0).all():
        raise ValueError("minkowski: expected at least two increasing thresholds")
    dnu = np.gradient(nu, axis=1)
    v0 = np.empty(nu.shape)
    v1 = np.empty(nu.shape)
    v2 = np.empty(nu.shape)
    for i in range(n):
        x = m[i]
        kx, ky, kxx, kyy, kxy = _gradients(x[None])
        grad2 = (kx**2 + ky**2)[0]
        grad = np.sqrt(grad2)
        with np.errstate(invalid="ignore", divide="ignore"):
            curv = np.where(grad2 > 0, ((2 * kx * ky * kxy - kx**2 * kyy - ky**2 * kxx)[0]) / grad2, 0.0)
        flat = x.ravel()
        for j, (level, width) in enumerate(zip(nu[i], dnu[i], strict=True)):
            band = (np.abs(flat - level) < width / 2).reshape(x.shape)
            v0[i, j] = float((flat > level).mean())
            v1[i, j] = float(grad[band].sum()) / (4.0 * width * x.size)
            v2[i, j] = float(curv[band].sum()) / (2.0 * math.pi * width * x.size)
    return v0, v1, v2


def gaussian_minkowski(nu: np.ndarray, sigma0: float, sigma1: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Analytic V0, V1, V2 at thresholds ``nu`` (in kappa) of a Gaussian random field with pixel variance
    sigma0^2 and mean squared gradient sigma1^2 = <|grad kappa|^2> (per pixel^2); Kratochvil et al. 2012
    eqs. 8-10, with x = nu / sigma0:
    V0 = erfc(x / sqrt 2) / 2, V1 = (1 / 8) (sigma1 / (sqrt 2 sigma0)) exp(-x^2 / 2),
    V2 = x exp(-x^2 / 2) sigma1^2 / (2 sigma0^2 (2 pi)^(3/2))."""
    from scipy.special import erfc

    x = np.asarray(nu, dtype=np.float64) / sigma0
    v0 = 0.5 * erfc(x / math.sqrt(2.0))
    v1 = sigma1 / (8.0 * math.sqrt(2.0) * sigma0) * np.exp(-(x**2) / 2.0)
    v2 = x * np.exp(-(x**2) / 2.0) * sigma1**2 / (2.0 * sigma0**2 * (2.0 * math.pi) ** 1.5)
    return v0, v1, v2


def gradient_variance(maps: np.ndarray) -> np.ndarray:
    """(N,) mean squared gradient <|grad kappa|^2> per map, per pixel^2, with the same central differences
    as :func:`minkowski`."""
    kx, ky, *_ = _gradients(_maps(maps))
    return (kx**2 + ky**2).reshape(len(kx), -1).mean(axis=1)


def gaussian_field(shape: tuple[int, int], map_size_deg: float, cl: object, rng: np.random.Generator,
                   n: int = 1) -> np.ndarray:
    """(n, H, W) Gaussian random fields with angular power spectrum ``cl(ell)`` (a vectorised callable).

    White noise of unit variance per pixel, Fourier transformed, scaled by sqrt(C(ell) / dA) and
    transformed back: <|dA FFT(kappa)|^2> / A = C(ell), the convention of :func:`power_spectrum`. The
    ell = 0 mode is set to zero (maps of zero mean). Used by the tests and by nothing that validates.
    """
    h, w = shape
    d_area = math.radians(map_size_deg) ** 2 / (h * w)
    ell = ell_grid(shape, map_size_deg)
    amp = np.zeros_like(ell)
    nonzero = ell > 0
    amp[nonzero] = np.sqrt(np.asarray(cl(ell[nonzero]), dtype=np.float64) / d_area)  # type: ignore[operator]
    noise = rng.standard_normal((n, h, w))
    return np.fft.ifft2(np.fft.fft2(noise) * amp).real
