"""validate_files end to end on small synthetic CaloChallenge files, and quick_metrics."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import gamma

from surrogate.config import Thresholds, ValidateConfig
from surrogate.domains.calorimeter import DOMAIN, schema
from surrogate.errors import InputError, OutputExistsError
from surrogate.validation import ValidationReport, quick_metrics, validate_files

GEO = DOMAIN.geometry
N_EVENTS = 300
# Small classifier, loose FPD/KPD limits: 300 events in 362 dimensions bias FPD far above zero even for
# identical distributions, so these thresholds test the AUC and separation-power verdicts.
CFG = ValidateConfig(classifier_hidden=64, classifier_epochs=6, classifier_batch=100, kpd_batches=5,
                     kpd_batch_size=300,
                     thresholds=Thresholds(auc_low_level=0.75, auc_high_level=0.75, fpd_x1e3=1e5,
                                           kpd_x1e3=1e4, mean_separation_power=0.2))


def synthetic_showers(n: int, rng: np.random.Generator, *, depth_scale: float = 1.0,
                      radius_mm: float = 6.0) -> tuple[np.ndarray, np.ndarray]:
    """Showers from an analytic profile with noise: (n, 6480) MeV and (n,) MeV.

    Longitudinal: a Gamma(4, 3 * depth_scale layers) profile; radial: exp(-r / radius_mm) per unit
    area; uniform in alpha; every voxel smeared by a log-normal of 30%; zeroed below the readout threshold.
    """
    e_inc = np.exp(rng.uniform(np.log(1e3), np.log(1e4), n))
    depth = gamma.pdf(np.arange(GEO.n_layers) + 0.5, a=4.0, scale=3.0 * depth_scale)
    edges = np.asarray(GEO.r_edges_mm)
    radial = np.exp(-0.5 * (edges[1:] + edges[:-1]) / radius_mm) * (edges[1:] ** 2 - edges[:-1] ** 2)
    mean = (depth / depth.sum())[:, None, None] * (radial / radial.sum())[None, None, :] / GEO.n_alpha
    showers = e_inc[:, None, None, None] * mean[None] * rng.lognormal(-0.045, 0.3, size=(n, *GEO.shape))
    showers[showers < schema.THRESHOLD_MEV] = 0.0
    return showers.reshape(n, -1).astype(np.float32), e_inc.astype(np.float32)


def write(path: Path, seed: int, **shape: float) -> Path:
    showers, e_inc = synthetic_showers(N_EVENTS, np.random.default_rng(seed), **shape)
    schema.write_file(path, [(showers, e_inc)], N_EVENTS, GEO, {"physics": "analytic test profile",
                                                                "seed": seed})
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("validate")
    return {"ref": write(d / "ref.h5", 1), "same": write(d / "same.h5", 2),
            "shifted": write(d / "shifted.h5", 3, depth_scale=1.4, radius_mm=8.0)}


@pytest.fixture(scope="module")
def shifted_report(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> ValidationReport:
    out = tmp_path_factory.mktemp("shifted") / "out"
    return validate_files(DOMAIN, files["shifted"], files["ref"], CFG, out, progress=False)


def test_shifted_sample_fails_with_a_complete_report(files: dict[str, Path],
                                                     shifted_report: ValidationReport) -> None:
    report = shifted_report
    assert not report.passed
    failed = {line.split()[0] for line in report.failures}
    assert {"auc_low_level", "auc_high_level", "mean_separation_power"} <= failed
    assert report.metrics["auc_low_level"] > 0.9 and report.metrics["auc_high_level"] > 0.9
    assert report.metrics["sep_E_layer_30"] > 0.3  # the deeper shower is obvious in the tail layers

    saved = json.loads(report.metrics_path.read_text())
    assert saved["passed"] is False and saved["metrics"]["auc_low_level"] == report.metrics["auc_low_level"]
    assert saved["inputs"]["reference"]["attrs"]["physics"] == "analytic test profile"
    assert {p.name for p in report.plot_paths} >= {"global_observables.png", "E_layer.png", "profiles.png",
                                                   "separation_powers.png", "sparsity.png", "center_x.png"}
    assert all(p.stat().st_size > 1000 for p in report.plot_paths)
    page = report.report_path.read_text()
    assert "FAIL" in page and page.count("data:image/png;base64,") == len(report.plot_paths)
    assert "data-free electromagnetic" in page and "analytic test profile" in page
    with pytest.raises(OutputExistsError):
        validate_files(DOMAIN, files["shifted"], files["ref"], CFG, report.out_dir, progress=False)


def test_same_distribution_passes(files: dict[str, Path], tmp_path: Path) -> None:
    report = validate_files(DOMAIN, files["same"], files["ref"], CFG, tmp_path / "out", progress=False)
    # 60 evaluation events per class: the AUC's statistical spread is ~0.05.
    assert report.metrics["auc_low_level"] == pytest.approx(0.5, abs=0.15)
    assert report.metrics["auc_high_level"] == pytest.approx(0.5, abs=0.15)
    assert report.metrics["sep_E_ratio"] < 0.2
    assert report.passed, report.failures
    assert "PASS" in report.report_path.read_text()


@pytest.mark.slow
def test_rerun_gives_identical_numbers(files: dict[str, Path], shifted_report: ValidationReport,
                                       tmp_path: Path) -> None:
    again = validate_files(DOMAIN, files["shifted"], files["ref"], CFG, tmp_path / "again", progress=False)
    assert again.metrics == shifted_report.metrics
    reseeded = dataclasses.replace(CFG, seed=1)
    other = validate_files(DOMAIN, files["shifted"], files["ref"], reseeded, tmp_path / "other",
                           progress=False)
    assert other.metrics["fpd_x1e3"] != again.metrics["fpd_x1e3"]
    assert other.metrics["auc_low_level"] != again.metrics["auc_low_level"]
    assert other.metrics["mean_separation_power"] == again.metrics["mean_separation_power"]  # not random


def test_quick_metrics_match_the_validation_numbers(files: dict[str, Path],
                                                   shifted_report: ValidationReport) -> None:
    ref = DOMAIN.read_events(files["ref"])
    gen = DOMAIN.read_events(files["shifted"])
    quick = quick_metrics(DOMAIN, *ref, *gen, seed=CFG.seed)
    assert set(quick) == {"mean_separation_power", "max_separation_power", "n_nan_separation_power",
                          "sep_E_ratio", "sep_voxel_energy", "fpd_x1e3", "fpd_x1e3_err"}
    # The same code path and seed stream, computed afresh: identical numbers.
    assert quick == {k: shifted_report.metrics[k] for k in quick}
    same = quick_metrics(DOMAIN, *ref, *DOMAIN.read_events(files["same"]), seed=CFG.seed)
    assert same["mean_separation_power"] < quick["mean_separation_power"]
    assert same["fpd_x1e3"] < quick["fpd_x1e3"]


def test_the_readout_threshold_is_applied_to_both_samples(files: dict[str, Path]) -> None:
    # The CaloChallenge zeroes voxels below 15.15 keV in the reference as well as in the evaluated file:
    # sub-threshold noise in either sample changes no histogram.
    showers, e_inc = DOMAIN.read_events(files["ref"])
    noisy = np.where(showers == 0, np.float32(0.9 * schema.THRESHOLD_MEV), showers)
    for ref, gen in ((noisy, showers), (showers, noisy)):
        quick = quick_metrics(DOMAIN, ref, e_inc, gen, e_inc, seed=0)
        assert quick["sep_voxel_energy"] == 0.0 and quick["sep_E_ratio"] == 0.0
        assert quick["mean_separation_power"] == 0.0 and quick["n_nan_separation_power"] == 0


def test_wrong_voxel_count_is_an_input_error(files: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad.h5"
    with schema.atomic_h5(bad) as f:
        f.create_dataset(schema.SHOWERS, data=np.zeros((10, 368), dtype=np.float32))
        f.create_dataset(schema.INCIDENT, data=np.ones((10, 1), dtype=np.float32))
    with pytest.raises(InputError, match="368 voxels per shower"):
        validate_files(DOMAIN, bad, files["ref"], CFG, tmp_path / "out", progress=False)
