"""Weak-lensing observables on analytic fields: Gaussian random fields of known spectrum, lognormal fields of
known skewness, placed peaks, the Gaussian Minkowski functionals, and scikit-image on the same excursion sets."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from surrogate.domains.weak_lensing import observables as obs

SIDE = 128
SIZE_DEG = 3.5


def power_law(ell: np.ndarray) -> np.ndarray:
    return 1e-9 * (ell / 1000.0) ** -1.2


@pytest.fixture(scope="module")
def gaussian_maps() -> np.ndarray:
    return obs.gaussian_field((SIDE, SIDE), SIZE_DEG, power_law, np.random.default_rng(0), n=40)


def test_power_spectrum_of_a_gaussian_field_is_its_input_spectrum_within_sample_variance(
        gaussian_maps: np.ndarray) -> None:
    edges = obs.ell_edges((SIDE, SIDE), SIZE_DEG, 8)
    power, modes = obs.power_spectrum(gaussian_maps, SIZE_DEG, edges)
    ell = obs.ell_grid((SIDE, SIDE), SIZE_DEG).ravel()
    expected = np.array([power_law(ell[(ell >= lo) & (ell < hi)]).mean() for lo, hi in itertools.pairwise(edges)])
    # every mode's power is chi^2 with 2 degrees of freedom over 2 (mode and its conjugate twin carry the
    # same value): the band mean over n_maps x modes / 2 independent modes scatters by 1 / sqrt(that)
    sigma = 1.0 / np.sqrt(len(gaussian_maps) * modes / 2)
    ratio = power.mean(axis=0) / expected
    assert (np.abs(ratio - 1) < 4 * sigma).all(), (ratio, sigma)
    assert modes.sum() > 10000 and modes[0] >= 8
    # a field twice as large has four times the power: the estimator is quadratic, not normalised away
    doubled, _ = obs.power_spectrum(2 * gaussian_maps, SIZE_DEG, edges)
    np.testing.assert_allclose(doubled, 4 * power, rtol=1e-12)


def test_power_spectrum_knows_the_map_size() -> None:
    """The same pixels called a map twice as wide are the same field at half the multipoles."""
    maps = obs.gaussian_field((64, 64), 2.0, power_law, np.random.default_rng(1), n=4)
    edges = np.array([300.0, 600.0, 1200.0])
    narrow, _ = obs.power_spectrum(maps, 2.0, edges)
    wide, _ = obs.power_spectrum(maps, 4.0, edges / 2)
    # C(ell) = |dA FFT|^2 / A: four times the area per pixel and four times the area give 4x the power
    np.testing.assert_allclose(wide, 4 * narrow, rtol=1e-12)


def test_moments_of_gaussian_and_lognormal_fields(gaussian_maps: np.ndarray) -> None:
    m = obs.moments(gaussian_maps)
    assert np.abs(m["mean"]).max() < 1e-12  # the ell = 0 mode is zero
    np.testing.assert_allclose(m["std"], gaussian_maps.reshape(40, -1).std(axis=1), rtol=1e-12)
    assert abs(m["skewness"].mean()) < 0.05 and abs(m["kurtosis"].mean()) < 0.1
    # lognormal kappa = kappa0 (exp(y - s^2 / 2) - 1), y Gaussian with variance s^2: skewness
    # (e^{s^2} + 2) sqrt(e^{s^2} - 1) (the lognormal distribution's, unchanged by shift and scale)
    y = gaussian_maps / gaussian_maps.std()
    s2 = 0.25
    kappa = 0.03 * (np.exp(math.sqrt(s2) * y - s2 / 2) - 1)
    skew = obs.moments(kappa)["skewness"]
    expected = (math.exp(s2) + 2) * math.sqrt(math.exp(s2) - 1)
    assert skew.mean() == pytest.approx(expected, rel=0.05)


def test_pixel_pdf_is_a_density() -> None:
    maps = np.random.default_rng(2).normal(0.0, 0.01, size=(3, 64, 64))
    edges = np.linspace(-0.08, 0.08, 41)
    pdf = obs.pixel_pdf(maps, edges)
    np.testing.assert_allclose((pdf * np.diff(edges)).sum(axis=1), 1.0, atol=1e-12)
    centre = (edges[:-1] + edges[1:]) / 2
    gauss = np.exp(-centre**2 / (2 * 0.01**2)) / (0.01 * math.sqrt(2 * math.pi))
    assert np.abs(pdf.mean(axis=0) - gauss).max() < 0.05 * gauss.max()


def test_peaks_are_counted_at_their_heights_across_the_periodic_edges() -> None:
    y, x = np.mgrid[0:64, 0:64]
    field = np.zeros((64, 64))
    centres = [(10, 10, 1.0), (40, 50, 2.0), (0, 32, 3.0), (63, 63, 0.5)]  # two on the edges: they wrap
    for cy, cx, amp in centres:
        dy = (y - cy + 32) % 64 - 32
        dx = (x - cx + 32) % 64 - 32
        field += amp * np.exp(-(dx**2 + dy**2) / (2 * 2.0**2))
    heights = obs.peak_heights(field)[0]
    np.testing.assert_allclose(np.sort(heights), [0.5, 1.0, 2.0, 3.0], atol=1e-3)
    counts = obs.peak_counts(field[None], np.array([0.0, 0.75, 1.5, 2.5, 4.0]))
    np.testing.assert_array_equal(counts, [[1, 1, 1, 1]])
    # per-map edges: the second map is the first doubled, its edges too
    counts = obs.peak_counts(np.stack([field, 2 * field]), np.array([[0.0, 1.5, 4.0], [0.0, 3.0, 8.0]]))
    np.testing.assert_array_equal(counts, [[2, 2], [2, 2]])


def test_smoothing_is_periodic_and_keeps_the_mean() -> None:
    field = np.zeros((1, 32, 32))
    field[0, 0, 0] = 1.0
    smoothed = obs.smooth(field, sigma_arcmin=6.0, map_size_deg=32 * 3.0 / 60)  # 3' pixels: sigma 2 px
    assert smoothed.sum() == pytest.approx(1.0)
    assert smoothed[0, 0, 31] == pytest.approx(smoothed[0, 0, 1])  # the wrap: symmetric about (0, 0)
    assert smoothed[0, 31, 31] == pytest.approx(smoothed[0, 1, 1])


@pytest.fixture(scope="module")
def smoothed_maps(gaussian_maps: np.ndarray) -> np.ndarray:
    return obs.smooth(gaussian_maps[:20], 6.0, SIZE_DEG)  # 3.6 pixels sigma: excursion sets a few pixels wide


def test_minkowski_functionals_of_a_gaussian_field_are_the_analytic_ones(smoothed_maps: np.ndarray) -> None:
    sigma0 = float(smoothed_maps.std())
    sigma1 = float(np.sqrt(obs.gradient_variance(smoothed_maps).mean()))
    nu = np.linspace(-2.0, 2.0, 17) * sigma0  # beyond 2 sigma, 20 maps hold too few pixels for 8%
    v0, v1, v2 = (v.mean(axis=0) for v in obs.minkowski(smoothed_maps, nu))
    a0, a1, a2 = obs.gaussian_minkowski(nu, sigma0, sigma1)
    np.testing.assert_allclose(v0, a0, atol=0.01)
    np.testing.assert_allclose(v1, a1, rtol=0.08)  # finite differences on a field ~4 pixels wide
    np.testing.assert_allclose(v2, a2, atol=0.15 * np.abs(a2).max())
    assert (np.sign(v2[np.abs(nu) > 0.5 * sigma0]) == np.sign(nu[np.abs(nu) > 0.5 * sigma0])).all()


def _periodic(measure_of: object, mask: np.ndarray) -> float:
    """A local additive measure of a periodic binary image: on a k x k tiling it is k^2 x (the periodic
    value) + k x (edge terms) + corner terms, so the quadratic coefficient from k = 1, 2, 3 is the value
    without the image's artificial border."""
    values = [float(measure_of(np.tile(mask, (k, k)))) for k in (1, 2, 3)]  # type: ignore[operator]
    return (values[2] - 2 * values[1] + values[0]) / 2


