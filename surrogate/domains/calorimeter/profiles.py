"""The mean shower against the reference's: longitudinal and radial profiles, widths, total response.

Issue 5's profile bars, as a metric of the calorimeter's registry (ours: the CaloChallenge publishes
separation powers of these histograms, not the deviation of their means). Each bar is the worst relative
deviation over the layers (radial bins) that hold at least ``MIN_SHARE`` of the reference's mean energy:

- ``longitudinal_max_dev_pct``: mean energy per layer, |<E_gen> / <E_ref> - 1|, in %;
- ``radial_max_dev_pct``: mean energy per radial bin (the challenge's r bins, summed over layers);
- ``width_{x,y,r}_max_dev_pct``: mean shower width per layer (the challenge's features);
- ``response_mean_dev_pct`` / ``response_std_dev_pct``: mean and standard deviation of E_tot / E_inc.

Beside each ``..._pct`` value, ``..._at`` says where the worst case is (layer or radial bin; -1 for the
response). Computed from the validation protocol's features, so the 15.15 keV readout threshold applies.
The limits the issue sets (``BARS``) sit just above Geant4's own statistical floor at the quickstart's size
(400 validation showers against 800 test showers: 0.8% response, 6% longitudinal, 5% radial, 12% widths).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from surrogate.config import NON_NEGATIVE, Limit, Range, Thresholds
from surrogate.validation.compute import STANDARD_METRICS, Metric, MetricResult, Prepared

if TYPE_CHECKING:
    from surrogate.config import ValidateConfig
    from surrogate.domains.base import HistogramSpec

MIN_SHARE = 0.01  # a layer / radial bin counts when it holds at least 1% of the reference's mean energy
BARS = {"longitudinal": 10.0, "radial": 15.0, "width_x": 20.0, "width_y": 20.0, "width_r": 20.0,
        "response_mean": 1.5, "response_std": 15.0}  # issue 5, item 4, in %


def _family(features: Mapping[str, np.ndarray], prefix: str) -> np.ndarray:
    """(K,) mean of ``<prefix>0`` .. ``<prefix>K-1`` over events, float64."""
    n = 0
    while f"{prefix}{n}" in features:
        n += 1
    return np.array([np.mean(np.asarray(features[f"{prefix}{i}"], dtype=np.float64)) for i in range(n)])


def _worst(dev: np.ndarray, where: np.ndarray) -> tuple[float, int]:
    """(largest |dev| in %, its index in ``where``); (NaN, -1) for no entries."""
    if dev.size == 0:
        return float("nan"), -1
    i = int(np.nanargmax(np.abs(dev))) if np.isfinite(dev).any() else 0
    return float(100.0 * abs(dev[i])), int(where[i])


def profile_agreement(ref: Mapping[str, np.ndarray], gen: Mapping[str, np.ndarray]) -> dict[str, tuple[float, int]]:
    """Each bar of ``BARS``: (worst deviation in %, layer / radial bin where it is, -1 for the response).

    ``ref`` / ``gen``: per-event features of the validation protocol (``E_layer_<i>``, ``E_radial_<k>``,
    ``width_{x,y,r}_<i>``, ``E_ratio``), as :func:`surrogate.domains.calorimeter.features.high_level_features`
    returns them.
    """
    e_ref, e_gen = _family(ref, "E_layer_"), _family(gen, "E_layer_")
    r_ref, r_gen = _family(ref, "E_radial_"), _family(gen, "E_radial_")
    layers = np.flatnonzero(e_ref / e_ref.sum() >= MIN_SHARE)
    bins = np.flatnonzero(r_ref / r_ref.sum() >= MIN_SHARE)
    out = {"longitudinal": _worst(e_gen[layers] / e_ref[layers] - 1.0, layers),
           "radial": _worst(r_gen[bins] / r_ref[bins] - 1.0, bins)}
    for axis in "xyr":
        w_ref = _family(ref, f"width_{axis}_")[layers]
        w_gen = _family(gen, f"width_{axis}_")[layers]
        out[f"width_{axis}"] = _worst(w_gen / w_ref - 1.0, layers)
    resp_ref = np.asarray(ref["E_ratio"], dtype=np.float64)
    resp_gen = np.asarray(gen["E_ratio"], dtype=np.float64)
    out["response_mean"] = (float(100.0 * abs(resp_gen.mean() / resp_ref.mean() - 1.0)), -1)
    out["response_std"] = (float(100.0 * abs(resp_gen.std() / resp_ref.std() - 1.0)), -1)
    return out


# each bar's metric name: the worst case over layers / bins ("max"), or the one response number
METRIC = {name: f"{name}_dev_pct" if name.startswith("response") else f"{name}_max_dev_pct" for name in BARS}
HEADLINE = tuple(METRIC.values())


def _profiles(specs: list[HistogramSpec], ref: Prepared, other: Prepared, cfg: ValidateConfig,
              seed: int) -> MetricResult:
    values: dict[str, float] = {}
    for name, (dev, where) in profile_agreement(ref.obs.features, other.obs.features).items():
        values[METRIC[name]] = dev
        values[f"{name}_at"] = float(where)
    return values, {}


PROFILES = Metric("profiles", "mean profiles", HEADLINE, "ours", True, _profiles)
METRICS = (*STANDARD_METRICS, PROFILES)  # the calorimeter's registry


@dataclass(frozen=True)
class CaloThresholds(Thresholds):
    """The standard metrics' limits plus the profile bars (``BARS``, in %), absolute by default."""

    longitudinal_max_dev_pct: Limit = Limit(BARS["longitudinal"])
    radial_max_dev_pct: Limit = Limit(BARS["radial"])
    width_x_max_dev_pct: Limit = Limit(BARS["width_x"])
    width_y_max_dev_pct: Limit = Limit(BARS["width_y"])
    width_r_max_dev_pct: Limit = Limit(BARS["width_r"])
    response_mean_dev_pct: Limit = Limit(BARS["response_mean"])
    response_std_dev_pct: Limit = Limit(BARS["response_std"])

    RANGES: ClassVar[dict[str, Range]] = {**Thresholds.RANGES, **dict.fromkeys(HEADLINE, NON_NEGATIVE)}

