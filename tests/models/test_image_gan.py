"""The conditional image GAN (surrogate.models.image_gan) and the model-options seam it uses."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from surrogate.config import LOSSES, Config, TrainConfig, load_config
from surrogate.errors import ConfigError, InputError
from surrogate.models import ModelSpec, build_from_spec, build_models, resolve_options
from surrogate.models.image_gan import FiLM, SpectralNorm, widths
from surrogate.training.loop import model_spec, new_state, train_step

CPU = torch.device("cpu")


def _build(side: int = 16, *, n_cond: int = 2, seed: int = 0, **options: Any) -> tuple[nn.Module, nn.Module]:
    return build_models("image_gan", n_features=side * side, n_cond=n_cond, latent_dim=8, hidden_g=64,
                        hidden_d=64, event_shape=(side, side), options=options,
                        generator=torch.Generator().manual_seed(seed))


def _config(**train: Any) -> Config:
    base: dict[str, Any] = {"model": "image_gan", "physics_critic": False, "latent_dim": 8, "hidden_g": 64,
                            "hidden_d": 64, "batch_size": 32, "seed": 0}
    # the synthetic images are no domain's events; the calorimeter only supplies model_spec's domain lookup
    return Config(domain="calorimeter", train=TrainConfig(**{**base, **train}))


@dataclasses.dataclass
class _Batch:  # what StoreLoader.stream yields, as train_step reads it
    x: torch.Tensor
    cond: torch.Tensor
    epoch: int = 0
    batch: int = 0


def _step(state: Any, batches: Iterator[_Batch], loss: str, n_critic: int = 1) -> dict[str, torch.Tensor]:
    return train_step(state, batches, loss=loss, n_critic=n_critic, gp_weight=10.0, g_model=state.generator,
                      d_model=state.discriminator, device=CPU, amp=False,
                      next_position=lambda epoch, batch: (epoch, batch + 1))


@pytest.mark.parametrize("side", [16, 32, 64])
def test_shapes_and_widths(side: int) -> None:
    g, d = _build(side)
    z, cond = torch.randn(3, 8), torch.randn(3, 2)
    x = g(z, cond)
    assert x.shape == (3, side * side) and d(x, cond).shape == (3, 1)
    # 16 channels at full resolution, doubled per halving, capped at hidden (64): (4: 64, 8: 64, 16: 64, ...)
    expected = {r: min(16 * side // r, 64) for r in (4, 8, 16, 32, 64) if r <= side}
    assert widths(side, 16, 64) == expected
    convs = [m for m in g.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == round(math.log2(side / 4)) + 1  # one per upsampling block + the output conv
    assert convs[-1].out_channels == 1 and convs[-1].in_channels == expected[side]
    # D: no batch statistics (WGAN-GP's penalty is per sample)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in (*g.modules(), *d.modules()))


def test_flat_store_of_a_square_size_is_a_square_image() -> None:
    g, _ = build_models("image_gan", n_features=1024, n_cond=1, latent_dim=4, hidden_g=32, hidden_d=32)
    assert g(torch.zeros(2, 4), torch.zeros(2, 1)).shape == (2, 1024)


@pytest.mark.parametrize(("n_features", "shape"), [(48 * 48, (48, 48)), (64, (8, 8)), (512, (16, 32)),
                                                   (300, ()), (256, (16, 16, 1)), (256, (32, 32))])
def test_image_sizes_other_than_a_square_power_of_two_are_refused(n_features: int,
                                                                  shape: tuple[int, ...]) -> None:
    with pytest.raises(ConfigError, match=r"^train\.model: image_gan takes square images whose side is a "
                                          r"power of two >= 16, got event shape"):
        build_models("image_gan", n_features=n_features, n_cond=1, latent_dim=4, hidden_g=8, hidden_d=8,
                     event_shape=shape)


def test_the_condition_enters_every_block_and_changes_both_networks() -> None:
    g, d = _build(32)
    z = torch.randn(4, 8, generator=torch.Generator().manual_seed(1))
    c1, c2 = torch.full((4, 2), -0.5), torch.full((4, 2), 0.5)
    seen: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda _m, args, _out: seen.append(args[1]))
             for m in g.modules() if isinstance(m, FiLM)]
    x1 = g(z, c1)
    for hook in hooks:
        hook.remove()
    # every block (the 4x4 map and the three upsampling blocks of a 32x32 image) is modulated by embed(cond)
    assert len(seen) == 4 and all(e is seen[0] for e in seen)
    torch.testing.assert_close(seen[0], g.embed(c1), rtol=0, atol=0)
    x2 = g(z, c2)
    assert (x1 - x2).abs().mean() > 0.05 * x1.abs().mean()
    # the projection term: for a fixed image the logit moves with the condition, by exactly <V dc, h>
    logit1, logit2 = d(x1, c1), d(x1, c2)
    assert (logit1 - logit2).abs().min() > 1e-4
    # FiLM alone carries the condition: with the projection's embedding columns zeroed (z ++ e -> 4x4 map
    # no longer sees e), G still depends on cond
    with torch.no_grad():
        g.project.weight[:, 8:] = 0.0
    assert (g(z, c1) - g(z, c2)).abs().mean() > 0.01 * x1.abs().mean()


def test_a_sample_does_not_depend_on_the_rest_of_its_batch() -> None:
    """Per-sample normalisation: batch 1 gives the same image as batch 16, in training and eval mode."""
    g, _ = _build(16)
    z, cond = torch.randn(16, 8), torch.rand(16, 2)
    for mode in (True, False):
        g.train(mode)
        torch.testing.assert_close(g(z[:1], cond[:1]), g(z, cond)[:1], rtol=1e-5, atol=1e-5)


def test_same_seed_same_initialisation_and_the_global_stream_untouched() -> None:
    before = torch.get_rng_state()
    g1, d1 = _build(16, seed=3, spectral_norm_g=True)
    g2, d2 = _build(16, seed=3, spectral_norm_g=True)
    g3, d3 = _build(16, seed=4, spectral_norm_g=True)
    assert torch.equal(torch.get_rng_state(), before)
    for a, b in ((g1, g2), (d1, d2)):  # parameters and the spectral norms' u, v buffers
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(k.endswith(".u") for k in d1.state_dict())
    assert not torch.equal(d1.state_dict()["stem.parametrizations.weight.0.u"],
                           d3.state_dict()["stem.parametrizations.weight.0.u"])
    assert not torch.equal(next(g1.parameters()), next(g3.parameters()))


def _largest_singular_values(network: nn.Module) -> list[float]:
    out = []
    for m in network.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            out.append(float(torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2)))
    return out


def test_spectral_norm_on_and_off() -> None:
    g, d = _build(16)  # defaults: on for D, off for G
    assert not any(isinstance(m, SpectralNorm) for m in g.modules())
    sigmas = _largest_singular_values(d)
    assert len(sigmas) == 6  # stem, 2 downsampling convs, dense, psi, embed
    # power iteration's u^T W v never exceeds sigma(W), so sigma(W / estimate) >= 1; after the 15
    # iterations at build it is within 5% (measured: at most 1.044 at seed 0)
    assert all(1.0 - 1e-6 < s < 1.05 for s in sigmas), sigmas
    # training-mode forwards keep iterating: after 50 more, within 0.1% (a vector's norm, psi: exact)
    for _ in range(50):
        d(torch.randn(2, 256), torch.randn(2, 2))
    assert all(abs(s - 1.0) < 1e-3 for s in _largest_singular_values(d)), _largest_singular_values(d)
    _, d_off = _build(16, spectral_norm_d=False)
    assert not any(isinstance(m, SpectralNorm) for m in d_off.modules())
    assert max(abs(s - 1.0) for s in _largest_singular_values(d_off)) > 0.2
    g_on, _ = _build(16, spectral_norm_g=True)
    assert sum(isinstance(m, SpectralNorm) for m in g_on.modules()) == len(_largest_singular_values(g_on))
    # eval mode does not iterate: the state_dict (u, v included) is unchanged by a forward
    d.eval()
    before = {k: v.clone() for k, v in d.state_dict().items()}
    d(torch.randn(2, 256), torch.randn(2, 2))
    assert all(torch.equal(before[k], v) for k, v in d.state_dict().items())


def test_circular_padding_makes_convolutions_periodic() -> None:
    x = torch.randn(2, 1, 16, 16)
    for circular in (True, False):
        _, d = _build(16, circular=circular)
        d.eval()
        shifted = d.stem(torch.roll(x, shifts=(3, -5), dims=(2, 3)))
        equivariant = torch.allclose(shifted, torch.roll(d.stem(x), shifts=(3, -5), dims=(2, 3)), atol=1e-6)
        assert equivariant is circular
        assert all(m.padding_mode == ("circular" if circular else "zeros")
                   for m in d.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize(("options", "message"), [
    ({"channel_g": 8}, "train.model_options.channel_g: model 'image_gan' has no such option (its options: "
                       "channels_d, channels_g, circular, cond_embed, noise, spectral_norm_d, spectral_norm_g)"),
    ({"channels_g": 0}, "train.model_options.channels_g: expected a number > 0, got 0"),
    ({"channels_g": 8.5}, "train.model_options.channels_g: expected an integer, got 8.5"),
    ({"channels_g": True}, "train.model_options.channels_g: expected an integer, got True"),
    ({"spectral_norm_d": 1}, "train.model_options.spectral_norm_d: expected true or false, got 1"),
    ({"circular": "yes"}, "train.model_options.circular: expected true or false, got 'yes'"),
])
def test_bad_options_are_one_line_config_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        model_spec(_config(model_options=options), 256, 1)
    assert str(info.value) == message


def test_options_through_the_config_and_into_the_spec() -> None:
    cfg = load_config(None, ["domain=calorimeter", "train.model=image_gan", "train.physics_critic=false",
                             "train.model_options.channels_g=4", "train.model_options.circular=true"])
    assert cfg.train.model_options == {"channels_g": 4, "circular": True}
    spec = model_spec(cfg, 256, 1)
    # the spec holds every option, the unset ones at their defaults, so a checkpoint is self-describing
    assert spec.options == {"channels_g": 4, "channels_d": 16, "cond_embed": 64, "spectral_norm_d": True,
                            "spectral_norm_g": False, "circular": True, "noise": "none"}
    assert not spec.feature_noise  # train.feature_noise is on by default, but only instrument noise takes it
    g, _ = build_from_spec(ModelSpec.from_dict(spec.to_dict()))
    assert [m.out_channels for m in g.modules() if isinstance(m, nn.Conv2d)] == [8, 4, 1]
    with pytest.raises(ConfigError, match=r"^train\.model_options: expected a mapping of names to values"):
        load_config(None, ["domain=calorimeter", "train.model_options=[1, 2]"])
    with pytest.raises(ConfigError, match=r"^train\.model_options\.channels_g: expected a number, true/false"):
        load_config(None, ["domain=calorimeter", "train.model_options.channels_g=[8]"])


def test_models_without_options_refuse_any_and_old_specs_still_load() -> None:
    with pytest.raises(ConfigError, match=r"^train\.model_options\.width: model 'calo_mlp' has no such "
                                          r"option \(it takes none\)$"):
        model_spec(Config(domain="calorimeter", train=TrainConfig(model="calo_mlp", physics_critic=False,
                                                                  model_options={"width": 3})), 8, 1)
    assert resolve_options("calo_mlp") == {}
    old = {"name": "calo_mlp", "n_features": 8, "n_cond": 1, "latent_dim": 4, "hidden_g": 8, "hidden_d": 8,
           "layer_norm": True, "feature_groups": 0, "event_shape": [], "voxel_noise": False}  # pre-options
    assert ModelSpec.from_dict(old).options == {} and ModelSpec.from_dict(old).feature_noise is False
    with pytest.raises(InputError, match=r"model_spec\.options: expected a mapping"):
        ModelSpec.from_dict({**old, "options": [1]})


@pytest.mark.parametrize("loss", LOSSES)
def test_every_objective_trains_with_ema_and_spectral_norm(loss: str) -> None:
    """wgan_gp's penalty back-propagates twice through the spectral norms (and circular padding)."""
    cfg = _config(loss=loss, batch_size=8, model_options={"channels_g": 4, "channels_d": 4,
                                                          "spectral_norm_g": True, "circular": True})
    state = new_state(cfg, model_spec(cfg, 256, 1), CPU, 0)
    d_before = {k: v.clone() for k, v in state.discriminator.state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    batches = iter([_Batch(torch.randn(8, 256, generator=gen), torch.rand(8, 1, generator=gen))
                    for _ in range(6)])
    for _ in range(3):
        scalars = _step(state, batches, loss, n_critic=2)
    assert all(torch.isfinite(v) for v in scalars.values())
    assert ("gp" in scalars) == (loss == "wgan_gp")
    assert state.step == 3 and state.ema.updates == 3
    after = state.discriminator.state_dict()
    assert not torch.equal(d_before["stem.parametrizations.weight.original"],
                           after["stem.parametrizations.weight.original"])
    assert not torch.equal(d_before["stem.parametrizations.weight.0.u"], after["stem.parametrizations.weight.0.u"])
    # the EMA copy is a separate module that moved towards, but not onto, the generator
    ema, live = state.ema.model.state_dict(), state.generator.state_dict()
    key = "project.parametrizations.weight.original"
    assert not torch.equal(ema[key], live[key])


def test_bfloat16_autocast_with_the_gradient_penalty() -> None:
    """CPU bfloat16 autocast stands in for CUDA's (the loop autocasts only on CUDA): the networks run, the
    spectral norms stay float32, and the float32 penalty back-propagates to every weight that shapes it."""
    from surrogate.training.losses import gradient_penalty

    g, d = _build(16, spectral_norm_g=True)
    z, cond, real = torch.randn(4, 8), torch.rand(4, 2), torch.randn(4, 256)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fake = g(z, cond)
        logits = d(torch.cat([real, fake]), torch.cat([cond, cond]))
        gp = gradient_penalty(d, real, fake, cond, torch.Generator().manual_seed(0))
    assert fake.dtype == logits.dtype == torch.bfloat16 and gp.dtype == torch.float32
    (logits.float().mean() + gp).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in d.parameters())
    assert all(b.dtype == torch.float32 for b in d.buffers())


