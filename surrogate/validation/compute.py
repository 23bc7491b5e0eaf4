"""Metric computation shared by the offline validation and the in-training quick metrics.

Both paths call the functions here, so a number logged during training and the same number in a
validation report are computed the same way. Seeds of the stochastic metrics derive from one integer
through ``np.random.SeedSequence``: every metric gets its own independent stream, and a rerun with the
same seed reproduces every number.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from surrogate.domains.base import Domain, HistogramSpec
from surrogate.metrics import classifier_test, fpd, kpd, prdc, separation_power_from_samples, standardise

if TYPE_CHECKING:
    from surrogate.config import ValidateConfig

# Order fixes each child seed; new streams go at the end so the earlier ones keep their seeds.
STREAMS = ("classifier_low_level", "classifier_high_level", "fpd", "kpd", "prdc", "samples")
FAMILY = re.compile(r"^(?P<family>.+)_(?P<index>\d+)$")  # "E_layer_12" -> family "E_layer", index 12
X1E3 = 1e3  # FPD and KPD are reported x 1e3, as in the CaloChallenge results
PRDC = ("precision", "recall", "density", "coverage")


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
    low_level: (N, D) the classifier's low-level inputs, or None where only cheap metrics run.
    """

    obs: Observables
    high_level: np.ndarray
    low_level: np.ndarray | None = None

    @classmethod
    def of(cls, domain: Domain, data: np.ndarray, cond: np.ndarray, *, low_level: bool) -> Prepared:
        obs = observables(domain, data, cond)
        return cls(obs, domain.high_level_inputs(obs.features),
                   domain.low_level_inputs(data, cond) if low_level else None)


def histogram_specs(domain: Domain, ref: Prepared, ref_cond: np.ndarray) -> list[HistogramSpec]:
    """The histograms every column is compared on, binned from reference A (the one place specs are made)."""
    return domain.histogram_specs(ref.obs.features, ref.obs.flat)


def compare(specs: list[HistogramSpec], ref: Prepared, other: Prepared, cfg: ValidateConfig, *,
            classifier: bool = True, tick: Callable[[str], None] | None = None,
            ) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Every metric of ``other`` against ``ref``: the one path for surrogate, floor and baselines alike.

    Returns (metrics, classifier details by input level). The seeds derive from ``cfg.seed`` alone, so
    every comparison against the same reference draws the same classifier initialisation, splits and
    bootstrap indices: differences between the columns of a report come from the samples, not the seeds.
    ``tick(label)`` is called after each expensive step (progress and timings).
    """
    def done(label: str) -> None:
        if tick is not None:
            tick(label)

    seeds = metric_seeds(cfg.seed)
    metrics: dict[str, float] = separation_powers(specs, ref.obs, other.obs)
    done("separation powers")
    details: dict[str, dict[str, float]] = {}
    if classifier:
        levels = {"low_level": (ref.low_level, other.low_level), "high_level": (ref.high_level, other.high_level)}
        for level, (x_ref, x_other) in levels.items():
            if x_ref is None or x_other is None:
                raise ValueError(f"classifier on {level} inputs: a sample was prepared without them")
            result = classifier_test(x_ref, x_other, hidden=cfg.classifier_hidden, epochs=cfg.classifier_epochs,
                                     lr=cfg.classifier_lr, batch_size=cfg.classifier_batch,
                                     min_steps_per_epoch=cfg.classifier_min_steps_per_epoch,
                                     patience=cfg.classifier_patience, dtype=cfg.classifier_dtype,
                                     seed=seeds[f"classifier_{level}"])
            details[level] = result
            metrics[f"auc_{level}"] = result["auc"]
            metrics[f"jsd_{level}"] = result["jsd"]
            done(f"classifier on {level.replace('_', '-')} inputs")
    metrics.update(fpd_x1e3(ref.high_level, other.high_level, min_samples=cfg.fpd_min_samples,
                            num_batches=cfg.fpd_batches, seed=seeds["fpd"]))
    done("FPD")
    metrics.update(kpd_x1e3(ref.high_level, other.high_level, num_batches=cfg.kpd_batches,
                            batch_size=cfg.kpd_batch_size, seed=seeds["kpd"]))
    done("KPD")
    metrics.update(prdc_metrics(ref.high_level, other.high_level, k=cfg.prdc_k, max_samples=cfg.prdc_max_samples,
                                seed=seeds["prdc"]))
    done("precision, recall, density, coverage")
    return metrics, details


def quick_metrics(domain: Domain, ref_data: np.ndarray, ref_cond: np.ndarray, gen_data: np.ndarray,
                  gen_cond: np.ndarray, cfg: ValidateConfig) -> dict[str, float]:
    """The cheap subset of the validation metrics, for use during training on a few thousand events.

    ref_data / gen_data: (N, n_features) and ref_cond / gen_cond: (N, n_cond) in the domain's physical
    units; ``cfg``: the run's validate settings (seed, FPD, KPD and PRDC settings), so a number logged
    during training is computed exactly as :func:`surrogate.validation.validate_files` computes it.
    Returns ``mean_separation_power``, ``max_separation_power``, ``sep_<name>`` of the global
    observables (not the per-layer families), ``fpd_x1e3``, ``fpd_x1e3_err``, ``kpd_x1e3``,
    ``kpd_x1e3_err``, ``precision``, ``recall``, ``density`` and ``coverage``: everything but the classifier.
    """
    ref = Prepared.of(domain, ref_data, ref_cond, low_level=False)
    gen = Prepared.of(domain, gen_data, gen_cond, low_level=False)
    specs = histogram_specs(domain, ref, ref_cond)
    metrics, _ = compare(specs, ref, gen, cfg, classifier=False)
    return headline_separations(metrics)
