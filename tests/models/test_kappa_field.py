"""``kappa_field`` (surrogate.models.kappa_field): the learned halo model for convergence maps."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from surrogate.errors import ConfigError
from surrogate.models import ModelSpec, build_from_spec, build_models
from surrogate.models.kappa_field import QUANTILE_GRID, V_MAX, condition_basis

SIDE = 32
TRANSFORM = {"name": "kappa_arcsinh", "mean": 0.02, "std": 0.7, "scale": 0.01, "n_features": SIDE * SIDE,
             "cond_lo": [0.2, 0.6], "cond_hi": [0.4, 1.0]}


def build(t: dict[str, Any] | None = TRANSFORM, seed: int = 0, **options: Any) -> tuple[Any, Any]:
    return build_models("kappa_field", n_features=SIDE * SIDE, n_cond=2, latent_dim=1, hidden_g=16, hidden_d=16,
                        event_shape=(SIDE, SIDE), feature_noise=True, transform=t, options=options,
                        generator=torch.Generator().manual_seed(seed))


def latents(n: int, channels: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 1 + (1 + channels) * SIDE * SIDE, generator=torch.Generator().manual_seed(seed))


def test_the_latent_holds_one_field_per_pixel_for_the_gaussian_part_and_each_halo_channel() -> None:
    spec = ModelSpec(name="kappa_field", n_features=SIDE * SIDE, n_cond=2, latent_dim=1, hidden_g=16, hidden_d=16,
                     event_shape=(SIDE, SIDE), feature_noise=True, options={"halo_channels": 3})
    assert spec.z_dim == 1 + 4 * SIDE * SIDE


def test_initial_maps_have_the_datas_pixel_spread_and_zero_mean() -> None:
    """At initialisation kappa's pixel variance is (scale * std)^2, half in the Gaussian field and half in
    the halo channels, and every part has zero expectation (the halos' expected mean is subtracted)."""
    g, _ = build()
    with torch.no_grad():
        kappa = g.kappa(latents(400), torch.zeros(400, 2)).double()
    sigma = TRANSFORM["scale"] * TRANSFORM["std"]
    assert kappa.std().item() == pytest.approx(sigma, rel=0.1)
    assert abs(kappa.mean().item()) < 0.01 * sigma
    # the Gaussian part alone: halo latents zeroed, so X = Q(0) = 0 and only -E[X] remains of the halos
    z = latents(400)
    z[:, 1 + SIDE * SIDE:] = 0.0
    with torch.no_grad():
        gaussian = g.kappa(z, torch.zeros(400, 2)).double()
        _, expected = g.quantile_grid(g.parameters_of(torch.zeros(1, 2))["log_dq"])
    assert gaussian.std().item() == pytest.approx(sigma / math.sqrt(2), rel=0.1)
    # no monopole in the Gaussian field: each map averages to exactly minus the halos' expected mean
    torch.testing.assert_close(gaussian.mean(dim=(1, 2)), torch.full((400,), -expected.sum().item(),
                                                                      dtype=torch.float64), rtol=0, atol=1e-9)


def test_the_model_space_output_is_the_stores_transform_of_kappa() -> None:
    g, _ = build()
    z, c = latents(3), torch.rand(3, 2) * 2 - 1
    with torch.no_grad():
        kappa = g.kappa(z, c).reshape(3, -1).double()
        x = g(z, c).double()
    expected = (torch.asinh(kappa / TRANSFORM["scale"]) - TRANSFORM["mean"]) / TRANSFORM["std"]
    torch.testing.assert_close(x, expected, rtol=0, atol=1e-5)


def test_quantile_function_gives_a_gaussian_for_a_flat_slope_and_a_long_tail_for_a_rising_one() -> None:
    g, _ = build()
    knots = g.v_knots.numel()
    flat = torch.full((1, 1, knots), math.log(0.3))
    q, expected = g.quantile_grid(flat)
    v = g.v_grid
    torch.testing.assert_close(q[0, 0], 0.3 * v, rtol=0, atol=1e-5)
    assert abs(expected.item()) < 1e-6
    rising = flat + torch.clamp(g.v_knots, min=0.0)[None, None, :]  # dQ/dv grows as e^v above v = 0
    q, expected = g.quantile_grid(rising)
    # E[X] by the same quadrature in float64: int_0^v 0.3 e^u du = 0.3 (e^v - 1) above 0, 0.3 v below
    vv = v.double()
    exact = torch.where(vv > 0, 0.3 * torch.expm1(vv), 0.3 * vv)
    density = torch.exp(-0.5 * vv**2)
    assert expected.item() == pytest.approx(float((exact * density).sum() / density.sum()), rel=1e-3)
    assert expected.item() > 0.1  # the tail lifts the mean, which the generator subtracts
    assert q.shape == (1, 1, QUANTILE_GRID) and v[-1].item() == V_MAX


def test_halo_kernels_conserve_mass_and_reach_no_further_than_the_radius() -> None:
    """Whatever the kernel weights, a map's halo part sums to the sum of its per-pixel values: each kernel
    sums to one. A single bright pixel spreads over at most the kernel's radius."""
    g, _ = build(kernel_radius=2)
    with torch.no_grad():
        g.head.weight.normal_(0.0, 2.0)  # arbitrary, non-point kernels
        p = g.parameters_of(torch.rand(5, 2) * 2 - 1)
    sums = (p["kernel"] * g.class_count).sum(dim=-1)
    torch.testing.assert_close(sums, torch.ones_like(sums))
    z = torch.zeros(1, 1 + 3 * SIDE * SIDE)
    z[0, 1 + SIDE * SIDE + 5 * SIDE + 7] = 5.0  # one bright pixel in halo channel 0, at (row 5, column 7)
    with torch.no_grad():
        kappa = g.kappa(z, torch.zeros(1, 2))[0].double()
        background = g.kappa(torch.zeros_like(z), torch.zeros(1, 2))[0].double()
    excess = (kappa - background).numpy()
    rows, cols = np.nonzero(np.abs(excess) > 1e-4 * np.abs(excess).max())  # float32 FFT round-off: ~1e-7
    assert ((rows - 5) ** 2 + (cols - 7) ** 2).max() <= 2**2


def test_the_condition_basis_is_orthonormal_for_uniform_conditions() -> None:
    c = torch.rand(200_000, 2, generator=torch.Generator().manual_seed(0)) * 2 - 1
    phi = condition_basis(c).double()
    gram = phi.T @ phi / len(c)
    assert phi.shape[1] == 9
    torch.testing.assert_close(gram, torch.eye(9, dtype=torch.float64), rtol=0, atol=0.02)


def test_matching_term_is_zero_for_the_real_batch_and_sees_an_amplitude_error() -> None:
    """Real against itself: exactly zero. Fakes 20% brighter than the real maps at the same conditions: the
    band-power moments are off by ~(1.2^2 - 1) and the term is positive, and its gradient lowers the
    amplitude."""
    g, d = build(matching_weight=1.0)
    z, c = latents(64), torch.rand(64, 2) * 2 - 1
    with torch.no_grad():
        real = g(z, c)
    assert d.matching_loss(real, real, c).item() == 0.0
    gain = torch.tensor(1.2, requires_grad=True)
    kappa = g.kappa(z, c).reshape(64, -1) * gain
    fake = ((torch.asinh(kappa / g.scale) - g.mean) / g.std).float()
    loss = d.matching_loss(real, fake, c)
    loss.backward()
    assert loss.item() > 0.01
    assert gain.grad is not None and gain.grad.item() > 0


def test_the_critics_summaries_are_kappa_band_powers_and_pixel_quantiles() -> None:
    """A map of one Fourier mode: all its power in the band holding that mode's |k|."""
    _, d = build()
    x = np.mgrid[0:SIDE, 0:SIDE][1]
    kappa = 0.01 * np.cos(2 * np.pi * 5 * x / SIDE)
    model = (np.arcsinh(kappa / TRANSFORM["scale"]) - TRANSFORM["mean"]) / TRANSFORM["std"]
    power = d.band_power(torch.as_tensor(model.reshape(1, -1), dtype=torch.float32))[0]
    band = int(d.band[5].item())  # rfft2 mode (0, 5): row 0, column 5
    assert power.argmax().item() == band
    # rfft2 of cos(2 pi 5 x / N) holds N^2 / 2 at (0, 5): |.|^2 / N^2 = N^2 / 4, the band's only power
    assert power[band].item() * d.band_count[band].item() == pytest.approx(SIDE**2 / 4, rel=1e-3)


def test_a_checkpoint_rebuilds_the_generator_alone() -> None:
    spec = ModelSpec(name="kappa_field", n_features=SIDE * SIDE, n_cond=2, latent_dim=1, hidden_g=16, hidden_d=16,
                     event_shape=(SIDE, SIDE), feature_noise=True, options={})
    g, _ = build_from_spec(spec, torch.Generator().manual_seed(0), transform=TRANSFORM)
    g2, _ = build_from_spec(spec, torch.Generator().manual_seed(9))
    g2.load_state_dict(g.state_dict())
    z, c = latents(4), torch.rand(4, 2) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(g2(z, c), g(z, c), rtol=0, atol=0)


def test_refuses_what_it_cannot_draw() -> None:
    with pytest.raises(ConfigError, match="kappa_arcsinh"):
        build(t={"name": "arcsinh", "mean": 0.0, "std": 1.0, "scale": 1.0})
    with pytest.raises(ConfigError, match="feature_noise"):
        build_models("kappa_field", n_features=SIDE * SIDE, n_cond=2, latent_dim=1, hidden_g=16, hidden_d=16,
                     event_shape=(SIDE, SIDE), transform=TRANSFORM)
    with pytest.raises(ConfigError, match="kernel_radius"):
        build(kernel_radius=16)


def test_feature_matching_learns_the_amplitude_of_a_known_spectrum_per_condition() -> None:
    """Maps of two 'cosmologies', Gaussian fields with C(k) ~ k^-2 whose amplitudes differ by 4x in power:
    300 steps of the matching term alone bring the generator's band powers to the truth at both, within
    15% in every band (from 0.5x and 2x at the start), what the adversarial term then refines."""
    rng = np.random.default_rng(0)
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(SIDE) * SIDE, np.fft.rfftfreq(SIDE) * SIDE, indexing="ij"))
    shape = np.where(k > 0, 1.0 / np.maximum(k, 1.0) ** 2, 0.0)
    amplitude = {-1.0: 0.004, 1.0: 0.008}  # kappa pixel scale at c = -1 and c = +1

    def maps(c: float, n: int) -> np.ndarray:
        field = np.fft.irfft2(np.fft.rfft2(rng.standard_normal((n, SIDE, SIDE))) * np.sqrt(shape), s=(SIDE, SIDE))
        return amplitude[c] * field / field.std()

    real_kappa = {c: maps(c, 400) for c in amplitude}
    t = TRANSFORM | {"std": 0.6, "mean": 0.0}

    def to_model(kappa: np.ndarray) -> torch.Tensor:
        x = (np.arcsinh(kappa.reshape(len(kappa), -1) / t["scale"]) - t["mean"]) / t["std"]
        return torch.as_tensor(x, dtype=torch.float32)

    g, d = build(t=t, matching_weight=100.0)
    opt = torch.optim.Adam(g.parameters(), lr=3e-3, betas=(0.0, 0.9))
    gen = torch.Generator().manual_seed(2)
    real = {c: to_model(real_kappa[c]) for c in amplitude}
    for _ in range(300):
        rows = torch.randint(0, 400, (64,), generator=gen)
        c = torch.where(torch.rand(64, generator=gen) < 0.5, -1.0, 1.0)
        x = torch.stack([real[float(ci)][int(r)] for ci, r in zip(c, rows, strict=True)])
        cond = torch.stack([c, torch.zeros_like(c)], dim=1)
        loss = d.matching_loss(x, g(torch.randn(64, 1 + 3 * SIDE * SIDE, generator=gen), cond), cond)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for c in amplitude:
        cond = torch.tensor([[c, 0.0]]).repeat(400, 1)
        with torch.no_grad():
            fake = g(torch.randn(400, 1 + 3 * SIDE * SIDE, generator=gen), cond)
            ratio = (d.band_power(fake).mean(dim=0) / d.band_power(real[c]).mean(dim=0)).numpy()
        populated = d.band_count.numpy() >= 8
        assert np.all(np.abs(ratio[populated] - 1.0) < 0.15), (c, ratio)


