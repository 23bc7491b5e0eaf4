"""Offline validation of a generated file against a reference file: metrics beside their floor, plots, verdict.

The metrics are the domain's registry (``Domain.metrics``; surrogate.validation.compute): for the
standard registry, separation power of every feature histogram, the classifier test on low- and
high-level inputs, FPD and KPD (x 1e3) on max-abs-normalised high-level inputs, precision, recall,
density and coverage (Naeem et al. 2020) on standardised high-level inputs, and the mean and maximum
separation power. Each is labelled with where its definition comes from: the domain's published
protocol (``Domain.protocol``) or "ours".

The floor. Every metric is computed twice at the same sample size: reference A against the generated
sample (the surrogate's value), and reference A against reference B, an independent reference sample
(the floor: what a perfect surrogate scores at this statistics). B is a second reference file
(``reference_b``; in a run folder the validation split, reference_val.h5, against the test split), or
else a seeded half of the reference file, A being the other half. The generated sample and every
baseline are subsampled (seeded, without replacement) to B's size n, so all columns compare n events
against the same A with the same seeds: the columns differ by their samples only. Why not compare the
full generated sample? Most metrics are biased upward at small n (FPD by ~d/n, separation powers by
the histogram noise, the classifier by overfitting): a floor at n events is only a floor for a
comparison at n events. Where the generated file holds exactly the reference's conditions row by row,
the generated events kept are those at B's rows, so surrogate and floor see the same conditions.
The exception: a metric of per-condition means (``Metric.every_event``, e.g. a power spectrum per
condition), whose estimate is unbiased at any n and whose noise is what its bar must stay
clear of, sees every event of B and of the generated file, as do the domain's plots when it has one.

Training samples (``fit_samples``: a reference sample and a generated sample at the same conditions row by
row, e.g. the training split and images generated for its conditions). Classifiers learn better from
thousands of events than from a split of the few hundred compared; with these, a metric may train on
them and test on the compared samples. The rows are split in two seeded halves F1 and F2: reference A
trains against F2 of the reference for the floor and against F2 of the generated sample for the
surrogate, always with F1 of the reference on its side; so both columns train on the same number of
events and test on the same held-out ones. Baselines have no training sample (their metrics train on a
split of the compared events, as without ``fit_samples``).

Outputs in ``out_dir``: ``report.html`` (self-contained: plots embedded as base64, so it renders inside
MLflow's artifact viewer), ``metrics.json``, the PNGs, and ``observables_<sample>.nc`` (per-event
features and mean profiles as labelled netCDF arrays, :mod:`surrogate.validation.observables`). This
module does not log anywhere; ``surrogate.tracking`` logs the folder.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import math
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from surrogate.config import Limit, Thresholds, ValidateConfig, config_to_dict
from surrogate.data.hdf5 import open_h5
from surrogate.domains.base import Domain, HistogramSpec
from surrogate.errors import InputError, OutputExistsError
from surrogate.metrics import fpd_sizes
from surrogate.metrics.classifier import SPLIT
from surrogate.validation import plots
from surrogate.validation.compute import (
    Metric,
    Observables,
    Prepared,
    compare,
    cond_range,
    headline_names,
    headline_separations,
    histogram_specs,
    metric_seeds,
)
from surrogate.validation.observables import save_observables

REPORT = "report.html"
METRICS = "metrics.json"
FLOOR = "floor"  # the column name (and MLflow prefix) of reference B against reference A
SURROGATE = "surrogate"
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")  # a baseline name: a prefix of MLflow metric names
RESERVED = {FLOOR, SURROGATE, "generated", "reference", "reference_b"}
MIN_EVENTS = 10  # per compared sample: the classifier's 60/20/20 split needs >= 2 events per part
OURS = "ours"
ERRORS = {"fpd_x1e3": "fpd_x1e3_err", "kpd_x1e3": "kpd_x1e3_err"}  # metrics reported with an error


def sources(domain: Domain, metrics: Sequence[Metric], specs: Sequence[HistogramSpec]) -> dict[str, str]:
    """Where each summary metric's and each histogram's definition comes from: the domain's protocol
    (e.g. "CaloChallenge") or "ours" (Metric.source, HistogramSpec.source)."""
    def label(source: str) -> str:
        return domain.protocol if source == "protocol" else OURS if source == "ours" else source or "unlabelled"

    return ({f"sep_{s.name}": label(s.source) for s in specs}
            | {name: label(m.source) for m in metrics for name in m.headline if not name.endswith("_err")})


@dataclass(frozen=True)
class Check:
    """The verdict on one thresholded metric."""

    metric: str
    value: float  # the surrogate's value
    floor: float  # the same metric, reference B against reference A
    limit: Limit  # as configured
    bound: float  # the numeric threshold this limit gave (pass if value <= bound)
    passed: bool
    rule: str  # how the bound was set: "absolute" or "3x floor 1716" (with the floor's value)
    reason: str  # one line: value, comparison, bound and the rule that set it


def verdict(metrics: Mapping[str, float], floor: Mapping[str, float], thresholds: Thresholds) -> list[Check]:
    """One :class:`Check` per threshold field (field name = metric name); NaN fails.

    A floor multiple k gives the bound k x floor. A floor at or below its own error estimate (KPD's
    unbiased estimator can be at or below zero) is replaced by that error, so the bound stays a
    positive multiple of the statistical resolution instead of becoming 0 or negative.
    """
    checks = []
    for spec in dataclasses.fields(thresholds):
        name = spec.name
        limit: Limit = getattr(thresholds, name)
        value, base = float(metrics[name]), float(floor[name])
        rule = "absolute"
        if limit.of_floor:
            err = floor.get(ERRORS.get(name, ""), float("nan"))
            if not math.isnan(err) and base < err:
                rule = f"{limit.value:g}x the floor's error {err:.4g} (floor {base:.4g} is below it)"
                base = float(err)
            else:
                rule = f"{limit.value:g}x floor {base:.4g}"
        bound = limit.bound(base)
        if math.isnan(value) or math.isnan(bound):
            passed = False
            reason = f"{name} is NaN" if math.isnan(value) else f"{name}: the floor is NaN"
            reason += f" (limit {limit})"
        else:
            passed = value <= bound
            reason = f"{name} = {value:.4g} {'<=' if passed else '>'} {bound:.4g} ({rule})"
        checks.append(Check(name, value, float(floor[name]), limit, bound, passed, rule, reason))
    return checks


@dataclass(frozen=True)
class ValidationReport:
    """The outcome of :func:`validate_files`.

    metrics: the surrogate's metrics, flat name -> value (auc_low_level, jsd_low_level, auc_high_level,
      jsd_high_level, fpd_x1e3, fpd_x1e3_err, kpd_x1e3, kpd_x1e3_err, mean_separation_power,
      max_separation_power, precision, recall, density, coverage, sep_<histogram>).
    floor: the same names for reference B against reference A.
    baselines: baseline name -> the same names for that baseline.
    checks: the verdict per thresholded metric; passed: all of them passed; failures: their reasons.
    """

    metrics: dict[str, float]
    floor: dict[str, float]
    baselines: dict[str, dict[str, float]]
    checks: tuple[Check, ...]
    passed: bool
    failures: list[str]
    report_path: Path
    metrics_path: Path
    plot_paths: tuple[Path, ...]
    observables_paths: tuple[Path, ...]
    out_dir: Path

    def flat_metrics(self) -> dict[str, float]:
        """Every column as one dict, for MLflow: surrogate names, ``floor_<name>``, ``<baseline>_<name>``.

        The surrogate's metrics all; of the floor and the baselines the summaries and the separation powers
        of the global observables (headline_separations): their 362 per-layer separation powers each
        would triple what MLflow's run page lists, and they are in metrics.json and the report.
        """
        out = dict(self.metrics)
        out.update({f"{FLOOR}_{k}": v for k, v in headline_separations(self.floor).items()})
        for name, values in self.baselines.items():
            out.update({f"{name}_{k}": v for k, v in headline_separations(values).items()})
        return out


def _file_attrs(path: str | Path) -> dict[str, str]:
    with open_h5(path) as f:
        return {key: _short(f.attrs[key]) for key in sorted(f.attrs)}


def _short(value: Any, limit: int = 300) -> str:
    text = value.decode() if isinstance(value, bytes) else str(value)
    return text if len(text) <= limit else text[:limit] + " ..."


def baseline_name(path: str | Path) -> str:
    """``generate/baseline_<name>.h5`` -> ``<name>``: the file stem without a ``baseline_`` prefix."""
    name = Path(path).stem.removeprefix("baseline_")
    check_baseline_name(name, path)
    return name


def check_baseline_name(name: str, path: str | Path) -> None:
    """A baseline's name prefixes its MLflow metrics (``<name>_fpd_x1e3``): letters, digits, underscores."""
    if not NAME.match(name) or name in RESERVED:
        raise InputError(path, None, f"baseline name {name!r}: expected letters, digits and underscores, "
                         f"starting with a letter, other than {', '.join(sorted(RESERVED))}")


