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


def test_defaults_are_the_challenges_settings() -> None:
    # evaluate.py: DNN(num_layer=2) = 3 hidden layers of 2048, 50 epochs, Adam lr 2e-4, batch 1000.
    import inspect

    defaults = {k: p.default for k, p in inspect.signature(classifier_test).parameters.items()}
    assert {k: defaults[k] for k in ("hidden", "n_layers", "epochs", "lr", "batch_size", "min_steps_per_epoch",
                                     "patience")} == {"hidden": 2048, "n_layers": 3, "epochs": 50, "lr": 2e-4,
                                                      "batch_size": 1000, "min_steps_per_epoch": 1,
                                                      "patience": 0}


def test_splits_batches_and_steps_are_counted() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(1000, 6)), rng.normal(3.0, size=(1000, 6))
    result = classifier_test(a, b, seed=0, hidden=32, epochs=3, batch_size=1000, min_steps_per_epoch=10)
    # ttv_split's fractions per class: 600 / 200 / 200, both classes together twice that.
    assert (result["n_train"], result["n_test"], result["n_eval"]) == (1200, 400, 400)
    assert result["batch_size"] == 120  # 1000 would be one step an epoch; 1200 // 10
    assert result["steps"] == result["epochs"] * 10
    assert 1 <= result["best_epoch"] <= result["epochs"] <= 3


def test_early_stopping_on_the_test_loss() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(600, 6)), rng.normal(size=(600, 6))
    # Nothing to learn: the test loss stops falling after a few epochs and training ends long before 50.
    result = classifier_test(a, b, seed=0, hidden=64, epochs=50, batch_size=60, patience=2)
    full = classifier_test(a, b, seed=0, hidden=64, epochs=6, batch_size=60)
    assert result["epochs"] < 50 and result["steps"] == result["epochs"] * 12  # 720 // 60 per epoch
    assert full["epochs"] == 6 and full["steps"] == 72  # patience 0: every epoch, as the challenge
    assert result["best_epoch"] <= result["epochs"]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_both_precisions_find_a_separation(dtype: str) -> None:
    rng = np.random.default_rng(6)
    result = classifier_test(rng.normal(size=(500, 8)), rng.normal(1.5, size=(500, 8)), seed=0, dtype=dtype,
                             hidden=32, epochs=5, batch_size=100)
    assert result["auc"] > 0.95
    with pytest.raises(ValueError, match="dtype"):
        classifier_test(rng.normal(size=(50, 3)), rng.normal(size=(50, 3)), seed=0, dtype="float16")
