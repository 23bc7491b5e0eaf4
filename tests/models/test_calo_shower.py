"""calo_shower: energy conservation by construction, exact zeros, the alpha symmetry, reproducibility."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from surrogate.domains.calorimeter.schema import THRESHOLD_MEV
from surrogate.domains.calorimeter.transform import LogRatioTransform
from surrogate.models import build_models
from surrogate.models.calo_shower import ShowerCritic, ShowerGenerator, rotate_alpha

SHAPE = (45, 16, 9)
N_FEATURES = 45 * 16 * 9


def _showers(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shower-like events: a core that narrows with depth, hits thinning out with radius; not rotation-
    symmetric on purpose (every alpha bin has its own weight) so that a wrong permutation shows."""
    rng = np.random.default_rng(seed)
    e_inc = np.exp(rng.uniform(np.log(1e3), np.log(1e4), size=(n, 1))).astype(np.float32)
    layer = np.exp(-0.5 * ((np.arange(45) - 8.0) / 5.0) ** 2)[:, None, None]
    alpha = (1.0 + np.arange(16) / 16.0)[None, :, None]
    radial = np.exp(-np.arange(9) / 1.5)[None, None, :]
    mean = layer * alpha * radial
    mean = mean / mean.sum()
    hit = rng.random((n, *SHAPE)) < np.clip(20 * mean / mean.max(), 0.05, 1.0)
    e = rng.exponential(1.0, size=(n, *SHAPE)) * mean * hit * e_inc[:, :, None, None]
    e[e < THRESHOLD_MEV] = 0.0
    return e.reshape(n, -1).astype(np.float32), e_inc


@pytest.fixture(scope="module")
def fitted() -> tuple[LogRatioTransform, np.ndarray, np.ndarray]:
    showers, e_inc = _showers(256, 0)
    return LogRatioTransform.fit(showers, e_inc, threshold=THRESHOLD_MEV), showers, e_inc


def _build(t: LogRatioTransform, seed: int = 0, physics: bool = True) -> tuple[ShowerGenerator, ShowerCritic]:
    g, d = build_models("calo_shower", n_features=N_FEATURES, n_cond=1, latent_dim=16, hidden_g=32,
                        hidden_d=32, feature_groups=45 if physics else 0, event_shape=SHAPE,
                        transform=t.to_dict(), generator=torch.Generator().manual_seed(seed))
    assert isinstance(g, ShowerGenerator) and isinstance(d, ShowerCritic)
    return g, d


def test_fit_records_the_mean_energy_fraction_per_voxel(fitted: tuple) -> None:
    t, showers, e_inc = fitted
    assert t.mean_fraction is not None
    # fixed point of 2**-30 per event: the mean is exact to ~1e-9
    np.testing.assert_allclose(t.mean_fraction, (showers / e_inc).mean(axis=0), rtol=0, atol=2e-9)
    again = LogRatioTransform.from_dict(t.to_dict())
    np.testing.assert_array_equal(again.mean_fraction, t.mean_fraction)


def test_structured_output_conserves_energy_before_the_threshold(fitted: tuple) -> None:
    """Sum over voxels = response x E_inc; sum within a layer = response x layer fraction x E_inc."""
    t, _, _ = fitted
    g, _ = _build(t)
    g.requires_grad_(False)
    gen = torch.Generator().manual_seed(1)
    z, cond = torch.randn(64, 16, generator=gen), torch.rand(64, 1, generator=gen) * 2 - 1
    log_r, log_p, log_q = g.components(z, cond)
    e_inc = torch.exp(g.transform.ln_e_inc(cond)).double()  # MeV
    e_voxel = torch.exp(g.log_fractions(z, cond).double()) * e_inc  # MeV, before the threshold
    response = torch.exp(log_r.double())
    torch.testing.assert_close(e_voxel.sum(dim=1, keepdim=True), response * e_inc, rtol=1e-5, atol=0)
    e_layer = e_voxel.view(64, 45, -1).sum(dim=2)
    torch.testing.assert_close(e_layer, response * torch.exp(log_p.double()) * e_inc, rtol=1e-5, atol=0)
    torch.testing.assert_close(torch.exp(log_q.double()).sum(dim=2), torch.ones(64, 45, dtype=torch.float64),
                               rtol=0, atol=1e-6)  # a float32 log-softmax
    # the heads start at the training sample's mean shower (alpha-averaged)
    mean = t.mean_fraction.astype(np.float64).reshape(SHAPE)
    start = mean.sum() / 2.0  # the response is 2 sigmoid(.)
    assert float(g.response.bias) == pytest.approx(np.log(start / (1 - start)), abs=1e-5)
    shares = torch.softmax(g.layers.bias.double(), dim=0).numpy()
    np.testing.assert_allclose(shares, mean.sum(axis=(1, 2)) / mean.sum(), rtol=1e-3, atol=1e-7)
    cells = torch.softmax(g.cells.bias.double().view(45, -1), dim=1).numpy().reshape(SHAPE)
    # every alpha cell starts with its layer's alpha-averaged share, the logits floored at 1% of the
    # smallest recorded fraction
    cell = mean.mean(axis=1) + 0.01 * THRESHOLD_MEV / t.e_max_mev  # (L, r)
    in_layer = cell / (16 * cell.sum(axis=1, keepdims=True))
    for alpha in (0, 7):
        np.testing.assert_allclose(cells[:, alpha], in_layer, rtol=1e-4)


