"""Weak-lensing reference simulator: spectra, lognormal transform, NFW painting, peaks, reproducibility, resume.

Real pyccl 3.3.6 throughout; maps small (32-64 pixels at the default 1.64' pixels) where the test does not
need the default 128x128 map.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from scipy import integrate, ndimage

from surrogate.simulators.convergence_maps import (
    ConvergenceMaps,
    Settings,
    attrs,
    cosmologies,
    heldout_mask,
    n_events,
    physics,
    run_block,
    simulate,
)

SMALL = Settings(num_pix=64, map_size_deg=1.75)  # the default pixel scale, 1.64'


def _band_powers(power: np.ndarray, expected: np.ndarray, ell: np.ndarray, edges: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(measured, expected, independent modes) per ell band of two grid spectra (N, N)."""
    measured, target, modes = [], [], []
    for lo, hi in itertools.pairwise(edges):
        band = (ell >= lo) & (ell < hi)
        measured.append(power[band].mean())
        target.append(expected[band].mean())
        modes.append(band.sum() / 2)  # kappa(ell) and kappa(-ell) are one complex mode of a real field
    return np.array(measured), np.array(target), np.array(modes)


# ---- C_ell --------------------------------------------------------------------------------------------------


def test_convergence_cl_is_the_weak_lensing_tracers_and_the_grid_interpolates_it() -> None:
    """The single-plane kappa tracer agrees with pyccl's WeakLensingTracer for a narrow n(z) at z_s = 1
    (shear = kappa up to the (l+2)!/(l-2)! / (l+1/2)^4 factor; measured 0.995-1.000 above ell 100), and the
    log-log interpolation onto the grid is within 0.3% of pyccl at modes off its samples."""
    import pyccl

    cosmo = physics.cosmology(0.3, 0.8)
    ell = np.geomspace(100, 6000, 12)
    kappa = physics.convergence_cl(cosmo, ell, 1.0)
    z = np.linspace(0.0, 2.0, 2001)
    narrow = pyccl.WeakLensingTracer(cosmo, dndz=(z, np.exp(-0.5 * ((z - 1.0) / 0.005) ** 2)))
    shear = pyccl.angular_cl(cosmo, narrow, narrow, ell)
    np.testing.assert_allclose(shear / kappa, 1.0, atol=0.012)
    # kappa C_ell at ell = 1000 for a source plane at z = 1 is O(1e-10) (e.g. Kilbinger 2015, fig. 3)
    assert 1e-11 < float(np.interp(1000, ell, kappa)) < 1e-9

    samples = physics.cl_samples(SMALL.num_pix, SMALL.map_size_deg)
    grid = physics.cl_on_grid(samples, physics.convergence_cl(cosmo, samples, 1.0), SMALL.num_pix,
                              SMALL.map_size_deg)
    ells = physics.ell_grid(SMALL.num_pix, SMALL.map_size_deg)
    assert grid[0, 0] == 0.0
    picks = [(0, 1), (3, 5), (17, 9), (31, 32)]
    direct = physics.convergence_cl(cosmo, np.array([ells[p] for p in picks]), 1.0)
    np.testing.assert_allclose([grid[p] for p in picks], direct, rtol=3e-3)


def test_more_matter_and_more_clustering_give_more_power() -> None:
    ell = np.array([300.0, 1000.0, 3000.0])
    base = physics.convergence_cl(physics.cosmology(0.3, 0.8), ell, 1.0)
    assert (physics.convergence_cl(physics.cosmology(0.3, 1.0), ell, 1.0) > 1.3 * base).all()
    assert (physics.convergence_cl(physics.cosmology(0.4, 0.8), ell, 1.0) > 1.3 * base).all()
    # the linear spectrum falls short of halofit at small scales (the halo tier's halos make up the rest)
    linear = physics.convergence_cl(physics.cosmology(0.3, 0.8, nonlinear=False), ell, 1.0)
    assert linear[2] < 0.2 * base[2] and linear[0] > 0.5 * base[0]


# ---- Gaussian and lognormal maps -------------------------------------------------------------------------


