"""The strong_lensing domain's data layer: layout checks, value and plausibility checks, IO, transform, config.

Files are real HDF5 written with the domain's writer from small synthetic images (a Gaussian ring plus
sky noise at the default 0.0109 e-/s), so every test runs in well under a second.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask.array as da
import h5py
import numpy as np
import pytest

from surrogate.config import config_from_dict, load_config
from surrogate.data.transforms import load_transform, save_transform
from surrogate.domains import get_domain
from surrogate.domains.strong_lensing import DOMAIN, SimulateConfig, schema
from surrogate.domains.strong_lensing.transform import ArcsinhTransform, instrument_model, noise_model
from surrogate.errors import ConfigError, InputError

ROOT = Path(__file__).resolve().parents[2]
SIDE = 16
COLUMNS = tuple((name, units) for name, units in zip(DOMAIN.condition_names, DOMAIN.condition_units, strict=True))
ATTRS = {"pixel_scale_arcsec": 0.101, "background_noise_e_per_s": 0.0109, "tier": "smooth"}


def _events(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n images (n, SIDE, SIDE) e-/s: a ring of radius theta_E plus noise; conditions (n, 9) in range."""
    rng = np.random.default_rng(seed)
    cond = np.column_stack([rng.uniform(0.4, 0.7, n), rng.uniform(-0.3, 0.3, (n, 2)), rng.uniform(-0.05, 0.05, (n, 2)),
                            rng.uniform(-0.3, 0.3, (n, 2)), rng.uniform(22, 24.5, n), rng.uniform(0.1, 0.4, n)])
    coords = (np.arange(SIDE) - (SIDE - 1) / 2) * 0.101
    r = np.hypot(*np.meshgrid(coords, coords))
    images = np.exp(-0.5 * ((r[None] - cond[:, :1, None]) / 0.08) ** 2) * 0.5
    images += rng.normal(0, 0.0109, images.shape)
    return images.astype(np.float32), cond.astype(np.float32)


def _write(path: Path, images: np.ndarray, cond: np.ndarray, attrs: dict[str, Any] | None = None) -> Path:
    schema.write_file(path, [(images, cond)], len(images), (SIDE, SIDE), COLUMNS, ATTRS if attrs is None else attrs)
    return path


@pytest.fixture
def good(tmp_path: Path) -> Path:
    return _write(tmp_path / "good.h5", *_events(20))


def _one_line(exc: pytest.ExceptionInfo[InputError], path: Path, field: str) -> str:
    message = str(exc.value)
    assert "\n" not in message and str(path) in message and field in message, message
    return message


# ---- layout ---------------------------------------------------------------------------------------


def test_good_file_passes_and_round_trips(good: Path) -> None:
    assert DOMAIN.check_file(good) == 20
    images, cond = DOMAIN.read_events(good)
    expected_images, expected_cond = _events(20)
    assert images.shape == (20, SIDE * SIDE) and images.dtype == np.float32
    assert images.tobytes() == expected_images.reshape(20, -1).tobytes()
    assert cond.tobytes() == expected_cond.tobytes()
    assert DOMAIN.read_events(good, max_events=5)[0].shape == (5, SIDE * SIDE)
    DOMAIN.check_plausible(good, setting="prepare.accept_implausible")


def test_write_events_takes_flat_blocks_and_fills_the_pixel_scale(tmp_path: Path) -> None:
    images, cond = _events(10)
    flat = images.reshape(10, -1)
    path = tmp_path / "generated.h5"
    DOMAIN.write_events(path, [(flat[:4], cond[:4]), (flat[4:], cond[4:])], 10, {"seed": 4})
    assert DOMAIN.check_file(path) == 10
    with h5py.File(path) as f:
        assert f[schema.IMAGES].shape == (10, SIDE, SIDE)
        assert f.attrs["pixel_scale_arcsec"] == pytest.approx(0.101) and f.attrs["seed"] == 4
        assert f[schema.CONDITIONS].attrs["units"][0] == "arcsec"
    assert DOMAIN.read_events(path)[0].tobytes() == flat.tobytes()


