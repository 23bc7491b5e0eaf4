from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from train_helpers import E_MAX_MEV, E_MIN_MEV, coefficients, tiny_config, write_store

from surrogate.config import LOSSES
from surrogate.data.transforms import load_transform
from surrogate.errors import SurrogateError
from surrogate.training.checkpoint import generator_from_checkpoint, load_checkpoint, save_checkpoint
from surrogate.training.loop import check_resumable, make_sampler, run_training, train


def _assert_same_tensors(a: object, b: object, where: str = "") -> None:
    """Bitwise equality of nested state dicts / lists of tensors and numbers."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            _assert_same_tensors(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same_tensors(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.mark.parametrize("loss", LOSSES)
def test_every_loss_trains_without_nan(store: Path, tmp_path: Path, loss: str) -> None:
    logged: list[tuple[dict[str, float], int]] = []
    result = train(tiny_config(loss=loss, steps=6, log_every=3, n_critic=2), store, tmp_path / loss,
                   log_metrics=lambda m, s: logged.append((m, s)), progress=False)
    assert result.steps == 6 and result.device == "cpu"
    assert [s for _, s in logged] == [3, 6]
    expected = {"loss_d", "loss_g", "d_real", "d_fake", "sec_per_step"}
    expected |= {"gp"} if loss == "wgan_gp" else set()
    for metrics, _ in logged:
        assert set(metrics) == expected
        assert all(np.isfinite(v) for v in metrics.values())
    ckpt = load_checkpoint(result.checkpoint)
    for name in ("G", "D", "G_ema"):
        assert all(torch.isfinite(t).all() for t in ckpt[name].values())


def test_checkpoints_written_and_rebuild_generator(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result, state = run_training(tiny_config(steps=7, checkpoint_every=3), store, out, progress=False)
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["last.pt", "step_0000003.pt", "step_0000006.pt", "step_0000007.pt"]
    assert result.checkpoint == out / "checkpoints" / "step_0000007.pt"
    assert (out / "checkpoints" / "last.pt").read_bytes() == result.checkpoint.read_bytes()

    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    assert ckpt["step"] == 7 and ckpt["domain"] == "calorimeter"
    assert ckpt["model_spec"]["name"] == "calo_mlp"  # the domain's default for an empty train.model
    assert ckpt["config"]["train"]["steps"] == 7
    assert ckpt["transform"]["name"] == "log_ratio"
    # 7 steps x 1 batch of 32 from 384 training events (12 batches per epoch): position (0, 7)
    assert ckpt["loader"] == {"epoch": 0, "batch": 7}

    generator, _ = generator_from_checkpoint(out / "checkpoints" / "last.pt")
    assert not generator.training
    z, cond = torch.randn(5, 8, generator=torch.Generator().manual_seed(1)), torch.zeros(5, 1)
    torch.testing.assert_close(generator(z, cond), state.ema.model(z, cond), rtol=0, atol=0)
    raw, _ = generator_from_checkpoint(ckpt, use_ema=False)
    torch.testing.assert_close(raw(z, cond), state.generator(z, cond), rtol=0, atol=0)


def test_resume_is_bit_identical(store: Path, tmp_path: Path) -> None:
    """N steps straight == N/2 steps, then resume to N: G, D, EMA, optimisers, RNG and position agree."""
    n = 16  # with batch 32, n_critic 2: 32 batches, crossing the 12-batch epoch boundary twice
    straight = train(tiny_config(steps=n, n_critic=2, checkpoint_every=100), store, tmp_path / "a",
                     progress=False)
    half = train(tiny_config(steps=n // 2, n_critic=2, checkpoint_every=100), store, tmp_path / "b",
                 progress=False)
    resumed = train(tiny_config(steps=n, n_critic=2, checkpoint_every=3, resume=str(half.checkpoint)), store,
                    tmp_path / "b", progress=False)
    a, b = load_checkpoint(straight.checkpoint), load_checkpoint(resumed.checkpoint)
    assert a["step"] == b["step"] == n and a["loader"] == b["loader"] == {"epoch": 2, "batch": 8}
    for key in ("G", "D", "G_ema", "ema_updates", "opt_g", "opt_d", "rng"):
        _assert_same_tensors(a[key], b[key], key)
    # the history continues: the first half's entries (logged every 5 and at its end, 8), then the rest
    assert [h["step"] for h in a["history"]] == [5, 10, 15, 16]
    assert [h["step"] for h in b["history"]] == [5, 8, 10, 15, 16]


def test_physics_critic_sees_layer_energies_and_resumes_exactly(tmp_path: Path) -> None:
    """90 features = 45 "layers" of 2: the critic carries the store's transform and resumes bit for bit."""
    store = write_store(tmp_path / "prepare", n_features=90)
    cfg = {"model": "calo_mlp", "n_critic": 2, "physics_critic": True}
    straight = train(tiny_config(steps=8, checkpoint_every=100, **cfg), store, tmp_path / "a", progress=False)
    half = train(tiny_config(steps=4, checkpoint_every=100, **cfg), store, tmp_path / "b", progress=False)
    resumed = train(tiny_config(steps=8, checkpoint_every=100, resume=str(half.checkpoint), **cfg), store,
                    tmp_path / "b", progress=False)
    a, b = load_checkpoint(straight.checkpoint), load_checkpoint(resumed.checkpoint)
    for key in ("G", "D", "G_ema", "opt_d", "rng"):
        _assert_same_tensors(a[key], b[key], key)
    assert a["model_spec"]["feature_groups"] == 45
    transform = load_transform(store / "transform.json")
    np.testing.assert_array_equal(a["D"]["groups.mean"].numpy(), transform.mean)
    np.testing.assert_array_equal(a["D"]["groups.s_max"].numpy(), transform.s_cap)
    # the synthetic store has no readout threshold: the floor is the transform's eps
    assert transform.threshold_mev == 0.0
    assert float(a["D"]["groups.floor"]) == pytest.approx(transform.eps)
    # the synthetic 8-feature store has no layers: a clear error, not a silently different critic
    with pytest.raises(SurrogateError, match=r"8 features do not split into the calorimeter domain's 45"):
        train(tiny_config(steps=2, model="calo_mlp", physics_critic=True), write_store(tmp_path / "eight"),
              tmp_path / "c", progress=False)


