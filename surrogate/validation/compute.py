"""Metric computation shared by the offline validation and the in-training quick metrics.

Both paths call the functions here, so a number logged during training and the same number in a
validation report are computed the same way. Seeds of the stochastic metrics derive from one integer
through ``np.random.SeedSequence``: every metric gets its own independent stream, and a rerun with the
same seed reproduces every number.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from surrogate.domains.base import Domain, HistogramSpec
from surrogate.metrics import fpd, kpd, separation_power_from_samples

STREAMS = ("classifier_low_level", "classifier_high_level", "fpd", "kpd")  # order fixes each child seed
FAMILY = re.compile(r"^(?P<family>.+)_(?P<index>\d+)$")  # "E_layer_12" -> family "E_layer", index 12
X1E3 = 1e3  # FPD and KPD are reported x 1e3, as in the CaloChallenge results


def metric_seeds(seed: int) -> dict[str, int]:
    """One independent integer seed per stochastic metric, all derived from ``seed``."""
    children = np.random.SeedSequence(seed).spawn(len(STREAMS))
    return {name: int(child.generate_state(1)[0]) for name, child in zip(STREAMS, children, strict=True)}


def cond_range(cond: np.ndarray) -> tuple[float, float]:
    """(min, max) of the first condition column of an (N, n_cond) array: the histogram range anchor."""
    first = np.asarray(cond, dtype=np.float64)[:, 0]
    return float(first.min()), float(first.max())


@dataclass(frozen=True)
class Observables:
    """Everything histogrammed for one sample: per-event features (each (N,)) and flat observables (1-D)."""

    features: dict[str, np.ndarray]
    flat: dict[str, np.ndarray]

    def values(self, name: str) -> np.ndarray:
        if name in self.features:
            return self.features[name]
        if name in self.flat:
            return self.flat[name]
        raise KeyError(f"no observable {name!r} (histogram specs and features disagree)")


def observables(domain: Domain, data: np.ndarray, cond: np.ndarray) -> Observables:
    return Observables(features=domain.features(data, cond), flat=domain.flat_observables(data, cond))


def separation_powers(specs: list[HistogramSpec], ref: Observables, gen: Observables) -> dict[str, float]:
    """``sep_<name>`` for every spec, plus ``mean_separation_power`` and ``max_separation_power``.

    A histogram empty in either sample scores NaN (as in the CaloChallenge); the mean and maximum skip
    those, and ``n_nan_separation_power`` says how many there were. The mean over all histograms is
    ours (the challenge publishes none).
    """
    seps = {f"sep_{s.name}": separation_power_from_samples(ref.values(s.name), gen.values(s.name), s.bins)
            for s in specs}
    values = np.array(list(seps.values()))
    finite = values[~np.isnan(values)]
    return {"mean_separation_power": float(finite.mean()) if finite.size else float("nan"),
            "max_separation_power": float(finite.max()) if finite.size else float("nan"),
            "n_nan_separation_power": float(values.size - finite.size), **seps}


def headline_separations(seps: Mapping[str, float]) -> dict[str, float]:
    """The summary and the separation powers of observables that are not one of a per-bin family.

    Per-layer histograms (``E_layer_0`` ... ``E_layer_44``) are many; their mean stands for them in
    in-training logs, while global observables such as ``E_ratio`` are kept individually.
    """
    return {k: v for k, v in seps.items()
            if not k.startswith("sep_") or FAMILY.match(k.removeprefix("sep_")) is None}


def fpd_x1e3(x_ref: np.ndarray, x_gen: np.ndarray, *, min_samples: int, seed: int) -> dict[str, float]:
    """FPD x 1e3 and its error on high-level inputs (max-abs normalised by the reference inside fpd)."""
    value, error = fpd(x_ref, x_gen, min_samples=min_samples, seed=seed)
    return {"fpd_x1e3": value * X1E3, "fpd_x1e3_err": error * X1E3}


def kpd_x1e3(x_ref: np.ndarray, x_gen: np.ndarray, *, num_batches: int, batch_size: int,
             seed: int) -> dict[str, float]:
    """KPD x 1e3 and its error on high-level inputs (max-abs normalised by the reference inside kpd)."""
    value, error = kpd(x_ref, x_gen, num_batches=num_batches, batch_size=batch_size, seed=seed)
    return {"kpd_x1e3": value * X1E3, "kpd_x1e3_err": error * X1E3}


def quick_metrics(domain: Domain, ref_data: np.ndarray, ref_cond: np.ndarray, gen_data: np.ndarray,
                  gen_cond: np.ndarray, *, seed: int, fpd_min_samples: int = 10000) -> dict[str, float]:
    """The cheap subset of the validation metrics, for use during training on a few thousand events.

    ref_data / gen_data: (N, n_features) and ref_cond / gen_cond: (N, n_cond) in the domain's physical
    units. Returns ``mean_separation_power``, ``max_separation_power``, ``n_nan_separation_power``,
    ``sep_<name>`` of the global
    observables (not the per-layer families), ``fpd_x1e3`` and ``fpd_x1e3_err``; the same functions
    and seed streams as :func:`surrogate.validation.validate_files`.
    """
    ref = observables(domain, ref_data, ref_cond)
    gen = observables(domain, gen_data, gen_cond)
    specs = domain.histogram_specs(ref.features, ref.flat)
    out = headline_separations(separation_powers(specs, ref, gen))
    out.update(fpd_x1e3(domain.high_level_inputs(ref.features), domain.high_level_inputs(gen.features),
                        min_samples=fpd_min_samples, seed=metric_seeds(seed)["fpd"]))
    return out
