"""calo_param: starts at the fitted mean shower, bounded parameters, Poisson hits, exact zeros, seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from surrogate.domains.calorimeter.schema import THRESHOLD_MEV
from surrogate.domains.calorimeter.transform import LogRatioTransform
from surrogate.models import build_models
from surrogate.models.calo_param import (
    LAYERS_PER_E_FOLD,
    LIM_DEPTH,
    LIM_LAYER,
    LIM_RESPONSE,
    LIM_SCALE,
    ParamGenerator,
)
from surrogate.models.calo_shower import ShowerCritic

SHAPE = (45, 16, 9)
N_FEATURES = 45 * 16 * 9
LATENT = 16


def _showers(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shower-like events, 1-10 GeV: a longitudinal bump at layer 8, a radial profile falling ~e^-r/1.5,
    hits thinning out with radius, each hit exponentially distributed around the voxel's mean."""
    rng = np.random.default_rng(seed)
    e_inc = np.exp(rng.uniform(np.log(1e3), np.log(1e4), size=(n, 1))).astype(np.float32)
    layer = np.exp(-0.5 * ((np.arange(45) - 8.0) / 5.0) ** 2)[:, None, None]
    radial = np.exp(-np.arange(9) / 1.5)[None, None, :]
    mean = np.broadcast_to(layer * radial, SHAPE)
    mean = mean / mean.sum()
    hit = rng.random((n, *SHAPE)) < np.clip(20 * mean / mean.max(), 0.05, 1.0)
    e = rng.exponential(1.0, size=(n, *SHAPE)) * mean * hit * e_inc[:, :, None, None]
    e[e < THRESHOLD_MEV] = 0.0
    return e.reshape(n, -1).astype(np.float32), e_inc


@pytest.fixture(scope="module")
def fitted() -> LogRatioTransform:
    showers, e_inc = _showers(256, 0)
    return LogRatioTransform.fit(showers, e_inc, threshold=THRESHOLD_MEV)


def _build(t: LogRatioTransform, seed: int = 0, feature_noise: bool = True) -> tuple[ParamGenerator, ShowerCritic]:
    g, d = build_models("calo_param", n_features=N_FEATURES, n_cond=1, latent_dim=LATENT, hidden_g=32,
                        hidden_d=32, feature_groups=45, event_shape=SHAPE, transform=t.to_dict(),
                        feature_noise=feature_noise, generator=torch.Generator().manual_seed(seed))
    assert isinstance(g, ParamGenerator) and isinstance(d, ShowerCritic)
    return g, d


def _z(n: int, seed: int, noise: bool = True) -> torch.Tensor:
    return torch.randn(n, LATENT + (N_FEATURES if noise else 0), generator=torch.Generator().manual_seed(seed))


def _mean_profiles(t: LogRatioTransform) -> tuple[np.ndarray, np.ndarray, float]:
    """The fit's (layer fractions (L,), in-layer radial shares (L, R), response)."""
    assert t.mean_fraction is not None
    f = t.mean_fraction.astype(np.float64).reshape(SHAPE).sum(axis=1)  # (L, R)
    e_layer = f.sum(axis=1)
    return e_layer / e_layer.sum(), f / np.maximum(e_layer, 1e-30)[:, None], float(e_layer.sum())