@pytest.mark.parametrize("model", ["calo_shower", "calo_param"])
def test_structured_models_resume_exactly_with_augmentation_and_feature_noise(tmp_path: Path, model: str) -> None:
    """At the dataset-2 shape (45 x 16 x 9) the structured models augment real batches (random alpha
    rotations and reflections from the state's noise generator) and draw one latent per voxel; both
    come back on resume, bit for bit, also from a checkpoint written before feature_noise was renamed."""
    store = write_store(tmp_path / "prepare", n_events=256, n_features=6480)
    cfg = {"model": model, "n_critic": 2, "physics_critic": True, "batch_size": 16}
    straight = train(tiny_config(steps=6, checkpoint_every=100, **cfg), store, tmp_path / "a", progress=False)
    half = train(tiny_config(steps=3, checkpoint_every=100, **cfg), store, tmp_path / "b", progress=False)
    resumed = train(tiny_config(steps=6, checkpoint_every=100, resume=str(half.checkpoint), **cfg), store,
                    tmp_path / "b", progress=False)
    a, b = load_checkpoint(straight.checkpoint), load_checkpoint(resumed.checkpoint)
    for key in ("G", "D", "G_ema", "opt_g", "opt_d", "rng"):
        _assert_same_tensors(a[key], b[key], key)
    assert a["model_spec"]["event_shape"] == (45, 16, 9) and a["model_spec"]["feature_noise"] is True
    # the half-way checkpoint as the code before the rename wrote it: the setting under its old name
    old = load_checkpoint(half.checkpoint)
    old["model_spec"] = {("voxel_noise" if k == "feature_noise" else k): v for k, v in old["model_spec"].items()}
    old["config"]["train"] = {("voxel_noise" if k == "feature_noise" else k): v
                              for k, v in old["config"]["train"].items()}
    assert old["model_spec"]["voxel_noise"] is True and old["config"]["train"]["voxel_noise"] is True
    torch.save(old, tmp_path / "old.pt")
    from_old = train(tiny_config(steps=6, checkpoint_every=100, resume=str(tmp_path / "old.pt"), **cfg), store,
                     tmp_path / "d", progress=False)
    c = load_checkpoint(from_old.checkpoint)
    for key in ("G", "D", "G_ema", "opt_g", "opt_d", "rng"):
        _assert_same_tensors(a[key], c[key], key)
    # ... and a changed setting is still refused under its new name
    with pytest.raises(SurrogateError, match=r"trained with train\.feature_noise=True, this config has False"):
        train(tiny_config(steps=6, resume=str(tmp_path / "old.pt"), feature_noise=False, **cfg), store,
              tmp_path / "e", progress=False)
    # the augmentation is part of the run: without it the critic ends elsewhere
    plain = train(tiny_config(steps=6, checkpoint_every=100, augment=False, **cfg), store, tmp_path / "c",
                  progress=False)
    assert not torch.equal(load_checkpoint(plain.checkpoint)["D"]["net.0.weight"], a["D"]["net.0.weight"])
    generator, _ = generator_from_checkpoint(straight.checkpoint)
    z = torch.randn(3, 8 + 6480, generator=torch.Generator().manual_seed(0))
    assert generator(z, torch.zeros(3, 1)).shape == (3, 6480)


