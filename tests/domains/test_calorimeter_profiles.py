"""The mean-profile bars (surrogate.domains.calorimeter.profiles) on showers whose profiles are known."""

from __future__ import annotations

import numpy as np
import pytest

from surrogate.config import Limit
from surrogate.domains.calorimeter import DOMAIN, schema
from surrogate.domains.calorimeter.profiles import BARS, HEADLINE, METRIC, CaloThresholds, profile_agreement
from surrogate.validation.compute import Prepared, histogram_specs
from surrogate.validation.report import verdict

GEO = schema.dataset2_geometry()


def showers(n: int, *, layer_scale: dict[int, float] | None = None, r_shift: int = 0,
            seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(showers (n, 6480), e_inc (n, 1)): energy r E_inc (r ~ N(1, 0.05) per event) in layers 5-14 (10% each),
    radial bins 0-2 (1/2, 1/3, 1/6) in every alpha bin; ``layer_scale`` multiplies layers, ``r_shift`` moves
    the radial profile out. The same seed gives the same r."""
    rng = np.random.default_rng(seed)
    e_inc = np.exp(rng.uniform(np.log(1e3), np.log(1e4), (n, 1)))
    events = np.zeros((n, *GEO.shape))
    radial = np.array([3.0, 2.0, 1.0]) / 6.0
    for layer in range(5, 15):
        share = 0.1 * (layer_scale or {}).get(layer, 1.0)
        events[:, layer, :, r_shift:r_shift + 3] = share * radial / GEO.n_alpha
    events *= (e_inc * rng.normal(1.0, 0.05, (n, 1)))[:, :, None, None]
    return events.reshape(n, -1).astype(np.float32), e_inc.astype(np.float32)


def features(sample: tuple[np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
    return DOMAIN.features(*sample)


def test_identical_samples_agree_everywhere() -> None:
    a = features(showers(50))
    result = profile_agreement(a, a)
    assert set(result) == set(BARS)
    assert all(value == 0.0 for value, _ in result.values())


def test_a_hotter_layer_is_found_with_its_deviation_and_moves_the_response() -> None:
    ref = features(showers(50))
    gen = features(showers(50, layer_scale={9: 1.08}))
    result = profile_agreement(ref, gen)
    value, where = result["longitudinal"]
    assert value == pytest.approx(8.0, rel=1e-4) and where == 9
    # one of ten equal layers 8% hotter: every shower's response 0.8% higher, so its mean and spread too;
    # the radial shape is the same, so every radial bin is 0.8% hotter and the widths are unchanged
    assert result["response_mean"][0] == pytest.approx(0.8, rel=1e-3) and result["response_mean"][1] == -1
    assert result["response_std"][0] == pytest.approx(0.8, rel=1e-3)
    assert result["radial"][0] == pytest.approx(0.8, rel=1e-3)
    assert result["width_r"][0] == pytest.approx(0.0, abs=1e-3)


def test_layers_below_one_percent_of_the_energy_do_not_count() -> None:
    ref = features(showers(20, layer_scale={7: 0.05}))  # layer 7 holds 0.05 / 9.05 = 0.55% of the energy
    gen = features(showers(20, layer_scale={7: 0.1}))  # ... and twice that here: +100%, but ignored
    value, where = profile_agreement(ref, gen)["longitudinal"]
    assert where != 7 and value == pytest.approx(0.0, abs=1e-4)
    value, where = profile_agreement(ref, features(showers(20, layer_scale={7: 0.1, 8: 1.03})))["longitudinal"]
    assert where == 8 and value == pytest.approx(3.0, rel=1e-3)


def test_a_shower_moved_outwards_fails_the_radial_and_xy_width_bars() -> None:
    ref = features(showers(20))
    gen = features(showers(20, r_shift=1))
    result = profile_agreement(ref, gen)
    # bin 0 holds half the reference's energy and nothing of the shifted one's
    assert result["radial"] == (pytest.approx(100.0), 0)
    # the x / y widths grow with the distance from the axis; the r width is the spread of r, which a shift
    # by one of dataset 2's equal 4.65 mm bins leaves as it was
    assert result["width_x"][0] == pytest.approx(result["width_y"][0]) and result["width_x"][0] > 3 * BARS["width_x"]
    assert result["width_r"][0] == pytest.approx(0.0, abs=1e-4)
    assert result["longitudinal"][0] == pytest.approx(0.0, abs=1e-4)


def test_the_metric_feeds_the_verdict_with_the_issues_bars() -> None:
    ref_sample, gen_sample = showers(40, seed=1), showers(40, layer_scale={12: 1.12}, seed=1)
    ref = Prepared.of(DOMAIN, *ref_sample, low_level=False)
    gen = Prepared.of(DOMAIN, *gen_sample, low_level=False)
    metric = next(m for m in DOMAIN.metrics if m.name == "profiles")
    values, _ = metric.compute(histogram_specs(DOMAIN, ref, ref_sample[1]), ref, gen, None, 0)  # type: ignore[arg-type]
    assert set(HEADLINE) <= set(values) and values["longitudinal_at"] == 12.0
    assert HEADLINE == tuple(METRIC[bar] for bar in BARS) and METRIC["response_mean"] == "response_mean_dev_pct"
    assert values["longitudinal_max_dev_pct"] == pytest.approx(12.0, rel=1e-4)
    floor = dict.fromkeys(values, 0.0) | {"auc_low_level": 0.5, "auc_high_level": 0.5, "fpd_x1e3": 1.0,
                                            "kpd_x1e3": 1.0, "mean_separation_power": 1.0}
    metrics = values | {"auc_low_level": 0.5, "auc_high_level": 0.5, "fpd_x1e3": 1.0, "kpd_x1e3": 1.0,
                        "mean_separation_power": 1.0}
    checks = {c.metric: c for c in verdict(metrics, floor, CaloThresholds())}
    assert not checks["longitudinal_max_dev_pct"].passed and checks["longitudinal_max_dev_pct"].bound == 10.0
    # one layer of ten 12% hotter: the response 1.2% higher, inside its 1.5% bar; its spread likewise
    assert checks["response_mean_dev_pct"].value == pytest.approx(1.2, rel=1e-3)
    assert checks["response_mean_dev_pct"].passed and checks["response_std_dev_pct"].passed
    loose = CaloThresholds(longitudinal_max_dev_pct=Limit(15.0))
    assert all(c.passed for c in verdict(metrics, floor, loose))