def _blobs(shift: np.ndarray, side: int = 16) -> np.ndarray:
    """(n, side * side) Gaussian blobs of width 1.5 px, centred at x = 7.5 + 4 shift, y = 7.5 (pixels)."""
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float64)
    x0 = 7.5 + 4.0 * shift[:, None, None]
    img = np.exp(-((xx - x0) ** 2 + (yy - 7.5) ** 2) / (2 * 1.5**2))
    return img.reshape(len(shift), -1).astype(np.float32)


def _centroid_x(images: np.ndarray, side: int = 16) -> np.ndarray:
    w = np.clip(images.reshape(len(images), side, side), 0.0, None)
    return (w.sum(axis=1) * np.arange(side)).sum(axis=1) / w.sum(axis=(1, 2))


def test_learns_a_blob_whose_position_is_the_condition() -> None:
    """16x16 blobs at x = 7.5 + 4c px, c ~ U(-1, 1): after 300 hinge steps of the project's train_step the
    EMA generator's blob centroid tracks c. Measured (seed 0): correlation -0.29 at initialisation, 0.996
    after 300 steps, slope 3.47 px per unit c (true 4), mean |error| 0.29 px; 10-15 s on one thread."""
    cfg = _config(loss="hinge", lr_g=2e-4, lr_d=2e-4, beta1=0.0, model_options={"channels_g": 8, "channels_d": 8})
    state = new_state(cfg, model_spec(cfg, 256, 1), CPU, 0)
    rng = np.random.default_rng(0)

    def batches() -> Iterator[_Batch]:
        while True:
            c = rng.uniform(-1.0, 1.0, 32)
            yield _Batch(torch.from_numpy(_blobs(c)), torch.from_numpy(c[:, None].astype(np.float32)))

    c_test = np.linspace(-0.9, 0.9, 200)
    z = torch.randn(200, 8, generator=torch.Generator().manual_seed(1))

    def measure() -> tuple[float, float, float]:
        with torch.no_grad():
            images = state.ema.model(z, torch.from_numpy(c_test[:, None].astype(np.float32))).numpy()
        x = _centroid_x(images)
        truth = 7.5 + 4.0 * c_test
        return float(np.corrcoef(x, truth)[0, 1]), float(np.polyfit(c_test, x, 1)[0]), float(np.abs(x - truth).mean())

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        r0, _, _ = measure()
        stream = batches()
        for _ in range(300):
            _step(state, stream, "hinge")
        r, slope, error = measure()
    finally:
        torch.set_num_threads(threads)
    assert abs(r0) < 0.5  # the untrained generator does not know where the blob goes
    assert r > 0.95 and 2.8 < slope < 5.0 and error < 0.6, (r, slope, error)


