"""``lens_param`` (surrogate.models.lens_param): the learned-nuisance generator that renders smooth lenses."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import torch

from surrogate.errors import ConfigError
from surrogate.models import ModelSpec, build_from_spec, build_models
from surrogate.models.lens_param import NUISANCE_BOX, SIE_SLOPE
from surrogate.simulators.lenstronomy_lens import physics
from surrogate.simulators.lenstronomy_lens.settings import Settings

SETTINGS = Settings()
COND_LO = [0.5, -0.2, -0.2, -0.05, -0.05, -0.3, -0.3, 22.0, 0.1]
COND_HI = [1.5, 0.2, 0.2, 0.05, 0.05, 0.3, 0.3, 24.5, 0.4]


def transform(side: int = 64, settings: Settings = SETTINGS, **instrument: Any) -> dict[str, Any]:
    """A fitted arcsinh transform's dict as prepare writes it for the smooth tier's files."""
    return {"name": "arcsinh", "mean": 0.5, "std": 2.0, "scale": 0.011, "n_features": side * side,
            "cond_lo": COND_LO, "cond_hi": COND_HI, "noise_sigma": physics.background_sigma(settings),
            "noise_exposure_s": settings.exposure_time_s * settings.num_exposures,
            "instrument": {"pixel_scale_arcsec": settings.pixel_scale_arcsec, "psf_type": "GAUSSIAN",
                           "psf_fwhm_arcsec": settings.psf_fwhm_arcsec, "supersampling": float(settings.supersampling),
                           "magnitude_zero_point": settings.magnitude_zero_point, "lens_profile": "SIE",
                           "tier": "smooth", **instrument}}


def build(side: int = 64, t: dict[str, Any] | None = None, seed: int = 0, **kw: Any) -> tuple[Any, Any]:
    args: dict[str, Any] = {"n_features": side * side, "n_cond": 9, "latent_dim": 8, "hidden_g": 32,
                            "hidden_d": 32, "event_shape": (side, side), "feature_noise": True,
                            "transform": transform(side) if t is None else t,
                            "generator": torch.Generator().manual_seed(seed)} | kw
    return build_models("lens_param", **args)


def test_nuisance_stays_in_its_box_and_the_slope_is_isothermal() -> None:
    g, _ = build()
    z = torch.randn(500, 8 + 64 * 64) * 5.0  # far-out latents still give parameters inside the box
    with torch.no_grad():
        nu = g.nuisance(z, torch.rand(500, 9) * 2 - 1).double().numpy()
    for i, (name, lo, hi, _) in enumerate(NUISANCE_BOX):
        assert lo <= nu[:, i].min() and nu[:, i].max() <= hi, name
    assert (nu[:, -1] == SIE_SLOPE).all()


def test_the_noise_free_image_is_lenstronomys_for_the_chosen_parameters() -> None:
    """The generator renders what the reference simulator renders for its conditions and nuisance: the
    lensed ring sits at theta_E because the ray shooting is the simulator's, not because it was learned."""
    g, _ = build()
    rng = np.random.default_rng(3)
    cond_phys = np.array([physics.draw_conditions(SETTINGS, rng) for _ in range(3)])
    cond = torch.as_tensor(2 * (cond_phys - COND_LO) / (np.array(COND_HI) - COND_LO) - 1, dtype=torch.float32)
    z = torch.randn(3, 8 + 64 * 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        images = g.noise_free(z, cond).double().numpy().reshape(3, 64, 64)
        nuisance = g.nuisance(z, cond).double().numpy()
    for i in range(3):
        expected = physics.render(SETTINGS, g.physical_conditions(cond)[i].double().numpy(), nuisance[i], None, None)
        # float32 rendering: ~1e-5 of the peak; the sky noise is ~1e-3 of it
        assert np.abs(images[i] - expected).max() < 1e-4 * expected.max()


def test_noise_is_the_instruments_and_a_checkpoint_rebuilds_the_generator_alone() -> None:
    g, _ = build(seed=4)
    spec = ModelSpec(name="lens_param", n_features=64 * 64, n_cond=9, latent_dim=8, hidden_g=32, hidden_d=32,
                     event_shape=(64, 64), feature_noise=True, options={"channels_d": 16, "spectral_norm_d": True})
    rebuilt, _ = build_from_spec(spec)  # no transform: instrument, condition box and noise come from the state
    rebuilt.load_state_dict(g.state_dict())
    z, cond = torch.randn(4, 8 + 64 * 64), torch.rand(4, 9) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(z, cond), g(z, cond), rtol=0, atol=0)
        # the noise around the noise-free image: background + Poisson variance, in arcsinh model space
        clean = g.noise_free(z, cond)
        x = g(z, cond)
        t = transform()
        noisy = t["scale"] * torch.sinh(x * t["std"] + t["mean"])
        sigma = torch.sqrt(t["noise_sigma"] ** 2 + clean / t["noise_exposure_s"])
        torch.testing.assert_close((noisy - clean) / sigma, z[:, 8:], rtol=0, atol=2e-3)


