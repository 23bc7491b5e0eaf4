"""Offline validation of a generated file against a reference file: metrics, plots, HTML, verdict.

The CaloChallenge protocol (DOMAINS.md section 1): separation power of every feature histogram,
the classifier test on low- and high-level inputs, FPD and KPD (x 1e3) on max-abs-normalised
high-level inputs. The output folder holds ``report.html`` (self-contained: plots embedded as base64,
so it renders inside MLflow's artifact viewer), ``metrics.json`` and the PNGs. This module does not
log anywhere; ``surrogate.tracking`` logs the folder.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from surrogate.config import ValidateConfig, config_to_dict
from surrogate.data.hdf5 import open_h5
from surrogate.domains.base import Domain
from surrogate.errors import InputError, OutputExistsError
from surrogate.metrics import classifier_test
from surrogate.validation import plots
from surrogate.validation.compute import (
    cond_range,
    fpd_x1e3,
    kpd_x1e3,
    metric_seeds,
    observables,
    separation_powers,
)

REPORT = "report.html"
METRICS = "metrics.json"
CLASSIFIER_COLUMNS = ("inputs", "AUC", "JSD", "AUC (uncalibrated)", "accuracy", "best epoch",
                      "events per class")
HEADLINE = ("auc_low_level", "jsd_low_level", "auc_high_level", "jsd_high_level", "fpd_x1e3", "fpd_x1e3_err",
            "kpd_x1e3", "kpd_x1e3_err", "mean_separation_power", "max_separation_power")


@dataclass(frozen=True)
class ValidationReport:
    """The outcome of :func:`validate_files`.

    metrics: flat name -> value (auc_low_level, jsd_low_level, auc_high_level, jsd_high_level, fpd_x1e3,
      fpd_x1e3_err, kpd_x1e3, kpd_x1e3_err, mean_separation_power, max_separation_power, sep_<feature>).
    passed: every thresholded metric is at or below its threshold.
    failures: one line per failed threshold, with the excess.
    """

    metrics: dict[str, float]
    passed: bool
    failures: list[str]
    report_path: Path
    metrics_path: Path
    plot_paths: tuple[Path, ...]
    out_dir: Path


def verdict(metrics: dict[str, float], thresholds: Any) -> list[str]:
    """Failures of ``metrics`` against a thresholds dataclass (field name = metric name); NaN fails."""
    failures = []
    for field in dataclasses.fields(thresholds):
        limit = float(getattr(thresholds, field.name))
        value = metrics[field.name]
        if math.isnan(value):
            failures.append(f"{field.name} is NaN (threshold {limit:g})")
        elif value > limit:
            failures.append(f"{field.name} = {value:.4g} exceeds its threshold {limit:g} "
                            f"by {value - limit:.3g}")
    return failures


def _file_attrs(path: str | Path) -> dict[str, str]:
    with open_h5(path) as f:
        return {key: _short(f.attrs[key]) for key in sorted(f.attrs)}


def _short(value: Any, limit: int = 300) -> str:
    text = value.decode() if isinstance(value, bytes) else str(value)
    return text if len(text) <= limit else text[:limit] + " ..."


def validate_files(domain: Domain, generated_path: str | Path, reference_path: str | Path,
                   cfg: ValidateConfig, out_dir: Path, *, progress: bool = True) -> ValidationReport:
    """Compare a generated file with a reference file of the same domain and write the report to ``out_dir``.

    Both files are read with ``domain.read_events(path, cfg.max_events)`` and must share the condition
    layout. Refuses to overwrite an existing report in ``out_dir``. Stochastic metrics are seeded from
    ``cfg.seed``: a rerun gives identical numbers.
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    for name in (REPORT, METRICS):
        if (out_dir / name).exists():
            raise OutputExistsError(out_dir / name)
    out_dir.mkdir(parents=True, exist_ok=True)
    steps = tqdm(total=7, desc="validate", unit="step", file=sys.stderr, disable=not progress)
    timings: dict[str, float] = {}

    def step(label: str, start: float) -> float:
        now = time.perf_counter()
        timings[label] = now - start
        steps.set_postfix_str(label)
        steps.update()
        return now

    t = time.perf_counter()
    ref_data, ref_cond = domain.read_events(reference_path, cfg.max_events)
    gen_data, gen_cond = domain.read_events(generated_path, cfg.max_events)
    if ref_cond.shape[1] != gen_cond.shape[1]:
        raise InputError(generated_path, None, f"{gen_cond.shape[1]} condition columns per event, but the "
                         f"reference {reference_path} has {ref_cond.shape[1]}")
    t = step("read", t)

    seeds = metric_seeds(cfg.seed)
    ref = observables(domain, ref_data, ref_cond)
    gen = observables(domain, gen_data, gen_cond)
    specs = domain.histogram_specs(ref.features, ref.flat)
    metrics: dict[str, float] = separation_powers(specs, ref, gen)
    t = step("features and separation powers", t)

    classifier: dict[str, dict[str, float]] = {}

    def run_classifier(x_ref: Any, x_gen: Any, stream: str) -> dict[str, float]:
        return classifier_test(x_ref, x_gen, hidden=cfg.classifier_hidden, epochs=cfg.classifier_epochs,
                               lr=cfg.classifier_lr, batch_size=cfg.classifier_batch,
                               min_steps_per_epoch=cfg.classifier_min_steps_per_epoch,
                               patience=cfg.classifier_patience, dtype=cfg.classifier_dtype,
                               seed=seeds[stream])

    classifier["low_level"] = run_classifier(domain.low_level_inputs(ref_data, ref_cond),
                                             domain.low_level_inputs(gen_data, gen_cond),
                                             "classifier_low_level")
    del ref_data, gen_data  # the voxels are the largest arrays; everything below uses features
    t = step("classifier on low-level inputs", t)
    hl_ref = domain.high_level_inputs(ref.features)
    hl_gen = domain.high_level_inputs(gen.features)
    classifier["high_level"] = run_classifier(hl_ref, hl_gen, "classifier_high_level")
    for level, result in classifier.items():
        metrics[f"auc_{level}"] = result["auc"]
        metrics[f"jsd_{level}"] = result["jsd"]
    t = step("classifier on high-level inputs", t)

    metrics.update(fpd_x1e3(hl_ref, hl_gen, min_samples=cfg.fpd_min_samples, seed=seeds["fpd"]))
    t = step("FPD", t)
    metrics.update(kpd_x1e3(hl_ref, hl_gen, num_batches=cfg.kpd_batches, batch_size=cfg.kpd_batch_size,
                            seed=seeds["kpd"]))
    t = step("KPD", t)

    plot_paths = plots.plot_histograms(specs, ref, gen, metrics, out_dir)
    plot_paths.append(plots.plot_profiles(ref, gen, out_dir))
    step("plots", t)
    steps.close()

    failures = verdict(metrics, cfg.thresholds)
    ordered = {k: metrics[k] for k in HEADLINE} | {k: v for k, v in metrics.items() if k not in HEADLINE}
    inputs = {
        "reference": {"path": str(reference_path), "n_events": len(ref_cond),
                      "cond_range": cond_range(ref_cond), "attrs": _file_attrs(reference_path)},
        "generated": {"path": str(generated_path), "n_events": len(gen_cond),
                      "cond_range": cond_range(gen_cond), "attrs": _file_attrs(generated_path)},
    }
    metrics_path = out_dir / METRICS
    metrics_path.write_text(json.dumps({
        "passed": not failures, "failures": failures, "metrics": ordered,
        "thresholds": dataclasses.asdict(cfg.thresholds), "classifier": classifier,
        "inputs": inputs, "config": config_to_dict(cfg), "seconds": timings,
    }, indent=2, allow_nan=True))
    report_path = out_dir / REPORT
    report_path.write_text(_html(domain, ordered, failures, cfg, inputs, classifier, plot_paths))
    return ValidationReport(metrics=ordered, passed=not failures, failures=failures, report_path=report_path,
                            metrics_path=metrics_path, plot_paths=tuple(plot_paths), out_dir=out_dir)