def test_untrained_generator_draws_the_fitted_mean_shower(fitted: LogRatioTransform) -> None:
    """Before the thresholds and hits: response, layer fractions and radial shares at the fit's mean,
    within what the near-zero heads (gain 0.01 through tanh x limit) move them."""
    g, _ = _build(fitted, feature_noise=False)
    p_mean, radial_mean, response = _mean_profiles(fitted)
    # c = 0: the middle of the log-energy range, where the depth prior puts the mean profile
    cond = torch.zeros(64, 1)
    with torch.no_grad():
        log_f, _ = g.log_fractions(_z(64, 1, noise=False), cond)
    f = torch.exp(log_f.double()).numpy().reshape(64, *SHAPE)
    # response within 1% (the head moves log R by at most 0.3 x tanh(~0.01))
    np.testing.assert_allclose(f.sum(axis=(1, 2, 3)), response, rtol=1e-2)
    layer = f.sum(axis=(2, 3)) / f.sum(axis=(1, 2, 3))[:, None]
    heavy = p_mean > 0.01
    np.testing.assert_allclose(layer[:, heavy], np.broadcast_to(p_mean[heavy], layer[:, heavy].shape), rtol=0.1)
    shares = f.sum(axis=2) / f.sum(axis=(2, 3))[:, :, None]  # (n, L, R)
    mean_shares = shares.mean(axis=0)
    big = (radial_mean > 0.01) & heavy[:, None]
    np.testing.assert_allclose(mean_shares[big], radial_mean[big], rtol=0.05, atol=2e-3)
    # every alpha cell of a radial bin gets the same share up to the (small) tilt
    per_alpha = f[:, 10, :, 0] / f[:, 10, :, 0].mean(axis=1, keepdims=True)
    np.testing.assert_allclose(per_alpha, 1.0, rtol=0.05)


def test_parameters_stay_within_their_bounds_however_large_the_weights(fitted: LogRatioTransform) -> None:
    g, _ = _build(fitted)
    response = _mean_profiles(fitted)[2]
    with torch.no_grad():
        for param in g.head.parameters():
            param.mul_(1e4)  # a critic that pushed as far as it could: every tanh saturated
        cond = torch.rand(256, 1, generator=torch.Generator().manual_seed(3)) * 2 - 1
        p = g.parameters_of(_z(256, 2), cond)
    r = torch.exp(p["log_r"]).numpy()
    assert (r >= response * math.exp(-LIM_RESPONSE) * (1 - 1e-5)).all()
    assert (r <= response * math.exp(LIM_RESPONSE) * (1 + 1e-5)).all()
    # the bounds are reached (saturated heads), not a constant
    assert r.max() == pytest.approx(response * math.exp(LIM_RESPONSE), rel=1e-3)
    assert r.min() == pytest.approx(response * math.exp(-LIM_RESPONSE), rel=1e-3)
    # the depth stays within LIM_DEPTH layers of the energy's prior, and each layer's fraction within
    # e^(2 LIM_LAYER) of the mean profile read at that depth (its own delta and the renormalisation)
    ln_mid = math.log(fitted.e_min_mev) + 0.5 * math.log(fitted.e_max_mev / fitted.e_min_mev)
    prior = LAYERS_PER_E_FOLD * (g.transform.ln_e_inc(cond).numpy() - ln_mid)
    depth = p["depth"].numpy()
    assert (np.abs(depth - prior) <= LIM_DEPTH + 1e-5).all() and np.abs(depth - prior).max() > 0.99 * LIM_DEPTH
    # the fixture's one energy bin: its mean profile read at this shower's depth
    assert len(np.unique(g.node_ln_e.numpy())) == 1
    shifted = g.mean_profile(g.transform.ln_e_inc(cond), p["depth"] - torch.as_tensor(prior))[1].double().numpy()
    ratio = torch.exp(p["log_p"]).double().numpy() / shifted
    assert (ratio < math.exp(2 * LIM_LAYER)).all() and (ratio > math.exp(-2 * LIM_LAYER)).all()
    assert ratio.max() > math.exp(0.5 * LIM_LAYER)  # and the deltas are used
    scale = p["scale"].numpy()
    assert scale.min() >= math.exp(-LIM_SCALE) - 1e-6 and scale.max() <= math.exp(LIM_SCALE) + 1e-6


