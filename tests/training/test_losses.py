from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from surrogate.errors import ConfigError
from surrogate.training.losses import discriminator_loss, generator_loss, gradient_penalty

LN2 = math.log(2.0)


def _logits(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).reshape(-1, 1)


@pytest.mark.parametrize("kind", ["minimax", "nonsaturating"])
def test_cross_entropy_discriminator_at_chance_is_2_ln2(kind: str) -> None:
    loss, scalars = discriminator_loss(kind, _logits(0, 0, 0), _logits(0, 0))
    assert loss.item() == pytest.approx(2 * LN2, rel=1e-7)
    assert scalars["loss_d"].item() == pytest.approx(2 * LN2, rel=1e-7)
    assert scalars["d_real"].item() == 0.0 and scalars["d_fake"].item() == 0.0


def test_generator_losses_at_chance() -> None:
    # minimax: log(1 - 1/2) = -ln 2; non-saturating: -log(1/2) = ln 2; critic forms: -mean logit = 0
    assert generator_loss("minimax", _logits(0, 0))[0].item() == pytest.approx(-LN2, rel=1e-7)
    assert generator_loss("nonsaturating", _logits(0, 0))[0].item() == pytest.approx(LN2, rel=1e-7)
    assert generator_loss("hinge", _logits(0, 0))[0].item() == 0.0


def test_softplus_forms_are_finite_for_confident_discriminators() -> None:
    # a perfect D: -log sigmoid(100) - log(1 - sigmoid(-100)) = 2 softplus(-100) ~ 7.4e-44 (float32: 0)
    perfect, _ = discriminator_loss("minimax", _logits(100.0), _logits(-100.0))
    fooled, _ = discriminator_loss("minimax", _logits(-100.0), _logits(100.0))
    assert perfect.item() == pytest.approx(0.0, abs=1e-30)
    assert fooled.item() == pytest.approx(200.0, rel=1e-6)
    assert generator_loss("nonsaturating", _logits(-100.0))[0].item() == pytest.approx(100.0, rel=1e-6)


def test_minimax_generator_saturates_where_nonsaturating_does_not() -> None:
    """At a confident D (logit -10 on fakes) d loss / d logit is -sigmoid(-10) vs -sigmoid(10)."""
    grads = {}
    for kind in ("minimax", "nonsaturating"):
        logit = torch.tensor([[-10.0]], requires_grad=True)
        generator_loss(kind, logit)[0].backward()
        assert logit.grad is not None
        grads[kind] = logit.grad.item()
    assert grads["minimax"] == pytest.approx(-1 / (1 + math.exp(10)), rel=1e-5)
    assert grads["nonsaturating"] == pytest.approx(-1 / (1 + math.exp(-10)), rel=1e-5)


def test_hinge_at_known_logits() -> None:
    # real: relu(1-2)=0, relu(1-0.5)=0.5 -> 0.25; fake: relu(1-2)=0, relu(1+0.5)=1.5 -> 0.75
    loss, _ = discriminator_loss("hinge", _logits(2.0, 0.5), _logits(-2.0, 0.5))
    assert loss.item() == pytest.approx(1.0, rel=1e-7)
    assert generator_loss("hinge", _logits(-2.0, 0.5))[0].item() == pytest.approx(0.75, rel=1e-7)


def test_wgan_critic_loss_adds_weighted_penalty() -> None:
    loss, scalars = discriminator_loss("wgan_gp", _logits(3.0, 1.0), _logits(-1.0, 0.0), gp=torch.tensor(0.5),
                                       gp_weight=10.0)
    assert loss.item() == pytest.approx(-0.5 - 2.0 + 5.0, rel=1e-7)
    assert scalars["gp"].item() == 0.5
    assert generator_loss("wgan_gp", _logits(-1.0, 0.0))[0].item() == pytest.approx(0.5, rel=1e-7)
    with pytest.raises(ValueError, match="gradient penalty"):
        discriminator_loss("wgan_gp", _logits(0.0), _logits(0.0))


class LinearCritic(nn.Module):
    """D(x, c) = w.x + v c: its input gradient is w everywhere."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w)
        self.v = nn.Parameter(torch.tensor([0.7]))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return (x @ self.w + cond @ self.v).unsqueeze(1)


@pytest.mark.parametrize("w", [[3.0, 4.0], [0.6, 0.8], [0.0, 0.1]])
def test_gradient_penalty_of_a_linear_critic_is_norm_minus_one_squared(w: list[float]) -> None:
    critic = LinearCritic(torch.tensor(w))
    gen = torch.Generator().manual_seed(0)
    real, fake = torch.randn(64, 2, generator=gen), torch.randn(64, 2, generator=gen) + 5.0
    gp = gradient_penalty(critic, real, fake, torch.ones(64, 1), gen)
    assert gp.item() == pytest.approx((math.hypot(*w) - 1.0) ** 2, rel=1e-6, abs=1e-12)
    # the penalty is differentiable in the critic's weights: d/dw (|w| - 1)^2 = 2 (|w| - 1) w / |w|
    gp.backward()
    assert critic.w.grad is not None
    norm = math.hypot(*w)
    expected = [2 * (norm - 1) * wi / norm for wi in w]
    torch.testing.assert_close(critic.w.grad, torch.tensor(expected), rtol=1e-5, atol=1e-7)


def test_unknown_kind_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"train\.loss"):
        generator_loss("least_squares", _logits(0.0))