# ---- instrument noise ----------------------------------------------------------------------------------

NOISY = {"name": "arcsinh", "mean": 1.3, "std": 1.5, "scale": 0.01, "noise_sigma": 0.011, "noise_exposure_s": 2264.0}


def _noisy(side: int = 16, seed: int = 0, transform: dict[str, Any] | None = NOISY) -> nn.Module:
    g, _ = build_models("image_gan", n_features=side * side, n_cond=2, latent_dim=8, hidden_g=32, hidden_d=32,
                        event_shape=(side, side), options={"channels_g": 4, "channels_d": 4, "noise": "instrument"},
                        feature_noise=True, transform=transform, generator=torch.Generator().manual_seed(seed))
    return g


def test_instrument_noise_is_the_transform_noise_model_around_the_noise_free_image() -> None:
    """Model space -> data units by the transform's inverse: image - noise_free = sqrt(sigma^2 + I / T) eps,
    with eps exactly the per-pixel latents; the noise-free image is >= 0."""
    g = _noisy()
    gen = torch.Generator().manual_seed(5)
    z, cond = torch.randn(64, 8 + 256, generator=gen), torch.rand(64, 2, generator=gen) * 2 - 1
    with torch.no_grad():
        x, clean = g(z, cond).double(), g.noise_free(z, cond).double()
    image = NOISY["scale"] * torch.sinh(x * NOISY["std"] + NOISY["mean"])  # ArcsinhTransform.inverse
    assert (clean >= 0).all() and clean.max() > 0
    sigma = torch.sqrt(NOISY["noise_sigma"] ** 2 + clean / NOISY["noise_exposure_s"])
    torch.testing.assert_close((image - clean) / sigma, z[:, 8:].double(), rtol=1e-4, atol=1e-4)
    # the first latent_dim values draw the noise-free image, the rest only the noise
    z2 = z.clone()
    z2[:, 8:] = torch.randn(64, 256, generator=gen)
    with torch.no_grad():
        torch.testing.assert_close(g.noise_free(z2, cond), g.noise_free(z, cond), rtol=0, atol=0)
        assert not torch.equal(g(z2, cond), g(z, cond))


