"""Metric computation shared by the offline validation and the in-training quick metrics.

Both paths call the functions here, so a number logged during training and the same number in a
validation report are computed the same way. Which metrics run is the domain's choice: each domain lists
its :class:`Metric` s (``Domain.metrics``, e.g. :data:`STANDARD_METRICS` plus metrics of its own);
``validate`` runs all of them, in-training validation those marked ``in_training``. Seeds of the
stochastic metrics derive from one integer through ``np.random.SeedSequence``: every metric gets its own
independent stream, and a rerun with the same seed reproduces every number.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from surrogate.domains.base import Domain, HistogramSpec
from surrogate.metrics import classifier_test, fpd, kpd, prdc, separation_power_from_samples, standardise

if TYPE_CHECKING:
    from surrogate.config import ValidateConfig

# Order fixes each child seed; new streams go at the end so the earlier ones keep their seeds.
STREAMS = ("classifier_low_level", "classifier_high_level", "fpd", "kpd", "prdc", "samples", "fit_halves")
FAMILY = re.compile(r"^(?P<family>.+)_(?P<index>\d+)$")  # "flux_12" -> family "flux", index 12
X1E3 = 1e3  # FPD and KPD are reported x 1e3 (the convention of Kansal et al. 2023 and of published tables)
PRDC = ("precision", "recall", "density", "coverage")


def metric_seeds(seed: int) -> dict[str, int]:
    """One independent integer seed per stochastic metric, all derived from ``seed``."""
    children = np.random.SeedSequence(seed).spawn(len(STREAMS))
    return {name: int(child.generate_state(1)[0]) for name, child in zip(STREAMS, children, strict=True)}


def metric_seed(seed: int, name: str) -> int:
    """The seed of metric ``name``: its STREAMS child, or for a metric not in STREAMS one drawn from
    (seed, CRC-32 of the name), so adding a metric never moves another metric's seed."""
    streams = metric_seeds(seed)
    if name in streams:
        return streams[name]
    return int(np.random.SeedSequence([seed, zlib.crc32(name.encode())]).generate_state(1)[0])


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

    Per-index histograms (``<family>_0`` ... ``<family>_44``) are many; their mean stands for them in
    in-training logs, while global observables are kept individually.
    """
    return {k: v for k, v in seps.items()
            if not k.startswith("sep_") or FAMILY.match(k.removeprefix("sep_")) is None}


def fpd_x1e3(x_ref: np.ndarray, x_gen: np.ndarray, *, min_samples: int, num_batches: int = 20,
             seed: int) -> dict[str, float]:
    """FPD x 1e3 and its error on high-level inputs (max-abs normalised by the reference inside fpd)."""
    value, error = fpd(x_ref, x_gen, min_samples=min_samples, num_batches=num_batches, seed=seed)
    return {"fpd_x1e3": value * X1E3, "fpd_x1e3_err": error * X1E3}


def kpd_x1e3(x_ref: np.ndarray, x_gen: np.ndarray, *, num_batches: int, batch_size: int,
             seed: int) -> dict[str, float]:
    """KPD x 1e3 and its error on high-level inputs (max-abs normalised by the reference inside kpd)."""
    value, error = kpd(x_ref, x_gen, num_batches=num_batches, batch_size=batch_size, seed=seed)
    return {"kpd_x1e3": value * X1E3, "kpd_x1e3_err": error * X1E3}


def prdc_metrics(x_ref: np.ndarray, x_gen: np.ndarray, *, k: int, max_samples: int,
                 seed: int) -> dict[str, float]:
    """Precision, recall, density, coverage on high-level inputs standardised by the reference."""
    return prdc(*standardise(x_ref, x_gen), k=k, max_samples=max_samples, seed=seed)


@dataclass(frozen=True)
class Prepared:
    """One sample as the metrics see it: observables and classifier inputs.

    high_level: (N, F) the domain's high-level inputs (classifier, FPD, KPD, PRDC);
    low_level: (N, D) the classifier's low-level inputs, or None where only cheap metrics run;
    cond: (N, n_cond) the physical conditions (metrics that compare per condition, parameter recovery);
    fit: (low-level inputs (M, D), conditions (M, n_cond)) of a separate, larger sample of the same kind that
      a metric may train on (a classifier), so that the events above stay held out; None = none given;
    full: the same sample before the report subsampled it to the compared size, for metrics that see every
      event (Metric.every_event); None = these are all of its events.
    """

    obs: Observables
    high_level: np.ndarray
    low_level: np.ndarray | None = None
    cond: np.ndarray | None = None
    fit: tuple[np.ndarray, np.ndarray] | None = None
    full: Prepared | None = None

    @classmethod
    def of(cls, domain: Domain, data: np.ndarray, cond: np.ndarray, *, low_level: bool) -> Prepared:
        obs = observables(domain, data, cond)
        return cls(obs, domain.high_level_inputs(obs.features),
                   domain.low_level_inputs(data, cond) if low_level else None, cond)


def histogram_specs(domain: Domain, ref: Prepared, ref_cond: np.ndarray) -> list[HistogramSpec]:
    """The histograms every column is compared on, binned from reference A (the one place specs are made)."""
    return domain.histogram_specs(ref.obs.features, ref.obs.flat)


MetricResult = tuple[dict[str, float], dict[str, dict[str, Any]]]  # (values, details by name for the report)


@dataclass(frozen=True)
class Metric:
    """One entry of a domain's metric registry: ``compute(specs, ref, other, cfg, seed) -> (values, details)``.

    ``values`` are flat name -> float (the report's columns, MLflow metrics); ``details`` name -> dict of
    numbers for runs worth a table of their own (classifier trainings: AUC, epochs, optimiser steps).
    """

    name: str  # registry key and the name of the metric's seed stream (metric_seed)
    label: str  # progress and timing label
    headline: tuple[str, ...]  # values the report's summary lists, in order (others go to the full table)
    source: str  # "protocol": defined by the domain's reference protocol (Domain.protocol); "ours": added here
    in_training: bool  # cheap enough for the in-training validation
    compute: Callable[[list[HistogramSpec], Prepared, Prepared, ValidateConfig, int], MetricResult]
    # compares per-condition means, whose estimate is unbiased at any sample size: it sees every event of
    # the compared sample (Prepared.full), not the subsample of the floor's size (surrogate.validation.report)
    every_event: bool = False


def _separation(specs: list[HistogramSpec], ref: Prepared, other: Prepared, cfg: ValidateConfig,
                seed: int) -> MetricResult:
    return separation_powers(specs, ref.obs, other.obs), {}


def _classifier(level: str) -> Callable[[list[HistogramSpec], Prepared, Prepared, ValidateConfig, int],
                                        MetricResult]:
    def run(specs: list[HistogramSpec], ref: Prepared, other: Prepared, cfg: ValidateConfig,
            seed: int) -> MetricResult:
        x_ref, x_other = getattr(ref, level), getattr(other, level)
        if x_ref is None or x_other is None:
            raise ValueError(f"classifier on {level} inputs: a sample was prepared without them")
        result = classifier_test(x_ref, x_other, hidden=cfg.classifier_hidden, epochs=cfg.classifier_epochs,
                                 lr=cfg.classifier_lr, batch_size=cfg.classifier_batch,
                                 min_steps_per_epoch=cfg.classifier_min_steps_per_epoch,
                                 patience=cfg.classifier_patience, dtype=cfg.classifier_dtype, seed=seed)
        return {f"auc_{level}": result["auc"], f"jsd_{level}": result["jsd"]}, {level: result}
    return run


def _fpd(specs: list[HistogramSpec], ref: Prepared, other: Prepared, cfg: ValidateConfig,
         seed: int) -> MetricResult:
    return fpd_x1e3(ref.high_level, other.high_level, min_samples=cfg.fpd_min_samples, num_batches=cfg.fpd_batches,
                    seed=seed), {}


def _kpd(specs: list[HistogramSpec], ref: Prepared, other: Prepared, cfg: ValidateConfig,
         seed: int) -> MetricResult:
    return kpd_x1e3(ref.high_level, other.high_level, num_batches=cfg.kpd_batches, batch_size=cfg.kpd_batch_size,
                    seed=seed), {}


def _prdc(specs: list[HistogramSpec], ref: Prepared, other: Prepared, cfg: ValidateConfig,
          seed: int) -> MetricResult:
    return prdc_metrics(ref.high_level, other.high_level, k=cfg.prdc_k, max_samples=cfg.prdc_max_samples,
                        seed=seed), {}


SEPARATION = Metric("separation", "separation powers", ("mean_separation_power", "max_separation_power"),
                    "ours", True, _separation)
CLASSIFIER_LOW_LEVEL = Metric("classifier_low_level", "classifier on low-level inputs",
                              ("auc_low_level", "jsd_low_level"), "protocol", False, _classifier("low_level"))
CLASSIFIER_HIGH_LEVEL = Metric("classifier_high_level", "classifier on high-level inputs",
                               ("auc_high_level", "jsd_high_level"), "protocol", False, _classifier("high_level"))
FPD = Metric("fpd", "FPD", ("fpd_x1e3", "fpd_x1e3_err"), "protocol", True, _fpd)
KPD = Metric("kpd", "KPD", ("kpd_x1e3", "kpd_x1e3_err"), "protocol", True, _kpd)
PRDC_METRIC = Metric("prdc", "precision, recall, density, coverage", PRDC, "ours", True, _prdc)
# The metrics every domain gets unless it lists its own: separation powers of its histograms, the
# classifier test on low- and high-level inputs, FPD and KPD (Kansal et al. 2023) and PRDC (Naeem et al.
# 2020) on its high-level inputs.
STANDARD_METRICS = (SEPARATION, CLASSIFIER_LOW_LEVEL, CLASSIFIER_HIGH_LEVEL, FPD, KPD, PRDC_METRIC)


def headline_names(metrics: Sequence[Metric]) -> tuple[str, ...]:
    """The summary metrics of a registry, in order."""
    return tuple(name for metric in metrics for name in metric.headline)


def compare(specs: list[HistogramSpec], ref: Prepared, other: Prepared, cfg: ValidateConfig,
            metrics: Sequence[Metric] = STANDARD_METRICS, *, in_training_only: bool = False,
            tick: Callable[[str], None] | None = None) -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
    """Every metric of ``other`` against ``ref``: the one path for surrogate, floor and baselines alike.

    Returns (values, details by name). The seeds derive from ``cfg.seed`` alone, so every comparison
    against the same reference draws the same classifier initialisation, splits and bootstrap indices:
    differences between the columns of a report come from the samples, not the seeds. ``tick(label)``
    is called after each metric (progress and timings).
    """
    values: dict[str, float] = {}
    details: dict[str, dict[str, Any]] = {}
    for metric in metrics:
        if in_training_only and not metric.in_training:
            continue
        sample = other.full if metric.every_event and other.full is not None else other
        got, more = metric.compute(specs, ref, sample, cfg, metric_seed(cfg.seed, metric.name))
        values.update(got)
        details.update(more)
        if tick is not None:
            tick(metric.label)
    return values, details


def quick_metrics(domain: Domain, ref_data: np.ndarray, ref_cond: np.ndarray, gen_data: np.ndarray,
                  gen_cond: np.ndarray, cfg: ValidateConfig) -> dict[str, float]:
    """The cheap subset of the validation metrics, for use during training on a few thousand events.

    ref_data / gen_data: (N, n_features) and ref_cond / gen_cond: (N, n_cond) in the domain's physical
    units; ``cfg``: the run's validate settings (seed, FPD, KPD and PRDC settings), so a number logged
    during training is computed exactly as :func:`surrogate.validation.validate_files` computes it.
    Returns ``mean_separation_power``, ``max_separation_power``, ``sep_<name>`` of the global
    observables (not the per-layer families), ``fpd_x1e3``, ``fpd_x1e3_err``, ``kpd_x1e3``,
    ``kpd_x1e3_err``, ``precision``, ``recall``, ``density`` and ``coverage``: the domain's metrics marked
    ``in_training`` (for the standard registry, everything but the classifiers).
    """
    # with the low-level inputs: in-training metrics may read the events themselves (e.g. per-condition
    # statistics of images); those inputs are the events after the readout, as cheap as the features
    ref = Prepared.of(domain, ref_data, ref_cond, low_level=True)
    gen = Prepared.of(domain, gen_data, gen_cond, low_level=True)
    specs = histogram_specs(domain, ref, ref_cond)
    metrics, _ = compare(specs, ref, gen, cfg, domain.metrics, in_training_only=True)
    return headline_separations(metrics)
