"""The differentiable renderer (surrogate.domains.strong_lensing.render) against lenstronomy 1.14.2 itself:
deflections, Sersic profiles and amplitudes, grid and PSF numerics, and whole images of ``physics.render``
(smooth tier, SIE), plus gradients, float32 accuracy and timing (printed, run with -s to see it).
Each test takes well under 10 s on one core."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import numpy as np
import pytest
import torch

from surrogate.domains.strong_lensing.render import (
    Instrument,
    LensRenderer,
    magnitude_to_amplitude,
    render,
    sersic_ellipse,
    sersic_total_flux,
    shear_deflection,
    sie_deflection,
    subpixel_axis,
)
from surrogate.simulators.lenstronomy_lens import physics
from surrogate.simulators.lenstronomy_lens.settings import Settings

pytest.importorskip("lenstronomy")

SETTINGS = Settings()  # configs/strong_lensing/quickstart.yaml's instrument: 64 x 64, supersampling 3
INSTRUMENT = Instrument.from_settings(SETTINGS)


def _t(values: Any) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values, dtype=np.float64))


def _rows(n: int, settings: Settings = SETTINGS, seed: int = 11) -> tuple[np.ndarray, np.ndarray]:
    """n (cond, nuisance) rows drawn as the simulator draws them."""
    rng = np.random.default_rng(seed)
    cond = np.stack([physics.draw_conditions(settings, rng) for _ in range(n)])
    nuisance = np.stack([physics.draw_nuisance(settings, rng) for _ in range(n)])
    return cond, nuisance


def _sim_api(num_pix: int, settings: Settings = SETTINGS, *, lens_light: bool = True) -> Any:
    from lenstronomy.SimulationAPI.sim_api import SimAPI

    model = {"lens_model_list": ["SIE", "SHEAR"], "source_light_model_list": ["SERSIC_ELLIPSE"],
             "lens_light_model_list": ["SERSIC_ELLIPSE"] if lens_light else []}
    return SimAPI(num_pix=num_pix, kwargs_single_band=physics.band_kwargs(settings), kwargs_model=model)


# ---- lens model -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ecc", [0.0, 1e-12, 5e-4, 0.05, 1.0 / 3.0, 0.6])  # q = 1, ~1, 0.999, 0.9, 0.5, 0.25
def test_deflection_matches_lenstronomy(ecc: float) -> None:
    from lenstronomy.LensModel.lens_model import LensModel

    rng = np.random.default_rng(int(ecc * 1e6))
    lens_model = LensModel(["SIE", "SHEAR"])
    x = np.concatenate([rng.uniform(-4, 4, 400), rng.uniform(-1e-3, 1e-3, 20), [0.0]])
    y = np.concatenate([rng.uniform(-4, 4, 400), rng.uniform(-1e-3, 1e-3, 20), [0.0]])
    for _ in range(5):
        angle = rng.uniform(-np.pi, np.pi)
        e1, e2 = ecc * np.cos(angle), ecc * np.sin(angle)
        theta_e, g1, g2 = rng.uniform(0.5, 2.0), rng.uniform(-0.1, 0.1), rng.uniform(-0.1, 0.1)
        kwargs = [{"theta_E": theta_e, "e1": e1, "e2": e2, "center_x": 0.0, "center_y": 0.0},
                  {"gamma1": g1, "gamma2": g2, "ra_0": 0.0, "dec_0": 0.0}]
        ref_x, ref_y = lens_model.alpha(x, y, kwargs)
        sie_x, sie_y = sie_deflection(_t(x), _t(y), _t(theta_e), _t(e1), _t(e2))
        sh_x, sh_y = shear_deflection(_t(x), _t(y), _t(g1), _t(g2))
        err = max(np.abs((sie_x + sh_x).numpy() - ref_x).max(), np.abs((sie_y + sh_y).numpy() - ref_y).max())
        assert err < 1e-10, f"|e| = {ecc}: deflection off by {err:.2e} arcsec"


def test_deflection_gradient_finite_at_round_lens() -> None:
    e1 = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    e2 = torch.tensor([0.0, 1e-9, 0.2], dtype=torch.float64, requires_grad=True)
    theta_e = torch.ones(3, dtype=torch.float64, requires_grad=True)
    ax, ay = sie_deflection(_t([0.3, 1.2, -0.7]), _t([0.5, -0.4, 0.0]), theta_e, e1, e2)
    (ax + ay).sum().backward()
    for grad in (e1.grad, e2.grad, theta_e.grad):
        assert grad is not None and torch.isfinite(grad).all()


# ---- light profiles ------------------------------------------------------------------------------------------


def test_sersic_matches_lenstronomy() -> None:
    from lenstronomy.LightModel.light_model import LightModel

    rng = np.random.default_rng(3)
    light = LightModel(["SERSIC_ELLIPSE"])
    x = np.concatenate([rng.uniform(-3, 3, 300), rng.uniform(-5e-5, 5e-5, 10), [0.0]])  # incl. inside the floor
    y = np.concatenate([rng.uniform(-3, 3, 300), rng.uniform(-5e-5, 5e-5, 10), [0.0]])
    for _ in range(8):
        kw = {"amp": rng.uniform(0.1, 50), "R_sersic": rng.uniform(0.05, 1.0), "n_sersic": rng.uniform(0.5, 6.0),
              "e1": rng.uniform(-0.4, 0.4), "e2": rng.uniform(-0.4, 0.4),
              "center_x": rng.uniform(-0.3, 0.3), "center_y": rng.uniform(-0.3, 0.3)}
        ref = light.surface_brightness(x, y, [kw])
        ours = sersic_ellipse(_t(x), _t(y), *(_t(kw[k]) for k in ("amp", "R_sersic", "n_sersic", "e1", "e2",
                                                                      "center_x", "center_y"))).numpy()
        np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=0)

        norm = light.total_flux([{k: v for k, v in kw.items() if k != "amp"}], norm=True)[0]
        flux = sersic_total_flux(_t(kw["R_sersic"]), _t(kw["n_sersic"])).item()
        assert abs(flux / norm - 1.0) < 1e-12


def test_magnitude_to_amplitude_matches_sim_api() -> None:
    sim = _sim_api(8)
    rng = np.random.default_rng(4)
    for _ in range(5):
        light = {"magnitude": rng.uniform(18, 25), "R_sersic": rng.uniform(0.1, 1.0),
                 "n_sersic": rng.uniform(0.7, 5.0), "e1": rng.uniform(-0.3, 0.3), "e2": rng.uniform(-0.3, 0.3),
                 "center_x": 0.0, "center_y": 0.0}
        source = {**light, "magnitude": rng.uniform(21, 25), "n_sersic": rng.uniform(0.7, 2.5)}
        lens_amp, source_amp, _ = sim.magnitude2amplitude([light], [source], None)
        for kw, ref in ((light, lens_amp[0]["amp"]), (source, source_amp[0]["amp"])):
            amp = magnitude_to_amplitude(_t(kw["magnitude"]), _t(kw["R_sersic"]), _t(kw["n_sersic"]),
                                         SETTINGS.magnitude_zero_point).item()
            assert abs(amp / ref - 1.0) < 1e-12


# ---- grid and PSF numerics -------------------------------------------------------------------------------


def test_grid_and_psf_match_image_numerics() -> None:
    """The sub-pixel coordinates, and binning + PSF + pixel area of an arbitrary sub-pixel image, against
    lenstronomy's own Numerics (supersampling 3, GAUSSIAN PSF)."""
    num_pix = 16
    numerics = _sim_api(num_pix).image_model_class({"supersampling_factor": 3}).ImageNumerics
    instrument = Instrument(num_pix, SETTINGS.pixel_scale_arcsec, 3, SETTINGS.psf_fwhm_arcsec,
                            SETTINGS.magnitude_zero_point)
    ref_x, ref_y = numerics.coordinates_evaluate
    renderer = LensRenderer(instrument)
    np.testing.assert_allclose(renderer.x_sub.numpy().ravel(), ref_x, rtol=0, atol=1e-14)
    np.testing.assert_allclose(renderer.y_sub.numpy().ravel(), ref_y, rtol=0, atol=1e-14)
    np.testing.assert_allclose(subpixel_axis(instrument).numpy(), ref_x[: num_pix * 3], rtol=0, atol=1e-14)

    surface = np.random.default_rng(5).exponential(size=(2, num_pix * 3, num_pix * 3))
    surface[1, 20:25, 30:33] += 100.0  # a bright spot near the edge exercises the "nearest" padding
    ours = renderer.pixelate(_t(surface)).numpy()
    for image, ref_surface in zip(ours, surface, strict=True):
        np.testing.assert_allclose(image, numerics.re_size_convolve(ref_surface.ravel()), rtol=1e-13, atol=0)