def test_smoothed_quantiles_are_those_of_the_validations_smoothing() -> None:
    """smoothing_px: the critic's smoothed-map quantiles equal those of the maps smoothed as the validation
    smooths them (observables.smooth, scipy's sampled Gaussian), at a sub-pixel sigma where a continuous
    Gaussian's transform would differ by ~2x at the Nyquist frequency."""
    from surrogate.domains.weak_lensing import observables as obs
    from surrogate.models.kappa_field import SUMMARY_QUANTILES

    g, d = build(smoothing_px=0.6)
    z, c = latents(4), torch.zeros(4, 2)
    with torch.no_grad():
        x = g(z, c)
        got = d.quantiles(x)[:, len(SUMMARY_QUANTILES):].double().numpy()
        kappa_over_scale = g.kappa(z, c).double().numpy() / TRANSFORM["scale"]
    pixel_arcmin = 3.5 * 60 / SIDE
    smooth = obs.smooth(kappa_over_scale, 0.6 * pixel_arcmin, 3.5).reshape(4, -1)
    index = [round(q * (SIDE * SIDE - 1)) for q in SUMMARY_QUANTILES]
    expected = (np.arcsinh(np.sort(smooth, axis=1)[:, index]) - TRANSFORM["mean"]) / TRANSFORM["std"]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
    assert d.summary_statistics(x).shape == (4, 12 + 2 * len(SUMMARY_QUANTILES))


