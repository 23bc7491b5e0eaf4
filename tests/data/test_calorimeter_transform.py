from __future__ import annotations

import json
from pathlib import Path

import dask.array as da
import numpy as np
import pytest

from surrogate.data.transforms import load_transform, save_transform, transform_from_dict
from surrogate.domains.calorimeter import schema
from surrogate.domains.calorimeter.transform import (
    CAP_HEADROOM,
    ENERGY_BIN_MIN_EVENTS,
    EPS,
    STD_FLOOR,
    LogRatioTransform,
    voxel_cap,
)
from surrogate.errors import InputError, OutputExistsError

THRESHOLD = schema.THRESHOLD_MEV


@pytest.fixture(scope="module")
def fitted(showers_600: tuple[np.ndarray, np.ndarray]) -> LogRatioTransform:
    data, e_inc = showers_600
    return LogRatioTransform.fit(data, e_inc, threshold=THRESHOLD)


def test_round_trip_is_exact_above_threshold_and_zeros_stay_zero(
        fitted: LogRatioTransform, showers_600: tuple[np.ndarray, np.ndarray]) -> None:
    data, e_inc = showers_600
    x, c = fitted.forward(data, e_inc)
    assert x.dtype == np.float32 and c.dtype == np.float32 and x.shape == data.shape and c.shape == (600, 1)
    back = fitted.inverse(x, e_inc)
    assert back.dtype == np.float32
    hit = data > 0
    assert 0.2 < hit.mean() < 0.95  # the sample really mixes hits and exact zeros
    assert np.all(back[~hit] == 0.0)
    # float32 rounding of u (|u| <= ~20) through the standardisation: a few 1e-7 relative
    np.testing.assert_allclose(back[hit], data[hit], rtol=4e-6, atol=0)


def test_fit_matches_float64_moments_of_log_ratio(
        fitted: LogRatioTransform, showers_600: tuple[np.ndarray, np.ndarray]) -> None:
    data, e_inc = showers_600
    u = np.log(data.astype(np.float64) / e_inc + EPS) - np.log(EPS)
    # fixed-point accumulation (2**-20) and float32 storage: ~1e-6 e-folds
    np.testing.assert_allclose(fitted.mean, u.mean(axis=0), rtol=0, atol=2e-6)
    np.testing.assert_allclose(fitted.std, np.maximum(u.std(axis=0), STD_FLOOR), rtol=0, atol=2e-6)
    assert fitted.e_min_mev == float(e_inc.min()) and fitted.e_max_mev == float(e_inc.max())


def test_fit_records_each_voxels_largest_value_and_inverse_keeps_within_ten_times_it(
        fitted: LogRatioTransform, showers_600: tuple[np.ndarray, np.ndarray]) -> None:
    data, e_inc = showers_600
    u = np.log(data.astype(np.float64) / e_inc + EPS) - np.log(EPS)
    np.testing.assert_allclose(fitted.s_max, u.max(axis=0), rtol=1e-6, atol=1e-6)
    # a generator that puts 5 standard deviations too much into every voxel
    x, _ = fitted.forward(data, e_inc)
    back = fitted.inverse(x + 5.0, e_inc)
    allowed = np.minimum(CAP_HEADROOM * (data / e_inc).max(axis=0), 1.0)
    assert np.all(back / e_inc <= allowed * (1 + 1e-5) + 1e-12)
    hot = int(np.argmax(data.sum(axis=0)))  # the cap is reached, not merely respected
    assert (back[:, hot] / e_inc[:, 0]).max() == pytest.approx(allowed[hot], rel=1e-5)
    # ... and the showers the fit saw come back whole: the cap is no bound on real showers
    np.testing.assert_allclose(fitted.inverse(x, e_inc).sum(axis=1), np.where(data >= THRESHOLD, data, 0.0).sum(axis=1),
                               rtol=1e-4)


def test_voxel_cap_is_ten_times_the_largest_fraction_and_at_most_the_incident_energy() -> None:
    s_max = np.log(np.array([1e-3, 0.05, 0.2, 1.0]) / EPS + 1.0)
    cap = voxel_cap(s_max, EPS)
    np.testing.assert_allclose(np.expm1(cap.astype(np.float64)) * EPS, [1e-2, 0.5, 1.0, 1.0], rtol=1e-5)


