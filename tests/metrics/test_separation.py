"""Separation power: 0 for identical, 1 for disjoint shapes, an analytic case, the challenge's numbers and NaN."""

from __future__ import annotations

import math

import numpy as np
import pytest

from surrogate.metrics import separation_power, separation_power_from_samples


def test_identical_shapes_give_zero_whatever_the_normalisation() -> None:
    assert separation_power(np.array([1, 2, 3, 0]), np.array([10, 20, 30, 0])) == 0.0


def test_disjoint_histograms_give_one() -> None:
    # 1 - 1e-16 per filled bin at most: the challenge adds 1e-16 to every denominator.
    assert separation_power(np.array([5, 5, 0, 0]), np.array([0, 0, 1, 7])) == pytest.approx(1.0, abs=1e-14)


def test_half_overlap_analytic() -> None:
    # p = (1/2, 1/2, 0), q = (0, 1/2, 1/2): 0.5 * (1/4 / (1/2) + 0 + 1/4 / (1/2)) = 1/2
    assert separation_power(np.array([1, 1, 0]), np.array([0, 1, 1])) == pytest.approx(0.5)


def test_an_empty_histogram_has_no_shape_and_scores_nan() -> None:
    # The challenge's plt.hist(density=True) gives 0 / 0 for an empty histogram, so its score is NaN.
    assert math.isnan(separation_power(np.zeros(4), np.zeros(4)))
    assert math.isnan(separation_power(np.zeros(4), np.array([0, 1, 0, 0])))
    assert math.isnan(separation_power(np.array([0, 1, 0, 0]), np.zeros(4)))


def test_from_samples_is_the_challenges_number() -> None:
    # Pinned: evaluate_plotting_helper._separation_power(h1, h2, bins) of the challenge
    # (CaloChallenge/homepage 9b41df72) on h = plt.hist(|x|, bins, density=True)[0] of these samples.
    rng = np.random.default_rng(11)
    a, b = rng.normal(0.0, 1.0, 300), rng.normal(0.3, 1.2, 300)
    bins = np.logspace(-2, 0.5, 25)
    assert separation_power_from_samples(np.abs(a), np.abs(b), bins) == pytest.approx(0.06776556935565001,
                                                                                      rel=1e-14)


def test_from_samples_matches_the_histogram_definition() -> None:
    rng = np.random.default_rng(0)
    bins = np.linspace(-3, 3, 31)
    a, b = rng.normal(0, 1, 5000), rng.normal(0.5, 1, 5000)
    expected = separation_power(np.histogram(a, bins)[0], np.histogram(b, bins)[0], np.diff(bins))
    assert separation_power_from_samples(a, b, bins) == expected
    assert separation_power(np.histogram(a, bins)[0], np.histogram(b, bins)[0]) == pytest.approx(expected,
                                                                                                 rel=1e-12)
    assert 0.02 < expected < 0.1  # two unit Gaussians half a sigma apart
    assert separation_power_from_samples(a, a, bins) == 0.0
    assert separation_power_from_samples(a[a < 0], a[a > 0], bins) == pytest.approx(1.0, abs=1e-12)  # disjoint
    assert math.isnan(separation_power_from_samples(a, a + 100, bins))  # all of b outside the range: empty


def test_mismatched_binnings_raise() -> None:
    with pytest.raises(ValueError, match="binnings"):
        separation_power(np.ones(3), np.ones(4))
