"""validate_files end to end on small synthetic CaloChallenge files: floor, baselines, verdict, netCDF."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import gamma

from surrogate.config import Limit, Thresholds, ValidateConfig
from surrogate.domains.calorimeter import DOMAIN, schema
from surrogate.domains.calorimeter.profiles import HEADLINE as PROFILE_HEADLINE
from surrogate.errors import InputError, OutputExistsError
from surrogate.validation import ValidationReport, quick_metrics, validate_files
from surrogate.validation.report import verdict

GEO = DOMAIN.geometry
N_EVENTS = 300
# Small classifier, loose FPD/KPD limits: 300 events in 362 dimensions bias FPD far above zero even for
# identical distributions, so these thresholds test the AUC and separation-power verdicts.
CFG = ValidateConfig(classifier_hidden=64, classifier_epochs=6, classifier_batch=100, fpd_batches=5, kpd_batches=5,
                     kpd_batch_size=300,
                     thresholds=Thresholds(auc_low_level=Limit(0.75), auc_high_level=Limit(0.75),
                                           fpd_x1e3=Limit(1e5), kpd_x1e3=Limit(1e4),
                                           mean_separation_power=Limit(0.2)))


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
    """A deeper, wider surrogate; the floor from a second reference file; that same file as a baseline too.

    All files hold 300 events, so no column is subsampled: the numbers can be recomputed directly.
    """
    out = tmp_path_factory.mktemp("shifted") / "out"
    return validate_files(DOMAIN, files["shifted"], files["ref"], CFG, out, reference_b_path=files["same"],
                          baselines={"twin": files["same"]}, progress=False)


def test_shifted_sample_fails_with_a_complete_report(files: dict[str, Path],
                                                     shifted_report: ValidationReport) -> None:
    report = shifted_report
    assert not report.passed
    failed = {c.metric for c in report.checks if not c.passed}
    assert {"auc_low_level", "auc_high_level", "mean_separation_power"} <= failed
    assert report.metrics["auc_low_level"] > 0.9 and report.metrics["auc_high_level"] > 0.9
    assert report.metrics["sep_E_layer_30"] > 0.3  # the deeper shower is obvious in the tail layers
    # The floor: the same metrics for two samples of one distribution, far below the surrogate's.
    assert report.floor.keys() == report.metrics.keys()
    assert report.floor["auc_low_level"] < 0.7 and report.floor["mean_separation_power"] < 0.5 * report.metrics[
        "mean_separation_power"]
    assert report.floor["fpd_x1e3"] < report.metrics["fpd_x1e3"]
    assert report.floor["recall"] > report.metrics["recall"] and report.floor["coverage"] > report.metrics["coverage"]
    # A baseline identical to reference B scores exactly the floor: same samples, same seeds.
    assert report.baselines["twin"] == report.floor

    saved = json.loads(report.metrics_path.read_text())
    assert saved["passed"] is False and saved["metrics"]["auc_low_level"] == report.metrics["auc_low_level"]
    assert saved["floor"]["fpd_x1e3"] == report.floor["fpd_x1e3"] and saved["baselines"]["twin"] == report.floor
    assert saved["comparison"]["n_per_column"] == N_EVENTS and "second reference file" in saved["comparison"][
        "floor_method"]
    assert saved["inputs"]["reference"]["attrs"]["physics"] == "analytic test profile"
    assert saved["sources"]["auc_low_level"] == "CaloChallenge" and saved["sources"]["recall"] == "ours"
    flat = report.flat_metrics()
    assert flat["floor_auc_low_level"] == report.floor["auc_low_level"]
    assert flat["twin_recall"] == report.floor["recall"] and flat["recall"] == report.metrics["recall"]
    assert {p.name for p in report.plot_paths} >= {"global_observables.png", "E_layer.png", "profiles.png",
                                                   "separation_powers.png", "sparsity.png", "center_x.png"}
    assert all(p.stat().st_size > 1000 for p in report.plot_paths)
    page = report.report_path.read_text()
    assert "FAIL" in page and page.count("data:image/png;base64,") == len(report.plot_paths)
    assert "data-free electromagnetic" in page and "analytic test profile" in page
    assert "<th>floor (reference B)</th><th>surrogate</th><th>twin</th><th>threshold</th>" in page
    assert "optimiser steps to best epoch" in page
    with pytest.raises(OutputExistsError):
        validate_files(DOMAIN, files["shifted"], files["ref"], CFG, report.out_dir, progress=False)


def test_observables_reload_from_netcdf_with_dims_and_units(files: dict[str, Path],
                                                            shifted_report: ValidationReport) -> None:
    import xarray as xr

    names = {p.name for p in shifted_report.observables_paths}
    assert names == {"observables_reference.nc", "observables_generated.nc", "observables_reference_b.nc",
                     "observables_twin.nc"}
    ds = xr.load_dataset(shifted_report.out_dir / "observables_generated.nc")
    features = DOMAIN.features(*DOMAIN.read_events(files["shifted"]))
    assert ds.sizes == {"event": N_EVENTS, "layer": GEO.n_layers, "r_bin": GEO.n_r}
    assert ds["E_layer"].dims == ("event", "layer") and ds["E_layer"].attrs["units"] == "MeV"
    assert ds["width_x"].attrs["units"] == "mm" and ds["sparsity"].attrs["units"] == "1"
    assert ds["E_radial"].dims == ("event", "r_bin") and ds["E_tot"].dims == ("event",)
    np.testing.assert_array_equal(ds["E_layer"].sel(layer=30).values, features["E_layer_30"])
    np.testing.assert_array_equal(ds["center_r"].values[:, 7], features["center_r_7"])
    np.testing.assert_array_equal(ds["E_radial"].values[:, 8], features["E_radial_8"])
    np.testing.assert_array_equal(ds["E_ratio"].values, features["E_ratio"])
    np.testing.assert_array_equal(ds["r_high"].values, GEO.r_edges_mm[1:])
    # Profiles: the mean longitudinal profile and its error, in the features' units.
    # (float64 sums: the features may be float32, the saved arrays are float64)
    profile = np.mean([np.asarray(features[f"E_layer_{i}"], dtype=np.float64) for i in range(GEO.n_layers)], axis=1)
    np.testing.assert_allclose(ds["E_layer_mean"].values, profile, rtol=1e-12)
    assert ds["E_layer_mean"].dims == ("layer",) and ds["E_layer_mean"].attrs["units"] == "MeV"
    assert ds["E_radial_sem"].dims == ("r_bin",)
    assert ds.attrs["sample"] == "generated" and ds.attrs["file"] == str(files["shifted"])
    # Energy bookkeeping survives the round trip: layers and radial bins both sum to E_tot (to float32
    # rounding: the challenge sums energies in the file's precision).
    np.testing.assert_allclose(ds["E_layer"].sum("layer"), ds["E_tot"], rtol=1e-6)
    np.testing.assert_allclose(ds["E_radial"].sum("r_bin"), ds["E_tot"], rtol=1e-6)


def test_same_distribution_passes_under_floor_thresholds(files: dict[str, Path], tmp_path: Path) -> None:
    # No second reference: the reference is split into two seeded halves of 150; the generated sample
    # is subsampled to 150. A "copy" baseline is the reference file itself: its conditions equal the
    # reference's row by row, so it keeps the floor's rows and must score exactly the floor.
    cfg = dataclasses.replace(CFG, thresholds=Thresholds(
        auc_low_level=Limit(0.75), auc_high_level=Limit(0.75), fpd_x1e3=Limit(3.0, of_floor=True),
        kpd_x1e3=Limit(3.0, of_floor=True), mean_separation_power=Limit(3.0, of_floor=True)))
    report = validate_files(DOMAIN, files["same"], files["ref"], cfg, tmp_path / "out",
                            baselines={"copy": files["ref"]}, progress=False)
    # 30 evaluation events per class: the AUC's statistical spread is ~0.07.
    assert report.metrics["auc_low_level"] == pytest.approx(0.5, abs=0.2)
    assert report.metrics["auc_high_level"] == pytest.approx(0.5, abs=0.2)
    assert report.baselines["copy"] == report.floor
    assert report.passed, report.failures
    fpd_check = next(c for c in report.checks if c.metric == "fpd_x1e3")
    assert fpd_check.bound == pytest.approx(3.0 * report.floor["fpd_x1e3"])
    assert fpd_check.rule.startswith("3x floor")
    saved = json.loads(report.metrics_path.read_text())
    assert saved["comparison"]["n_per_column"] == N_EVENTS // 2 and "two seeded halves" in saved["comparison"][
        "floor_method"]
    assert saved["verdict"][2]["limit"] == "3x floor" and saved["thresholds"]["auc_low_level"] == 0.75
    assert "PASS" in report.report_path.read_text()


def test_verdict_rules() -> None:
    limits = Thresholds(auc_low_level=Limit(0.85), auc_high_level=Limit(0.85), fpd_x1e3=Limit(3.0, of_floor=True),
                        kpd_x1e3=Limit(3.0, of_floor=True), mean_separation_power=Limit(2.0, of_floor=True))
    floor = {"auc_low_level": 0.5, "auc_high_level": 0.5, "fpd_x1e3": 40.0, "fpd_x1e3_err": 2.0,
             "kpd_x1e3": -0.1, "kpd_x1e3_err": 0.4, "mean_separation_power": 0.05}
    metrics = {"auc_low_level": 0.9, "auc_high_level": float("nan"), "fpd_x1e3": 119.0, "kpd_x1e3": 1.3,
               "mean_separation_power": 0.1}
    checks = {c.metric: c for c in verdict(metrics, floor, limits)}
    assert not checks["auc_low_level"].passed and checks["auc_low_level"].bound == 0.85
    assert checks["auc_low_level"].reason == "auc_low_level = 0.9 > 0.85 (absolute)"
    assert not checks["auc_high_level"].passed, "NaN fails"
    assert checks["fpd_x1e3"].passed and checks["fpd_x1e3"].bound == 120.0
    assert checks["fpd_x1e3"].reason == "fpd_x1e3 = 119 <= 120 (3x floor 40)"
    # KPD's floor below its own error: the bound is 3x the error, not 3x a negative number.
    assert checks["kpd_x1e3"].bound == pytest.approx(1.2) and not checks["kpd_x1e3"].passed
    assert "error" in checks["kpd_x1e3"].rule
    assert checks["mean_separation_power"].passed and checks["mean_separation_power"].bound == pytest.approx(0.1)


@pytest.mark.slow
def test_rerun_gives_identical_numbers(files: dict[str, Path], shifted_report: ValidationReport,
                                       tmp_path: Path) -> None:
    again = validate_files(DOMAIN, files["shifted"], files["ref"], CFG, tmp_path / "again",
                           reference_b_path=files["same"], baselines={"twin": files["same"]}, progress=False)
    # bit-identical, NaN included (a histogram empty in one sample scores NaN, as in the challenge's code)
    for name in ("metrics", "floor", "baselines"):
        assert json.dumps(getattr(again, name), sort_keys=True) == json.dumps(getattr(shifted_report, name),
                                                                                sort_keys=True), name
    assert any(np.isnan(v) for v in again.metrics.values()), "the comparison covers NaN entries too"
    reseeded = dataclasses.replace(CFG, seed=1)
    other = validate_files(DOMAIN, files["shifted"], files["ref"], reseeded, tmp_path / "other",
                           reference_b_path=files["same"], progress=False)
    assert other.metrics["fpd_x1e3"] != again.metrics["fpd_x1e3"]
    assert other.metrics["auc_low_level"] != again.metrics["auc_low_level"]
    assert other.metrics["mean_separation_power"] == again.metrics["mean_separation_power"]  # not random


def test_quick_metrics_match_the_validation_numbers(files: dict[str, Path],
                                                   shifted_report: ValidationReport) -> None:
    ref = DOMAIN.read_events(files["ref"])
    quick = quick_metrics(DOMAIN, *ref, *DOMAIN.read_events(files["shifted"]), CFG)
    assert set(quick) == {"mean_separation_power", "max_separation_power", "n_nan_separation_power",
                          "sep_E_ratio", "sep_voxel_energy",
                          "fpd_x1e3", "fpd_x1e3_err", "kpd_x1e3", "kpd_x1e3_err", "precision", "recall", "density",
                          "coverage", *PROFILE_HEADLINE,
                          *(f"{bar}_at" for bar in ("longitudinal", "radial", "width_x", "width_y", "width_r",
                                                    "response_mean", "response_std"))}
    # The same code path, settings and seed streams, computed afresh: identical numbers.
    assert quick == {k: shifted_report.metrics[k] for k in quick}
    same = quick_metrics(DOMAIN, *ref, *DOMAIN.read_events(files["same"]), CFG)
    assert same == {k: shifted_report.floor[k] for k in same}
    assert same["mean_separation_power"] < quick["mean_separation_power"]
    assert same["fpd_x1e3"] < quick["fpd_x1e3"]


def test_the_readout_threshold_is_applied_to_both_samples(files: dict[str, Path]) -> None:
    # The CaloChallenge zeroes voxels below 15.15 keV in the reference as well as in the evaluated file:
    # sub-threshold noise in either sample changes no histogram.
    showers, e_inc = DOMAIN.read_events(files["ref"])
    noisy = np.where(showers == 0, np.float32(0.9 * schema.THRESHOLD_MEV), showers)
    for ref, gen in ((noisy, showers), (showers, noisy)):
        quick = quick_metrics(DOMAIN, ref, e_inc, gen, e_inc, CFG)
        assert quick["sep_voxel_energy"] == 0.0 and quick["sep_E_ratio"] == 0.0
        assert quick["mean_separation_power"] == 0.0 and quick["n_nan_separation_power"] == 0


def test_wrong_voxel_count_is_an_input_error(files: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad.h5"
    with schema.atomic_h5(bad) as f:
        f.create_dataset(schema.SHOWERS, data=np.zeros((10, 368), dtype=np.float32))
        f.create_dataset(schema.INCIDENT, data=np.ones((10, 1), dtype=np.float32))
    with pytest.raises(InputError, match="368 voxels per shower"):
        validate_files(DOMAIN, bad, files["ref"], CFG, tmp_path / "out", progress=False)