def test_transform_saved_without_s_max_bounds_each_voxel_by_the_incident_energy(
        fitted: LogRatioTransform) -> None:
    old = fitted.to_dict()
    del old["s_max"]
    t = transform_from_dict(old)
    e_inc = np.full((1, 1), 1000.0, dtype=np.float32)
    back = t.inverse(np.full((1, t.n_features), 1e6, dtype=np.float32), e_inc)
    np.testing.assert_allclose(back, 1000.0, rtol=1e-5)


def test_forward_standardises_each_voxel_and_constant_voxels_give_zero(
        fitted: LogRatioTransform, showers_600: tuple[np.ndarray, np.ndarray]) -> None:
    data, e_inc = showers_600
    x, _ = fitted.forward(data, e_inc)
    assert np.isfinite(x).all()
    never_hit = (data == 0).all(axis=0)
    assert never_hit.sum() >= 5 * 16  # the outer ring of the last 5 layers
    assert np.all(fitted.std[never_hit] == np.float32(STD_FLOOR))
    assert np.all(x[:, never_hit] == 0.0)
    varied = fitted.std > 10 * STD_FLOOR
    np.testing.assert_allclose(x[:, varied].mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(x[:, varied].std(axis=0), 1.0, atol=1e-5)


def test_fit_is_bit_identical_for_any_chunking(showers_600: tuple[np.ndarray, np.ndarray]) -> None:
    data, e_inc = showers_600
    fits = [LogRatioTransform.fit(da.from_array(data, chunks=(n, -1)), da.from_array(e_inc, chunks=(n, 1)),
                                  threshold=THRESHOLD).to_dict()
            for n in (7, 128, 600)]
    assert fits[0] == fits[1] == fits[2]


def test_fit_records_the_mean_fraction_per_quarter_decade_of_incident_energy(
        fitted: LogRatioTransform, showers_600: tuple[np.ndarray, np.ndarray]) -> None:
    """Bins of log10(E_inc / MeV) a quarter wide, each merged into the next until it holds 200 events (the
    last into the one before): per bin the mean E / E_inc per voxel, the mean ln E_inc and the count."""
    data, e_inc = showers_600
    k = np.floor(4 * np.log10(e_inc[:, 0].astype(np.float64))).astype(int)  # 1-100 GeV: bins 12-19
    groups: list[list[int]] = []
    for b in np.unique(k):
        if groups and np.isin(k, groups[-1]).sum() < ENERGY_BIN_MIN_EVENTS:
            groups[-1].append(b)
        else:
            groups.append([b])
    if np.isin(k, groups[-1]).sum() < ENERGY_BIN_MIN_EVENTS:
        groups[-2].extend(groups.pop())
    assert len(groups) >= 2  # the sample really spans several bins
    assert _energy_bins_of(fitted) == (len(groups), 600)
    assert fitted.fraction_by_energy is not None and fitted.ln_e_by_energy is not None
    assert fitted.n_by_energy is not None
    for i, group in enumerate(groups):
        rows = np.isin(k, group)
        assert fitted.n_by_energy[i] == rows.sum() >= ENERGY_BIN_MIN_EVENTS
        # fixed point of 2**-30 per event (fractions) and 2**-20 (ln E): exact to ~1e-9 and ~1e-6
        # (stored as float32: relative 6e-8 on top)
        expected = (data[rows].astype(np.float64) / e_inc[rows]).mean(axis=0)
        np.testing.assert_allclose(fitted.fraction_by_energy[i], expected, rtol=1e-7, atol=2e-9)
        assert fitted.ln_e_by_energy[i] == pytest.approx(np.log(e_inc[rows, 0].astype(np.float64)).mean(),
                                                         abs=1e-6)
    # the bins' events weigh up to the whole fit
    np.testing.assert_allclose((fitted.fraction_by_energy * fitted.n_by_energy[:, None]).sum(axis=0) / 600,
                               fitted.mean_fraction, rtol=1e-6, atol=2e-9)
    again = LogRatioTransform.from_dict(fitted.to_dict())
    np.testing.assert_array_equal(again.fraction_by_energy, fitted.fraction_by_energy)
    np.testing.assert_array_equal(again.n_by_energy, fitted.n_by_energy)


def _energy_bins_of(t: LogRatioTransform) -> tuple[int, int]:
    """(number of energy bins, events in them)."""
    assert t.n_by_energy is not None
    return len(t.n_by_energy), int(t.n_by_energy.sum())


def test_a_fit_smaller_than_one_energy_bin_keeps_one_bin(showers_600: tuple[np.ndarray, np.ndarray]) -> None:
    data, e_inc = showers_600
    t = LogRatioTransform.fit(data[:150], e_inc[:150], threshold=THRESHOLD)
    assert _energy_bins_of(t) == (1, 150)
    assert t.fraction_by_energy is not None and t.mean_fraction is not None
    np.testing.assert_array_equal(t.fraction_by_energy[0], t.mean_fraction)
    # older transforms have no bins; a dict with only some of the three is refused
    d = t.to_dict()
    old = {k: v for k, v in d.items() if k not in ("fraction_by_energy", "ln_e_by_energy", "n_by_energy")}
    assert LogRatioTransform.from_dict(old).fraction_by_energy is None
    with pytest.raises(ValueError, match="come together"):
        LogRatioTransform.from_dict({**old, "n_by_energy": d["n_by_energy"]})


def test_condition_maps_log_energy_range_onto_minus_one_to_one(fitted: LogRatioTransform) -> None:
    lo, hi = fitted.e_min_mev, fitted.e_max_mev
    c = fitted.forward_cond(np.array([[lo], [np.sqrt(lo * hi)], [hi], [lo**2 / hi]]))
    np.testing.assert_allclose(c[:, 0], [-1.0, 0.0, 1.0, -3.0], atol=1e-6)


def test_single_incident_energy_gives_finite_condition() -> None:
    data = np.full((4, 3), 10.0, dtype=np.float32)
    e_inc = np.full((4, 1), 1000.0, dtype=np.float32)
    t = LogRatioTransform.fit(data, e_inc, threshold=THRESHOLD)
    x, c = t.forward(data, e_inc)
    assert np.all(c == -1.0) and np.all(x == 0.0)
    np.testing.assert_allclose(t.inverse(x, e_inc), data, rtol=1e-6)


def test_inverse_applies_readout_threshold_and_stays_finite() -> None:
    e_inc = np.array([[1000.0], [1000.0]], dtype=np.float32)
    data = np.array([[0.0, 1.0], [0.5, 100.0]], dtype=np.float32)
    t = LogRatioTransform.fit(data, e_inc, threshold=THRESHOLD)
    # energies just below and just above the 15.15 keV threshold, mapped through the transform
    probe = np.array([[0.9 * THRESHOLD, 1.1 * THRESHOLD]] * 2, dtype=np.float32)
    x, _ = t.forward(probe, e_inc)
    back = t.inverse(x, e_inc)
    assert np.all(back[:, 0] == 0.0)
    np.testing.assert_allclose(back[:, 1], 1.1 * THRESHOLD, rtol=1e-5)
    wild = t.inverse(np.array([[1e6, -1e6], [np.float32(3e38), -3e38]], dtype=np.float32), e_inc)
    assert np.isfinite(wild).all() and np.all(wild[:, 1] == 0.0) and np.all(wild[:, 0] > 0)


def test_save_load_round_trip_is_exact(tmp_path: Path, fitted: LogRatioTransform,
                                       showers_600: tuple[np.ndarray, np.ndarray]) -> None:
    data, e_inc = showers_600
    path = tmp_path / "transform.json"
    save_transform(fitted, path)
    loaded = load_transform(path)
    assert json.loads(path.read_text())["name"] == "log_ratio"
    assert loaded.to_dict() == fitted.to_dict()
    for a, b in zip(loaded.forward(data, e_inc), fitted.forward(data, e_inc), strict=True):
        np.testing.assert_array_equal(a, b)
    assert isinstance(transform_from_dict(fitted.to_dict()), LogRatioTransform)
    with pytest.raises(OutputExistsError):
        save_transform(fitted, path)


@pytest.mark.parametrize(("text", "expected"), [
    ("{not json", "not valid JSON"),
    ('{"name": "sqrt"}', "unknown transform 'sqrt'"),
    ('{"name": "log_ratio", "eps": 1e-8}', "mean: missing transform parameter"),
    ("[1, 2]", "expected a JSON object"),
])
def test_load_errors_name_the_file(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(InputError, match=expected) as info:
        load_transform(path)
    assert str(path) in str(info.value)