# ---- whole images ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lens_light", [True, False])
def test_images_match_physics_render(lens_light: bool) -> None:
    cond, nuisance = _rows(5)
    ref = np.stack([physics.render(SETTINGS, c, n, None, None, lens_light=lens_light)
                    for c, n in zip(cond, nuisance, strict=True)])
    ours = render(INSTRUMENT, _t(cond), _t(nuisance), lens_light=lens_light).numpy()
    assert ours.shape == ref.shape == (5, SETTINGS.num_pix, SETTINGS.num_pix)
    err = np.abs(ours - ref).max()
    print(f"\nlens_light={lens_light}: max |torch - lenstronomy| = {err:.2e} e-/s, peak {ref.max():.3g}, "
          f"sky sigma {physics.background_sigma(SETTINGS):.3g}")
    assert err < 1e-10 * ref.max()
    assert err < 1e-6 * physics.background_sigma(SETTINGS)


def test_image_with_extreme_lens_light_ellipticity() -> None:
    """Lens e at the configured maximum plus the light offset beyond |e| = 0.9: the shrink of physics.render."""
    settings = Settings(num_pix=24, lens_e_max=0.7)
    cond, nuisance = _rows(2, settings, seed=6)
    cond[:, 1:3] = [[0.69, 0.66], [-0.7, 0.05]]
    nuisance[:, 3:5] = [[0.05, 0.05], [-0.05, 0.0]]
    ref = np.stack([physics.render(settings, c, n, None, None) for c, n in zip(cond, nuisance, strict=True)])
    ours = render(Instrument.from_settings(settings), _t(cond), _t(nuisance)).numpy()
    assert np.abs(ours - ref).max() < 1e-10 * ref.max()


