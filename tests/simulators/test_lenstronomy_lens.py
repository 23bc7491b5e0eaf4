"""Strong-lensing reference simulator: physics (ring radius, substructure, noise), reproducibility, resume.

Real lenstronomy (and pyHalo in the slow test) on small images: 32-48 pixels, supersampling 1 where the
test does not depend on it.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from surrogate.domains.strong_lensing import DOMAIN, SimulateConfig, schema
from surrogate.simulators.lenstronomy_lens import LenstronomyLens, Settings, columns, physics, run_block, simulate

SMALL = Settings(num_pix=48, supersampling=1, noise=False)


def _grid_radius(settings: Settings) -> np.ndarray:
    """Distance of each pixel centre from the lens centre (arcsec), (num_pix, num_pix)."""
    n = settings.num_pix
    coords = (np.arange(n) - (n - 1) / 2) * settings.pixel_scale_arcsec
    return np.hypot(*np.meshgrid(coords, coords))


def test_ring_radius_tracks_theta_e() -> None:
    """The flux-weighted radius of the noise-free lensed source follows theta_E (DOMAINS.md measured 0.988)."""
    radius = _grid_radius(SMALL)
    theta_e, ring = [], []
    for index in range(30):
        drawn, _ = physics.draw(SMALL, index)
        arcs = physics.render(SMALL, drawn.cond, drawn.nuisance, None, None, lens_light=False)
        theta_e.append(drawn.cond[0])
        ring.append(float((arcs * radius).sum() / arcs.sum()))
    theta_e_arr, ring_arr = np.array(theta_e), np.array(ring)
    assert np.corrcoef(theta_e_arr, ring_arr)[0, 1] > 0.95
    # The arcs lie near the Einstein ring: the radius is theta_E to within the source size and offset.
    assert np.abs(ring_arr / theta_e_arr - 1).mean() < 0.15


def test_epl_with_isothermal_slope_is_the_sie() -> None:
    """An EPL of slope 2 is the singular isothermal ellipsoid: the same image to 1e-8 of its peak (measured
    ~3e-10); slope 2.1 visibly differs (measured 0.8-8 % of the peak)."""
    epl = replace(SMALL, lens_profile="EPL")
    for index in range(3):
        drawn, _ = physics.draw(SMALL, index)
        sie_image = physics.render(SMALL, drawn.cond, drawn.nuisance, None, None)
        assert drawn.nuisance[-1] == 2.0  # SIE lenses store the isothermal slope
        epl_image = physics.render(epl, drawn.cond, drawn.nuisance, None, None)
        assert np.abs(epl_image - sie_image).max() < 1e-8 * sie_image.max()
        steeper = drawn.nuisance.copy()
        steeper[-1] = 2.1
        assert np.abs(physics.render(epl, drawn.cond, steeper, None, None)
                      - sie_image).max() > 1e-3 * sie_image.max()


def _residual_power(density: float, indices: range) -> float:
    """Sum over images of (image with subhalos - the same lens without substructure)^2, noise-free."""
    settings = replace(SMALL, num_pix=40, tier="subhalos", sub_density_min_arcsec2=density,
                       sub_density_max_arcsec2=density)
    power = 0.0
    for index in indices:
        drawn, _ = physics.draw(settings, index)
        with_sub = physics.render(settings, drawn.cond, drawn.nuisance, drawn.sub, None)
        smooth = physics.render(settings, drawn.cond, drawn.nuisance, None, None)
        power += float(((with_sub - smooth) ** 2).sum())
    return power


def test_more_subhalos_give_more_residual_power() -> None:
    images = range(4)
    none, few, many = (_residual_power(d, images) for d in (0.0, 0.3, 3.0))
    assert none == 0.0  # no subhalo drawn: exactly the smooth lens
    assert 0.0 < few < many
    # ~6 vs ~59 subhalos per image: the residual power grows roughly with their number.
    assert many > 3 * few


def test_subhalo_count_follows_the_density_condition() -> None:
    settings = replace(SMALL, tier="subhalos", sub_density_min_arcsec2=2.0, sub_density_max_arcsec2=2.0)
    counts = [len(physics.draw(settings, i)[0].sub.names) for i in range(40)]  # type: ignore[union-attr]
    expected = 2.0 * math.pi * settings.sub_radius_arcsec**2  # 39.3 per image
    # The mean of 40 Poisson draws is within 4 standard errors (sqrt(39.3 / 40) = 1.0) of its expectation.
    assert abs(np.mean(counts) - expected) < 4.0


def test_noise_matches_sky_read_and_poisson_expectation() -> None:
    """Noisy minus noise-free image, per pixel, over the expected sigma, is standard normal.

    Expected variance from first principles (Euclid VIS preset, 4 x 566 s, zero point 25.72): sky counts
    10^(-0.4 (22.3 - 25.72)) x 0.101^2 x 2264 s = 538 e-, read noise 4 x 4.2^2 = 70.6 e-^2, plus the
    model's own counts; divided by 2264 s to e-/s: sky + read alone give 0.0109 e-/s per pixel.
    """
    settings = replace(SMALL, num_pix=32, noise=True)
    t_total = 4 * 566.0
    sky_e = 10 ** (-0.4 * (22.3 - 25.72)) * 0.101**2 * t_total
    pulls, faint = [], []
    for index in range(6):
        drawn, noise_rng = physics.draw(settings, index)
        clean = physics.render(settings, drawn.cond, drawn.nuisance, None, None)
        noisy = physics.render(settings, drawn.cond, drawn.nuisance, None, noise_rng)
        sigma = np.sqrt(sky_e + 4 * 4.2**2 + clean * t_total) / t_total
        pulls.append(((noisy - clean) / sigma).ravel())
        # a 35th-magnitude source and no lens light (0.04 e- in 2264 s in all): sky and read noise alone
        dark = drawn.cond.copy()
        dark[7] = 35.0
        empty = physics.render(settings, dark, drawn.nuisance, None, np.random.default_rng(index), lens_light=False)
        faint.append(empty.ravel())
    pull = np.concatenate(pulls)
    assert abs(pull.mean()) < 0.05 and abs(pull.std() - 1) < 0.03  # 6144 pulls: std error of std ~0.009
    assert np.concatenate(faint).std() == pytest.approx(np.sqrt(sky_e + 4 * 4.2**2) / t_total, rel=0.03)
    assert physics.background_sigma(settings) == pytest.approx(0.010904, rel=1e-4)


def _write_plain(path: Path, blocks: Any, n: int, attrs: dict[str, Any]) -> None:
    """A writer that keeps the blocks as they come (the domain's writer is tested in tests/domains)."""
    with h5py.File(path, "w") as f:
        parts = list(blocks)
        for i, name in enumerate(("images", "cond", "nuisance")):
            f[name] = np.concatenate([p[i] for p in parts])
        f.attrs["n"] = n
        f.attrs["tier"] = attrs["tier"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same settings and seed on 1 thread (shards of 3) and on 2 worker processes (shards of 4)."""
    out = tmp_path_factory.mktemp("pair")
    base = replace(SMALL, num_pix=24, noise=True, tier="subhalos", n_events=9, seed=11)
    runs = {"one": replace(base, n_workers=1, shard_events=3),
            "two": replace(base, n_workers=2, shard_events=4, scheduler="distributed")}
    files = {}
    for name, settings in runs.items():
        files[name] = out / f"{name}.h5"
        simulate(settings, files[name], _write_plain, progress=False)
    return files


def test_same_seed_gives_identical_bytes_for_any_number_of_workers(pair: dict[str, Path]) -> None:
    with h5py.File(pair["one"]) as a, h5py.File(pair["two"]) as b:
        for name in ("images", "cond", "nuisance"):
            assert a[name][:].tobytes() == b[name][:].tobytes(), name
        images = a["images"][:]
        assert images.shape == (9, 24, 24) and images.dtype == np.float32
        assert len(np.unique(images.sum(axis=(1, 2)))) == 9  # distinct images, not one repeated


def test_conditions_within_configured_ranges(pair: dict[str, Path]) -> None:
    s = Settings()
    with h5py.File(pair["one"]) as f:
        cond = f["cond"][:]
    assert cond.shape == (9, len(columns(replace(s, tier="subhalos"))))
    assert ((cond[:, 0] >= s.theta_e_min_arcsec) & (cond[:, 0] <= s.theta_e_max_arcsec)).all()
    assert (np.abs(cond[:, 1:3]) <= s.lens_e_max).all() and (np.abs(cond[:, 3:5]) <= s.shear_max).all()
    assert ((cond[:, 7] >= s.source_mag_min) & (cond[:, 7] <= s.source_mag_max)).all()
    assert ((cond[:, 9] >= s.sub_density_min_arcsec2) & (cond[:, 9] <= s.sub_density_max_arcsec2)).all()


def test_interrupted_run_resumes_from_kept_shards(tmp_path: Path, pair: dict[str, Path]) -> None:
    settings = replace(SMALL, num_pix=24, noise=True, tier="subhalos", n_events=9, seed=11, n_workers=1,
                       shard_events=3)
    out = tmp_path / "resumed.h5"

    def failing_writer(*args: Any) -> None:
        raise KeyboardInterrupt  # as if stopped after the shards were done, before the file was written

    with pytest.raises(KeyboardInterrupt):
        simulate(settings, out, failing_writer, progress=False)
    assert len(list(tmp_path.glob(".resumed.h5.shards/shard_*.npz"))) == 3 and not out.exists()
    summary = simulate(replace(settings, n_workers=2), out, _write_plain, progress=False)
    assert summary["resumed_images"] == 9.0
    assert not (tmp_path / ".resumed.h5.shards").exists()
    with h5py.File(out) as a, h5py.File(pair["one"]) as b:
        assert a["images"][:].tobytes() == b["images"][:].tobytes()


def test_simulator_protocol_matches_the_file_at_the_same_conditions(pair: dict[str, Path]) -> None:
    settings = replace(SMALL, num_pix=24, noise=True, tier="subhalos", seed=11)
    with h5py.File(pair["one"]) as f:
        cond, images = f["cond"][:3], f["images"][:3]
    # Image i's nuisance, substructure and noise come from (seed, i), whatever the conditions' origin: the
    # file's conditions (float32) give the file's images up to the float32 rounding of the conditions.
    again = LenstronomyLens(settings)(cond.astype(np.float64), seed=11)
    np.testing.assert_allclose(again.reshape(images.shape), images, atol=2e-3)


def test_domain_simulate_writes_a_valid_file(tmp_path: Path) -> None:
    cfg = SimulateConfig(n_events=5, num_pix=24, supersampling=1, shard_events=2, n_workers=1, seed=3)
    out = tmp_path / "lens.h5"
    summary = DOMAIN.simulate(cfg, out, progress=False)
    assert summary["n_events"] == 5.0 and summary["ms_per_image"] > 0
    assert DOMAIN.check_file(out) == 5
    DOMAIN.check_plausible(out, setting="prepare.accept_implausible")
    with h5py.File(out) as f:
        assert f[schema.IMAGES].shape == (5, 24, 24) and f[schema.IMAGES].attrs["units"] == "e-/s"
        assert list(f[schema.CONDITIONS].attrs["columns"]) == list(schema.BASE_NAMES)
        assert f.attrs["pixel_scale_arcsec"] == 0.101 and f.attrs["tier"] == "smooth"
        assert f.attrs["background_noise_e_per_s"] == pytest.approx(0.010904, rel=1e-4)


@pytest.mark.slow
def test_pyhalo_tier_renders_multi_plane_substructure_reproducibly() -> None:
    """pyHalo CDM at log_mlow 8 (fast): halos drawn, the image differs from the smooth lens, the same seed
    gives the same image, and numpy's global state is left as it was."""
    settings = replace(SMALL, num_pix=32, tier="pyhalo", log_mlow=8.0, sigma_sub_min=0.05, sigma_sub_max=0.05)
    np.random.seed(123)  # noqa: NPY002 -- the test checks that this state survives
    before = np.random.get_state()[1].copy()  # noqa: NPY002
    first = run_block(settings, 0, 2)
    assert (np.random.get_state()[1] == before).all()  # noqa: NPY002
    second = run_block(settings, 0, 2)
    assert first.images.tobytes() == second.images.tobytes()
    # The same image after another history in the process (pyHalo keeps a global table: physics.py)
    run_block(replace(settings, seed=5), 0, 1)
    assert run_block(settings, 1, 2).images.tobytes() == first.images[1:].tobytes()
    assert (first.n_halos > 10).all()
    drawn, _ = physics.draw(settings, 0)
    assert drawn.sub is not None and drawn.sub.redshifts is not None and len(set(drawn.sub.redshifts)) > 2
    smooth = physics.render(settings, drawn.cond, drawn.nuisance, None, None)
    assert np.abs(first.images[0] - smooth).max() > 1e-4
    wdm = replace(settings, pyhalo_model="wdm")
    assert [c for c, _ in columns(wdm)][-2:] == ["sigma_sub", "log10_m_hm"]
    assert np.isfinite(run_block(wdm, 0, 1).images).all()
