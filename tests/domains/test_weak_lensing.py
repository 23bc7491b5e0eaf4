"""The weak-lensing domain: layout and value checks on real HDF5 files, the kappa transform, the settings'
ranges, and the held-out cosmologies that prepare keeps out of training (real dask prepare)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from surrogate.config import ConfigError, PrepareConfig
from surrogate.data.prepare import HELDOUT_FILE, prepare_store, split_labels
from surrogate.domains.weak_lensing import DOMAIN, SimulateConfig, WeakLensing, schema
from surrogate.domains.weak_lensing import observables as obs
from surrogate.domains.weak_lensing.transform import KappaTransform
from surrogate.errors import InputError

GRID = [(om, s8) for om in (0.2, 0.3, 0.4) for s8 in (0.6, 0.8, 1.0)]
HELDOUT = [(0.25, 0.7), (0.35, 0.9)]


def _maps(cond: np.ndarray, side: int = 32, seed: int = 0) -> np.ndarray:
    """Gaussian fields whose amplitude grows with sigma_8 (a stand-in for the simulator's maps)."""
    rng = np.random.default_rng(seed)
    maps = obs.gaussian_field((side, side), 3.5, lambda ell: 1e-9 * (ell / 1000.0) ** -1.2, rng, n=len(cond))
    return (maps * (np.asarray(cond)[:, 1] / 0.8)[:, None, None]).astype(np.float32)


def write(path: Path, maps: np.ndarray, cond: np.ndarray, **attrs: object) -> Path:
    attrs = {"map_size_deg": 3.5, "z_source": 1.0, **attrs}
    schema.write_file(path, [(maps, cond)], len(maps), maps.shape[-1], attrs)
    return path


def sample(path: Path, per: int = 10, heldout: bool = True) -> Path:
    points = GRID + (HELDOUT if heldout else [])
    cond = np.repeat(np.array(points, dtype=np.float32), per, axis=0)
    return write(path, _maps(cond), cond, heldout=np.array(HELDOUT))


def test_a_written_file_reads_back_with_its_layout(tmp_path: Path) -> None:
    path = sample(tmp_path / "maps.h5")
    assert DOMAIN.check_file(path) == 110
    maps, cond = DOMAIN.read_events(path)
    assert maps.shape == (110, 32 * 32) and cond.shape == (110, 2)
    with h5py.File(path) as f:
        assert f["maps"].attrs["units"] == "1"
        assert list(f["conditions"].attrs["columns"]) == ["Omega_m", "sigma_8"]
    np.testing.assert_array_equal(schema.heldout_points(path), HELDOUT)


@pytest.mark.parametrize(("change", "field", "expected"), [
    ("no_size", "attrs['map_size_deg']", "missing; expected the side of the map in degrees"),
    ("no_z", "attrs['z_source']", "missing; expected the source redshift"),
    ("bad_size", "attrs['map_size_deg']", "-1.0, expected the side"),
    ("units", "maps.attrs['units']", "'kpc', expected '1'"),
    ("columns", "conditions.attrs['columns']", "['Om', 's8'], expected ['Omega_m', 'sigma_8']"),
    ("not_square", "maps", "expected (N, H, W) square maps"),
])
def test_layout_errors_name_file_and_field(tmp_path: Path, change: str, field: str, expected: str) -> None:
    path = sample(tmp_path / "maps.h5", per=2, heldout=False)
    with h5py.File(path, "a") as f:
        if change == "no_size":
            del f.attrs["map_size_deg"]
        elif change == "no_z":
            del f.attrs["z_source"]
        elif change == "bad_size":
            f.attrs["map_size_deg"] = -1.0
        elif change == "units":
            f["maps"].attrs["units"] = "kpc"
        elif change == "columns":
            f["conditions"].attrs["columns"] = ["Om", "s8"]
        elif change == "not_square":
            del f["maps"]
            f.create_dataset("maps", data=np.zeros((18, 32, 16), dtype=np.float32)).attrs["units"] = "1"
    with pytest.raises(InputError) as info:
        DOMAIN.check_file(path)
    message = str(info.value)
    assert str(path) in message and field in message and expected in message
    assert "\n" not in message


@pytest.mark.parametrize(("edit", "field", "expected"), [
    ("nan", "maps", "NaN or inf kappa (first in map 5"),
    ("omega_m", "conditions[:, 0]", "Omega_m outside (0, 1]"),
    ("sigma_8", "conditions[:, 1]", "sigma_8 <= 0"),
])
def test_bad_values_are_refused_by_prepare(tmp_path: Path, edit: str, field: str, expected: str) -> None:
    cond = np.repeat(np.array(GRID, dtype=np.float32), 4, axis=0)
    maps = _maps(cond)
    if edit == "nan":
        maps[5, 3, 3] = np.nan
    elif edit == "omega_m":
        cond[7, 0] = 1.5
    else:
        cond[7, 1] = -0.8
    path = write(tmp_path / "bad.h5", maps, cond)
    with pytest.raises(InputError) as info:
        prepare_store(DOMAIN.configured(SimulateConfig(num_pix=32)), PrepareConfig(chunk_events=8), (str(path),),
                      tmp_path / "prep", progress=False)
    assert field in str(info.value) and expected in str(info.value) and str(path) in str(info.value)
    assert not (tmp_path / "prep").exists()  # nothing left behind


@pytest.mark.parametrize(("what", "expected"), [
    ("counts", "|kappa| > 10 at map 3"),
    ("density", "have |mean| > 0.1: a density (1 + delta)"),
    ("contrast", "pixel standard deviation > 0.5: a density contrast"),
])
def test_implausible_maps_are_refused_unless_accepted(tmp_path: Path, what: str, expected: str) -> None:
    cond = np.repeat(np.array(GRID, dtype=np.float32), 2, axis=0)
    maps = _maps(cond)
    if what == "counts":
        maps[3, 0, 0] = 25.0
    elif what == "density":
        maps = 1.0 + maps  # 1 + delta
    else:
        maps = maps / maps.std() * 0.9
    path = write(tmp_path / f"{what}.h5", maps, cond)
    with pytest.raises(InputError) as info:
        DOMAIN.check_plausible(path, setting="validate.accept_implausible")
    assert expected in str(info.value) and "validate.accept_implausible=true" in str(info.value)
    # a real convergence sample passes
    DOMAIN.check_plausible(sample(tmp_path / "fine.h5", per=2), setting="validate.accept_implausible")


def test_kappa_transform_inverts_and_does_not_depend_on_chunking() -> None:
    import dask.array as da

    cond = np.repeat(np.array(GRID, dtype=np.float32), 5, axis=0)
    maps = _maps(cond).reshape(len(cond), -1)
    maps[0, 0] = 0.8  # a cluster core in the tail
    fits = [KappaTransform.fit(da.from_array(maps, chunks=(c, maps.shape[1])), da.from_array(cond, chunks=(c, 2)))
            for c in (7, 45)]
    assert fits[0].to_dict() == fits[1].to_dict()
    t = fits[0]
    x, c = t.forward(maps, cond)
    assert abs(float(x.mean())) < 1e-3 and float(x.std()) == pytest.approx(1.0, rel=1e-3)
    np.testing.assert_allclose(c.min(axis=0), -1) and np.testing.assert_allclose(c.max(axis=0), 1)
    back = t.inverse(x, cond)
    np.testing.assert_allclose(back, maps, rtol=1e-5, atol=1e-8)
    # the tail is compressed: the 0.8 core is ~5 arcsinh units, not 100 pixel sigmas
    assert float(x[0, 0]) < 15
    again = KappaTransform.from_dict(t.to_dict())
    np.testing.assert_array_equal(again.forward(maps, cond)[0], x)


def test_settings_ranges_and_heldout_points() -> None:
    s = SimulateConfig(n_per_cosmology=3)
    assert s.n_events == 33
    with pytest.raises(ConfigError, match="also a grid point"):
        SimulateConfig(heldout=((0.3, 0.8),))
    with pytest.raises(ConfigError, match=r"simulate\.tier"):
        SimulateConfig(tier="nbody")
    with pytest.raises(ConfigError, match="power of two"):
        SimulateConfig(num_pix=100)
    with pytest.raises(ConfigError, match=r"Omega_m 1\.5"):
        SimulateConfig(omega_m_grid=(0.3, 1.5))
    assert isinstance(DOMAIN.configured(SimulateConfig(num_pix=64)), WeakLensing)
    assert DOMAIN.configured(SimulateConfig(num_pix=64)).event_shape == (64, 64)


def test_prepare_keeps_the_heldout_cosmologies_out_of_training(tmp_path: Path) -> None:
    path = sample(tmp_path / "maps.h5", per=10)
    domain = DOMAIN.configured(SimulateConfig(num_pix=32))
    stats = prepare_store(domain, PrepareConfig(chunk_events=16), (str(path),), tmp_path / "prep", progress=False)
    assert stats["n_heldout"] == 20 and stats["n_train"] + stats["n_val"] + stats["n_test"] == 90
    heldout = np.array(HELDOUT)

    def at_heldout(cond: np.ndarray) -> np.ndarray:
        return (np.abs(cond[:, None, :] - heldout[None]) < 1e-6).all(axis=2).any(axis=1)

    with h5py.File(tmp_path / "prep" / "store.h5") as f:
        for split in ("train", "val", "test"):
            assert not at_heldout(f[split]["cond_raw"][:]).any(), split
    maps, cond = domain.read_events(tmp_path / "prep" / HELDOUT_FILE)
    assert at_heldout(cond).all() and len(cond) == 20
    original, _ = domain.read_events(path)
    np.testing.assert_array_equal(maps, original[90:])  # bit-identical to the input maps
    # the transform never saw them: refitting on the training split of the grid maps gives the same numbers
    import dask.array as da

    train = split_labels(110, PrepareConfig(chunk_events=16), np.arange(110) >= 90) == 0
    grid_maps, grid_cond = original[train], np.repeat(np.array(GRID, dtype=np.float32), 10, axis=0)[train[:90]]
    alone = KappaTransform.fit(da.from_array(grid_maps, chunks=(16, grid_maps.shape[1])),
                               da.from_array(grid_cond, chunks=(16, 2)))
    import json

    saved = json.loads((tmp_path / "prep" / "transform.json").read_text())
    assert saved == alone.to_dict()
    with h5py.File(tmp_path / "prep" / HELDOUT_FILE) as f:  # the points travel with the derived file
        np.testing.assert_array_equal(f.attrs["heldout"], heldout)


def test_heldout_thresholds_default_to_the_training_ones_and_override_by_name() -> None:
    from surrogate.config import load_config

    root = Path(__file__).parents[2] / "configs" / "weak_lensing"
    cfg = load_config(root / "quickstart.yaml", ["validate.thresholds.peaks_frac_outside_1sigma=0.2"])
    assert cfg.validate.thresholds.power_max_dev_pct.value == 5.0
    assert cfg.validate.heldout_thresholds.power_max_dev_pct.value == 7.0  # the bar at held-out points
    assert cfg.validate.heldout_thresholds.peaks_frac_outside_1sigma.value == 0.2  # inherited
    assert load_config(root / "simulate.yaml").simulate.n_events == 11 * 1000
    with pytest.raises(ConfigError, match=r"heldout_thresholds\.power_max_dev_pct"):
        load_config(root / "quickstart.yaml", ["validate.heldout_thresholds.power_max_dev_pct=-1"])
