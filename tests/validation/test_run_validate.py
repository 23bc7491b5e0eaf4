"""The validate stage in a run folder: the floor from the validation split, baselines found beside the
generated file, every column logged to a real MLflow store."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from surrogate.config import Config, ValidateConfig
from surrogate.domains.calorimeter import DOMAIN, schema
from surrogate.errors import SurrogateError
from surrogate.stages import run_validate, validate_inputs
from tests.validation.test_validate_files import synthetic_showers

GEO = DOMAIN.geometry
N = 100


def _write(path: Path, seed: int, **shape: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    showers, e_inc = synthetic_showers(N, np.random.default_rng(seed), **shape)
    schema.write_file(path, [(showers, e_inc)], N, GEO, {"seed": seed})
    return path


@pytest.fixture
def filled_run(run_dir: Path) -> Path:
    _write(run_dir / "prepare/reference_test.h5", 1)
    _write(run_dir / "prepare/reference_val.h5", 2)
    _write(run_dir / "generate/generated.h5", 3, depth_scale=1.3)
    _write(run_dir / "generate/baseline_gflash.h5", 4, radius_mm=9.0)
    return run_dir


def test_defaults_pick_the_validation_split_and_every_baseline_file(filled_run: Path, tmp_path: Path) -> None:
    gen, ref, ref_b, baselines = validate_inputs(Config(domain="calorimeter"), filled_run)
    assert gen == filled_run / "generate/generated.h5" and ref == filled_run / "prepare/reference_test.h5"
    assert ref_b == filled_run / "prepare/reference_val.h5"
    assert baselines == {"gflash": filled_run / "generate/baseline_gflash.h5"}
    # An explicit reference is not paired with this run's validation split: the reference is halved.
    own = _write(tmp_path / "own.h5", 5)
    extra = _write(tmp_path / "baseline_flat.h5", 6)
    cfg = Config(validate=ValidateConfig(reference=str(own), baselines=(str(extra),)))
    _, ref, ref_b, baselines = validate_inputs(cfg, filled_run)
    assert ref == own and ref_b is None
    assert baselines == {"flat": extra, "gflash": filled_run / "generate/baseline_gflash.h5"}
    cfg = Config(validate=ValidateConfig(baselines=(str(extra),), discover_baselines=False))
    assert validate_inputs(cfg, filled_run)[3] == {"flat": extra}
    bad = _write(tmp_path / "baseline_g-flash.h5", 8)
    with pytest.raises(SurrogateError, match="baseline name 'g-flash': expected letters, digits"):
        validate_inputs(Config(validate=ValidateConfig(baselines=(str(bad),))), filled_run)
    clash = _write(tmp_path / "other" / "baseline_gflash.h5", 7)
    with pytest.raises(SurrogateError, match="two baselines named 'gflash'"):
        validate_inputs(Config(validate=ValidateConfig(baselines=(str(clash),))), filled_run)


def test_stage_logs_floor_and_baselines_to_mlflow(filled_run: Path) -> None:
    from mlflow.tracking import MlflowClient

    from surrogate.stages import open_tracker

    vcfg = ValidateConfig(classifier_hidden=32, classifier_epochs=3, classifier_batch=50, fpd_min_samples=10000,
                          fpd_batches=3, kpd_batches=3)
    cfg = dataclasses.replace(Config(domain="calorimeter"), validate=vcfg)
    tracker = open_tracker(cfg, filled_run)
    result = run_validate(cfg, filled_run, tracker=tracker, progress=False)
    out = filled_run / "validate"
    for name in ("report.html", "metrics.json", "observables_reference.nc", "observables_reference_b.nc",
                 "observables_generated.nc", "observables_gflash.nc"):
        assert (out / name).is_file(), name
    assert {"fpd_x1e3", "floor_fpd_x1e3", "gflash_fpd_x1e3", "floor_recall", "gflash_coverage"} <= set(result.metrics)
    assert "sep_E_layer_3" in result.metrics and "floor_sep_E_ratio" in result.metrics
    assert "floor_sep_E_layer_3" not in result.metrics, "per-layer floor histograms stay in metrics.json"
    run = MlflowClient(tracker.uri).get_run(result.mlflow_run_id)
    assert run.data.metrics["floor_fpd_x1e3"] == pytest.approx(result.metrics["floor_fpd_x1e3"])
    assert run.data.metrics["gflash_auc_high_level"] == pytest.approx(result.metrics["gflash_auc_high_level"])
    assert run.data.params["reference_b"].endswith("prepare/reference_val.h5")
    assert run.data.params["baselines"].startswith("gflash=")
    artifacts = {a.path for a in MlflowClient(tracker.uri).list_artifacts(result.mlflow_run_id)}
    assert {"observables_gflash.nc", "report.html"} <= artifacts
    page = (out / "report.html").read_text()
    assert "<th>gflash</th>" in page and "reference_val.h5" in page
    # The capped FPD: 100 events against min_samples 10000 bootstrap 50 to 100 events.
    assert "FPD bootstrap sizes 50-100" in page and "capped at the sample size" in page