@dataclass
class _Sample:
    """One input file, read in full (data (N, F), cond (N, C) physical units) with its features."""

    role: str  # reference, reference_b, generated, or the baseline's name
    path: Path
    data: np.ndarray
    cond: np.ndarray
    features: dict[str, np.ndarray] = field(default_factory=dict)

    def events(self, rows: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(data, cond) at ``rows`` (all if None)."""
        return (self.data, self.cond) if rows is None else (self.data[rows], self.cond[rows])

    def prepared(self, domain: Domain, rows: np.ndarray | None) -> Prepared:
        """The metrics' view of the events at ``rows`` (all if None), features reused, not recomputed."""
        if rows is None:
            return Prepared.of(domain, self.data, self.cond, low_level=True)
        data, cond = self.data[rows], self.cond[rows]
        features = {k: v[rows] for k, v in self.features.items()}
        obs = Observables(features=features, flat=domain.flat_observables(data, cond))
        return Prepared(obs, domain.high_level_inputs(features), domain.low_level_inputs(data, cond), cond)


def _rows(n_total: int, n: int, rng: np.random.Generator) -> np.ndarray | None:
    """Sorted rows of a seeded subsample of n of n_total events without replacement; None = all of them."""
    return None if n >= n_total else np.sort(rng.choice(n_total, n, replace=False))


def validate_files(domain: Domain, generated_path: str | Path, reference_path: str | Path,
                   cfg: ValidateConfig, out_dir: Path, *, reference_b_path: str | Path | None = None,
                   baselines: Mapping[str, str | Path] | None = None,
                   fit_samples: tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
                   progress: bool = True) -> ValidationReport:
    """Compare a generated file (and baselines) with a reference file; the floor beside; report to ``out_dir``.

    reference_b_path: an independent reference sample for the floor; None = split the reference in two
    seeded halves (module docstring). baselines: name -> file of other generated samples (e.g.
    ``{"<name>": "generate/baseline_<name>.h5"}``), scored with every metric and shown beside the
    surrogate; only the surrogate gets a verdict. Every file is read with
    ``domain.read_events(path, cfg.max_events)`` and must share the condition layout. Refuses to
    overwrite an existing report in ``out_dir``. ``fit_samples``: ((reference data, cond), (generated
    data, cond)) at the same conditions row by row, the training samples (module docstring). Stochastic
    metrics are seeded from ``cfg.seed``: a rerun gives identical numbers.
    """
    from tqdm import tqdm

    baselines = dict(baselines or {})
    for name, path in baselines.items():
        check_baseline_name(name, path)
    out_dir = Path(out_dir)
    for name in (REPORT, METRICS):
        if (out_dir / name).exists():
            raise OutputExistsError(out_dir / name)

    t = time.perf_counter()
    timings: dict[str, float] = {}
    paths = {"reference": Path(reference_path), "generated": Path(generated_path),
             **({"reference_b": Path(reference_b_path)} if reference_b_path is not None else {}),
             **{name: Path(p) for name, p in baselines.items()}}
    samples = {role: _Sample(role, path, *domain.read_events(path, cfg.max_events)) for role, path in paths.items()}
    n_cond = samples["reference"].cond.shape[1]
    for sample in samples.values():
        if sample.cond.shape[1] != n_cond:
            raise InputError(sample.path, None, f"{sample.cond.shape[1]} condition columns per event, but the "
                             f"reference {reference_path} has {n_cond}")
    out_dir.mkdir(parents=True, exist_ok=True)
    for sample in samples.values():
        sample.features = domain.features(sample.data, sample.cond)
    timings["read and features"] = time.perf_counter() - t

    # ---- the samples each comparison sees (module docstring) ----
    rng = np.random.default_rng(metric_seeds(cfg.seed)["samples"])
    ref = samples["reference"]
    if "reference_b" in samples:
        a_rows: np.ndarray | None = None
        b_sample, b_rows = samples["reference_b"], None
        floor_method = f"reference {ref.path} against a second reference file {samples['reference_b'].path}"
    else:
        if len(ref.cond) < 20:
            raise InputError(ref.path, None, f"{len(ref.cond)} events: too few to split into two halves "
                             "for the floor (at least 20), or set a second reference file")
        order = rng.permutation(len(ref.cond))
        half = len(order) // 2
        a_rows, b_rows = np.sort(order[:half]), np.sort(order[half:2 * half])
        b_sample = ref
        floor_method = f"two seeded halves of the reference {ref.path}, {half} events each"
    n_b = len(b_sample.cond) if b_rows is None else len(b_rows)
    others = {"generated": samples["generated"], **{name: samples[name] for name in baselines}}
    n = min([n_b] + [len(s.cond) for s in others.values()])
    if n <= max(cfg.prdc_k, MIN_EVENTS):
        smallest = min([b_sample, *others.values()], key=lambda s: len(s.cond))
        raise InputError(smallest.path, None, f"{n} events per compared sample (after any split); expected more "
                         f"than {max(cfg.prdc_k, MIN_EVENTS)} (the classifier's splits, validate.prdc_k)")
    b_keep = _rows(n_b, n, rng)
    floor_rows = b_keep if b_rows is None else (b_rows if b_keep is None else b_rows[b_keep])
    rows: dict[str, np.ndarray | None] = {FLOOR: floor_rows}
    for role, sample in others.items():
        # A generated file made for the reference's conditions keeps the events at the floor's rows.
        paired = (b_rows is not None and len(sample.cond) == len(ref.cond)
                  and np.array_equal(sample.cond, ref.cond))
        rows[role] = floor_rows if paired else _rows(len(sample.cond), n, rng)

    ref_a = ref.prepared(domain, a_rows)
    specs = histogram_specs(domain, ref_a, ref.cond if a_rows is None else ref.cond[a_rows])
    columns: dict[str, Prepared] = {FLOOR: b_sample.prepared(domain, rows[FLOOR]),
                                    SURROGATE: samples["generated"].prepared(domain, rows["generated"])}
    columns.update({name: samples[name].prepared(domain, rows[name]) for name in baselines})
    # metrics of per-condition means see every event of a compared sample: all of B, the whole generated file
    every_event = any(metric.every_event for metric in domain.metrics)
    whole = {FLOOR: (b_sample, b_rows), SURROGATE: (samples["generated"], None),
             **{name: (samples[name], None) for name in baselines}}
    subsampled = {FLOOR: b_keep is not None, SURROGATE: rows["generated"] is not None,
                  **{name: rows[name] is not None for name in baselines}}
    if every_event:
        for column, (sample, sample_rows) in whole.items():
            if subsampled[column]:
                columns[column] = dataclasses.replace(columns[column], full=sample.prepared(domain, sample_rows))
    n_ref = len(ref_a.high_level)
    n_fit = 0
    if fit_samples is not None:
        (fit_ref, fit_ref_cond), (fit_gen, fit_gen_cond) = fit_samples
        if fit_ref.shape != fit_gen.shape or not np.allclose(fit_ref_cond, fit_gen_cond, rtol=1e-6, atol=1e-6):
            raise InputError(generated_path, None, "the generated training sample is not at the reference "
                             f"training sample's conditions row by row ({fit_gen.shape} vs {fit_ref.shape})")
        order = np.random.default_rng(metric_seeds(cfg.seed)["fit_halves"]).permutation(len(fit_ref))
        n_fit = len(order) // 2
        f1, f2 = np.sort(order[:n_fit]), np.sort(order[n_fit:2 * n_fit])
        ref_a = dataclasses.replace(ref_a, fit=(fit_ref[f1], fit_ref_cond[f1]))
        columns[FLOOR] = dataclasses.replace(columns[FLOOR], fit=(fit_ref[f2], fit_ref_cond[f2]))
        columns[SURROGATE] = dataclasses.replace(columns[SURROGATE], fit=(fit_gen[f2], fit_gen_cond[f2]))

    # ---- every metric, for every column, against reference A ----
    steps = tqdm(total=len(domain.metrics) * len(columns) + 1, desc="validate", unit="step", file=sys.stderr,
                 disable=not progress)
    results: dict[str, dict[str, float]] = {}
    classifier: dict[str, dict[str, dict[str, Any]]] = {}
    for column, prepared in columns.items():
        clock = [time.perf_counter()]

        def tick(label: str, column: str = column, clock: list[float] = clock) -> None:
            now = time.perf_counter()
            timings[f"{column}: {label}"] = now - clock[0]
            clock[0] = now
            steps.set_postfix_str(f"{column}: {label}")
            steps.update()

        results[column], classifier[column] = compare(specs, ref_a, prepared, cfg, domain.metrics, tick=tick)

    t = time.perf_counter()
    layout = domain.feature_layout()
    plot_paths = plots.plot_histograms(specs, ref_a.obs, {k: v.obs for k, v in columns.items()}, results,
                                       out_dir, layout)
    plot_paths.append(plots.plot_profiles(ref_a.obs, {k: v.obs for k, v in columns.items()}, out_dir, layout))
    events = whole if every_event else {FLOOR: (b_sample, rows[FLOOR]), SURROGATE: (samples["generated"],
                                                                                rows["generated"]),
                                        **{name: (samples[name], rows[name]) for name in baselines}}
    plot_paths += domain.extra_plots(ref.events(a_rows), {c: s.events(r) for c, (s, r) in events.items()}, out_dir)
    timings["plots"] = time.perf_counter() - t
    t = time.perf_counter()
    nc_paths = tuple(
        save_observables(out_dir / f"observables_{role}.nc", sample.features, layout,
                         {"sample": role, "file": str(sample.path), "n_events": len(sample.cond),
                          "domain": domain.name, "created_by": "surrogate validate"})
        for role, sample in samples.items())
    timings["observables (netCDF)"] = time.perf_counter() - t
    steps.update()
    steps.close()

    checks = verdict(results[SURROGATE], results[FLOOR], cfg.thresholds)
    failures = [c.reason for c in checks if not c.passed]
    headline = headline_names(domain.metrics)
    ordered = {name: _ordered(values, headline) for name, values in results.items()}
    sizes = fpd_sizes(n_ref, n, min_samples=cfg.fpd_min_samples)
    inputs = {
        role: {"path": str(sample.path), "n_events": len(sample.cond), "cond_range": cond_range(sample.cond),
               "attrs": _file_attrs(sample.path)}
        for role, sample in samples.items()}
    comparison = {
        "floor_method": floor_method,
        "n_reference": n_ref,
        "n_per_column": n,
        "fpd_bootstrap_sizes": [int(sizes[0]), int(sizes[-1])],
        "kpd_batch_size": min(cfg.kpd_batch_size, n_ref, n),
        "n_fit_per_column": n_fit,
    }
    labels = sources(domain, domain.metrics, specs)
    metrics_path = out_dir / METRICS
    metrics_path.write_text(json.dumps({
        "passed": not failures, "failures": failures,
        "verdict": [{"metric": c.metric, "value": c.value, "floor": c.floor, "limit": c.limit.to_config(),
                     "bound": c.bound, "rule": c.rule, "passed": c.passed, "reason": c.reason} for c in checks],
        "metrics": ordered[SURROGATE], "floor": ordered[FLOOR],
        "baselines": {name: ordered[name] for name in baselines},
        "sources": labels,
        "thresholds": config_to_dict(cfg.thresholds), "classifier": classifier, "comparison": comparison,
        "inputs": inputs, "observables": [p.name for p in nc_paths], "config": config_to_dict(cfg),
        "seconds": timings,
    }, indent=2, allow_nan=True))
    report_path = out_dir / REPORT
    report_path.write_text(_html(domain, ordered, checks, cfg, inputs, classifier, comparison, labels,
                                 plot_paths, nc_paths))
    return ValidationReport(metrics=ordered[SURROGATE], floor=ordered[FLOOR],
                            baselines={name: ordered[name] for name in baselines}, checks=tuple(checks),
                            passed=not failures, failures=failures, report_path=report_path,
                            metrics_path=metrics_path, plot_paths=tuple(plot_paths), observables_paths=nc_paths,
                            out_dir=out_dir)


def _ordered(metrics: Mapping[str, float], headline: Sequence[str]) -> dict[str, float]:
    return {k: metrics[k] for k in headline if k in metrics} | {k: v for k, v in metrics.items() if k not in headline}


# --------------------------------------------------------------------------------------------------
# HTML


def _table(rows: Sequence[Sequence[str]], header: Sequence[str], *, raw: bool = False) -> str:
    """An HTML table; cells are escaped unless ``raw`` (then the caller escaped them)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c if raw else html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _png(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(path.name)}</figcaption></figure>")


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None:
        return ""
    return "NaN" if math.isnan(value) else f"{value:.{digits}g}"


def _cell(metrics: Mapping[str, float], name: str) -> str:
    """A metric's value, with its error where it has one (FPD, KPD)."""
    if name not in metrics:
        return ""
    err = ERRORS.get(name)
    return _fmt(metrics[name]) + (f" &plusmn; {_fmt(metrics[err], 2)}" if err and err in metrics else "")


def optimiser_steps(result: Mapping[str, float], cfg: ValidateConfig) -> tuple[str, str]:
    """(optimiser steps taken, steps up to the best epoch) of one classifier run.

    Taken from the classifier's ``steps``, ``batch_size`` and ``n_train`` where it reports them; else
    derived from the split (SPLIT[0] of each class trains) and the configured batch, so the steps to
    the best epoch are always known.
    """
    n_train = int(result.get("n_train", 2 * int(result["n_per_class"] * SPLIT[0])))
    per_epoch = math.ceil(n_train / int(result.get("batch_size", cfg.classifier_batch)))
    total = f"{int(result['steps'])}" if "steps" in result else "not reported"
    if "epochs" in result:
        total += f" in {int(result['epochs'])} epochs"
    return total, f"{int(result['best_epoch']) * per_epoch} ({per_epoch} per epoch)"


def _html(domain: Domain, columns: dict[str, dict[str, float]], checks: list[Check], cfg: ValidateConfig,
          inputs: dict[str, Any], classifier: dict[str, dict[str, dict[str, Any]]], comparison: dict[str, Any],
          sources: dict[str, str], plot_paths: list[Path], nc_paths: tuple[Path, ...]) -> str:
    names = list(columns)  # floor, surrogate, baselines...
    fit_note = (f" Metrics that train (the image classifier) learn from separate training samples, "
                f"{comparison['n_fit_per_column']} events a class, and score the events above."
                if comparison.get("n_fit_per_column") else "")
    by_metric = {c.metric: c for c in checks}
    passed = all(c.passed for c in checks)
    verdict_html = (f'<p class="{"pass" if passed else "fail"}">{"PASS" if passed else "FAIL"}</p><ul>'
                    + "".join(f'<li class="{"ok" if c.passed else "bad"}">{"pass" if c.passed else "FAIL"}: '
                              f"{html.escape(c.reason)}</li>" for c in checks) + "</ul>")
    headline = [k for k in headline_names(domain.metrics) if not k.endswith("_err")]
    globals_ = [k for k in headline_separations(columns[SURROGATE]) if k.startswith("sep_")]
    summary = []
    for name in headline + globals_:
        check = by_metric.get(name)
        summary.append([html.escape(name), sources.get(name, "")]
                       + [_cell(columns[c], name) for c in names]
                       + ([f"&le; {_fmt(check.bound)} ({html.escape(check.rule)})",
                           "pass" if check.passed else "<b>FAIL</b>"] if check else ["", ""]))
    header = ["metric", "definition", "floor (reference B)", "surrogate", *names[2:], "threshold", "pass?"]
    cls_rows = []
    for column, levels in classifier.items():
        for level, r in levels.items():
            total, to_best = optimiser_steps(r, cfg)
            cls_rows.append([column, level, *(_fmt(r[k]) for k in ("auc", "jsd", "auc_uncalibrated", "accuracy")),
                             f"{int(r['best_epoch'])}", to_best, total, f"{int(r['n_per_class'])}"])
    samples = [(role, info["path"], str(info["n_events"]), "{:.4g} - {:.4g}".format(*info["cond_range"]))
               for role, info in inputs.items()]
    attrs = "".join(
        f"<h3>{html.escape(role)} file attributes</h3>"
        + (_table(list(info["attrs"].items()), ("attribute", "value")) if info["attrs"] else "<p>none</p>")
        for role, info in inputs.items())
    seps = sorted((k for k in columns[SURROGATE] if k.startswith("sep_")),
                  key=lambda k: -columns[SURROGATE][k] if not math.isnan(columns[SURROGATE][k]) else 0.0)
    sep_rows = [(k.removeprefix("sep_"), sources.get(k, ""), *(_fmt(columns[c].get(k, math.nan)) for c in names))
                for k in seps]
    settings = (f"classifier: {cfg.classifier_hidden} hidden units x 3 layers, up to {cfg.classifier_epochs} epochs, "
                f"lr {cfg.classifier_lr:g}, batch {cfg.classifier_batch}; FPD bootstrap sizes "
                f"{comparison['fpd_bootstrap_sizes'][0]}-{comparison['fpd_bootstrap_sizes'][1]} "
                f"(fpd_min_samples {cfg.fpd_min_samples}"
                + ("; capped at the sample size" if comparison["n_per_column"] < cfg.fpd_min_samples else "")
                + f", {cfg.fpd_batches} draws per size); KPD median of {cfg.kpd_batches} batches of "
                f"{comparison['kpd_batch_size']}; "
                f"precision/recall/density/coverage with k = {cfg.prdc_k}; seed {cfg.seed}")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>surrogate validation: {html.escape(domain.name)}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; max-width: 1400px; }}
