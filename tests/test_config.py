from __future__ import annotations

from pathlib import Path

import pytest

from surrogate.config import config_to_dict, load_config
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
    assert cfg.validate.thresholds.fpd_x1e3 == 2.0 and isinstance(cfg.validate.thresholds.fpd_x1e3, float)
    assert cfg.simulate.n_events == 5


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
    ("generate.dtype=float16", "generate.dtype: expected one of float32, float64"),
    ("validate.classifier_dtype=half", "validate.classifier_dtype: expected one of float32, float64"),
    ("validate.classifier_patience=-1", "validate.classifier_patience: expected a non-negative number"),
    ("domain=lensing_nonexistent", "domain: unknown domain"),
    ("train=3", "train: expected a mapping"),
    ("novalue", "expected key=value"),
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