def _fast_maps(tier: str, n_maps: int) -> tuple[np.ndarray, physics.Tables, Settings]:
    settings = replace(SMALL, tier=tier)
    tables = physics.tables(settings, 0.3, 0.8)
    maps = np.array([physics.draw_map(settings, tables, i)[0] for i in range(n_maps)])
    return maps, tables, settings


def test_gaussian_maps_have_the_input_power_within_sample_variance() -> None:
    """Band powers of 40 maps (64x64, 1.75 deg) over ell 206-5800 (2 fundamental modes to the grid's
    Nyquist multipole, 8 log bands) against the mean input C_ell of the band's modes: each within 4 standard
    errors (1 / sqrt(independent modes x maps) for a Gaussian field), chi^2 over bands below 25 (8 dof)."""
    maps, tables, settings = _fast_maps("gaussian", 40)
    ell = physics.ell_grid(settings.num_pix, settings.map_size_deg)
    fundamental = 2 * math.pi / math.radians(settings.map_size_deg)
    edges = np.geomspace(2 * fundamental, fundamental * settings.num_pix / 2, 9)
    measured, expected, modes = _band_powers(physics.grid_power(maps, settings.map_size_deg), tables.cl_grid,
                                             ell, edges)
    pull = (measured / expected - 1) * np.sqrt(modes * len(maps))
    assert np.abs(pull).max() < 4 and (pull**2).sum() < 25, pull
    # pixel variance is the sum of the spectrum over the grid's modes over the area (module docstring)
    assert maps.var() == pytest.approx(tables.cl_grid.sum() / math.radians(settings.map_size_deg) ** 2, rel=0.05)
    assert np.abs(maps.mean(axis=(1, 2))).max() < 1e-15  # no monopole


def test_lognormal_maps_keep_the_power_and_have_the_lognormal_one_point_distribution() -> None:
    maps, tables, settings = _fast_maps("lognormal", 40)
    kappa0 = physics.kappa0_hilbert2011(1.0)
    assert tables.kappa0 == kappa0 == pytest.approx(0.02975, abs=1e-5)  # Hilbert et al. 2011 eq. 38 at z_s = 1
    assert maps.min() > -kappa0
    gaussian_tables = physics.tables(replace(settings, tier="gaussian"), 0.3, 0.8)
    ell = physics.ell_grid(settings.num_pix, settings.map_size_deg)
    edges = np.geomspace(206, 5800, 9)
    measured, expected, modes = _band_powers(physics.grid_power(maps, settings.map_size_deg),
                                             gaussian_tables.cl_grid, ell, edges)
    # the halofit power, to within the sample variance of a non-Gaussian field (wider than a Gaussian's:
    # 6 Gaussian standard errors; measured within 3) and within 10% in every band
    assert np.abs(measured / expected - 1).max() < 0.10
    assert (np.abs(measured / expected - 1) * np.sqrt(modes * len(maps))).max() < 6
    # one-point: kappa0 (e^(y - v/2) - 1) has mean 0, variance kappa0^2 (e^v - 1), skewness (e^v + 2) sqrt(e^v - 1)
    v = tables.var_y
    assert abs(maps.mean()) < 0.03 * maps.std()
    assert maps.var() == pytest.approx(kappa0**2 * math.expm1(v), rel=0.05)
    skew = ((maps - maps.mean()) ** 3).mean() / maps.std() ** 3
    assert skew == pytest.approx((math.exp(v) + 2) * math.sqrt(math.expm1(v)), rel=0.15)
    assert skew > 1.0  # strongly skewed at 1.6' pixels (measured 2.0)


def test_lognormal_shift_setting_overrides_the_fit() -> None:
    assert physics.lognormal_shift(replace(SMALL, lognormal_shift=0.05)) == 0.05
    assert physics.lognormal_shift(replace(SMALL, z_source=2.0)) == pytest.approx(0.0792, abs=1e-4)
    one_mode = np.zeros((8, 8))
    one_mode[0, 1] = one_mode[0, -1] = 1e-6  # xi is a cosine: as negative as it is positive
    with pytest.raises(ValueError, match="too small"):
        physics.lognormal_spectrum(one_mode, 3.5, 1e-3)