def test_instrument_noise_of_a_known_image_has_the_poisson_and_background_variance() -> None:
    """The noise module alone, on a noise-free image of 0 and of 10 e-/s: pixel variance sigma^2 + I / T."""
    g = _noisy()
    noise = g.noise
    gen = torch.Generator().manual_seed(1)
    eps = torch.randn(20000, 256, generator=gen, dtype=torch.float32)
    for level in (0.0, 10.0):
        # u such that scale sinh(softplus(u)) = level (u -> -inf for 0)
        target = math.asinh(level / NOISY["scale"])
        u = torch.full((20000, 256), -30.0 if level == 0 else math.log(math.expm1(target)))
        with torch.no_grad():
            torch.testing.assert_close(noise.clean(u[:1]), torch.full((1, 256), level), rtol=1e-4, atol=1e-9)
            x = noise(u, eps).double()
        image = NOISY["scale"] * torch.sinh(x * NOISY["std"] + NOISY["mean"])
        expected = math.sqrt(NOISY["noise_sigma"] ** 2 + level / NOISY["noise_exposure_s"])
        assert float(image.std()) == pytest.approx(expected, rel=0.01)
        assert float(image.mean()) == pytest.approx(level, abs=3 * expected / math.sqrt(image.numel()) + 1e-6)


