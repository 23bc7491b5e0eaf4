"""Every stage of the strong-lensing domain through the real CLI on a tiny lenstronomy sample.

The same generic stages as the calorimeter's, driven by the lensing domain only: the images keep their
layout and condition columns, the report holds the domain's own metrics and figures beside the floor,
and a barely trained image GAN fails the verdict on measurements, not by construction.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import mlflow
import numpy as np
import pytest

from surrogate.cli import main

QUICKSTART = Path(__file__).parents[1] / "configs" / "strong_lensing" / "quickstart.yaml"
TINY = [
    "simulate.n_events=300", "simulate.num_pix=32", "simulate.theta_e_max_arcsec=1.2", "simulate.shard_events=50",
    "simulate.scheduler=threads", "prepare.chunk_events=64",
    "train.steps=12", "train.batch_size=16", "train.checkpoint_every=6", "train.validate_every=6",
    "train.validate_events=30", "validate.classifier_hidden=16", "validate.classifier_epochs=2",
    "validate.fpd_min_samples=8", "validate.kpd_batch_size=16", "validate.kpd_batches=3",
    # the convolutional image GAN (the model of the substructure tiers), not the quickstart's lens_param, whose
    # renderer draws lenstronomy's lens from its first step (tests/models/test_lens_param.py)
    "train.model=image_gan", "train.model_options.noise=instrument",
]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory, mlflow_template: Path) -> tuple[Path, str, int]:
    base = tmp_path_factory.mktemp("e2e-lensing")
    shutil.copy(mlflow_template, base / "mlflow.db")
    uri = f"sqlite:///{base / 'mlflow.db'}"
    run_dir = base / "run"
    args = ["run", str(QUICKSTART), "--quiet", "--out", str(run_dir), "--tracking-uri", uri]
    for item in TINY:
        args += ["--set", item]
    return run_dir, uri, main(args)


def test_images_keep_their_layout_and_conditions(finished_run: tuple[Path, str, int]) -> None:
    run_dir, _, code = finished_run
    assert code in (0, 1)
    with h5py.File(run_dir / "prepare/reference_test.h5") as ref, h5py.File(run_dir / "generate/generated.h5") as gen:
        assert gen["images"].shape == ref["images"].shape and gen["images"].shape[1:] == (32, 32)
        assert list(gen["conditions"].attrs["columns"]) == list(ref["conditions"].attrs["columns"])
        assert str(gen["conditions"].attrs["columns"][0]) == "theta_E"
        np.testing.assert_array_equal(gen["conditions"][:], ref["conditions"][:])
        assert gen.attrs["pixel_scale_arcsec"] == pytest.approx(0.101)
    # the image classifier's training sample: generated at the train split's conditions, row by row
    with h5py.File(run_dir / "generate/generated_fit.h5") as fit, h5py.File(run_dir / "prepare/store.h5") as store:
        assert fit["images"].shape == (210, 32, 32)
        np.testing.assert_array_equal(fit["conditions"][:], store["train/cond_raw"][:])
    # the generator drew the noise-free image and the file's noise model (noise: instrument)
    transform = json.loads((run_dir / "prepare/transform.json").read_text())
    assert transform["noise_sigma"] == pytest.approx(0.0109, rel=0.01) and transform["noise_exposure_s"] == 2264.0


def test_report_has_the_domains_metrics_beside_the_floor(finished_run: tuple[Path, str, int]) -> None:
    run_dir, uri, code = finished_run
    saved = json.loads((run_dir / "validate/metrics.json").read_text())
    for name in ("auc_cnn", "theta_E_bias_pct", "theta_E_scatter_ratio", "ring_radius_shift_pct_bin0",
                 "fpd_x1e3", "mean_separation_power", "sep_ring_radius", "sep_pixel_asinh"):
        assert np.isfinite(saved["metrics"][name]) and np.isfinite(saved["floor"][name]), name
    assert [c["metric"] for c in saved["verdict"]] == ["auc_cnn", "theta_E_abs_bias_pct", "theta_E_scatter_ratio",
                                                      "mean_separation_power", "fpd_x1e3"]
    assert set(saved["sources"].values()) == {"ours"}
    # 12 steps of an image GAN are not lenstronomy: its images sit far from the reference's manifold
    # (FPD far above the floor, precision below it) and the verdict says FAIL (exit 1: the run completed).
    assert code == 1 and saved["passed"] is False
    assert saved["metrics"]["fpd_x1e3"] > 10 * max(saved["floor"]["fpd_x1e3"], saved["floor"]["fpd_x1e3_err"])
    assert saved["metrics"]["precision"] < saved["floor"]["precision"]
    for figure in ("example_images.png", "ring_radius_vs_theta_E.png", "profiles.png", "global_observables.png"):
        assert (run_dir / "validate" / figure).is_file(), figure
    # the image classifier trained on the training samples (210 training-split lenses and as many generated
    # at their conditions, halved) and scored the compared samples
    assert saved["comparison"]["n_fit_per_column"] == 105
    for column in ("floor", "surrogate"):
        cnn = saved["classifier"][column]["cnn (images)"]
        assert cnn["n_train"] + 2 * 21 == 2 * 105 and cnn["n_test"] == 2 * saved["comparison"]["n_per_column"]
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("surrogate-strong_lensing")
    val = next(r for r in client.search_runs([exp.experiment_id]) if r.info.run_name == "validate")
    assert {"auc_cnn", "floor_auc_cnn", "theta_E_bias_pct", "floor_theta_E_bias_pct"} <= set(val.data.metrics)