# ---- NFW halos ---------------------------------------------------------------------------------------------


def test_truncated_nfw_shape_is_the_line_of_sight_integral() -> None:
    """F(x, C) against quadrature of 1 / (s (1 + s)^2) along the line of sight, either side of x = 1, and its
    integral over the disc against the 3D mass inside C scale radii: 2 pi m(C)."""
    for c_trunc in (2.5, 8.0):
        for x in (0.02, 0.5, 0.99995, 1.0, 1.00002, 1.3, 0.9 * c_trunc):
            exact = integrate.quad(lambda z, x=x: 1 / (math.hypot(x, z) * (1 + math.hypot(x, z)) ** 2),
                                   0, math.sqrt(c_trunc**2 - x**2))[0]
            assert physics.truncated_nfw_shape(np.array([x]), c_trunc)[0] == pytest.approx(exact, rel=1e-6)
        disc = integrate.quad(lambda x, c=c_trunc: 2 * math.pi * x * physics.truncated_nfw_shape(np.array([x]), c)[0],
                              0, c_trunc, points=[1.0], limit=200)[0]
        assert disc == pytest.approx(2 * math.pi * float(physics.nfw_mass_factor(c_trunc)), rel=1e-6)
    assert physics.truncated_nfw_shape(np.array([3.0, 10.0]), 2.5).tolist() == [0.0, 0.0]


def test_painted_halo_matches_pyccl_convergence() -> None:
    """One 1e15 Msun halo at z = 0.14 (R200c ~ 8 pixels): painted pixels from 1.5 pixels out to 80% of R200c
    match pyccl's HaloProfileNFW(truncated=True).convergence at the pixel centres to 2% (measured 0.2-1.1%),
    the closed form matches it to 1% (pyccl projects by FFTLog), and the painted total is the halo's
    M200c / (Sigma_crit D_l^2) exactly."""
    import pyccl

    settings = replace(SMALL, tier="halos")
    cosmo = physics.cosmology(0.3, 0.8, nonlinear=False)
    t = physics.halo_tables(cosmo, settings)
    sl, log10_m = 3, 15.0
    assert 1 / t.a[sl] - 1 == pytest.approx(0.139, abs=0.01)
    position = np.array([[20.3, 60.7]])  # near an edge: the stamp wraps
    painted = physics.paint_halos(t, settings, np.array([sl]), np.array([log10_m]), position) + t.mean_kappa
    conc, r200 = (float(v[0]) for v in physics.halo_properties(t, np.array([sl]), np.array([log10_m])))
    pixel_rad = math.radians(settings.map_size_deg) / settings.num_pix
    r200_pix = r200 / t.chi_mpc[sl] / pixel_rad
    assert 7 < r200_pix < 9
    centres = np.arange(settings.num_pix) + 0.5
    d = [(c - p + 32) % 64 - 32 for c, p in ((centres[None, :], position[0, 0]), (centres[:, None], position[0, 1]))]
    r_pix = np.hypot(*d)
    ring = (r_pix > 1.5) & (r_pix < 0.8 * r200_pix)
    r_mpc = np.sort(r_pix[ring]) * pixel_rad * t.chi_mpc[sl]
    mass_def = pyccl.halos.MassDef200c
    profile = pyccl.halos.HaloProfileNFW(mass_def=mass_def, truncated=True,
                                         concentration=pyccl.halos.ConcentrationDuffy08(mass_def=mass_def))
    reference = profile.convergence(cosmo, r_mpc, 10**log10_m, a_lens=t.a[sl], a_source=1 / (1 + settings.z_source))
    np.testing.assert_allclose(painted[ring][np.argsort(r_pix[ring])], reference, rtol=0.02)
    np.testing.assert_allclose(physics.nfw_convergence(r_mpc, 10**log10_m, conc, r200, t.a[sl], t.sigma_crit[sl]),
                               reference, rtol=0.01)
    assert painted[r_pix > r200_pix + 1].max() == 0.0
    sigma_crit = pyccl.sigma_critical(cosmo, a_lens=t.a[sl], a_source=0.5)
    total = 10**log10_m / (sigma_crit * (t.a[sl] * t.chi_mpc[sl] * pixel_rad) ** 2)  # physical D_l = a chi
    assert painted.sum() == pytest.approx(total, rel=1e-9)