def test_minkowski_functionals_agree_with_scikit_image(smoothed_maps: np.ndarray) -> None:
    """V1 against scikit-image's perimeter, V2 against its Euler number, on the same excursion sets.

    scikit-image measures the pixelised set (its perimeter weights boundary pixel patterns; averaging the
    set's and its complement's removes most of the inside/outside asymmetry), ours the smooth field's
    level lines: they agree to the ~10% a digitised boundary allows.
    """
    measure = pytest.importorskip("skimage.measure")
    maps = smoothed_maps[:8]
    sigma0 = float(maps.std())
    nu = np.linspace(-2.0, 2.0, 9) * sigma0
    _, v1, v2 = (v.mean(axis=0) for v in obs.minkowski(maps, nu))
    area = SIDE * SIDE
    for j in (0, 2, 3, 5, 6, 8):  # thresholds away from nu = 0, where V2 crosses zero
        perimeter = np.mean([(_periodic(measure.perimeter, m > nu[j]) + _periodic(measure.perimeter, m <= nu[j])) / 2
                             for m in maps])
        euler = np.mean([_periodic(lambda a: measure.euler_number(a, connectivity=2), m > nu[j]) for m in maps])
        assert perimeter / (4 * area) == pytest.approx(v1[j], rel=0.12), j
        assert euler / area == pytest.approx(v2[j], rel=0.2), j


def test_minkowski_rejects_unordered_thresholds() -> None:
    with pytest.raises(ValueError, match="increasing"):
        obs.minkowski(np.zeros((1, 8, 8)), np.array([0.1, 0.0]))