def test_the_matching_term_weighs_every_grid_cosmology_alike() -> None:
    """On a 3 x 3 grid, maps 20% brighter at the centre cosmology only and at a corner only cost the same
    (the whitened basis). The raw Legendre basis, orthonormal for uniform conditions, not for a grid,
    weighs the centre's error 16x less: the quickstart's centre cosmology was its worst."""
    from surrogate.models.kappa_field import whitened

    g, d = build(matching_weight=1.0)
    grid = torch.tensor([-1.0, 0.0, 1.0])
    c = torch.cartesian_prod(grid, grid).repeat(16, 1)  # 144 rows, 16 per cosmology, every half balanced
    c = torch.cat([c[0::2], c[1::2]])  # halves of 72 rows: 8 of each cosmology
    z = latents(len(c))
    with torch.no_grad():
        real = g(z, c)
        kappa = g.kappa(z, c).reshape(len(c), -1)

        def brighter_at(point: tuple[float, float]) -> float:
            at = (c == torch.tensor(point)).all(dim=1)
            k = torch.where(at[:, None], 1.2 * kappa, kappa)
            fake = ((torch.asinh(k / g.scale) - g.mean) / g.std).float()
            return d.matching_loss(real, fake, c).item()

        centre, corner = brighter_at((0.0, 0.0)), brighter_at((1.0, 1.0))
    assert centre > 0 and centre == pytest.approx(corner, rel=0.25)  # the same up to the two cosmologies' maps
    phi = whitened(condition_basis(c)).double()
    torch.testing.assert_close(phi.T @ phi / len(c), torch.eye(9, dtype=torch.float64), rtol=0, atol=1e-6)
    raw = condition_basis(c).double()
    weight = lambda point: (raw[(c == torch.tensor(point)).all(dim=1)][0] ** 2).sum().item()  # noqa: E731
    assert weight((1.0, 1.0)) / weight((0.0, 0.0)) == pytest.approx(16.0, rel=1e-5)