def test_more_sigma_8_gives_more_halos_and_the_halo_mean_is_subtracted() -> None:
    settings = replace(SMALL, tier="halos", halo_log10_m_min=13.0)
    low, high = (physics.tables(settings, 0.3, s8) for s8 in (0.6, 1.0))
    assert low.halos is not None and high.halos is not None
    assert high.halos.expected.sum() > 2.5 * low.halos.expected.sum()  # measured 3.6 (1500 vs 410 halos)
    assert high.halos.expected[:, -20:].sum() > 10 * low.halos.expected[:, -20:].sum()  # the rare massive end
    drawn = {s8: [physics.draw_map(settings, tables, i) for i in range(6)] for s8, tables in ((0.6, low), (1.0, high))}
    counts = {s8: np.array([k for _, k in maps]) for s8, maps in drawn.items()}
    assert counts[1.0].min() > counts[0.6].max()
    assert counts[0.6].mean() == pytest.approx(low.halos.expected.sum(), rel=0.1)
    # expected mean subtracted: maps average to zero within their scatter (1e-4 of a ~0.01 kappa rms)
    means = np.array([m.mean() for m, _ in drawn[1.0]])
    assert abs(means.mean()) < 3 * means.std() / math.sqrt(len(means)) + 1e-6


def test_halo_maps_have_more_high_peaks_than_gaussian_and_lognormal_maps() -> None:
    """Peaks (local maxima over the 8 neighbours) of maps smoothed by a 1-pixel Gaussian, in units of each
    tier's own rms: above 3 sigma halos give ~6x the Gaussian maps' count, above 5 sigma more than the
    lognormal maps' (Omega_m 0.3, sigma_8 0.8, 12 maps of 128x128 at 3.5 deg; measured over 16 maps:
    Gaussian 5.3 / 0 / 0, lognormal 32.2 / 4.4 / 1.6, halos 30.1 / 7.0 / 3.8 per map at 3 / 5 / 6 sigma).
    At 3 sigma the lognormal maps (Hilbert et al. shift, skewness 2) match the halos: the halos' excess is
    in the tail."""
    counts = {}
    for tier in ("gaussian", "lognormal", "halos"):
        settings = Settings(tier=tier)
        tables = physics.tables(settings, 0.3, 0.8)
        maps = np.array([physics.draw_map(settings, tables, i)[0] for i in range(12)])
        smooth = np.array([ndimage.gaussian_filter(m, 1.0, mode="wrap") for m in maps])
        z = (smooth - smooth.mean()) / smooth.std()
        peak = np.array([zz == ndimage.maximum_filter(zz, size=3, mode="wrap") for zz in z])
        counts[tier] = {th: int((peak & (z > th)).sum()) for th in (3, 5)}
    assert counts["halos"][3] > 3 * counts["gaussian"][3]
    assert counts["gaussian"][5] == 0
    assert counts["halos"][5] > 1.3 * counts["lognormal"][5] > 0, counts


def test_halo_tier_power_lies_between_linear_and_halofit() -> None:
    """The halos add the small-scale power the linear field lacks: measured in three bands over 800 < ell <
    5800, above twice the linear C_ell (measured 3.3-12x) and between 0.4 and 1 of halofit's (measured
    0.6-0.7: the 1-halo power of halos below 10^12.5 Msun and the halos' clustering are missing)."""
    settings = replace(SMALL, tier="halos")
    tables = physics.tables(settings, 0.3, 0.8)
    maps = np.array([physics.draw_map(settings, tables, i)[0] for i in range(16)])
    samples = physics.cl_samples(settings.num_pix, settings.map_size_deg)
    halofit = physics.cl_on_grid(samples, physics.convergence_cl(physics.cosmology(0.3, 0.8), samples, 1.0),
                                 settings.num_pix, settings.map_size_deg)
    ell = physics.ell_grid(settings.num_pix, settings.map_size_deg)
    measured, nonlinear, _ = _band_powers(physics.grid_power(maps, settings.map_size_deg), halofit, ell,
                                          np.array([800, 1600, 3200, 5800]))
    _, linear, _ = _band_powers(tables.cl_grid, tables.cl_grid, ell, np.array([800, 1600, 3200, 5800]))
    assert (measured > 2 * linear).all() and (measured < nonlinear).all() and (measured > 0.4 * nonlinear).all()


