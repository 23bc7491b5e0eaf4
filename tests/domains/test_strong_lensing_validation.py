"""What a strong-lensing report measures (surrogate/domains/strong_lensing/validation.py), on analytic rings.

Rings of known radius theta_E (a Gaussian annulus plus sky noise; 32 x 32 pixels, so theta_E up to 1.2")
stand in for lenses: the features must
find the radius, the per-bin metric must see a ring 10% too large in one theta_E bin only, and the
thresholds are the domain's own section of the config.
"""

from __future__ import annotations

import numpy as np
import pytest

from surrogate.config import Limit, ValidateConfig, load_config
from surrogate.domains.strong_lensing import DOMAIN, validation
from surrogate.errors import ConfigError
from surrogate.validation.compute import Prepared, compare, headline_names, histogram_specs

SIDE = 32
PIXEL = DOMAIN.pixel_scale  # 0.101 arcsec


def _rings(theta: np.ndarray, seed: int, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, SIDE*SIDE) of rings of radius scale * theta_E with noise; conditions (n, 9)."""
    rng = np.random.default_rng(seed)
    n = len(theta)
    cond = np.zeros((n, DOMAIN.n_cond), dtype=np.float32)
    cond[:, 0] = theta
    coords = (np.arange(SIDE) - (SIDE - 1) / 2) * PIXEL
    r = np.hypot(*np.meshgrid(coords, coords))
    images = 0.5 * np.exp(-0.5 * ((r[None] - scale * theta[:, None, None]) / 0.08) ** 2)
    images += rng.normal(0, 0.0109, images.shape)
    return images.reshape(n, -1).astype(np.float32), cond


def _prepared(data: np.ndarray, cond: np.ndarray) -> Prepared:
    return Prepared.of(DOMAIN, data, cond, low_level=True)


def test_features_find_the_ring_and_label_profiles() -> None:
    theta = np.linspace(0.6, 1.2, 12)
    data, cond = _rings(theta, seed=0)
    feats = DOMAIN.features(data, cond)
    assert np.abs(feats["ring_radius"] - theta).max() < 0.05
    # the azimuthal profile peaks in the annulus holding the ring
    profile = np.stack([feats[f"profile_{i}"] for i in range(validation.N_PROFILE)], axis=1)
    r_edges = np.linspace(0, SIDE * PIXEL / 2, validation.N_PROFILE + 1)
    peak = r_edges[np.argmax(profile, axis=1)]
    assert np.all(np.abs(peak + 0.5 * (r_edges[1] - r_edges[0]) - theta) < 0.15)
    layout = validation.feature_layout((SIDE, SIDE), PIXEL)
    assert set(layout.families) == {"profile", "power"} and layout.families["profile"].log_scale
    x = DOMAIN.high_level_inputs(feats)
    assert x.shape == (12, len(layout.scalars) + validation.N_PROFILE + validation.N_POWER)
    assert np.isfinite(x).all()


def test_histograms_hold_the_reference_and_pixels() -> None:
    data, cond = _rings(np.linspace(0.6, 1.2, 40), seed=1)
    ref = _prepared(data, cond)
    specs = histogram_specs(DOMAIN, ref, cond)
    names = {s.name for s in specs}
    assert {"ring_radius", "total_flux", "pixel_asinh"} <= names
    for spec in specs:
        values = ref.obs.values(spec.name)
        inside = (values >= spec.bins[0]) & (values <= spec.bins[-1])
        assert inside.mean() >= 0.9, spec.name  # bins from the reference's 0.5-99.5 percentiles (40 events)
        assert spec.source == "ours"


def test_per_bin_metric_sees_a_ring_too_large_at_small_theta_only() -> None:
    rng = np.random.default_rng(2)
    theta = rng.uniform(0.6, 1.2, 300)
    ref = _prepared(*_rings(theta, seed=3))
    same = _prepared(*_rings(theta, seed=4))
    # rings 10% too large below theta_E = 0.78 (the lowest tercile of U(0.6, 1.2) ends near 0.8)
    data, cond = _rings(theta, seed=5, scale=1.0)
    big, _ = _rings(theta, seed=5, scale=1.1)
    low = theta < 0.78
    data[low] = big[low]
    wrong = _prepared(data, cond)
    cfg = ValidateConfig()
    values_same, _ = compare([], ref, same, cfg, [validation.PER_THETA_BIN])
    values_wrong, _ = compare([], ref, wrong, cfg, [validation.PER_THETA_BIN])
    assert all(abs(values_same[f"ring_radius_shift_pct_bin{k}"]) < 1.5 for k in range(3))
    assert all(abs(values_same[f"flux_ratio_bin{k}"] - 1) < 0.03 for k in range(3))
    assert 7 < values_wrong["ring_radius_shift_pct_bin0"] < 11
    assert abs(values_wrong["ring_radius_shift_pct_bin2"]) < 1.5


def test_registry_and_thresholds_are_the_domains() -> None:
    names = [m.name for m in DOMAIN.metrics]
    assert names[:4] == ["separation", "cnn_classifier", "parameter_recovery", "per_theta_bin"]
    assert all(m.source == "ours" for m in DOMAIN.metrics)
    headline = headline_names(DOMAIN.metrics)
    thresholds = DOMAIN.Thresholds()
    assert all(name in headline for name in vars(thresholds))
    cfg = load_config(None, ["domain=strong_lensing", "validate.thresholds.auc_cnn=0.7",
                             "validate.thresholds.theta_E_scatter_ratio=2x floor"])
    assert cfg.validate.thresholds.auc_cnn == Limit(0.7)
    assert cfg.validate.thresholds.theta_E_scatter_ratio == Limit(2.0, of_floor=True)
    with pytest.raises(ConfigError, match=r"validate\.thresholds\.auc_cnn: expected a number in"):
        load_config(None, ["domain=strong_lensing", "validate.thresholds.auc_cnn=1.5"])
    with pytest.raises(ConfigError, match=r"validate\.thresholds\.auc_low_level: unknown config key"):
        load_config(None, ["domain=strong_lensing", "validate.thresholds.auc_low_level=0.8"])