def test_resume_refuses_changed_config(store: Path, tmp_path: Path) -> None:
    half = train(tiny_config(steps=4), store, tmp_path / "a", progress=False)
    with pytest.raises(SurrogateError, match=r"train\.lr_d=0\.0001.*0\.0002"):
        train(tiny_config(steps=8, lr_d=2e-4, resume=str(half.checkpoint)), store, tmp_path / "b",
              progress=False)
    other = write_store(tmp_path / "other", seed=1)
    with pytest.raises(SurrogateError, match="another prepared store"):
        train(tiny_config(steps=8, resume=str(half.checkpoint)), other, tmp_path / "c", progress=False)


def test_evaluate_gets_physical_samples_from_the_ema_generator(store: Path, tmp_path: Path) -> None:
    seen: list[int] = []
    cond_raw = np.array([[E_MIN_MEV], [3000.0], [E_MAX_MEV]], dtype=np.float32)

    def evaluate(sample: Callable[[np.ndarray], np.ndarray], step: int) -> dict[str, float]:
        seen.append(step)
        gen = sample(cond_raw)
        assert gen.shape == (3, 8) and gen.dtype == np.float32
        np.testing.assert_array_equal(gen, sample(cond_raw))  # seeded: evaluation is reproducible
        return {"val_total_over_einc": float((gen.sum(axis=1) / cond_raw[:, 0]).mean())}

    logged: list[tuple[dict[str, float], int]] = []
    result = train(tiny_config(steps=5, validate_every=2), store, tmp_path / "run",
                   log_metrics=lambda m, s: logged.append((m, s)), evaluate=evaluate, progress=False)
    assert seen == [2, 4, 5]
    assert [s for m, s in logged if "val_total_over_einc" in m] == [2, 4, 5]
    history = load_checkpoint(result.checkpoint)["history"]
    assert [h["step"] for h in history if "val_total_over_einc" in h] == [2, 4, 5]


def test_select_by_keeps_the_ema_generator_of_the_best_evaluated_step(store: Path, tmp_path: Path) -> None:
    """A metric that is best at the second of three evaluations: best.pt is that step's EMA generator,
    not the last one, and a resume does not replace it with a worse step."""
    values = iter([3.0, 1.0, 2.0, 1.5])
    snapshots: dict[int, np.ndarray] = {}
    cond_raw = np.array([[3000.0]], dtype=np.float32)

    def evaluate(sample: Callable[[np.ndarray], np.ndarray], step: int) -> dict[str, float]:
        snapshots[step] = sample(cond_raw)
        return {"val_score": next(values)}

    result = train(tiny_config(steps=6, validate_every=2, select_by="val_score"), store, tmp_path / "run",
                   evaluate=evaluate, progress=False)
    assert result.best == tmp_path / "run" / "checkpoints" / "best.pt"
    generator, ckpt = generator_from_checkpoint(result.best)
    assert ckpt["step"] == 4
    last, _ = generator_from_checkpoint(result.checkpoint)
    assert not all(torch.equal(a, b) for a, b in zip(generator.state_dict().values(),
                                                      last.state_dict().values(), strict=True))
    # resumed to step 8, the new evaluation (1.5) is worse than step 4's (1.0): best.pt stays
    resumed = train(tiny_config(steps=8, validate_every=2, select_by="val_score", resume=str(result.checkpoint)),
                    store, tmp_path / "run", evaluate=evaluate, progress=False)
    assert generator_from_checkpoint(resumed.best)[1]["step"] == 4
    with pytest.raises(SurrogateError, match=r"train.select_by: 'val_fpd' is not an in-training metric"):
        train(tiny_config(steps=2, validate_every=2, select_by="val_fpd"), store, tmp_path / "other",
              evaluate=lambda sample, step: {"val_score": 1.0}, progress=False)