def test_shape_noise_adds_white_noise_of_the_expected_level() -> None:
    settings = replace(SMALL, tier="gaussian")
    noisy = replace(settings, shape_noise=True)
    sigma = physics.shape_noise_sigma(noisy)
    # 0.26 / sqrt(30 per arcmin^2 x (1.64')^2) = 0.0289
    assert sigma == pytest.approx(0.26 / math.sqrt(30 * (1.75 * 60 / 64) ** 2))
    tables = physics.tables(settings, 0.3, 0.8)
    diff = np.array([physics.draw_map(noisy, tables, i)[0] - physics.draw_map(settings, tables, i)[0]
                     for i in range(4)])
    assert diff.std() == pytest.approx(sigma, rel=0.03) and abs(diff.mean()) < 0.03 * sigma


# ---- conditions, files, reproducibility ---------------------------------------------------------------------


def test_cosmologies_are_the_grid_then_the_held_out_points() -> None:
    s = Settings()
    points = cosmologies(s)
    assert points.shape == (11, 2) and points.dtype == np.float64
    assert points[:3].tolist() == [[0.2, 0.6], [0.2, 0.8], [0.2, 1.0]] and points[3].tolist() == [0.3, 0.6]
    assert points[9:].tolist() == [[0.25, 0.7], [0.35, 0.9]]
    mask = heldout_mask(s, points.astype(np.float32))  # float32 rows, as a file holds them
    assert mask.tolist() == [False] * 9 + [True, True]
    assert n_events(replace(s, n_per_cosmology=7)) == 77
    assert not heldout_mask(replace(s, heldout=()), points).any()


def _write_plain(path: Path, blocks: Any, n: int, file_attrs: dict[str, Any]) -> None:
    """A writer that keeps the blocks as they come (the domain's writer is tested in tests/domains)."""
    with h5py.File(path, "w") as f:
        parts = list(blocks)
        f["maps"] = np.concatenate([p[0] for p in parts])
        f["conditions"] = np.concatenate([p[1] for p in parts])
        f.attrs["n"] = n
        for key in ("tier", "map_size_deg", "z_source", "pixel_scale_arcmin", "heldout"):
            f.attrs[key] = file_attrs[key]


