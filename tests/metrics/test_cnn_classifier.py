"""The small-CNN classifier test on analytic images: Gaussian blobs at random positions with random
widths and pixel noise. Same distribution -> AUC ~ 0.5; widths 10% larger -> found; seeded."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from surrogate.metrics.cnn_classifier import cnn_classifier_test

# Small enough for ~5-10 s of CPU per call on one core; the defaults are for 64x64 images and more data.
# One thread: the test machines' cores are shared, where two threads wait on each other (_image_cnn).
SMALL: dict[str, Any] = {"channels": (8, 16, 32), "hidden": 32, "epochs": 30, "patience": 6, "lr": 2e-3,
                         "num_threads": 1}
SIZE = 32  # pixels a side


def blobs(n: int, rng: np.random.Generator, *, width_scale: float = 1.0,
          widths: np.ndarray | None = None) -> np.ndarray:
    """(n, 32, 32) unit-peak circular Gaussians, centres uniform within +-4 px of the middle, widths
    (sigma) uniform in [2.85, 3.15] px (+-5%) times ``width_scale`` unless given, Gaussian noise 0.05."""
    yy, xx = np.mgrid[:SIZE, :SIZE] - (SIZE - 1) / 2
    cx, cy = rng.uniform(-4.0, 4.0, (2, n, 1, 1))
    w = (rng.uniform(2.85, 3.15, n) if widths is None else widths)[:, None, None] * width_scale
    img = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2.0 * w**2))
    return img + rng.normal(0.0, 0.05, img.shape)


def test_same_distribution_gives_auc_near_one_half() -> None:
    rng = np.random.default_rng(0)
    result = cnn_classifier_test(blobs(600, rng), blobs(600, rng), seed=0, **SMALL)
    # 240 test images per class: the AUC's statistical spread is ~0.03 (data seeds 0-3: 0.48-0.52).
    assert result.auc == pytest.approx(0.5, abs=0.08)
    assert result.jsd < 0.05
    assert result.n_per_class == 600
    assert (result.n_train, result.n_val, result.n_test) == (720, 240, 240)


def test_widths_ten_percent_larger_are_found() -> None:
    rng = np.random.default_rng(1)
    result = cnn_classifier_test(blobs(600, rng), blobs(600, rng, width_scale=1.1), seed=0, **SMALL)
    # The +-5% width spreads barely overlap after a 10% shift: an ideal classifier reaches AUC ~0.999;
    # this one gave 0.97-0.99 on data seeds 0-3.
    assert result.auc > 0.9
    assert result.accuracy > 0.8


def test_conditions_find_images_wrong_for_their_condition() -> None:
    # The width is the condition. The generated set has the right widths, but paired with shuffled
    # conditions: the two image samples are identical in law, so only the conditions can separate them
    # (without conditions, data seeds 0-3 gave AUC 0.44-0.54; with them 0.80-0.85).
    rng = np.random.default_rng(2)
    w_ref, w_gen = rng.uniform(2.0, 4.0, (2, 500))
    x_ref, x_gen = blobs(500, rng, widths=w_ref), blobs(500, rng, widths=w_gen)
    cond_ref, cond_gen = w_ref[:, None], rng.permutation(w_gen)[:, None]
    result = cnn_classifier_test(x_ref, x_gen, cond_ref, cond_gen, seed=0, **SMALL)
    assert result.auc > 0.75


def test_same_seed_identical_results_and_global_rng_untouched() -> None:
    rng = np.random.default_rng(3)
    a, b = blobs(200, rng), blobs(200, rng, width_scale=1.05)
    small = SMALL | {"epochs": 3}
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first = cnn_classifier_test(a, b, seed=7, **small)
    assert torch.equal(torch.rand(1), before)  # the global generator was neither read nor advanced
    assert cnn_classifier_test(a, b, seed=7, **small) == first
    assert cnn_classifier_test(a, b, seed=8, **small) != first
    assert first.steps == first.epochs * 4  # 240 training images, batches of 64
    assert 1 <= first.best_epoch <= first.epochs <= 3
    metrics = first.to_metrics()
    assert metrics["cnn_auc"] == first.auc and metrics["cnn_steps"] == float(first.steps)
    assert all(isinstance(v, float) for v in metrics.values())


def test_bad_inputs_are_rejected() -> None:
    good = np.zeros((50, 16, 16)) + np.arange(16)
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        cnn_classifier_test(np.zeros((50, 256)), good, seed=0)
    with pytest.raises(ValueError, match="different shapes"):
        cnn_classifier_test(good, np.zeros((50, 16, 17)), seed=0)
    with pytest.raises(ValueError, match="generated: images hold NaN"):
        cnn_classifier_test(good, np.full((50, 16, 16), np.nan), seed=0)
    with pytest.raises(ValueError, match="at least 16 pixels"):
        cnn_classifier_test(good[:, :8, :8], good[:, :8, :8], seed=0, channels=(4, 4, 4, 4))
    with pytest.raises(ValueError, match="both samples or for neither"):
        cnn_classifier_test(good, good, np.zeros((50, 1)), seed=0)
    with pytest.raises(ValueError, match=r"reference: expected conditions of shape \(50, K\)"):
        cnn_classifier_test(good, good, np.zeros((49, 1)), np.zeros((50, 1)), seed=0)
    with pytest.raises(ValueError, match="at least 10 images"):
        cnn_classifier_test(good[:9], good, seed=0)
    with pytest.raises(ValueError, match="constant reference"):
        cnn_classifier_test(np.zeros((50, 16, 16)), good, seed=0)


def test_any_units_standardised_by_the_reference() -> None:
    from surrogate.metrics._image_cnn import ImageScaling

    rng = np.random.default_rng(4)
    a, b = blobs(200, rng), blobs(200, rng, width_scale=1.05)
    scaling = ImageScaling.fit(a)
    u = scaling.apply(a)
    assert (float(u.mean()), float(u.std())) == pytest.approx((0.0, 1.0), abs=1e-5)
    # The arcsinh softening follows the images' units, so a change of units changes nothing.
    assert np.allclose(ImageScaling.fit(a * 1e4).apply(b * 1e4), scaling.apply(b), atol=1e-5)
    small = SMALL | {"epochs": 3}
    assert cnn_classifier_test(a * 1e4, b * 1e4, seed=0, **small).auc == pytest.approx(
        cnn_classifier_test(a, b, seed=0, **small).auc, abs=0.01)
    # The statistics are the reference's alone: a generated sample twice as bright stays brighter
    # (measured: mean 0.18 standard deviations up; most pixels are noise), where its own would hide it.
    assert scaling.apply(2 * a).mean() > 0.1
    assert abs(ImageScaling.fit(2 * a).apply(2 * a).mean()) < 1e-5


def test_separate_training_samples_train_and_the_given_samples_only_test() -> None:
    """With fit_ref / fit_gen the network learns from them (80/20 train / early stopping) and the two given
    samples are the test split, whole: widths 10% larger are found; and when only the training samples
    differ, the held-out test samples (one law) score ~0.5, so nothing of the training leaks into the AUC."""
    rng = np.random.default_rng(5)
    fit_ref, fit_wide = blobs(500, rng), blobs(500, rng, width_scale=1.1)
    test_ref, test_wide, test_same = blobs(200, rng), blobs(200, rng, width_scale=1.1), blobs(200, rng)
    found = cnn_classifier_test(test_ref, test_wide, seed=0, fit_ref=(fit_ref, None), fit_gen=(fit_wide, None),
                                **SMALL)
    assert found.auc > 0.9
    assert (found.n_train, found.n_val, found.n_test, found.n_per_class) == (800, 200, 400, 200)
    unseen = cnn_classifier_test(test_ref, test_same, seed=0, fit_ref=(fit_ref, None), fit_gen=(fit_wide, None),
                                 **SMALL)
    assert unseen.auc == pytest.approx(0.5, abs=0.1)  # 200 a class: the AUC's spread is ~0.03
    with pytest.raises(ValueError, match="separate training samples for both classes or for neither"):
        cnn_classifier_test(test_ref, test_wide, seed=0, fit_ref=(fit_ref, None))
    with pytest.raises(ValueError, match=r"training images \(16, 16\), test images \(32, 32\)"):
        cnn_classifier_test(test_ref, test_wide, seed=0, fit_ref=(fit_ref[:, :16, :16], None),
                            fit_gen=(fit_wide[:, :16, :16], None))
    with pytest.raises(ValueError, match="the generated training sample has no conditions"):
        cnn_classifier_test(test_ref, test_wide, np.zeros((200, 1)), np.zeros((200, 1)), seed=0,
                            fit_ref=(fit_ref, np.zeros((500, 1))), fit_gen=(fit_wide, None))
