"""The weak-lensing fidelity bars on samples whose answer is known: an independent draw of the same fields
passes them, a field 10% too large in amplitude or smoothed too much fails them, per cosmology."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from surrogate.config import ValidateConfig
from surrogate.domains.weak_lensing import DOMAIN, SimulateConfig, validation
from surrogate.domains.weak_lensing import observables as obs
from surrogate.validation.compute import Prepared, compare, histogram_specs

POINTS = np.array([(0.2, 0.6), (0.3, 0.8), (0.4, 1.0)])
SIDE = 64


def sample(per: int, seed: int, amplitude: float = 1.0, smoothing_arcmin: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian fields with sigma_8-scaled amplitude and a little skew (so peaks and V2 are not symmetric)."""
    cond = np.repeat(POINTS, per, axis=0)
    rng = np.random.default_rng(seed)
    g = obs.gaussian_field((SIDE, SIDE), 3.5, lambda ell: 2e-9 * (ell / 1000.0) ** -1.0, rng, n=len(cond))
    g = g + 0.3 * (g**2 - (g**2).mean()) / g.std()  # mildly non-Gaussian
    if smoothing_arcmin:
        g = obs.smooth(g, smoothing_arcmin, 3.5)
    maps = amplitude * g * (cond[:, 1] / 0.8)[:, None, None]
    return maps.reshape(len(cond), -1).astype(np.float32), cond.astype(np.float32)


@pytest.fixture(scope="module")
def reference() -> tuple[np.ndarray, np.ndarray]:
    return sample(200, seed=1)


def stats_of(ref: tuple[np.ndarray, np.ndarray], other: tuple[np.ndarray, np.ndarray]) -> dict[str, float]:
    run = validation._per_cosmology_metric(3.5)
    domain = DOMAIN.configured(SimulateConfig(num_pix=SIDE))
    a = Prepared.of(domain, *ref, low_level=True)
    b = Prepared.of(domain, *other, low_level=True)
    values, _ = run([], a, b, ValidateConfig(), 0)
    return values


def test_an_independent_draw_meets_the_bars(reference: tuple[np.ndarray, np.ndarray]) -> None:
    values = stats_of(reference, sample(200, seed=2))
    assert values["n_cosmologies"] == 3
    assert values["power_max_dev_pct"] < 5.0  # 200 maps a cosmology: sample variance below the bar
    assert values["peaks_frac_outside_1sigma"] <= 0.1
    assert values["mf_frac_outside_1sigma"] <= 0.1
    for point in POINTS:
        assert f"power_max_dev_pct_{validation.cosmology_label(point)}" in values


def test_a_ten_percent_amplitude_error_fails_the_power_spectrum_and_the_absolute_thresholds(
        reference: tuple[np.ndarray, np.ndarray]) -> None:
    values = stats_of(reference, sample(200, seed=2, amplitude=1.1))
    assert values["power_max_dev_pct"] == pytest.approx(21.0, abs=4.0)  # 1.1^2 - 1
    assert values["mf_frac_outside_1sigma"] > 0.1  # V0 at fixed kappa moves with the amplitude


def test_oversmoothed_maps_fail_peaks_and_minkowski(reference: tuple[np.ndarray, np.ndarray]) -> None:
    values = stats_of(reference, sample(200, seed=2, smoothing_arcmin=4.0))
    assert values["power_max_dev_pct"] > 20
    assert values["peaks_frac_outside_1sigma"] > 0.1 and values["mf_frac_outside_1sigma"] > 0.1


def test_cosmologies_are_grouped_by_their_conditions() -> None:
    cond = np.array([[0.3, 0.8], [0.2, 0.6], [0.3, 0.8000001], [0.2, 0.6]], dtype=np.float32)
    points, index = validation.cosmologies(cond)
    np.testing.assert_allclose(points, [[0.2, 0.6], [0.3, 0.8]], atol=1e-6)
    np.testing.assert_array_equal(index, [1, 0, 1, 0])


def test_the_registry_scores_every_column_with_features_histograms_and_distances(
        reference: tuple[np.ndarray, np.ndarray]) -> None:
    domain = DOMAIN.configured(SimulateConfig(num_pix=SIDE))
    ref = Prepared.of(domain, *reference, low_level=True)
    other = Prepared.of(domain, *sample(60, seed=3), low_level=True)
    specs = histogram_specs(domain, ref, reference[1])
    assert {s.name for s in specs} == {"mean", "std", "skewness", "kurtosis", "kappa"}
    cheap = [m for m in domain.metrics if m.in_training]
    values, _ = compare(specs, ref, other, ValidateConfig(fpd_min_samples=50, kpd_batch_size=50, kpd_batches=3),
                        cheap)
    for name in ("mean_separation_power", "power_max_dev_pct", "fpd_x1e3", "kpd_x1e3", "precision"):
        assert np.isfinite(values[name]), name
    assert ref.high_level.shape[1] == 4 + validation.N_POWER + (len(validation.NU_EDGES) - 1) \
        + 3 * len(validation.NU_THRESHOLDS)


def test_the_per_cosmology_bars_see_every_event_of_a_subsampled_sample(
        reference: tuple[np.ndarray, np.ndarray]) -> None:
    """The report subsamples a generated file to the floor's size for the distances (FPD, KPD, PRDC), but
    the per-cosmology means see all of it (Metric.every_event): their noise is what the bars must clear."""
    domain = DOMAIN.configured(SimulateConfig(num_pix=SIDE))
    whole = sample(200, seed=2)
    rows = np.concatenate([np.arange(i * 200, i * 200 + 10) for i in range(len(POINTS))])
    few = (whole[0][rows], whole[1][rows])
    ref = Prepared.of(domain, *reference, low_level=True)
    other = dataclasses.replace(Prepared.of(domain, *few, low_level=True),
                                full=Prepared.of(domain, *whole, low_level=True))
    per_cosmology = next(m for m in domain.metrics if m.name == "per_cosmology")
    fpd = next(m for m in domain.metrics if m.name == "fpd")
    assert per_cosmology.every_event and not fpd.every_event
    values, _ = compare([], ref, other, ValidateConfig(fpd_min_samples=20), [per_cosmology, fpd])
    assert values["power_max_dev_pct"] == stats_of(reference, whole)["power_max_dev_pct"]
    assert values["power_max_dev_pct"] < 5.0 < stats_of(reference, few)["power_max_dev_pct"]  # 10 maps: ~7% noise
    alone, _ = compare([], ref, Prepared.of(domain, *few, low_level=True), ValidateConfig(fpd_min_samples=20), [fpd])
    assert values["fpd_x1e3"] == alone["fpd_x1e3"]  # the distance saw the 30 compared maps only