def test_the_shower_maximum_moves_one_radiation_length_deeper_per_e_fold_of_energy(fitted: LogRatioTransform) -> None:
    """Rossi / GFlash: t_max = ln(E / E_c) + const; beyond its energy bin (the fixture has one), the untrained
    generator's longitudinal profile is the bin's profile shifted by LAYERS_PER_E_FOLD x ln(E / E_bin)."""
    g, _ = _build(fitted, feature_noise=False)
    assert fitted.ln_e_by_energy is not None and len(fitted.ln_e_by_energy) == 1
    lo, span = math.log(fitted.e_min_mev), math.log(fitted.e_max_mev / fitted.e_min_mev)
    ln_bin = float(fitted.ln_e_by_energy[0])
    with torch.no_grad():
        g.head.weight.zero_()
        g.head.bias.zero_()  # no learned part: the prior alone
        p_bin, p_top = (torch.exp(g.parameters_of(_z(1, 0, noise=False),
                                                  torch.full((1, 1), 2 * (x - lo) / span - 1))["log_p"])
                        .double().numpy()[0] for x in (ln_bin, lo + span))
    layers = np.arange(45) + 0.5
    shift = LAYERS_PER_E_FOLD * (lo + span - ln_bin)
    assert shift > 1.0  # 1-10 GeV: ~1.15 X0 from the middle to the top at 0.805 X0 a layer
    assert (p_top * layers).sum() - (p_bin * layers).sum() == pytest.approx(shift, abs=0.02)
    np.testing.assert_allclose(p_bin.sum(), 1.0, rtol=1e-6)


def test_the_gan_moves_the_mean_shower_only_as_far_as_the_options_allow(fitted: LogRatioTransform) -> None:
    """Depth, layer fractions and radial scales: their part even in the latent (the mean over showers) within
    mean_depth / mean_layer / mean_scale, their odd part (a shower's fluctuation) within the full limits."""
    g, _ = _build(fitted)
    opts = g.options
    assert (opts["mean_depth"], opts["mean_layer"], opts["mean_scale"]) == (0.03, 0.02, 0.1)
    cond = torch.rand(256, 1, generator=torch.Generator().manual_seed(3)) * 2 - 1
    z = _z(256, 2)
    ln_mid = math.log(fitted.e_min_mev) + 0.5 * math.log(fitted.e_max_mev / fitted.e_min_mev)
    prior = LAYERS_PER_E_FOLD * (g.transform.ln_e_inc(cond) - ln_mid)
    with torch.no_grad():
        g.head.weight.zero_()
        g.head.bias.fill_(1e4)  # the same for every latent: all even, saturated
        p = g.parameters_of(z, cond)
        # the even part saturates at the option's limit, with the unsplit slope LIM: m tanh(LIM / m)
        np.testing.assert_allclose((p["depth"] - prior).numpy(), opts["mean_depth"], rtol=1e-5)
        np.testing.assert_allclose(torch.log(p["scale"]).numpy(),
                                   opts["mean_scale"] * math.tanh(LIM_SCALE / opts["mean_scale"]), rtol=1e-5)
        g.head.bias[2:2 + 45] = torch.where(torch.arange(45) % 2 == 0, 1e4, -1e4)  # layers up, down, up...
        p = g.parameters_of(z, cond)
        base = g.mean_profile(g.transform.ln_e_inc(cond), p["depth"] - prior)[1]
        ratio = (torch.exp(p["log_p"]) / base).double().numpy()
        np.testing.assert_allclose(ratio[:, 0] / ratio[:, 1], math.exp(2 * opts["mean_layer"]), rtol=1e-4)
        # saturated weights: showers reach the full limits, their mean over z and -z stays within the options
        g.head.bias.zero_()
        g.head.weight.normal_(generator=torch.Generator().manual_seed(4)).mul_(1e4)
        p, mirror = g.parameters_of(z, cond), g.parameters_of(-z, cond)
    depth = (p["depth"] - prior).numpy()
    assert np.abs(depth).max() > 0.99 * LIM_DEPTH and (np.abs(depth) <= LIM_DEPTH + 1e-5).all()
    mean_depth = 0.5 * (p["depth"] + mirror["depth"]) - prior
    assert (mean_depth.abs() <= opts["mean_depth"] + 1e-5).all() and mean_depth.abs().max() > 0.8 * opts["mean_depth"]
    log_scale = torch.log(p["scale"]).numpy()
    assert np.abs(log_scale).max() > 0.99 * LIM_SCALE and (np.abs(log_scale) <= LIM_SCALE + 1e-5).all()
    mean_scale = 0.5 * torch.log(p["scale"] * mirror["scale"])
    assert (mean_scale.abs() <= opts["mean_scale"] + 1e-6).all()