def test_gradients_reach_every_nuisance_head_through_the_renderer() -> None:
    g, d = build(side=16, t=transform(16, dataclasses.replace(SETTINGS, num_pix=16, supersampling=1)))
    z, cond = torch.randn(8, 8 + 256), torch.rand(8, 9) * 2 - 1
    d(g(z, cond), cond).mean().backward()
    grad = g.head.weight.grad
    assert grad is not None and torch.isfinite(grad).all()
    assert (grad.abs().sum(dim=1) > 0).all()  # each of the 8 nuisance outputs moves the image


@pytest.mark.parametrize(("change", "message"), [
    ({"instrument": None}, r"renders lenses itself and needs the instrument the store's inputs state"),
    ({"instrument": {"tier": "subhalos"}}, r"renders smooth SIE lenses with a Gaussian PSF; the store's inputs "
                                           r"state \{'tier': 'subhalos'\}"),
    ({"instrument": {"lens_profile": "EPL"}}, r"renders smooth SIE lenses .* state \{'lens_profile': 'EPL'\}"),
])
def test_stores_it_cannot_render_are_one_line_config_errors(change: dict[str, Any], message: str) -> None:
    t = transform()
    t = t | {"instrument": None if change["instrument"] is None else t["instrument"] | change["instrument"]}
    with pytest.raises(ConfigError, match=r"^train\.model: lens_param " + message):
        build(t=t)


def test_needs_the_per_pixel_noise_latents_and_nine_conditions() -> None:
    with pytest.raises(ConfigError, match=r"^train\.feature_noise: lens_param draws the instrument noise"):
        build(feature_noise=False)
    with pytest.raises(ConfigError, match=r"^train\.model: lens_param takes the smooth tier's 9 conditions, the "
                                          r"store has 10"):
        build(n_cond=10)


def test_the_gan_finds_a_nuisance_prior_it_was_not_given() -> None:
    """Lens light 2 magnitudes brighter than the middle of the generator's box in every training image: a
    short hinge GAN moves the generated lens-light magnitude there from images alone."""
    side, settings = 16, dataclasses.replace(SETTINGS, num_pix=16, supersampling=1)
    t = transform(side, settings)
    g, d = build(side=side, t=t, seed=5)
    target = 18.0
    rng = np.random.default_rng(0)

    def real(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        cond = torch.rand(n, 9, generator=torch.Generator().manual_seed(int(rng.integers(1 << 30)))) * 2 - 1
        nuisance = g.nuisance(torch.randn(n, 8 + side * side), cond).detach()
        nuisance[:, 0] = target
        with torch.no_grad():
            clean = g.renderer()(g.physical_conditions(cond), nuisance).reshape(n, -1)
            return g.noise.observe(clean, torch.randn(n, side * side)), cond

    opt_g = torch.optim.Adam(g.parameters(), lr=2e-3, betas=(0.0, 0.9))
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-3, betas=(0.0, 0.9))
    torch.manual_seed(0)
    with torch.no_grad():
        before = float(g.nuisance(torch.randn(256, 8), torch.zeros(256, 9))[:, 0].mean())
    for _ in range(150):
        x, cond = real(32)
        fake = g(torch.randn(32, 8 + side * side), cond)
        loss_d = torch.relu(1 - d(x, cond)).mean() + torch.relu(1 + d(fake.detach(), cond)).mean()
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        loss_g = -d(g(torch.randn(32, 8 + side * side), cond), cond).mean()
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
    with torch.no_grad():
        after = float(g.nuisance(torch.randn(256, 8), torch.rand(256, 9) * 2 - 1)[:, 0].mean())
    assert abs(before - 20.0) < 0.5 and abs(after - target) < 0.5, (before, after)