def test_readout_threshold_gives_exact_zeros_with_a_straight_through_gradient(fitted: tuple) -> None:
    t, _, _ = fitted
    g, _ = _build(t)
    gen = torch.Generator().manual_seed(2)
    z, cond = torch.randn(64, 16, generator=gen), torch.rand(64, 1, generator=gen) * 2 - 1
    e_inc_mev = np.exp(g.transform.ln_e_inc(cond).numpy())
    with torch.no_grad():
        e_true = np.exp(g.log_fractions(z, cond).double().numpy()) * e_inc_mev
        x = g(z, cond).numpy()
    showers = t.inverse(x, e_inc_mev)
    below = e_true < THRESHOLD_MEV
    assert 0.05 < below.mean() < 0.95  # both kinds of voxel occur
    assert np.all(showers[below] == 0.0)  # exact zeros where the detector reads nothing
    # above it, the energies come back through the transform (to float32 rounding and the voxel cap)
    capped = np.expm1(t.s_cap.astype(np.float64)) * t.eps * e_inc_mev
    np.testing.assert_allclose(showers[~below], np.minimum(e_true, capped)[~below], rtol=2e-4)
    # the empty voxels sit exactly where an empty Geant4 voxel sits in model space: s = 0
    np.testing.assert_allclose(x[below], np.broadcast_to(-t.mean / t.std, x.shape)[below], rtol=1e-6)
    # straight-through: a voxel below threshold still passes the critic's gradient to its shape logit,
    # and only there: not to the response or the layer fraction
    (g(z, cond) * torch.from_numpy(below)).sum().backward()
    assert g.response.weight.grad is None or not g.response.weight.grad.any()
    assert g.layers.weight.grad is None or not g.layers.weight.grad.any()
    assert g.cells.weight.grad is not None and g.cells.weight.grad.abs().max() > 0


def _physical(x: torch.Tensor, t: LogRatioTransform, e_inc: np.ndarray) -> np.ndarray:
    """Model space -> MeV without the inverse's per-voxel cap (a rotated shower may exceed a cap fitted
    at another angle), (n, L, A, R)."""
    s = x.double().numpy() * t.std + t.mean
    return (np.expm1(s) * t.eps * e_inc).reshape(len(x), *SHAPE)


def test_rotation_by_one_alpha_bin_maps_voxel_l_a_r_to_l_a_plus_1_r(fitted: tuple) -> None:
    t, showers, e_inc = fitted
    _, d = _build(t)
    x, _ = t.forward(showers[:8], e_inc[:8])
    a = torch.arange(16)[None, :].expand(8, 16)
    rotated = rotate_alpha(torch.from_numpy(x), torch.remainder(a - 1, 16), d.transform, SHAPE)
    expected = np.roll(showers[:8].reshape(8, *SHAPE), 1, axis=2)  # new[:, :, a + 1] = old[:, :, a]
    np.testing.assert_allclose(_physical(rotated, t, e_inc[:8]), expected, rtol=2e-5, atol=1e-9)
    reflected = rotate_alpha(torch.from_numpy(x), 15 - a, d.transform, SHAPE)
    np.testing.assert_allclose(_physical(reflected, t, e_inc[:8]), showers[:8].reshape(8, *SHAPE)[:, :, ::-1],
                               rtol=2e-5, atol=1e-9)