def test_near_zero_the_split_moves_the_mean_as_fast_as_the_unsplit_generator(fitted: LogRatioTransform) -> None:
    """Small head outputs: each parameter is LIM x head output, as for the unsplit LIM x tanh(head), so the
    critic moves the mean at the same speed until the mean's limit is near."""
    g, _ = _build(fitted)
    cond = torch.rand(64, 1, generator=torch.Generator().manual_seed(3)) * 2 - 1
    z = _z(64, 2)
    with torch.no_grad():
        g.head.weight.mul_(0.01)  # outputs ~1e-4: m tanh(LIM e / m) = LIM e to ~1e-4 (LIM / m <= 67)
        g.head.bias.fill_(1e-4)  # and a mean part
        h = z[:, :LATENT]
        for block, norm in zip(g.blocks, g.norms, strict=True):
            h = torch.nn.functional.leaky_relu(norm(block(torch.cat([h, cond], dim=1))), 0.2)
        head = torch.tanh(g.head(torch.cat([h, cond], dim=1))).double()
        p = g.parameters_of(z, cond)
    ln_mid = math.log(fitted.e_min_mev) + 0.5 * math.log(fitted.e_max_mev / fitted.e_min_mev)
    prior = LAYERS_PER_E_FOLD * (g.transform.ln_e_inc(cond) - ln_mid)
    assert head[:, 1].abs().max() > 1e-4 and head[:, 1].std() > 1e-5  # not zero, and varies with z
    np.testing.assert_allclose((p["depth"] - prior)[:, 0].double().numpy(), (LIM_DEPTH * head[:, 1]).numpy(),
                               rtol=2e-3, atol=1e-7)
    np.testing.assert_allclose(torch.log(p["scale"]).double().numpy(), (LIM_SCALE * head[:, 2 + 45:2 + 90]).numpy(),
                               rtol=2e-3, atol=1e-7)


def test_the_mean_shower_follows_its_energy_bin_where_one_shifted_profile_would_not() -> None:
    """Showers whose maximum stays at layer 8 at every energy (the shift law would move it 1.24 layers per
    e-fold): read at each energy bin's mean energy, the untrained generator's mean depth is that bin's."""
    showers, e_inc = _showers(1000, 9)  # 1-10 GeV: four quarter-decade bins of ~250 showers
    t = LogRatioTransform.fit(showers, e_inc, threshold=THRESHOLD_MEV)
    assert t.ln_e_by_energy is not None and t.fraction_by_energy is not None and len(t.ln_e_by_energy) == 4
    g, _ = _build(t, feature_noise=False)
    layers = np.arange(45) + 0.5
    lo, span = math.log(t.e_min_mev), math.log(t.e_max_mev / t.e_min_mev)
    with torch.no_grad():
        g.head.weight.zero_()
        g.head.bias.zero_()
        for ln_e, f in zip(t.ln_e_by_energy, t.fraction_by_energy, strict=True):
            cond = torch.full((1, 1), 2 * (ln_e - lo) / span - 1)
            p = torch.exp(g.parameters_of(_z(1, 0, noise=False), cond)["log_p"]).double().numpy()[0]
            e_layer = f.astype(np.float64).reshape(SHAPE).sum(axis=(1, 2))
            assert (p * layers).sum() == pytest.approx((e_layer * layers).sum() / e_layer.sum(), abs=0.02)
        # between two bins: between their depths; beyond the last, that bin's profile moved by the shift law
        mid = 0.5 * (t.ln_e_by_energy[1] + t.ln_e_by_energy[2])
        top = t.ln_e_by_energy[3] + 0.1
        p_mid, p_top = (torch.exp(g.parameters_of(_z(1, 0, noise=False),
                                                  torch.full((1, 1), 2 * (x - lo) / span - 1))["log_p"])
                        .double().numpy()[0] for x in (mid, top))
    depths = [(f.astype(np.float64).reshape(SHAPE).sum(axis=(1, 2)) * layers).sum()
              / f.astype(np.float64).sum() for f in t.fraction_by_energy]
    # (within 0.05 layers: a profile read earlier loses what passes layer 0 and is renormalised)
    assert min(depths[1], depths[2]) - 0.05 <= (p_mid * layers).sum() <= max(depths[1], depths[2]) + 0.05
    assert (p_top * layers).sum() == pytest.approx(depths[3] + 0.1 * LAYERS_PER_E_FOLD, abs=0.03)