# --------------------------------------------------------------------------------------------------
# HTML


def _table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _png(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(path.name)}</figcaption></figure>")


def _html(domain: Domain, metrics: dict[str, float], failures: list[str], cfg: ValidateConfig,
          inputs: dict[str, Any], classifier: dict[str, dict[str, float]], plot_paths: list[Path]) -> str:
    limits = dataclasses.asdict(cfg.thresholds)
    verdict_html = ('<p class="pass">PASS: every metric is at or below its threshold.</p>' if not failures
                    else '<p class="fail">FAIL</p><ul>'
                    + "".join(f"<li>{html.escape(f)}</li>" for f in failures) + "</ul>")
    summary = [(k, f"{metrics[k]:.4g}", f"{limits[k]:g}" if k in limits else "") for k in HEADLINE]
    cls_rows = [(level, *(f"{r[k]:.4g}" for k in ("auc", "jsd", "auc_uncalibrated", "accuracy",
                                                   "best_epoch", "n_per_class")))
                for level, r in classifier.items()]
    samples = [(role, info["path"], str(info["n_events"]),
                "{:.4g} - {:.4g}".format(*info["cond_range"])) for role, info in inputs.items()]
    attrs = "".join(
        f"<h3>{html.escape(role)} file attributes</h3>"
        + (_table(list(info["attrs"].items()), ("attribute", "value")) if info["attrs"] else "<p>none</p>")
        for role, info in inputs.items())
    seps = sorted(((k.removeprefix("sep_"), v) for k, v in metrics.items() if k.startswith("sep_")),
                  key=lambda kv: -kv[1] if not math.isnan(kv[1]) else 0.0)
    sep_rows = [(name, f"{value:.4f}") for name, value in seps]
    settings = (f"classifier: {cfg.classifier_hidden} hidden units x 3 layers, "
                f"{cfg.classifier_epochs} epochs, lr {cfg.classifier_lr:g}, batch {cfg.classifier_batch}; "
                f"FPD min samples {cfg.fpd_min_samples}; KPD {cfg.kpd_batches} batches of "
                f"{cfg.kpd_batch_size}; seed {cfg.seed}")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>surrogate validation: {html.escape(domain.name)}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; max-width: 1400px; }}