def test_derived_files_inherit_columns_and_instrument_from_their_sample(tmp_path: Path) -> None:
    """prepare's splits name their sources, generate its conditions file: a subhalos-tier sample's tenth
    column and its noise level carry over (without them the writer could not name the columns)."""
    images, cond = _events(6)
    cond10 = np.column_stack([cond, np.linspace(0, 3, 6, dtype=np.float32)])
    sample = tmp_path / "subhalos.h5"
    schema.write_file(sample, [(images, cond10)], 6, (SIDE, SIDE), (*COLUMNS, ("sub_density", "arcsec^-2")),
                      {**ATTRS, "background_noise_e_per_s": 0.02, "tier": "subhalos", "seed": 9})
    for key, value in (("sources", f'["{sample}"]'), ("conditions_from", str(sample))):
        path = tmp_path / f"derived_{key}.h5"
        DOMAIN.write_events(path, [(images.reshape(6, -1), cond10)], 6, {key: value, "seed": 4})
        assert DOMAIN.check_file(path) == 6
        with h5py.File(path) as f:
            assert list(f[schema.CONDITIONS].attrs["columns"])[-1] == "sub_density"
            assert f.attrs["tier"] == "subhalos" and f.attrs["background_noise_e_per_s"] == 0.02
            assert f.attrs["seed"] == 4  # the file's own attributes win
    with pytest.raises(ValueError, match="expected \\(6, 9\\)"):  # 10 columns, no sample to name them
        DOMAIN.write_events(tmp_path / "unnamed.h5", [(images.reshape(6, -1), cond10)], 6, {})


def _rewrite(path: Path, edit: Any) -> Path:
    with h5py.File(path, "a") as f:
        edit(f)
    return path


@pytest.mark.parametrize(("edit", "field", "expected"), [
    (lambda f: f.__delitem__(schema.IMAGES), schema.IMAGES, "missing dataset"),
    (lambda f: (f.__delitem__(schema.IMAGES), f.create_dataset(schema.IMAGES, data=np.zeros((20, 256), np.float32))),
     schema.IMAGES, "expected (N, H, W)"),
    (lambda f: (f.__delitem__(schema.CONDITIONS), f.create_dataset(schema.CONDITIONS, data=np.zeros((19, 9)))),
     schema.CONDITIONS, "19 condition rows but 20 images"),
    (lambda f: f[schema.IMAGES].attrs.__delitem__("units"), "images.attrs['units']", "expected 'e-/s'"),
    (lambda f: f[schema.CONDITIONS].attrs.__setitem__("columns", ["a"] * 9), "conditions.attrs['columns']",
     "expected ['theta_E'"),
    (lambda f: f[schema.CONDITIONS].attrs.__setitem__("units", ["arcsec"] * 3), "conditions.attrs['units']",
     "3 units for 9 columns"),
    (lambda f: f.attrs.__delitem__("pixel_scale_arcsec"), "attrs['pixel_scale_arcsec']", "pixel scale > 0"),
])
def test_bad_layouts_give_one_line_errors_naming_file_and_dataset(good: Path, edit: Any, field: str,
                                                                  expected: str) -> None:
    _rewrite(good, edit)
    with pytest.raises(InputError) as exc:
        DOMAIN.check_file(good)
    assert expected in _one_line(exc, good, field)


def test_integer_images_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "int.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset(schema.IMAGES, data=np.zeros((2, 4, 4), dtype=np.int32)).attrs["units"] = "e-/s"
        f.create_dataset(schema.CONDITIONS, data=np.ones((2, 9), dtype=np.float32))
    with pytest.raises(InputError) as exc:
        DOMAIN.check_file(path)
    assert "expected floating point" in _one_line(exc, path, schema.IMAGES)


# ---- values ------------------------------------------------------------------------------------------


def _check(path: Path) -> None:
    DOMAIN.check_plausible(path, setting="prepare.accept_implausible")


@pytest.mark.parametrize(("column", "value", "field", "expected"), [
    (0, 0.0, "conditions[:, 0]", "theta_E <= 0"),
    (1, 0.8, "conditions[:, 1]", "lens ellipticity |(e1, e2)| >= 1"),  # with e2 = 0.8: |e| = 1.13
    (3, 1.2, "conditions[:, 3]", "external shear"),
    (8, -0.1, "conditions[:, 8]", "source_R_sersic <= 0"),
    (5, np.nan, "conditions[:, 5]", "NaN or inf"),
])
def test_unphysical_conditions_are_bad_values(tmp_path: Path, column: int, value: float, field: str,
                                              expected: str) -> None:
    images, cond = _events(20)
    cond[13, column] = value
    cond[13, 2] = 0.8 if column == 1 else cond[13, 2]
    path = _write(tmp_path / "bad.h5", images, cond)
    with pytest.raises(InputError) as exc:
        _check(path)
    message = _one_line(exc, path, field)
    assert expected in message and "event 13" in message
    with pytest.raises(InputError) as direct:
        DOMAIN.check_conditions(cond, "cond.npy")
    assert field in str(direct.value) and "event 13" in str(direct.value)