table {{ border-collapse: collapse; margin: 0.5em 0; }}
td, th {{ border: 1px solid #bbb; padding: 2px 8px; text-align: left; font-size: 0.9em; }}
.pass {{ color: #070; font-weight: bold; font-size: 1.3em; }}
.fail {{ color: #b00; font-weight: bold; font-size: 1.3em; }}
li.bad {{ color: #b00; }}
img {{ max-width: 100%; }}
.note {{ background: #f4f4f4; padding: 0.5em 1em; border-left: 4px solid #888; }}
</style></head><body>
<h1>Validation report: {html.escape(domain.name)}</h1>
<h2>Verdict (surrogate only)</h2>
{verdict_html}
<h2>Summary</h2>
<p>Every column is scored against the same reference sample A ({comparison["n_reference"]} events) with
{comparison["n_per_column"]} events per column and the same seeds. The <b>floor</b> is reference B against
reference A: what a perfect surrogate scores at this statistics
({html.escape(comparison["floor_method"])}).{fit_note}</p>
{_table(summary, header, raw=True)}
<p>AUC 0.5 / JSD 0: the classifier cannot tell the samples apart. FPD and KPD are x 10<sup>3</sup> on
max-abs-normalised high-level inputs. Separation power: 0 identical, 1 disjoint histograms.
Precision (fidelity) and recall (diversity), density and coverage (Naeem et al. 2020, k nearest
neighbours on standardised high-level inputs): 1 where the samples cover each other's manifolds; a
surrogate that drops modes loses recall and coverage.
<b>definition</b>: {html.escape(domain.protocol_note)}
Settings: {html.escape(settings)}.</p>
<h2>Classifier test</h2>
{_table(cls_rows, ("column", "inputs", "AUC", "JSD", "AUC (uncalibrated)", "accuracy", "best epoch",
                   "optimiser steps to best epoch", "optimiser steps in all", "events per class"))}
<h2>Samples and reference physics</h2>
<p class="note">{html.escape(domain.reference_note)}</p>
{_table(samples, ("sample", "file", "events", "condition range"))}
<p>Observables saved beside this report as labelled netCDF arrays (per-event features and mean profiles,
with units; <code>xarray.load_dataset(path)</code>): {html.escape(", ".join(p.name for p in nc_paths))}.</p>
{attrs}
<h2>Plots</h2>
{"".join(_png(p) for p in plot_paths)}
<h2>All separation powers</h2>
<details><summary>{len(sep_rows)} histograms, worst surrogate first</summary>
{_table(sep_rows, ("observable", "definition", *names))}</details>
</body></html>
"""
