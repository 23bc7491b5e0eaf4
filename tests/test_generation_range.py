"""The training-range check of generate: signed conditions, float32 bounds."""

from __future__ import annotations

import numpy as np

from surrogate.generation import outside_range


def test_bounds_themselves_are_inside_for_signed_and_positive_conditions() -> None:
    lo = np.array([-0.298641, 1009.88, 0.0])
    hi = np.array([0.298922, 1999.37, 2.5])
    # the bounds as a float32 file holds them: exactly the lowest and highest training values
    edge = np.stack([lo, hi]).astype(np.float32).astype(np.float64)
    assert not outside_range(edge, lo, hi).any()
    inside = np.array([[0.0, 1500.0, 1.0]])
    assert not outside_range(inside, lo, hi).any()


def test_values_beyond_the_slack_are_outside() -> None:
    lo, hi = np.array([-0.3, 1000.0]), np.array([0.3, 2000.0])
    cond = np.array([[-0.3001, 1500.0], [0.0, 2000.1], [0.3000001, 999.9999]])
    np.testing.assert_array_equal(outside_range(cond, lo, hi),
                                  [[True, False], [False, True], [False, False]])