def test_nan_pixels_are_bad_values_naming_the_image(tmp_path: Path) -> None:
    images, cond = _events(20)
    images[17, 3, 4] = np.inf
    path = _write(tmp_path / "nan.h5", images, cond)
    with pytest.raises(InputError) as exc:
        _check(path)
    assert "image 17" in _one_line(exc, path, schema.IMAGES)
    with pytest.raises(InputError):
        DOMAIN.read_events(path)


@pytest.mark.parametrize(("change", "expected"), [
    (lambda im: im * 2264.0, "look like counts"),  # counts in 4 x 566 s instead of e-/s (ring peak 0.5 -> 1132)
    (lambda im: -im, "negative total flux"),
    (lambda im: np.where(np.arange(im.size).reshape(im.shape) == 77, -0.5, im), "below what noise explains"),
    (lambda im: np.where(np.arange(im.size).reshape(im.shape) == 5, 3e7, im), "above 1e+07 e-/s at image 0"),
])
def test_implausible_images_are_refused_unless_accepted(tmp_path: Path, change: Any, expected: str) -> None:
    images, cond = _events(20)
    if expected == "look like counts":
        images = images * np.float32(10.0)  # peaks at 5 e-/s: x 2264 is above 1e4 e-/s
    path = _write(tmp_path / "odd.h5", change(images).astype(np.float32), cond)
    events = DOMAIN.open_lazy((str(path),), 8)
    result = np.asarray(DOMAIN.check_values(events).compute())
    DOMAIN.raise_bad_values(result, events)  # finite values with physical conditions: not "bad"
    with pytest.raises(InputError) as exc:
        DOMAIN.raise_implausible(result, events, setting="prepare.accept_implausible")
    message = _one_line(exc, path, schema.IMAGES)
    assert expected in message and "--set prepare.accept_implausible=true" in message


def test_negative_floor_follows_the_file_noise(tmp_path: Path) -> None:
    images, cond = _events(20)
    images[3, 0, 0] = -0.15  # 14 sigma of the file's 0.0109 e-/s: noise can do that (floor 20 sigma)
    _check(_write(tmp_path / "ok.h5", images, cond))
    noisy_attrs = {**ATTRS, "background_noise_e_per_s": 0.001}  # a quieter sky: floor 0.02 e-/s
    with pytest.raises(InputError, match="below what noise explains"):
        _check(_write(tmp_path / "quiet.h5", images, cond, noisy_attrs))


# ---- lazy view and transform ---------------------------------------------------------------------