def test_log_condition_features_are_the_conditions_logarithms_over_the_box() -> None:
    """condition_features=log: (Omega_m, sigma_8) = (0.2, 0.6) and (0.4, 1.0), the box's corners, map to -1
    and +1, their geometric means to 0, Omega_m = 0.3 to 2 log(1.5) / log(2) - 1; a box reaching zero or
    below is refused."""
    g, _ = build(condition_features="log")
    raw = torch.tensor([[0.2, 0.6], [0.4, 1.0], [math.sqrt(0.08), math.sqrt(0.6)], [0.3, 0.8]], dtype=torch.float64)
    lo, hi = torch.tensor(TRANSFORM["cond_lo"]), torch.tensor(TRANSFORM["cond_hi"])
    model_space = 2 * (raw - lo) / (hi - lo) - 1
    expected = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0],
                             [2 * math.log(1.5) / math.log(2) - 1, 2 * math.log(0.8 / 0.6) / math.log(1 / 0.6) - 1]])
    torch.testing.assert_close(g.features(model_space), expected.float(), rtol=0, atol=1e-6)
    linear, _ = build()
    torch.testing.assert_close(linear.features(model_space), model_space.float())
    with pytest.raises(ConfigError, match="condition_features"):
        build({**TRANSFORM, "cond_lo": [0.0, 0.6]}, condition_features="log")