def test_radial_scale_reads_the_cumulative_profile_at_edge_over_scale(fitted: LogRatioTransform) -> None:
    g, _ = _build(fitted)
    _, radial_mean, _ = _mean_profiles(fitted)
    table = g.node_cum[:1]  # the fixture's one energy bin
    shares = g.radial_shares(torch.ones(1, 45), table).double().numpy()[0]
    heavy = _mean_profiles(fitted)[0] > 0.01  # layers the fixture fills (its deep layers are empty)
    np.testing.assert_allclose(shares[heavy], radial_mean[heavy], rtol=1e-4, atol=2e-6)  # scale 1: the fit
    np.testing.assert_allclose(shares.sum(axis=1), 1.0, rtol=1e-6)
    cum = np.concatenate([np.zeros((45, 1)), np.cumsum(radial_mean, axis=1)], axis=1)
    wide = g.radial_shares(torch.full((1, 45), 2.0), table).double().numpy()[0]
    # scale 2: the first bin holds what the mean profile holds within half a bin (linear within the bin)
    # then renormalised by what is still inside the last edge, C(9 / 2) = C(4.5)
    inside = np.maximum(0.5 * (cum[:, 4] + cum[:, 5]), 1e-30)
    np.testing.assert_allclose(wide[heavy, 0], (0.5 * cum[:, 1] / inside)[heavy], rtol=1e-3)
    r = np.arange(9) + 0.5
    assert ((wide * r).sum(axis=1) > (shares * r).sum(axis=1)).all()  # wider is wider in every layer
    narrow = g.radial_shares(torch.full((1, 45), 0.5), table).double().numpy()[0]
    assert ((narrow * r).sum(axis=1) < (shares * r).sum(axis=1)).all()


def test_tilt_moves_the_energy_weighted_centre_its_way(fitted: LogRatioTransform) -> None:
    g, _ = _build(fitted, feature_noise=False)
    with torch.no_grad():
        g.head.weight.zero_()
        g.head.bias.zero_()
        g.head.bias[2 + 2 * 45::2] = 0.5  # x tilt of every layer; y tilt stays 0
        log_f, _ = g.log_fractions(_z(2, 0, noise=False), torch.zeros(2, 1))
    f = torch.exp(log_f.double()).numpy().reshape(2, 45, -1)
    cx, cy = g.cell_x.double().numpy(), g.cell_y.double().numpy()
    centre_x = (f * cx).sum(axis=2) / f.sum(axis=2)
    centre_y = (f * cy).sum(axis=2) / f.sum(axis=2)
    assert (centre_x > 0.05).all()  # in radial bins
    np.testing.assert_allclose(centre_y, 0.0, atol=1e-5)


