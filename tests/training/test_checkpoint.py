from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from train_helpers import tiny_config

from surrogate.errors import InputError
from surrogate.models import ModelSpec
from surrogate.training.checkpoint import generator_from_checkpoint, load_checkpoint, save_checkpoint
from surrogate.training.loop import train


@pytest.fixture
def checkpoint(store: Path, tmp_path: Path) -> Path:
    return train(tiny_config(steps=2), store, tmp_path / "run", progress=False).checkpoint


def test_checkpoint_is_plain_data_loadable_with_weights_only(checkpoint: Path) -> None:
    raw = torch.load(checkpoint, weights_only=True)  # raises if anything but plain data is inside
    assert raw["format"] == "surrogate-checkpoint" and raw["format_version"] == 1
    spec = ModelSpec.from_dict(raw["model_spec"])
    assert (spec.n_features, spec.n_cond, spec.latent_dim) == (8, 1, 8)
    assert isinstance(raw["rng"]["torch_cpu"], torch.Tensor) and len(raw["rng"]["noise"]) == 1
    assert raw["store"]["n_features"] == 8 and raw["world_size"] == 1
    generator, ckpt = generator_from_checkpoint(checkpoint)
    assert generator(torch.zeros(3, 8), torch.zeros(3, 1)).shape == (3, 8)
    assert ckpt["step"] == 2


def test_save_is_atomic_and_replaces(tmp_path: Path) -> None:
    path = tmp_path / "c" / "x.pt"
    save_checkpoint(path, {"a": torch.ones(2)})
    save_checkpoint(path, {"a": torch.zeros(2)})
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.pt"]  # no temporary left behind
    assert torch.load(path, weights_only=True)["a"].sum().item() == 0.0


class NotData:
    pass


@pytest.mark.parametrize("content", ["truncated", "garbage", "pickle", "other_dict", "missing_key"])
def test_bad_checkpoints_are_one_line_input_errors(checkpoint: Path, tmp_path: Path, content: str) -> None:
    bad = tmp_path / "bad.pt"
    if content == "truncated":
        data = checkpoint.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    elif content == "garbage":
        bad.write_bytes(b"not a checkpoint at all\n" * 10)
    elif content == "pickle":
        bad.write_bytes(pickle.dumps(NotData()))
    elif content == "other_dict":
        torch.save({"state_dict": {"w": torch.ones(1)}}, bad)
    else:
        ckpt = torch.load(checkpoint, weights_only=True)
        del ckpt["G_ema"]
        torch.save(ckpt, bad)
    with pytest.raises(InputError) as info:
        load_checkpoint(bad)
    assert str(bad) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(InputError):
        generator_from_checkpoint(bad)


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "nope.pt")


def test_weights_of_another_shape_are_refused(checkpoint: Path) -> None:
    ckpt = load_checkpoint(checkpoint)
    ckpt["model_spec"] = {**ckpt["model_spec"], "hidden_g": 16}
    with pytest.raises(InputError, match="do not fit model calo_mlp"):
        generator_from_checkpoint(ckpt)