def _white_maps(c: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(model-space maps, kappa amplitude) of white-noise kappa whose variance a(c)^2 is a quadratic in
    each condition column: every band's mean power of kappa / scale is (a / scale)^2 exactly."""
    a2 = TRANSFORM["scale"] ** 2 * (1.0 + 0.4 * c[:, 0] + 0.3 * c[:, 1] ** 2 - 0.2 * c[:, 0] * c[:, 1])
    kappa = a2.sqrt()[:, None] * torch.randn(len(c), SIDE * SIDE, generator=gen, dtype=torch.float64)
    x = ((torch.asinh(kappa / TRANSFORM["scale"]) - TRANSFORM["mean"]) / TRANSFORM["std"]).float()
    return x, a2 / TRANSFORM["scale"] ** 2


def _grid_batches(d: Any, gen: torch.Generator, n: int) -> None:
    grid = torch.tensor([-1.0, 0.0, 1.0])
    nodes = torch.cartesian_prod(grid, grid)
    for _ in range(n):
        c = nodes[torch.randint(0, 9, (64,), generator=gen)]
        d.observe_reference(_white_maps(c, gen)[0], c)


def test_the_interpolated_summaries_are_the_references_between_grid_points() -> None:
    """Reference batches at a 3 x 3 grid only, whose band powers are a known quadratic in the conditions:
    the running fit gives that quadratic's values between the grid points (within 3%, the sample noise of
    ~100 batches' worth of maps), where a bilinear fit through the corners would be 30% off at the centre,
    and the real batch's own median quantile (0 for symmetric noise)."""
    _, d = build(matching_weight=1.0, interpolation_maps=8, interpolation_weight=1.0)
    gen = torch.Generator().manual_seed(0)
    _grid_batches(d, gen, 300)
    between = torch.tensor([[0.5, 0.5], [-0.5, 0.25], [0.0, 0.0], [0.7, -0.9]])
    target = d.interpolated_summaries(between)
    _, truth = _white_maps(between, gen)
    populated = d.band_count >= 8
    ratio = target[:, :12][:, populated] / truth[:, None].float()
    assert torch.all((ratio - 1).abs() < 0.03), ratio
    from surrogate.models.kappa_field import SUMMARY_QUANTILES
    median = 12 + SUMMARY_QUANTILES.index(0.5)
    assert torch.all((target[:, median] - (-TRANSFORM["mean"] / TRANSFORM["std"])).abs() < 0.01)


def test_the_interpolation_term_is_unbiased_and_sees_an_error_between_grid_points() -> None:
    """Between the grid points, maps drawn from the truth cost nothing on average (two maps per condition:
    the product of their errors is unbiased), while maps 20% brighter in kappa cost a clearly positive
    amount whose gradient lowers the brightness."""
    _, d = build(matching_weight=1.0, interpolation_maps=64, interpolation_weight=1.0)
    gen = torch.Generator().manual_seed(1)
    _grid_batches(d, gen, 300)
    real = _white_maps(torch.zeros(64, 2), gen)[0]
    real_cond = torch.zeros(64, 2)
    honest, bright = [], []
    for _ in range(20):
        c = d.interpolation_conditions(torch.tensor([[-1.0, -1.0], [1.0, 1.0]]), gen)
        assert c is not None and c.shape == (64, 2) and torch.equal(c[:32], c[32:])
        x, _ = _white_maps(c, gen)
        honest.append(d.interpolation_loss(real, real_cond, x, c).item())
        gain = torch.tensor(1.2, dtype=torch.float64, requires_grad=True)
        kappa = gain * TRANSFORM["scale"] * torch.sinh(x.double() * TRANSFORM["std"] + TRANSFORM["mean"])
        fake = ((torch.asinh(kappa / TRANSFORM["scale"]) - TRANSFORM["mean"]) / TRANSFORM["std"]).float()
        loss = d.interpolation_loss(real, real_cond, fake, c)
        loss.backward()
        assert gain.grad is not None and gain.grad.item() > 0
        bright.append(loss.item())
    assert abs(np.mean(honest)) < 0.1 * np.mean(bright)
    assert np.mean(bright) > 0.005


def test_interpolation_needs_two_maps_per_condition_and_the_matching_term() -> None:
    with pytest.raises(ConfigError, match=r"interpolation_maps: expected an even number.*got 7"):
        build(interpolation_maps=7, interpolation_weight=1.0, matching_weight=1.0)
    with pytest.raises(ConfigError, match=r"interpolation_weight: .* needs matching_weight > 0"):
        build(interpolation_maps=8, interpolation_weight=1.0)
    with pytest.raises(ConfigError, match=r"interpolation_weight: .* set interpolation_maps > 0"):
        build(interpolation_weight=1.0, matching_weight=1.0)
    _, d = build(interpolation_maps=8)  # no weight: the term is off and draws nothing
    assert d.interpolation_conditions(torch.zeros(4, 2), torch.Generator()) is None


def test_with_the_running_fit_a_relative_power_error_weighs_alike_at_faint_and_bright_cosmologies() -> None:
    """Maps 10% brighter (in kappa) at the faintest grid point only, and at the brightest only (3.2x its
    power): with the interpolation term's running fit, the matching term divides each row's band powers by
    the reference's at its cosmology and both errors cost the same (within 25%); divided by the batch's
    mean power, the faint point's costs ~6x less, and the validation's per-cosmology bar failed there."""
    gen = torch.Generator().manual_seed(3)
    grid = torch.tensor([-1.0, 0.0, 1.0])
    c = torch.cartesian_prod(grid, grid).repeat(16, 1)
    c = torch.cat([c[0::2], c[1::2]])  # halves of 72 rows: 8 of each cosmology
    faint, bright = (-1.0, 0.0), (1.0, -1.0)  # a^2 = 0.6 and 1.9 (_white_maps)

    def costs(**options: Any) -> tuple[float, float]:
        _, d = build(matching_weight=1.0, **options)
        if options:
            _grid_batches(d, gen, 200)
        real, _ = _white_maps(c, gen)
        kappa = TRANSFORM["scale"] * torch.sinh(real.double() * TRANSFORM["std"] + TRANSFORM["mean"])

        def brighter_at(point: tuple[float, float]) -> float:
            at = (c == torch.tensor(point)).all(dim=1)
            k = torch.where(at[:, None], 1.1 * kappa, kappa)
            fake = ((torch.asinh(k / TRANSFORM["scale"]) - TRANSFORM["mean"]) / TRANSFORM["std"]).float()
            return d.matching_loss(real, fake, c).item()

        return brighter_at(faint), brighter_at(bright)

    fitted = costs(interpolation_maps=8, interpolation_weight=1.0)
    assert fitted[0] > 0 and fitted[0] == pytest.approx(fitted[1], rel=0.25)
    plain = costs()
    assert plain[1] / plain[0] > 4


def test_angular_bands_tell_a_plus_shaped_spot_from_a_round_one() -> None:
    """angular_bands: each |k| band in an axial and a diagonal half. In the band below Nyquist, white noise
    smeared by a '+' (a pixel and its four neighbours, what kappa_field's brightest halos looked like) has
    more power near the diagonals than along the axes (its transform (1 + 2 cos kx + 2 cos ky) / 5 is larger
    there), a round spot (a Gaussian of 0.8 px, sampled) less: the ratio of the halves tells them apart by
    3x where the unsplit band cannot. The halves' mode-weighted mean is the unsplit band's power."""
    _, plain = build()
    _, d = build(angular_bands=True)
    assert d.n_bands == 24 and d.summary.in_features == 24 + 9
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(64, SIDE, SIDE, generator=gen, dtype=torch.float64)
    offset = torch.fft.fftfreq(SIDE, dtype=torch.float64) * SIDE
    d2 = offset[:, None] ** 2 + offset[None, :] ** 2
    plus = ((d2 == 0) | (d2 == 1)).double() / 5
    round_ = torch.exp(-d2 / (2 * 0.8**2))
    round_ = round_ / round_.sum()

    def halves(kernel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kappa = torch.fft.irfft2(torch.fft.rfft2(noise) * torch.fft.rfft2(kernel), s=(SIDE, SIDE))
        x = ((torch.asinh(0.3 * kappa) - TRANSFORM["mean"]) / TRANSFORM["std"]).float().reshape(64, -1)
        p = d.band_power(x).mean(dim=0)
        whole = plain.band_power(x).mean(dim=0)
        counts = torch.bincount(d.band, minlength=25)[:-1].reshape(12, 2).double()  # empty halves count 0
        torch.testing.assert_close(((p.reshape(12, 2) * counts).sum(1) / counts.sum(1)).float(), whole,
                                   rtol=1e-4, atol=0)
        top = 10  # the highest band with both halves well populated at 32 px
        return p[2 * top], p[2 * top + 1]

    axial, diagonal = halves(plus)
    plus_ratio = diagonal / axial
    axial, diagonal = halves(round_)
    assert plus_ratio > 1.5 and diagonal / axial < 0.6  # measured: 1.74 and 0.55