def test_open_lazy_flattens_images_and_chunks_conditions_alike(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.h5", *_events(20, seed=1))
    b = _write(tmp_path / "b.h5", *_events(7, seed=2))
    events = DOMAIN.open_lazy((str(a), str(b)), 8)
    assert events.data.shape == (27, SIDE * SIDE) and events.cond.shape == (27, 9)
    assert events.data.chunks[0] == events.cond.chunks[0]
    np.testing.assert_array_equal(events.data[20:].compute(), _events(7, seed=2)[0].reshape(7, -1))


def test_transform_fit_is_bit_identical_for_any_chunking_and_inverts(tmp_path: Path) -> None:
    images, cond = _events(50)
    flat = images.reshape(50, -1)
    fits = [ArcsinhTransform.fit(da.from_array(flat, chunks=(c, -1)), da.from_array(cond, chunks=(c, -1)))
            for c in (50, 7, 16)]
    assert fits[0].to_dict() == fits[1].to_dict() == fits[2].to_dict()
    t = fits[0]
    # The statistics are those of arcsinh(image / 0.01) over all pixels, to the fixed point's 2**-20.
    s = np.arcsinh(flat.astype(np.float64) / 0.01)
    assert t.mean == pytest.approx(s.mean(), abs=1e-6) and t.std == pytest.approx(s.std(), rel=1e-6)
    x, c = t.forward(flat, cond)
    assert x.dtype == np.float32 and abs(float(x.mean())) < 1e-5 and float(x.std()) == pytest.approx(1.0, rel=1e-5)
    assert c.min() == -1.0 and c.max() == 1.0
    np.testing.assert_allclose(t.inverse(x, cond), flat, rtol=2e-6, atol=1e-8)
    lo, hi = t.condition_range()
    np.testing.assert_array_equal(lo, cond.min(axis=0))
    np.testing.assert_array_equal(hi, cond.max(axis=0))
    # Registered by name: prepare saves it, train and generate load it.
    save_transform(t, tmp_path / "transform.json")
    loaded = load_transform(tmp_path / "transform.json")
    assert isinstance(loaded, ArcsinhTransform) and loaded.to_dict() == t.to_dict()
    lazy = DOMAIN.fit_transform(DOMAIN.open_lazy((str(_write(tmp_path / "f.h5", images, cond)),), 9))
    assert lazy.to_dict() == t.to_dict()



def test_the_fitted_transform_carries_the_noise_model_every_input_states(tmp_path: Path) -> None:
    """background_noise_e_per_s and exposure_time_s x num_exposures of the inputs become the transform's
    noise_sigma and noise_exposure_s (what image_gan's instrument noise draws); none when an input lacks
    them or the inputs disagree; transforms saved before they existed load with none."""
    images, cond = _events(20)
    stated = ATTRS | {"exposure_time_s": 566.0, "num_exposures": 4}
    one = _write(tmp_path / "one.h5", images, cond, stated)
    two = _write(tmp_path / "two.h5", images, cond, stated)
    t = DOMAIN.fit_transform(DOMAIN.open_lazy((str(one), str(two)), 9))
    assert (t.noise_sigma, t.noise_exposure_s) == (0.0109, 2264.0)
    assert ArcsinhTransform.from_dict(t.to_dict()).to_dict() == t.to_dict()
    old = {k: v for k, v in t.to_dict().items() if not k.startswith("noise_")}
    assert ArcsinhTransform.from_dict(old).noise_sigma == 0.0
    other = _write(tmp_path / "other.h5", images, cond, stated | {"num_exposures": 2})
    assert noise_model([stated, stated | {"num_exposures": 2}]) == (0.0, 0.0)
    assert DOMAIN.fit_transform(DOMAIN.open_lazy((str(one), str(other)), 9)).noise_sigma == 0.0
    assert noise_model([ATTRS]) == (0.0, 0.0)  # no exposure time: no noise model
    assert noise_model([stated | {"background_noise_e_per_s": 0.0}]) == (0.0, 0.0)  # noise-free images
    with pytest.raises(ValueError, match="must be >= 0"):
        ArcsinhTransform.from_dict(t.to_dict() | {"noise_sigma": -1.0})


def test_the_fitted_transform_carries_the_instrument_every_input_states(tmp_path: Path) -> None:
    """Pixel scale, PSF, supersampling, zero point, lens profile and tier of the inputs travel in the
    transform (what lens_param renders with); None when an input lacks one or they disagree."""
    images, cond = _events(20)
    stated = ATTRS | {"psf_type": "GAUSSIAN", "psf_fwhm_arcsec": 0.16, "supersampling": 3,
                      "magnitude_zero_point": 25.72, "lens_profile": "SIE", "tier": "smooth"}
    one = _write(tmp_path / "one.h5", images, cond, stated)
    two = _write(tmp_path / "two.h5", images, cond, stated)
    t = DOMAIN.fit_transform(DOMAIN.open_lazy((str(one), str(two)), 9))
    assert t.instrument == {"pixel_scale_arcsec": ATTRS["pixel_scale_arcsec"], "psf_type": "GAUSSIAN",
                            "psf_fwhm_arcsec": 0.16, "supersampling": 3.0, "magnitude_zero_point": 25.72,
                            "lens_profile": "SIE", "tier": "smooth"}
    assert ArcsinhTransform.from_dict(t.to_dict()).instrument == t.instrument
    other = _write(tmp_path / "other.h5", images, cond, stated | {"psf_fwhm_arcsec": 0.2})
    assert DOMAIN.fit_transform(DOMAIN.open_lazy((str(one), str(other)), 9)).instrument is None
    assert DOMAIN.fit_transform(DOMAIN.open_lazy((str(_write(tmp_path / "bare.h5", images, cond)),), 9)).instrument \
        is None
    assert instrument_model([stated, stated]) == t.instrument


# ---- config -----------------------------------------------------------------------------------------


def test_configs_load_and_ranges_are_checked() -> None:
    cfg = load_config(ROOT / "configs/strong_lensing/simulate.yaml")
    assert cfg.domain == "strong_lensing" and isinstance(cfg.simulate, SimulateConfig)
    quick = load_config(ROOT / "configs/strong_lensing/quickstart.yaml")
    assert quick.simulate.num_pix == 64 and get_domain("strong_lensing") is DOMAIN
    for bad, message in [({"tier": "nbody"}, "simulate.tier"), ({"theta_e_min_arcsec": 2.0}, "theta_e_min_arcsec"),
                         ({"lens_e_max": 0.9}, "simulate.lens_e_max"), ({"num_pix": 0}, "simulate.num_pix"),
                         ({"z_source": 0.3}, "z_source"), ({"numpix": 64}, "unknown config key")]:
        with pytest.raises(ConfigError, match=message):
            config_from_dict({"domain": "strong_lensing", "simulate": bad})
    for name in SimulateConfig.__dataclass_fields__:
        value = getattr(SimulateConfig(), name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            assert name in SimulateConfig.RANGES, f"{name} has no range"