def test_instrument_noise_needs_the_per_pixel_latent_and_a_noise_model_and_rebuilds_from_a_checkpoint() -> None:
    with pytest.raises(ConfigError, match=r"^train\.feature_noise: image_gan takes per-pixel latents exactly with"):
        build_models("image_gan", n_features=256, n_cond=1, latent_dim=4, hidden_g=8, hidden_d=8,
                     event_shape=(16, 16), options={"noise": "instrument"}, transform=NOISY)
    with pytest.raises(ConfigError, match=r"^train\.model_options\.noise=instrument: the store's transform must be "
                                          r"arcsinh with a noise model .* noise_sigma 0\.0, noise_exposure_s 0\.0$"):
        _noisy(transform={**NOISY, "noise_sigma": 0.0, "noise_exposure_s": 0.0})
    cfg = _config(model_options={"noise": "instrument"})
    spec = model_spec(cfg, 256, 2)
    assert spec.feature_noise and spec.z_dim == 8 + 256  # train.feature_noise (default true) is honoured
    assert not model_spec(_config(model_options={"noise": "instrument"}, feature_noise=False), 256, 2).feature_noise
    g = _noisy(seed=2)
    rebuilt, _ = build_from_spec(ModelSpec.from_dict(spec.to_dict() | {"n_cond": 2, "hidden_g": 32, "hidden_d": 32,
                                                                       "options": spec.options | {"channels_g": 4,
                                                                                                  "channels_d": 4}}))
    rebuilt.load_state_dict(g.state_dict())  # no transform at rebuild: the buffers come from the state
    assert float(rebuilt.noise.exposure) == NOISY["noise_exposure_s"]
    z, cond = torch.randn(3, 8 + 256), torch.zeros(3, 2)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(z, cond), g(z, cond), rtol=0, atol=0)