@pytest.mark.parametrize("loss", ["wgan_gp", pytest.param("nonsaturating", marks=pytest.mark.slow)])
def test_learns_the_conditional_mean(tmp_path: Path, loss: str) -> None:
    """ln(E_i / E) ~ N(a_i + b_i c, sigma): the EMA generator's mean follows a + b c (5-9 s each).

    Checked inside the condition range (c = -0.5, 0, 0.5), where 1200 steps reach ~0.08 in the worst
    feature; the edges c = +-1 converge more slowly (measured 0.14-0.21 at 1200 steps).
    """
    store = write_store(tmp_path / "prepare", n_events=4096, n_features=4, chunk_events=256)
    cfg = tiny_config(loss=loss, steps=1200, batch_size=128, latent_dim=4, hidden_g=64, hidden_d=64,
                      lr_g=1e-3, lr_d=1e-3, ema_decay=0.99, checkpoint_every=10000, log_every=100)
    _, state = run_training(cfg, store, tmp_path / "run", progress=False)
    transform = load_transform(store / "transform.json")
    sample = make_sampler(state.ema.model, transform, state.spec.z_dim, torch.device("cpu"), False, seed=0)
    a, b = coefficients(4)
    means = {}
    for c in (-0.5, 0.0, 0.5):
        e = E_MIN_MEV * (E_MAX_MEV / E_MIN_MEV) ** ((c + 1) / 2)
        means[c] = np.log(sample(np.full((4000, 1), e, dtype=np.float32)) / e).mean(axis=0)
        np.testing.assert_allclose(means[c], a + b * c, atol=0.12)
    # the slope in c, which an unconditional generator would get as 0 (b spans -1 .. 1); measured
    # within 0.13 of b for both losses
    np.testing.assert_allclose(means[0.5] - means[-0.5], b, atol=0.25)


def test_image_gan_resumes_exactly(tmp_path: Path) -> None:
    """A 16x16 image model on a flat 256-feature store (no event shape: a square image) resumes bit for bit,
    spectral norms' power-iteration vectors (u, v buffers, updated every training forward) included."""
    store = write_store(tmp_path / "prepare", n_events=256, n_features=256)
    cfg = {"model": "image_gan", "n_critic": 2, "batch_size": 16, "physics_critic": False,
           "model_options": {"channels_g": 4, "channels_d": 4, "spectral_norm_g": True}}
    straight = train(tiny_config(steps=6, checkpoint_every=100, **cfg), store, tmp_path / "a", progress=False)
    half = train(tiny_config(steps=3, checkpoint_every=100, **cfg), store, tmp_path / "b", progress=False)
    resumed = train(tiny_config(steps=6, checkpoint_every=100, resume=str(half.checkpoint), **cfg), store,
                    tmp_path / "b", progress=False)
    a, b = load_checkpoint(straight.checkpoint), load_checkpoint(resumed.checkpoint)
    for key in ("G", "D", "G_ema", "ema_updates", "opt_g", "opt_d", "rng", "loader"):
        _assert_same_tensors(a[key], b[key], key)
    assert "stem.parametrizations.weight.0.u" in a["D"] and "project.parametrizations.weight.0.v" in a["G"]
    assert a["model_spec"]["options"]["channels_g"] == 4 and a["model_spec"]["options"]["spectral_norm_d"]
    z, cond = torch.randn(3, 8, generator=torch.Generator().manual_seed(0)), torch.rand(3, 1)
    x = generator_from_checkpoint(straight.checkpoint)[0](z, cond)
    assert x.shape == (3, 256)
    torch.testing.assert_close(generator_from_checkpoint(resumed.checkpoint)[0](z, cond), x, rtol=0, atol=0)


def test_checkpoint_from_before_model_options_still_resumes(store: Path, tmp_path: Path) -> None:
    """A checkpoint with no train.model_options nor model_spec.options (written before they existed) reads
    them as empty: it rebuilds its generator and resumes."""
    half = train(tiny_config(steps=3), store, tmp_path / "a", progress=False)
    ckpt = load_checkpoint(half.checkpoint)
    del ckpt["config"]["train"]["model_options"], ckpt["model_spec"]["options"]
    old = save_checkpoint(tmp_path / "old.pt", {k: v for k, v in ckpt.items() if not k.startswith("format")})
    generator, _ = generator_from_checkpoint(old)
    assert generator(torch.zeros(2, 8), torch.zeros(2, 1)).shape == (2, 8)
    resumed = train(tiny_config(steps=5, resume=str(old)), store, tmp_path / "b", progress=False)
    assert resumed.steps == 5
    with pytest.raises(SurrogateError, match=r"train\.model_options=\{\}, this config has \{'x': 1\}"):
        check_resumable(ckpt, str(old), tiny_config(model_options={"x": 1}), ckpt["store"], ckpt["transform"], 1)


