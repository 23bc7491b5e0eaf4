"""FPD and KPD: analytic Gaussian cases and jetnet's reference numbers (../shared/STACK.md)."""

from __future__ import annotations

import numpy as np
import pytest

from surrogate.metrics import fpd, fpd_sizes, frechet_distance, kpd, mmd_poly_unbiased, normalise_max_abs


def test_frechet_distance_of_known_gaussians() -> None:
    d = 5
    mu = np.arange(d) * 0.3
    assert frechet_distance(np.zeros(d), np.eye(d), mu, np.eye(d)) == pytest.approx(mu @ mu)
    # Same means, isotropic widths s1, s2: d (s1 - s2)^2.
    assert frechet_distance(np.zeros(d), 4 * np.eye(d), np.zeros(d), np.eye(d)) == pytest.approx(d * 1.0)
    # A singular covariance (a feature constant in one sample) is handled exactly: d = 1 - 0 + ... = 1.
    c = np.diag([1.0, 0.0])
    assert frechet_distance(np.zeros(2), c, np.zeros(2), np.diag([1.0, 1.0])) == pytest.approx(1.0, abs=1e-5)


def test_frechet_distance_agrees_with_matrix_sqrt_for_correlated_covariances() -> None:
    import scipy.linalg

    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    c1, c2 = a @ a.T, b @ b.T
    expected = np.trace(c1 + c2 - 2 * scipy.linalg.sqrtm(c1 @ c2).real)
    assert frechet_distance(np.zeros(6), c1, np.zeros(6), c2) == pytest.approx(expected, rel=1e-8)


def test_fpd_extrapolates_to_the_analytic_value() -> None:
    rng = np.random.default_rng(2)
    mu = np.array([0.3, -0.2, 0.1, 0.0])
    real, gen = rng.normal(size=(20000, 4)), rng.normal(size=(20000, 4)) + mu
    value, error = fpd(real, gen, min_samples=5000, max_samples=50000, num_batches=5, normalise=False, seed=0)
    # N -> infinity of the bootstrap is the Frechet distance of the two samples' own moments ...
    plug_in = frechet_distance(real.mean(0), np.cov(real.T), gen.mean(0), np.cov(gen.T))
    assert value == pytest.approx(plug_in, abs=3 * error + 1e-3)
    # ... which is |mu|^2 = 0.14 up to the sampling noise of 20000 events per sample (~0.008).
    assert value == pytest.approx(mu @ mu, abs=0.03)
    assert 0 <= error < 0.005
    same, _ = fpd(real, rng.normal(size=(20000, 4)), min_samples=5000, max_samples=50000, num_batches=5,
                  normalise=False, seed=0)
    assert same < 0.005


def test_fpd_and_kpd_reproduce_jetnet() -> None:
    # STACK.md: jetnet 0.2.5 gives fpd 0.004998 +- 0.000066 (min_samples=10000) and kpd 0.002605 +- 0.000276
    # (defaults: batch_size 5000, seed 42) on these inputs. We draw the same bootstrap indices, so the
    # agreement is to rounding, far inside the quoted errors.
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20000, 8))
    b = rng.normal(0.1, size=(20000, 8))
    value, error = fpd(a, b, min_samples=10000, seed=42)
    assert value == pytest.approx(0.004998, abs=1e-6)
    assert error == pytest.approx(0.000066, abs=1e-6)
    value, error = kpd(a, b, batch_size=5000, seed=42)
    assert value == pytest.approx(0.002605, abs=1e-6)
    assert error == pytest.approx(0.000276, abs=1e-6)


def test_mmd_unbiased_is_zero_in_expectation_and_positive_for_a_shift() -> None:
    rng = np.random.default_rng(4)
    same = [mmd_poly_unbiased(rng.normal(size=(300, 3)), rng.normal(size=(300, 3))) for _ in range(20)]
    assert abs(np.mean(same)) < 3 * np.std(same) / np.sqrt(len(same))
    shifted = mmd_poly_unbiased(rng.normal(size=(300, 3)), rng.normal(1.0, size=(300, 3)))
    assert shifted > 10 * np.std(same)


def test_mmd_degree_one_is_the_squared_mean_difference() -> None:
    # k(x, y) = x.y / d + 1: the unbiased MMD^2 is |mean_x - mean_y|^2 / d minus the diagonal corrections;
    # for constant samples it is exactly |x - y|^2 / d.
    x = np.tile([1.0, 2.0], (10, 1))
    y = np.tile([0.0, 4.0], (12, 1))
    assert mmd_poly_unbiased(x, y, degree=1) == pytest.approx((1 + 4) / 2)


def test_normalisation_uses_the_reference_maximum() -> None:
    real = np.array([[1.0, -4.0, 0.0], [2.0, 2.0, 0.0]])
    gen = np.array([[4.0, 8.0, 3.0]])
    r, g = normalise_max_abs(real, gen)
    np.testing.assert_allclose(r, [[0.5, -1.0, 0.0], [1.0, 0.5, 0.0]])
    np.testing.assert_allclose(g, [[2.0, 2.0, 3.0]])  # a feature 0 throughout real is left unscaled
    # A reference maximum at rounding level (widths of 8e-9 or, summed in float32, 2.6e-5 where every
    # shower hit one bin) is no scale either: dividing by it turned a real 0.02 width into 2.5e6 or 900.
    r, g = normalise_max_abs(np.array([[8.0, 8e-9, 2.6e-5, 1e-3], [4.0, 0.0, 0.0, 0.0]]),
                             np.array([[2.0, 0.02, 0.02, 0.02]]))
    np.testing.assert_allclose(g, [[0.25, 0.02, 0.02, 20.0]])  # 1e-3 (a 0.1 mm width) is a scale
    np.testing.assert_allclose(r[:, 1], [8e-9, 0.0])


def test_same_seed_same_numbers_and_seed_matters() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(500, 3)), rng.normal(0.2, size=(500, 3))
    assert kpd(a, b, batch_size=200, seed=1) == kpd(a, b, batch_size=200, seed=1)
    assert kpd(a, b, batch_size=200, seed=1) != kpd(a, b, batch_size=200, seed=2)


def test_fpd_bootstrap_never_exceeds_a_sample_smaller_than_min_samples() -> None:
    # Issue 5: 400 events with min_samples 10000 used to bootstrap sizes up to 50000 from 400 events.
    sizes = fpd_sizes(400, 800, min_samples=10000)
    assert sizes.max() == 400 and sizes.min() == 200 and len(sizes) == 10
    assert np.all(np.diff(1.0 / sizes) < 0), "evenly spaced in 1/N, largest size last"
    # At or above min_samples the sizes are jetnet's (the reference numbers above depend on it).
    # (49999: the int32 truncation of 1 / (1 / 50000) in floating point, as in jetnet)
    np.testing.assert_array_equal(fpd_sizes(20000, 20000, min_samples=10000)[[0, -1]], [10000, 49999])
    # The capped FPD still extrapolates to the plug-in distance of the two samples' moments.
    rng = np.random.default_rng(5)
    real, gen = rng.normal(size=(400, 3)), rng.normal(0.5, size=(400, 3))
    value, error = fpd(real, gen, min_samples=10000, normalise=False, seed=1)
    plug_in = frechet_distance(real.mean(0), np.cov(real.T), gen.mean(0), np.cov(gen.T))
    assert value == pytest.approx(plug_in, abs=3 * error + 0.01)