def test_hits_are_poisson_and_keep_the_mean_energy(fitted: LogRatioTransform) -> None:
    """Per voxel: recorded with probability 1 - exp(-k) (k = expected energy / quantum) and, averaged over
    showers, the energy the parameters ask for (mean-preserving hits), to the statistics of 4000 showers."""
    g, _ = _build(fitted)
    n = 4000
    cond = torch.zeros(n, 1)  # one incident energy (the fit's geometric mean)
    z = _z(n, 5)
    with torch.no_grad():
        g.head.weight.zero_()  # every shower has the same parameters: one expected shower
        x = g(z, cond)
        log_f, _ = g.log_fractions(z, cond)
        quantum = torch.exp(g.parameters_of(z[:1], cond[:1])["log_quantum"][0]).double().numpy()
    quantum = np.repeat(quantum, N_FEATURES // 45)
    e_inc = math.exp(float(g.transform.ln_e_inc(cond[:1])))
    expected = torch.exp(log_f[0].double()).numpy() * e_inc  # MeV
    # MeV from model space without the inverse's per-voxel cap (the largest energy the fit saw there)
    showers = np.expm1(x.double().numpy() * fitted.std + fitted.mean) * fitted.eps * e_inc
    showers[x.numpy() == (-fitted.mean / fitted.std)] = 0.0
    k = expected / quantum
    occupancy = (showers > 0).mean(axis=0)
    rare = (k > 0.02) & (k < 0.3)  # the threshold (15 keV) cuts almost nothing of a ~10 MeV hit
    assert rare.sum() > 50
    np.testing.assert_allclose(occupancy[rare].mean(), (1 - np.exp(-k[rare])).mean(), rtol=0.05)
    layer = showers.reshape(n, 45, -1).sum(axis=2).mean(axis=0)
    layer_expected = expected.reshape(45, -1).sum(axis=1)
    heavy = layer_expected > 0.01 * layer_expected.sum()
    np.testing.assert_allclose(layer[heavy], layer_expected[heavy], rtol=0.05)
    # exact zeros where nothing was recorded, at the place an empty Geant4 voxel has in model space
    empty = showers == 0
    assert 0.3 < empty.mean() < 0.99
    np.testing.assert_allclose(x.numpy()[empty], np.broadcast_to(-fitted.mean / fitted.std, x.shape)[empty],
                               rtol=1e-5, atol=1e-5)
    assert (showers[~empty] >= THRESHOLD_MEV).all()


def test_empty_voxels_pass_a_gradient_to_the_shape_not_to_the_layer_energies(fitted: LogRatioTransform) -> None:
    g, _ = _build(fitted)
    z, cond = _z(32, 6), torch.rand(32, 1, generator=torch.Generator().manual_seed(7)) * 2 - 1
    with torch.no_grad():
        empty = g(z, cond) == (-g.transform.mean / g.transform.std)
    (g(z, cond) * empty).sum().backward()
    assert g.head.weight.grad is not None
    grad = g.head.weight.grad.abs().sum(dim=1)
    assert grad[2 + 45:].max() > 0  # radial scales and tilts hear the empty voxels
    assert grad[:2 + 45].max() == 0  # the response, depth and layer fractions do not


def test_same_seed_same_networks_and_showers(fitted: LogRatioTransform) -> None:
    before = torch.get_rng_state()
    (g1, d1), (g2, d2), (g3, _) = _build(fitted, 3), _build(fitted, 3), _build(fitted, 4)
    assert torch.equal(torch.get_rng_state(), before)  # building draws nothing from the global stream
    for a, b in zip([*g1.state_dict().values(), *d1.state_dict().values()],
                    [*g2.state_dict().values(), *d2.state_dict().values()], strict=True):
        assert torch.equal(a, b)
    z, cond = _z(4, 0), torch.zeros(4, 1)
    assert torch.equal(g1(z, cond), g2(z, cond)) and not torch.equal(g1(z, cond), g3(z, cond))
    assert not torch.equal(g1(z, cond), g1(_z(4, 1), cond))  # the latent matters
    assert torch.isfinite(d1(g1(z, cond), cond)).all() and d1(g1(z, cond), cond).shape == (4, 1)
    # a rebuild without the transform takes everything from the state_dict
    g4, _ = build_models("calo_param", n_features=N_FEATURES, n_cond=1, latent_dim=LATENT, hidden_g=32,
                         hidden_d=32, feature_groups=45, event_shape=SHAPE, feature_noise=True)
    g4.load_state_dict(g1.state_dict())
    assert torch.equal(g4(z, cond), g1(z, cond))


def test_event_shape_must_hold_the_features() -> None:
    with pytest.raises(ValueError, match=r"calo_param: event_shape \(45, 16, 8\) does not hold 6480"):
        build_models("calo_param", n_features=N_FEATURES, n_cond=1, latent_dim=4, hidden_g=8, hidden_d=8,
                     event_shape=(45, 16, 8))