def test_float32_error() -> None:
    cond, nuisance = _rows(10, seed=7)
    ref = LensRenderer(INSTRUMENT, torch.float64)(_t(cond), _t(nuisance))
    ours = LensRenderer(INSTRUMENT, torch.float32)(_t(cond).float(), _t(nuisance).float())
    assert ours.dtype == torch.float32
    err = (ours.double() - ref).abs().amax(dim=(1, 2)) / ref.amax(dim=(1, 2))
    print(f"\nfloat32: max |f32 - f64| / image peak = {err.max().item():.2e}")
    assert err.max().item() < 1e-4


# ---- gradients -----------------------------------------------------------------------------------------------


def test_gradcheck_every_column() -> None:
    """torch.autograd.gradcheck w.r.t. every cond and nuisance column on a tiny coarse instrument."""
    instrument = Instrument(num_pix=8, pixel_scale_arcsec=0.4, supersampling=2, psf_fwhm_arcsec=0.6,
                            magnitude_zero_point=25.72)
    renderer = LensRenderer(instrument)
    cond, nuisance = _rows(2, seed=8)
    cond_t = _t(cond).requires_grad_()
    nuisance_t = _t(nuisance).requires_grad_()
    assert torch.autograd.gradcheck(lambda c, n: renderer(c, n), (cond_t, nuisance_t), eps=1e-6, atol=1e-6,
                                    rtol=1e-4)


def test_gradients_finite_and_nonzero_at_full_size() -> None:
    cond, nuisance = _rows(3, seed=9)
    cond[0, 1:3] = 0.0  # a round lens: no NaN from the undefined position angle
    cond_t = _t(cond).float().requires_grad_()
    nuisance_t = _t(nuisance).float().requires_grad_()
    LensRenderer(INSTRUMENT, torch.float32)(cond_t, nuisance_t).sum().backward()
    assert cond_t.grad is not None and nuisance_t.grad is not None
    assert torch.isfinite(cond_t.grad).all() and torch.isfinite(nuisance_t.grad).all()
    assert (nuisance_t.grad[:, :8].abs().sum(dim=0) > 0).all()  # every column but lens_gamma moves the image
    assert (nuisance_t.grad[:, 8] == 0).all()  # the slope is ignored for SIE


# ---- devices, imports, timing ------------------------------------------------------------------------------


def test_forward_stays_on_the_device_of_its_inputs() -> None:
    """On the meta device (shapes only): nothing in the forward path makes a CPU tensor or calls numpy."""
    cond = torch.rand(4, 9, device="meta")
    out = LensRenderer(INSTRUMENT, torch.float32, "meta")(cond, torch.rand(4, 9, device="meta"))
    assert out.device.type == "meta" and out.shape == (4, SETTINGS.num_pix, SETTINGS.num_pix)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu() -> None:
    cond, nuisance = _rows(4, seed=10)
    cpu = render(INSTRUMENT, _t(cond), _t(nuisance))
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-4)):
        gpu = render(INSTRUMENT, _t(cond).to("cuda", dtype), _t(nuisance).to("cuda", dtype))
        assert gpu.device.type == "cuda" and gpu.dtype == dtype
        assert ((gpu.double().cpu() - cpu).abs().max() / cpu.max()).item() < tol


def test_does_not_import_lenstronomy() -> None:
    code = ("import sys, surrogate.domains.strong_lensing.render; "
            "sys.exit(any(m.startswith('lenstronomy') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_timing_report() -> None:
    """Printed, not asserted: ms per image, torch at batch 100 on CPU against lenstronomy's render."""
    cond, nuisance = _rows(100, seed=12)
    t0 = time.perf_counter()
    for c, n in zip(cond[:5], nuisance[:5], strict=True):
        physics.render(SETTINGS, c, n, None, None)
    lenstronomy_ms = (time.perf_counter() - t0) / 5 * 1e3
    lines = [f"\nlenstronomy physics.render: {lenstronomy_ms:.1f} ms/image"]
    for dtype in (torch.float64, torch.float32):
        renderer = LensRenderer(INSTRUMENT, dtype)
        c, n = _t(cond).to(dtype), _t(nuisance).to(dtype)
        with torch.no_grad():
            renderer(c[:2], n[:2])
            t0 = time.perf_counter()
            renderer(c, n)
        lines.append(f"torch {dtype} batch 100, {torch.get_num_threads()} threads: "
                     f"{(time.perf_counter() - t0) / 100 * 1e3:.2f} ms/image")
    print("\n".join(lines))
