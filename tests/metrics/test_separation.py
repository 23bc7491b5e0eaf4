"""Separation power: 0 for identical, 1 for disjoint shapes, and an analytic intermediate case."""

from __future__ import annotations

import numpy as np
import pytest

from surrogate.metrics import separation_power, separation_power_from_samples


def test_identical_shapes_give_zero_whatever_the_normalisation() -> None:
    assert separation_power(np.array([1, 2, 3, 0]), np.array([10, 20, 30, 0])) == 0.0


def test_disjoint_histograms_give_one() -> None:
    assert separation_power(np.array([5, 5, 0, 0]), np.array([0, 0, 1, 7])) == pytest.approx(1.0)


def test_half_overlap_analytic() -> None:
    # p = (1/2, 1/2, 0), q = (0, 1/2, 1/2): 0.5 * (1/4 / (1/2) + 0 + 1/4 / (1/2)) = 1/2
    assert separation_power(np.array([1, 1, 0]), np.array([0, 1, 1])) == pytest.approx(0.5)


def test_empty_histograms() -> None:
    assert separation_power(np.zeros(4), np.zeros(4)) == 0.0
    assert separation_power(np.zeros(4), np.array([0, 1, 0, 0])) == 1.0


def test_from_samples_matches_the_histogram_definition() -> None:
    rng = np.random.default_rng(0)
    bins = np.linspace(-3, 3, 31)
    a, b = rng.normal(0, 1, 5000), rng.normal(0.5, 1, 5000)
    expected = separation_power(np.histogram(a, bins)[0], np.histogram(b, bins)[0])
    assert separation_power_from_samples(a, b, bins) == expected
    assert 0.02 < expected < 0.1  # two unit Gaussians half a sigma apart
    assert separation_power_from_samples(a, a, bins) == 0.0
    assert separation_power_from_samples(a, a + 100, bins) == 1.0  # all of b outside the range: empty


def test_mismatched_binnings_raise() -> None:
    with pytest.raises(ValueError, match="binnings"):
        separation_power(np.ones(3), np.ones(4))
