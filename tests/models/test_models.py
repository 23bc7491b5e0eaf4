from __future__ import annotations

import pytest
import torch
from torch import nn

from surrogate.errors import ConfigError
from surrogate.models import ModelSpec, available, build_from_spec, build_models

SPEC = ModelSpec(name="calo_mlp", n_features=6480, n_cond=1, latent_dim=64, hidden_g=256, hidden_d=256)


def _build(name: str = "calo_mlp", *, layer_norm: bool = True,
           generator: torch.Generator | None = None) -> tuple[nn.Module, nn.Module]:
    return build_models(name, n_features=SPEC.n_features, n_cond=SPEC.n_cond, latent_dim=SPEC.latent_dim,
                        hidden_g=SPEC.hidden_g, hidden_d=SPEC.hidden_d, layer_norm=layer_norm,
                        generator=generator)


def test_calo_mlp_shapes_and_size() -> None:
    g, d = _build()
    z, cond = torch.zeros(5, 64), torch.zeros(5, 1)
    x = g(z, cond)
    assert x.shape == (5, 6480) and d(x, cond).shape == (5, 1)
    # G: (65 -> 256 -> 512 -> 6480) + two LayerNorms; D: (6481 -> 256 -> 128 -> 1)
    n_g = 65 * 256 + 256 + 256 * 512 + 512 + 512 * 6480 + 6480 + 2 * (256 + 512)
    n_d = 6481 * 256 + 256 + 256 * 128 + 128 + 128 + 1
    assert sum(p.numel() for p in g.parameters()) == n_g
    assert sum(p.numel() for p in d.parameters()) == n_d
    # WGAN-GP's per-sample penalty forbids batch statistics in the critic
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in d.modules())


def test_layer_norm_is_optional() -> None:
    g, _ = _build(layer_norm=False)
    assert not any(isinstance(m, nn.LayerNorm) for m in g.modules())


def test_initialisation_comes_from_the_given_generator_only() -> None:
    before = torch.get_rng_state()
    g1, d1 = _build(generator=torch.Generator().manual_seed(3))
    g2, d2 = _build(generator=torch.Generator().manual_seed(3))
    g3, _ = _build(generator=torch.Generator().manual_seed(4))
    assert torch.equal(torch.get_rng_state(), before)  # the global stream is untouched
    for a, b in zip(list(g1.parameters()) + list(d1.parameters()),
                    list(g2.parameters()) + list(d2.parameters()), strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(next(g1.parameters()), next(g3.parameters()))


def test_spec_round_trip_rebuilds_the_same_shapes() -> None:
    assert ModelSpec.from_dict(SPEC.to_dict()) == SPEC
    g, _ = build_from_spec(SPEC)
    assert g(torch.zeros(2, 64), torch.zeros(2, 1)).shape == (2, 6480)


def test_unknown_model_is_a_config_error() -> None:
    assert "calo_mlp" in available()
    with pytest.raises(ConfigError, match=r"unknown model 'transformer'.*calo_mlp"):
        _build("transformer")