def test_kappa_field_with_the_interpolation_term_resumes_exactly(tmp_path: Path) -> None:
    """A weak-lensing store (real dask prepare of 32x32 maps on the quickstart's 3 x 3 grid): kappa_field with
    the matching and interpolation terms draws maps between the grid's cosmologies every step, and its
    running fit of the reference (critic buffers) comes back on resume bit for bit."""
    import dataclasses

    from surrogate.config import PrepareConfig
    from surrogate.data.prepare import prepare_store
    from surrogate.domains.weak_lensing import DOMAIN, SimulateConfig
    from tests.domains.test_weak_lensing import sample

    domain = DOMAIN.configured(SimulateConfig(num_pix=32))
    store = tmp_path / "prepare"
    prepare_store(domain, PrepareConfig(chunk_events=32), (str(sample(tmp_path / "maps.h5", per=12)),), store,
                  progress=False)
    cfg = {"model": "kappa_field", "batch_size": 18, "latent_dim": 1, "feature_noise": True, "physics_critic": False,
           "model_options": {"conv_critic": False, "matching_weight": 10.0, "interpolation_maps": 8,
                             "interpolation_weight": 10.0, "smoothing_px": 0.6}}

    def config(**extra: object) -> object:
        c = tiny_config(**({"steps": 6, "checkpoint_every": 100, "log_every": 3} | cfg | extra))
        return dataclasses.replace(c, domain="weak_lensing")  # type: ignore[type-var]

    straight = train(config(), store, tmp_path / "a", progress=False)
    half = train(config(steps=3), store, tmp_path / "b", progress=False)
    resumed = train(config(resume=str(half.checkpoint)), store, tmp_path / "b", progress=False)
    a, b = load_checkpoint(straight.checkpoint), load_checkpoint(resumed.checkpoint)
    for key in ("G", "D", "G_ema", "ema_updates", "opt_g", "opt_d", "rng", "loader"):
        _assert_same_tensors(a[key], b[key], key)
    assert a["D"]["interp_gram"].abs().sum() > 0 and a["D"]["interp_moment"].shape == (9, 12 + 2 * 9)
    assert straight.losses["loss_interpolation"] != 0.0


def test_learning_rates_decay_linearly_and_a_resume_continues_the_schedule(store: Path, tmp_path: Path) -> None:
    """train.lr_decay_start = 0.5 of 16 steps: constant for updates 0-7, then 8/8, 7/8, ..., 1/8 of the
    configured rates; a run resumed from its step-8 checkpoint ends bit for bit where the straight one
    does, and differs from a run at constant rates."""
    from surrogate.training.loop import lr_factor

    assert [lr_factor(s, 16, 0.5) for s in range(16)] == [1.0] * 8 + [k / 8 for k in range(8, 0, -1)]
    assert [lr_factor(s, 16, 1.0) for s in range(16)] == [1.0] * 16
    assert lr_factor(0, 4, 0.0) == 1.0 and lr_factor(3, 4, 0.0) == 0.25
    cfg = {"steps": 16, "n_critic": 2, "checkpoint_every": 8, "lr_decay_start": 0.5}
    straight = train(tiny_config(**cfg), store, tmp_path / "a", progress=False)
    resumed = train(tiny_config(**cfg, resume=str(tmp_path / "a" / "checkpoints" / "step_0000008.pt")), store,
                    tmp_path / "b", progress=False)
    a, b = load_checkpoint(straight.checkpoint), load_checkpoint(resumed.checkpoint)
    for key in ("G", "D", "G_ema", "opt_g", "opt_d", "rng"):
        _assert_same_tensors(a[key], b[key], key)
    assert a["opt_g"]["param_groups"][0]["lr"] == pytest.approx(1e-4 / 8)
    constant = load_checkpoint(train(tiny_config(**(cfg | {"lr_decay_start": 1.0})), store, tmp_path / "c",
                                     progress=False).checkpoint)
    assert not torch.equal(constant["G_ema"]["net.0.weight"], a["G_ema"]["net.0.weight"])
