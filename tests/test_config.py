from __future__ import annotations

from pathlib import Path

import pytest

from surrogate.config import Limit, config_to_dict, load_config
from surrogate.errors import ConfigError

CONFIG_DIR = Path(__file__).parents[1].joinpath("configs")
CONFIGS = sorted(CONFIG_DIR.rglob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(CONFIG_DIR)))
def test_every_shipped_config_loads(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.domain == path.relative_to(CONFIG_DIR).parts[0]  # configs/<domain>/...


def test_overrides_are_typed_and_nested(tmp_path: Path) -> None:
    cfg = load_config(None, ["domain=calorimeter", "train.steps=7", "train.lr_g=3e-4", "prepare.inputs=[a.h5, b.h5]",
                             "validate.thresholds.fpd_x1e3=2", "simulate.n_events=5"])
    assert cfg.train.steps == 7
    assert cfg.train.lr_g == pytest.approx(3e-4)
    assert cfg.prepare.inputs == ("a.h5", "b.h5")
    assert cfg.validate.thresholds.fpd_x1e3 == Limit(2.0) and isinstance(cfg.validate.thresholds.fpd_x1e3.value, float)
    assert cfg.simulate.n_events == 5


def test_limits_are_absolute_numbers_or_floor_multiples() -> None:
    cfg = load_config(None, ["domain=calorimeter", "validate.thresholds.auc_low_level=0.85",
                             "validate.thresholds.fpd_x1e3=3x floor", "validate.thresholds.kpd_x1e3=2.5 * floor"])
    limits = cfg.validate.thresholds
    assert limits.auc_low_level == Limit(0.85) and limits.auc_low_level.bound(floor=0.5) == 0.85
    assert limits.fpd_x1e3 == Limit(3.0, of_floor=True) and limits.fpd_x1e3.bound(floor=40.0) == 120.0
    assert limits.kpd_x1e3.bound(floor=2.0) == 5.0
    # YAML form survives the plain-dict round trip (what metrics.json and config.yaml hold).
    assert config_to_dict(cfg)["validate"]["thresholds"]["fpd_x1e3"] == "3x floor"


def test_round_trip_through_plain_dict() -> None:
    from surrogate.config import config_from_dict

    cfg = load_config(None, ["domain=calorimeter", "train.steps=11", "prepare.inputs=[x.h5]"])
    assert config_from_dict(config_to_dict(cfg)) == cfg


@pytest.mark.parametrize(("override", "message"), [
    ("train.stepz=1", "train.stepz: unknown config key"),
    ("train.steps=ten", "train.steps: expected an integer"),
    ("train.steps=1.5", "train.steps: expected an integer"),
    ("train.amp=3", "train.amp: expected true or false"),
    ("train.loss=wasserstein", "train.loss: expected one of minimax, nonsaturating, wgan_gp, hinge"),
    ("simulate.e_min_mev=-1", "simulate.e_min_mev"),
    ("simulate.physics_list=QGSP", "simulate.physics_list"),
    ("prepare.test_fraction=0.95", "prepare.val_fraction/test_fraction"),
    ("bogus=1", "bogus: unknown config key"),
    ("generate.energies_from=x.h5", "generate.energies_from: renamed to generate.conditions_from"),
    ("train.voxel_noise=false", "train.voxel_noise: renamed to train.feature_noise$"),  # calo_shower's FORMER_NAMES
    ("generate.dtype=float16", "generate.dtype: expected one of float32, float64"),
    ("validate.classifier_dtype=half", "validate.classifier_dtype: expected one of float32, float64"),
    ("validate.classifier_patience=-1", "validate.classifier_patience: expected a number >= 0, got -1"),
    ("domain=lensing_nonexistent", "domain: unknown domain"),
    ("domain=", "domain: missing; expected one of calorimeter"),
    ("train=3", "train: expected a mapping"),
    ("novalue", "expected key=value"),
    ("generate.baselines=[geant3]", "generate.baselines: unknown baseline 'geant3' (available: gflash)"),
    ("generate.baselines=[gflash, gflash]", "generate.baselines: .* names a baseline twice"),
    ("validate.thresholds.fpd_x1e3=lots", "validate.thresholds.fpd_x1e3: expected a number or '<k>x floor'"),
    ("validate.thresholds.kpd_x1e3=-2x floor", "validate.thresholds.kpd_x1e3: expected a number or '<k>x floor'"),
    ("validate.thresholds.kpd_x1e3=0x floor", "validate.thresholds.kpd_x1e3: expected a positive multiple"),
    ("validate.thresholds.auc_jsd=0.6", "validate.thresholds.auc_jsd: unknown config key"),
    ("validate.prdc_k=0", "validate.prdc_k: expected a number > 0, got 0"),
    ("validate.thresholds.auc_low_level=1.5",
     "validate.thresholds.auc_low_level: expected a number in .0, 1. or '<k>x floor', got 1.5"),
])
def test_bad_values_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(None, ["domain=calorimeter", override])


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  steps: [1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: line [23] not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match=r"list\.yaml: expected a mapping"):
        load_config(listy)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("domain: calorimeter\ntrain:\n  hidden: 3\n")
    with pytest.raises(ConfigError, match=r"unknown.yaml: train.hidden: unknown config key"):
        load_config(unknown)


def _sections() -> list[tuple[str, type]]:

    from surrogate import config
    from surrogate.domains import available, get_domain

    found = [("prepare", config.PrepareConfig), ("train", config.TrainConfig),
             ("generate", config.GenerateConfig), ("validate", config.ValidateConfig)]
    found += [(f"simulate ({name})", get_domain(name).SimulateConfig) for name in available()]
    found += [(f"validate.thresholds ({name})", get_domain(name).Thresholds) for name in available()]
    return found


@pytest.mark.parametrize(("section", "cls"), _sections(), ids=lambda x: x if isinstance(x, str) else "")
def test_every_numeric_setting_declares_its_range(section: str, cls: type) -> None:
    """No int or float setting escapes the load-time range check (a new one must declare a Range)."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    from surrogate.config import Limit

    # A threshold's Limit is numeric too: its absolute value has a range (a floor multiple is any k > 0).
    numeric = {f.name for f in dataclasses.fields(cls) if hints[f.name] in (int, float, Limit)}
    assert numeric and numeric == set(cls.RANGES), f"{section}: {sorted(numeric ^ set(cls.RANGES))}"


@pytest.mark.parametrize(("override", "message"), [
    ("validate.classifier_batch=0", "validate.classifier_batch: expected a number > 0, got 0"),
    ("validate.kpd_batch_size=-5", "validate.kpd_batch_size: expected a number >= 2, got -5"),
    ("validate.fpd_min_samples=1", "validate.fpd_min_samples: expected a number >= 2, got 1"),
    ("validate.max_events=-1", "validate.max_events: expected a number >= 0, got -1"),
    ("train.lr_g=.nan", "train.lr_g: expected a number in (0, 1], got nan"),
    ("train.lr_d=.inf", "train.lr_d: expected a number in (0, 1], got inf"),
    ("train.beta2=1.0", "train.beta2: expected a number in [0, 1), got 1.0"),
    ("train.seed=-3", "train.seed: expected a number >= 0, got -3"),
    ("prepare.val_fraction=-0.1", "prepare.val_fraction: expected a number in [0, 1), got -0.1"),
    ("generate.batch_size=0", "generate.batch_size: expected a number > 0, got 0"),
    ("simulate.production_cut_mm=0", "simulate.production_cut_mm: expected a number > 0, got 0.0"),
    ("simulate.sampling_fraction=.nan", "simulate.sampling_fraction: expected a number in [0, 1), got nan"),
    ("validate.thresholds.auc_low_level=1.5", "validate.thresholds.auc_low_level: expected a number in [0, 1]"),
])
def test_out_of_range_values_fail_at_load_time(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, ["domain=calorimeter", override])
    assert str(info.value) == message or str(info.value).startswith(message), str(info.value)