table {{ border-collapse: collapse; margin: 0.5em 0; }}
td, th {{ border: 1px solid #bbb; padding: 2px 8px; text-align: left; font-size: 0.9em; }}
.pass {{ color: #070; font-weight: bold; font-size: 1.3em; }}
.fail {{ color: #b00; font-weight: bold; font-size: 1.3em; }}
img {{ max-width: 100%; }}
.note {{ background: #f4f4f4; padding: 0.5em 1em; border-left: 4px solid #888; }}
</style></head><body>
<h1>Validation report: {html.escape(domain.name)}</h1>
{verdict_html}
<h2>Summary</h2>
{_table(summary, ("metric", "value", "threshold (pass if at or below)"))}
<p>AUC 0.5 / JSD 0: the classifier cannot tell the samples apart. FPD and KPD are x 10<sup>3</sup> on
max-abs-normalised high-level inputs. Separation power: 0 identical, 1 disjoint histograms.
Settings: {html.escape(settings)}.</p>
<h2>Classifier test</h2>
{_table(cls_rows, CLASSIFIER_COLUMNS)}
<h2>Samples and reference physics</h2>
<p class="note">{html.escape(domain.reference_note)}</p>
{_table(samples, ("sample", "file", "events", "condition range"))}
{attrs}
<h2>Plots</h2>
{"".join(_png(p) for p in plot_paths)}
<h2>All separation powers</h2>
<details><summary>{len(sep_rows)} histograms, worst first</summary>
{_table(sep_rows, ("observable", "separation power"))}</details>
</body></html>
"""