TINY = Settings(tier="halos", num_pix=32, map_size_deg=0.875, omega_m_grid=(0.25, 0.35), sigma_8_grid=(0.8,),
                heldout=((0.3, 0.9),), n_per_cosmology=3, halo_log10_m_min=13.0, seed=11)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same settings and seed on 1 thread (shards of 2), 2 threads (shards of 3) and 2 worker processes
    (shards of 4)."""
    out = tmp_path_factory.mktemp("pair")
    runs = {"one": replace(TINY, n_workers=1, shard_events=2),
            "threads": replace(TINY, n_workers=2, shard_events=3),
            "two": replace(TINY, n_workers=2, shard_events=4, scheduler="distributed")}
    files = {}
    for name, settings in runs.items():
        files[name] = out / f"{name}.h5"
        summary = simulate(settings, files[name], _write_plain, progress=False)
        assert summary["n_events"] == 9.0 and summary["mean_halos"] > 10
    return files


def test_same_seed_gives_identical_bytes_for_any_number_of_workers(pair: dict[str, Path]) -> None:
    with h5py.File(pair["one"]) as a, h5py.File(pair["two"]) as b, h5py.File(pair["threads"]) as c:
        for name in ("maps", "conditions"):
            assert a[name][:].tobytes() == b[name][:].tobytes() == c[name][:].tobytes(), name
        maps = a["maps"][:]
        assert maps.shape == (9, 32, 32) and maps.dtype == np.float32
        assert len(np.unique(maps.sum(axis=(1, 2)))) == 9  # distinct maps, not one repeated
        cond = a["conditions"][:]
        np.testing.assert_array_equal(cond, np.repeat(cosmologies(TINY), 3, axis=0).astype(np.float32))
        assert heldout_mask(TINY, cond).tolist() == [False] * 6 + [True] * 3
        assert a.attrs["map_size_deg"] == 0.875 and a.attrs["z_source"] == 1.0
        np.testing.assert_array_equal(a.attrs["heldout"], [[0.3, 0.9]])


def test_interrupted_run_resumes_from_kept_shards(tmp_path: Path, pair: dict[str, Path]) -> None:
    settings = replace(TINY, n_workers=1, shard_events=2)
    out = tmp_path / "resumed.h5"

    def failing_writer(*args: Any) -> None:
        raise KeyboardInterrupt  # as if stopped after the shards were done, before the file was written

    with pytest.raises(KeyboardInterrupt):
        simulate(settings, out, failing_writer, progress=False)
    assert len(list(tmp_path.glob(".resumed.h5.shards/shard_*.npz"))) == 5 and not out.exists()
    summary = simulate(replace(settings, n_workers=2), out, _write_plain, progress=False)
    assert summary["resumed_maps"] == 9.0
    assert not (tmp_path / ".resumed.h5.shards").exists()
    with h5py.File(out) as a, h5py.File(pair["one"]) as b:
        assert a["maps"][:].tobytes() == b["maps"][:].tobytes()


def test_run_block_and_the_simulator_protocol_agree_with_the_file(pair: dict[str, Path]) -> None:
    with h5py.File(pair["one"]) as f:
        maps, cond = f["maps"][:], f["conditions"][:]
    block = run_block(TINY, 4, 7)  # any range: maps 4-6 straddle cosmologies 1 and 2
    assert block.maps.tobytes() == maps[4:7].tobytes() and block.conditions.tobytes() == cond[4:7].tobytes()
    assert (block.n_halos > 10).all() and (block.map_seconds > 0).all()
    # Row i of the protocol is seeded from (seed, i): rows 0-2 at the file's first cosmology are its maps 0-2
    # (the float64 grid value, not the float32 one: the same pyccl tables)
    again = ConvergenceMaps(TINY)(cosmologies(TINY)[[0, 0, 0]], seed=11)
    assert again.reshape(3, 32, 32).tobytes() == maps[:3].tobytes()


def test_attrs_state_the_physics_choices() -> None:
    lognormal = attrs(replace(SMALL, tier="lognormal"))
    assert lognormal["lognormal_shift"] == pytest.approx(0.02975, abs=1e-5)
    assert lognormal["pixel_scale_arcmin"] == pytest.approx(1.640625)
    assert lognormal["pyccl_version"] == "3.3.6" and lognormal["power_spectrum"] == "halofit"
    halos = attrs(Settings())
    assert halos["tier"] == "halos" and halos["halo_truncation_r200"] == 1.0 and "Tinker" in halos["halo_mass_function"]
    assert halos["heldout"].shape == (2, 2) and halos["map_size_deg"] == 3.5 and halos["z_source"] == 1.0


def test_simulator_protocol_refuses_conditions_of_the_wrong_shape() -> None:
    from surrogate.errors import SurrogateError

    with pytest.raises(SurrogateError, match=r"\(N, 2\) array \(Omega_m, sigma_8\), got shape \(3,\)"):
        ConvergenceMaps(TINY)(np.array([0.3, 0.8, 0.9]), seed=0)
    with pytest.raises(SurrogateError, match="finite"):
        ConvergenceMaps(TINY)(np.array([[0.3, np.nan]]), seed=0)
    with pytest.raises(SurrogateError, match=r"heldout\[0\]: expected an \(Omega_m, sigma_8\) pair"):
        cosmologies(replace(TINY, heldout=((0.3, 0.8, 0.1),)))
