from __future__ import annotations

from pathlib import Path

import pytest

from surrogate.config import Limit, config_to_dict, load_config
from surrogate.errors import ConfigError

CONFIGS = sorted(Path(__file__).parents[1].joinpath("configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.domain == "calorimeter"


def test_overrides_are_typed_and_nested(tmp_path: Path) -> None:
    cfg = load_config(None, ["train.steps=7", "train.lr_g=3e-4", "prepare.inputs=[a.h5, b.h5]",
                             "validate.thresholds.fpd_x1e3=2", "simulate.n_events=5"])
    assert cfg.train.steps == 7
    assert cfg.train.lr_g == pytest.approx(3e-4)
    assert cfg.prepare.inputs == ("a.h5", "b.h5")
    assert cfg.validate.thresholds.fpd_x1e3 == Limit(2.0) and isinstance(cfg.validate.thresholds.fpd_x1e3.value, float)
    assert cfg.simulate.n_events == 5


def test_limits_are_absolute_numbers_or_floor_multiples() -> None:
    cfg = load_config(None, ["validate.thresholds.auc_low_level=0.85", "validate.thresholds.fpd_x1e3=3x floor",
                             "validate.thresholds.kpd_x1e3=2.5 * floor"])
    limits = cfg.validate.thresholds
    assert limits.auc_low_level == Limit(0.85) and limits.auc_low_level.bound(floor=0.5) == 0.85
    assert limits.fpd_x1e3 == Limit(3.0, of_floor=True) and limits.fpd_x1e3.bound(floor=40.0) == 120.0
    assert limits.kpd_x1e3.bound(floor=2.0) == 5.0
    # YAML form survives the plain-dict round trip (what metrics.json and config.yaml hold).
    assert config_to_dict(cfg)["validate"]["thresholds"]["fpd_x1e3"] == "3x floor"


def test_round_trip_through_plain_dict() -> None:
    from surrogate.config import config_from_dict

    cfg = load_config(None, ["train.steps=11", "prepare.inputs=[x.h5]"])
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
    ("domain=lensing_nonexistent", "domain: unknown domain"),
    ("train=3", "train: expected a mapping"),
    ("novalue", "expected key=value"),
    ("validate.thresholds.fpd_x1e3=lots", "validate.thresholds.fpd_x1e3: expected a number or '<k>x floor'"),
    ("validate.thresholds.kpd_x1e3=-2x floor", "validate.thresholds.kpd_x1e3: expected a number or '<k>x floor'"),
    ("validate.thresholds.kpd_x1e3=0x floor", "validate.thresholds.kpd_x1e3: expected a positive multiple"),
    ("validate.thresholds.auc_jsd=0.6", "validate.thresholds.auc_jsd: unknown config key"),
    ("validate.prdc_k=0", "validate.prdc_k: expected a positive number"),
])
def test_bad_values_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(None, [override])


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
    unknown.write_text("train:\n  hidden: 3\n")
    with pytest.raises(ConfigError, match=r"unknown.yaml: train.hidden: unknown config key"):
        load_config(unknown)
