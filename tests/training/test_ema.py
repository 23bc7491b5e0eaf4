from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from surrogate.training.ema import EMA


def test_ema_follows_the_warm_up_schedule_exactly() -> None:
    """Source jumps from 0 to 1 and stays: after k updates the average is 1 - prod_t d_t."""
    source = nn.Linear(3, 2)
    nn.init.zeros_(source.weight)
    nn.init.zeros_(source.bias)
    ema = EMA(source, decay=0.9)
    with torch.no_grad():
        source.weight.fill_(1.0)
        source.bias.fill_(1.0)
    product = 1.0
    for t in range(40):
        d = min(0.9, (1 + t) / (10 + t))
        assert ema.current_decay() == pytest.approx(d)
        ema.update(source)
        product *= d
        torch.testing.assert_close(ema.model.weight, torch.full((2, 3), 1 - product), rtol=1e-6, atol=1e-6)
    assert ema.updates == 40
    assert not ema.model.weight.requires_grad and not ema.model.training


def test_ema_copies_buffers_and_round_trips() -> None:
    norm = nn.BatchNorm1d(2)
    source = nn.Sequential(nn.Linear(2, 2), norm)
    ema = EMA(source, decay=0.999)
    assert norm.running_mean is not None
    with torch.no_grad():
        norm.running_mean.fill_(math.pi)
    ema.update(source)
    torch.testing.assert_close(ema.model.state_dict()["1.running_mean"], torch.full((2,), math.pi))
    other = EMA(source, decay=0.999)
    other.load_state_dict(ema.state_dict())
    assert other.updates == 1
    torch.testing.assert_close(other.model.state_dict()["0.weight"], ema.model.state_dict()["0.weight"],
                               rtol=0, atol=0)
