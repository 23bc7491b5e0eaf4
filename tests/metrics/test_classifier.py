"""The classifier test on analytic cases: indistinguishable, separated, and reproducible."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from surrogate.metrics import classifier_test

SMALL: dict[str, Any] = {"hidden": 64, "epochs": 8, "batch_size": 200}


def test_identical_distributions_give_auc_near_one_half() -> None:
    rng = np.random.default_rng(0)
    result = classifier_test(rng.normal(size=(1000, 8)), rng.normal(size=(1000, 8)), seed=0, **SMALL)
    # 400 evaluation events: the AUC's statistical spread is ~0.03.
    assert result["auc"] == pytest.approx(0.5, abs=0.08)
    assert result["jsd"] < 0.05
    assert result["n_per_class"] == 1000


def test_well_separated_gaussians_are_found() -> None:
    rng = np.random.default_rng(1)
    result = classifier_test(rng.normal(size=(800, 8)), rng.normal(3.0, size=(800, 8)), seed=0, **SMALL)
    assert result["auc"] > 0.99
    assert result["jsd"] > 0.8


def test_same_seed_identical_results_and_global_rng_untouched() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(400, 5)), rng.normal(0.3, size=(400, 5))
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first = classifier_test(a, b, seed=7, **SMALL)
    after = torch.rand(1)
    assert torch.equal(before, after)  # fork_rng restored torch's global generator
    assert classifier_test(a, b, seed=7, **SMALL) == first
    assert classifier_test(a, b, seed=8, **SMALL) != first


def test_unequal_sizes_are_balanced_and_bad_inputs_rejected() -> None:
    rng = np.random.default_rng(3)
    result = classifier_test(rng.normal(size=(300, 4)), rng.normal(size=(120, 4)), seed=0, **SMALL)
    assert result["n_per_class"] == 120
    with pytest.raises(ValueError, match="same F"):
        classifier_test(np.zeros((50, 3)), np.zeros((50, 4)), seed=0)
    with pytest.raises(ValueError, match="NaN"):
        classifier_test(np.full((50, 3), np.nan), np.zeros((50, 3)), seed=0)
