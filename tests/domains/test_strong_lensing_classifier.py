"""The report's image classifier (validation.CNN_CLASSIFIER, with the settings validate uses) on real
lenstronomy images at the quickstart's sizes: 400 test images a class, 800 a class to train on.

Reference against reference scores ~0.5; reference against the same lenses with an artefact a generator
might leave scores > 0.9: 2x2 blocks (nearest-neighbour upsampling of a half-resolution image), the noise
of half the exposure time (the same lenses and noise draws, sqrt(2) more noise). A PSF 50% wider is not
found (measured: AUC 0.50, and 0.50 with all 20 epochs and no early stopping): a known blind spot, kept
as a strict xfail so that a classifier that learns it shows up. The same image indices (conditions,
nuisance parameters, noise streams) are rendered each way, so only the artefact differs. Measured
(2026-12-02, 2 cores shared with 4 other jobs, OMP_NUM_THREADS=1): A vs B 0.499, blocks 1.000, half
exposure 1.000, PSF 0.50 (xfail); 13.5 min.
Slow: ~5,000 renders and four classifier trainings.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from surrogate.config import ValidateConfig
from surrogate.domains.strong_lensing import validation
from surrogate.simulators.lenstronomy_lens import Settings, run_block
from surrogate.validation.compute import Observables, Prepared

N_TEST = 400  # images a class scored (the quickstart's validation split, the floor's size)
N_FIT = 800  # images a class trained on (generate.fit_events 1600, halved, as validate does)
# supersampling 1: 3x cheaper renders; every sample here is rendered the same way
SETTINGS = Settings(num_pix=64, supersampling=1, seed=21)

pytestmark = pytest.mark.slow


def _render(settings: Settings, start: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    block = run_block(settings, start, start + n)
    return block.images.reshape(n, -1).astype(np.float64), block.cond.astype(np.float64)


def _blocky(images: np.ndarray) -> np.ndarray:
    x = images.reshape(len(images), 32, 2, 32, 2).mean(axis=(2, 4))
    return np.repeat(np.repeat(x, 2, axis=1), 2, axis=2).reshape(len(images), -1)


def _sample(test: tuple[np.ndarray, np.ndarray], fit: tuple[np.ndarray, np.ndarray]) -> Prepared:
    # the classifier reads images, conditions and the training sample only
    return Prepared(Observables({}, {}), np.zeros((len(test[0]), 1)), test[0], test[1], fit)


@pytest.fixture(scope="module")
def lenses() -> dict[str, Prepared]:
    """Reference A (test + training half F1) and, at the other indices, reference B and three artefacts."""
    ref_test, ref_fit = _render(SETTINGS, 0, N_TEST), _render(SETTINGS, N_TEST, N_FIT)
    start = N_TEST + N_FIT
    out = {"reference A": _sample(ref_test, ref_fit)}
    for name, settings in (("reference B", SETTINGS), ("half exposure", replace(SETTINGS, exposure_time_s=283.0)),
                           ("PSF 50% wider", replace(SETTINGS, psf_fwhm_arcsec=0.24))):
        test, fit = _render(settings, start, N_TEST), _render(settings, start + N_TEST, N_FIT)
        out[name] = _sample(test, fit)
    b = out["reference B"]
    assert b.low_level is not None and b.fit is not None
    out["2x2 blocks"] = _sample((_blocky(b.low_level), b.cond), (_blocky(b.fit[0]), b.fit[1]))
    return out


def _auc(lenses: dict[str, Prepared], other: str) -> float:
    values, details = validation.CNN_CLASSIFIER.compute([], lenses["reference A"], lenses[other],
                                                        ValidateConfig(), 5)
    cnn = details["cnn (images)"]
    assert cnn["n_test"] == 2 * N_TEST and cnn["n_per_class"] == N_TEST
    print(f"reference A vs {other}: AUC {values['auc_cnn']:.3f} (best epoch {cnn['best_epoch']} of {cnn['epochs']}, "
          f"{cnn['steps']} steps)")  # shown by pytest -rA
    return values["auc_cnn"]


def test_reference_against_reference_is_not_separated(lenses: dict[str, Prepared]) -> None:
    # 400 test images a class: the AUC's spread is ~0.02
    assert _auc(lenses, "reference B") == pytest.approx(0.5, abs=0.08)


@pytest.mark.parametrize("artefact", [
    "2x2 blocks", "half exposure",
    pytest.param("PSF 50% wider", marks=pytest.mark.xfail(strict=True, reason="blind spot: a PSF of 0.24 instead "
                                                           "of 0.16 arcsec scores AUC 0.50 at these sizes")),
])
def test_a_generator_artefact_is_found(lenses: dict[str, Prepared], artefact: str) -> None:
    assert _auc(lenses, artefact) > 0.9
