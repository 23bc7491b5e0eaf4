from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from surrogate.errors import ConfigError
from surrogate.models import (
    ModelSpec,
    available,
    build_from_spec,
    build_models,
    feature_noise_models,
    takes_feature_noise,
)

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


def test_critic_group_energies_are_the_layer_sums_of_the_physical_shower() -> None:
    """GroupEnergies inverts the fitted transform: log(E_layer / E_inc + floor) and log(E_tot / E_inc + floor)."""
    from surrogate.domains.calorimeter.transform import LogRatioTransform
    from surrogate.models.calo_mlp import GroupEnergies

    rng = np.random.default_rng(0)
    e_inc = np.exp(rng.uniform(np.log(1e3), np.log(1e4), size=(64, 1))).astype(np.float32)
    showers = (rng.exponential(1.0, size=(64, 6480)) * (rng.random((64, 6480)) < 0.1) * e_inc / 500)
    showers = showers.astype(np.float32)
    showers[:, 40 * 144:] = 0.0  # the last five layers empty
    t = LogRatioTransform.fit(showers, e_inc, threshold=15.15e-3)
    x, c = t.forward(showers, e_inc)
    groups = GroupEnergies(6480, 45)
    groups.load_transform(t.to_dict())
    got = groups(torch.from_numpy(x)).double().numpy()
    floor = 15.15e-3 / float(e_inc.max())
    layers = showers.astype(np.float64).reshape(64, 45, 144).sum(axis=2) / e_inc
    expected = np.log(np.concatenate([layers, layers.sum(axis=1, keepdims=True)], axis=1) + floor)
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-4)
    assert np.all(got[:, 40:45] == np.float32(np.log(floor)))  # empty layers sit at the floor
    # a critic with the sums takes 46 more inputs and passes gradients through them to x
    _, d = build_models("calo_mlp", n_features=6480, n_cond=1, latent_dim=8, hidden_g=16, hidden_d=16,
                        feature_groups=45, transform=t.to_dict())
    assert d.net[0].in_features == 6480 + 1 + 46
    xt = torch.from_numpy(x[:4]).requires_grad_(True)
    d(xt, torch.from_numpy(c[:4])).sum().backward()
    assert xt.grad is not None and torch.isfinite(xt.grad).all()
    # without a readout threshold an empty layer still gives a finite feature (the floor is eps)
    no_threshold = {**t.to_dict(), "threshold_mev": 0.0}
    groups.load_transform(no_threshold)
    assert torch.isfinite(groups(torch.from_numpy(x))).all()
    assert float(groups.floor) == pytest.approx(t.eps)


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


def test_feature_noise_is_declared_by_the_model_and_refused_by_the_others() -> None:
    """calo_shower, calo_param, kappa_field and lens_param declare FEATURE_NOISE, image_gan with instrument
    noise only; another model gets a one-line error naming the setting."""
    assert feature_noise_models() == ["calo_param", "calo_shower", "image_gan", "kappa_field", "lens_param"]
    assert takes_feature_noise("calo_shower") and not takes_feature_noise("calo_mlp")
    assert takes_feature_noise("image_gan", {"noise": "instrument"}) and not takes_feature_noise("image_gan")
    with pytest.raises(ConfigError, match=r"^train\.feature_noise: model 'calo_mlp' with these options takes no "
                                          r"per-feature noise \(models that can: calo_param, calo_shower, "
                                          r"image_gan, kappa_field, lens_param\)$"):
        build_models("calo_mlp", n_features=8, n_cond=1, latent_dim=4, hidden_g=8, hidden_d=8, feature_noise=True)
    spec = ModelSpec(name="calo_shower", n_features=8, n_cond=1, latent_dim=4, hidden_g=8, hidden_d=8,
                     feature_noise=True)
    assert spec.z_dim == 4 + 8
    g, _ = build_from_spec(spec)
    assert g(torch.zeros(2, 12), torch.zeros(2, 1)).shape == (2, 8)
    # a spec saved before the rename (key voxel_noise) loads as the same spec
    old = {("voxel_noise" if key == "feature_noise" else key): value for key, value in spec.to_dict().items()}
    assert "feature_noise" not in old and ModelSpec.from_dict(old) == spec


def test_unknown_model_is_a_config_error() -> None:
    assert "calo_mlp" in available()
    with pytest.raises(ConfigError, match=r"unknown model 'transformer'.*calo_mlp"):
        _build("transformer")