def test_augment_draws_one_of_the_32_symmetries_per_event_reproducibly(fitted: tuple) -> None:
    t, showers, e_inc = fitted
    _, d = _build(t)
    x = torch.from_numpy(t.forward(showers[:32], e_inc[:32])[0])
    out = d.augment(x, torch.Generator().manual_seed(5))
    torch.testing.assert_close(out, d.augment(x, torch.Generator().manual_seed(5)), rtol=0, atol=0)
    got = _physical(out, t, e_inc[:32])
    old = showers[:32].reshape(32, *SHAPE)
    candidates = [np.roll(old, k, axis=2) for k in range(16)]
    candidates += [np.roll(old[:, :, ::-1], k, axis=2) for k in range(16)]
    which = [next(i for i, c in enumerate(candidates) if np.allclose(got[b], c[b], rtol=2e-5, atol=1e-9))
             for b in range(32)]
    assert len(set(which)) > 8  # different events get different symmetries
    # a symmetry changes no observable that does not depend on the angle: layer energies stay
    np.testing.assert_allclose(got.sum(axis=(2, 3)), old.sum(axis=(2, 3)), rtol=1e-5, atol=1e-9)


def test_critic_observables_are_the_layer_sums_radial_profile_and_moments(fitted: tuple) -> None:
    t, showers, e_inc = fitted
    _, d = _build(t)
    x, _ = t.forward(showers[:16], e_inc[:16])
    obs = d.observables(d.transform.s_from_x(torch.from_numpy(x))).double().numpy()
    f = (showers[:16] / e_inc[:16]).astype(np.float64).reshape(16, *SHAPE)
    floor = THRESHOLD_MEV / float(e_inc.max())
    e_layer = f.sum(axis=(2, 3))
    np.testing.assert_allclose(obs[:, :45], np.log(e_layer + floor), atol=2e-4)
    np.testing.assert_allclose(obs[:, 45], np.log(e_layer.sum(axis=1) + floor), atol=2e-4)
    radial = f.sum(axis=(1, 2)) / f.sum(axis=(1, 2, 3))[:, None]
    np.testing.assert_allclose(obs[:, 46:55], np.log(radial + floor), atol=2e-3)
    r = np.arange(9) + 0.5  # radial bins as the unit of length
    p = f.sum(axis=2)  # (n, L, r)
    mean_r = (p * r).sum(axis=2) / (e_layer + floor)
    width_r = np.sqrt(np.maximum((p * r**2).sum(axis=2) / (e_layer + floor) - mean_r**2, 0) + 1e-2)
    np.testing.assert_allclose(obs[:, 55 + 4 * 45:], width_r, rtol=1e-3, atol=1e-3)


def test_same_seed_same_networks_and_showers(fitted: tuple) -> None:
    t, _, _ = fitted
    before = torch.get_rng_state()
    (g1, d1), (g2, d2), (g3, _) = _build(t, 3), _build(t, 3), _build(t, 4)
    assert torch.equal(torch.get_rng_state(), before)
    for a, b in zip([*g1.state_dict().values(), *d1.state_dict().values()],
                    [*g2.state_dict().values(), *d2.state_dict().values()], strict=True):
        assert torch.equal(a, b)
    z, cond = torch.randn(4, 16, generator=torch.Generator().manual_seed(0)), torch.zeros(4, 1)
    assert torch.equal(g1(z, cond), g2(z, cond)) and not torch.equal(g1(z, cond), g3(z, cond))
    assert d1(g1(z, cond), cond).shape == (4, 1)
    # empty voxels come back from x at |s| ~ 1e-6, either side of 0: the critic stays finite on both
    # samples (a negative energy under a log once made every critic value NaN)
    t_x, t_c = t.forward(*fitted[1:])
    assert torch.isfinite(d1(torch.from_numpy(t_x), torch.from_numpy(t_c))).all()
    assert torch.isfinite(d1(g1(z, cond), cond)).all()
    # the critic without observables reads voxels and condition only
    _, plain = _build(t, physics=False)
    assert plain.net[0].in_features == N_FEATURES + 1


def test_event_shape_must_hold_the_features() -> None:
    with pytest.raises(ValueError, match=r"event_shape \(45, 16, 8\) does not hold 6480"):
        build_models("calo_shower", n_features=N_FEATURES, n_cond=1, latent_dim=4, hidden_g=8, hidden_d=8,
                     event_shape=(45, 16, 8))
