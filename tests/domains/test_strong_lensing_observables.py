"""Strong-lensing observables on analytic images (exact answers) and on real lenstronomy images (physics).

The lenstronomy images use the Euclid-VIS-like settings measured in ../shared/DOMAINS.md section 2
(0.101"/px, Gaussian PSF FWHM 0.16", 4 x 566 s, sky 22.3 mag/arcsec^2, zero point 25.72, read noise 4.2,
gain 3.1: lenstronomy's SimulationAPI/ObservationConfig/Euclid.py VIS values) through ``SimAPI`` with
``noise_for_model(seed=...)``: SIE + external shear, elliptical Sersic lens light and source.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from surrogate.domains.strong_lensing import observables as obs

PIXEL = 0.101  # arcsec per pixel
N_PIX = 64


def gaussian(sigma_major: float, q: float = 1.0, phi: float = 0.0, flux: float = 1.0, x0: float = 0.0,
             y0: float = 0.0, n_pix: int = N_PIX, pixel: float = PIXEL) -> np.ndarray:
    """Elliptical Gaussian (H, W) sampled at pixel centres: major-axis sigma (arcsec), axis ratio q, major
    axis at angle phi from +x towards +y; normalised so that the pixel values sum to ``flux``."""
    x, y = obs.pixel_coordinates((n_pix, n_pix), pixel)
    c, s = np.cos(phi), np.sin(phi)
    u = c * (x - x0) + s * (y - y0)
    v = -s * (x - x0) + c * (y - y0)
    img = np.exp(-0.5 * ((u / sigma_major) ** 2 + (v / (q * sigma_major)) ** 2))
    return flux * img / img.sum()


def ring_image(radius: float, width: float = 0.12, lens_amp: float = 2.0, lens_r: float = 0.6,
               lens_n: float = 4.0, ring_amp: float = 1.0, x0: float = 0.0, y0: float = 0.0) -> np.ndarray:
    """Circular Sersic lens light plus a Gaussian ring of the given radius (arcsec) about (x0, y0), (H, W)."""
    x, y = obs.pixel_coordinates((N_PIX, N_PIX), PIXEL)
    r = np.hypot(x - x0, y - y0)
    b = 2 * lens_n - 1 / 3
    return (lens_amp * np.exp(-b * ((r / lens_r) ** (1 / lens_n) - 1))
            + ring_amp * np.exp(-0.5 * ((r - radius) / width) ** 2))


# --------------------------------------------------------------------------------- arcsinh, flux, profile


def test_arcsinh_intensity_is_linear_for_noise_and_logarithmic_for_bright_pixels() -> None:
    values = np.array([[[1e-4, -1e-4], [100.0, -100.0]]])
    out = obs.arcsinh_intensity(values, scale=0.05)
    np.testing.assert_allclose(out[0, 0], [2e-3, -2e-3], rtol=1e-6)  # arcsinh(t) = t for small t
    np.testing.assert_allclose(out[0, 1], [np.log(4000.0), -np.log(4000.0)], rtol=1e-6)  # ln(2 t)
    with pytest.raises(ValueError, match="scale"):
        obs.arcsinh_intensity(values, scale=0.0)


def test_arcsinh_bin_edges_are_fixed_uniform_and_hold_the_values() -> None:
    edges = obs.arcsinh_bin_edges(max_value=50.0, n_bins=40, scale=0.05)
    assert edges.shape == (41,)
    np.testing.assert_allclose(np.diff(edges), np.diff(edges)[0], rtol=1e-12)
    assert edges[0] == pytest.approx(np.arcsinh(-5.0)) and edges[-1] == pytest.approx(np.arcsinh(1000.0))
    # The same edges histogram any sample: counts of pixels at known values land in the expected bins.
    pixels = obs.arcsinh_intensity(np.array([[[0.0, 0.05, 10.0]]]), 0.05).ravel()
    counts, _ = np.histogram(pixels, edges)
    assert counts.sum() == 3 and counts[np.searchsorted(edges, np.arcsinh(1.0)) - 1] == 1
    with pytest.raises(ValueError, match="max_value"):
        obs.arcsinh_bin_edges(max_value=-1.0)


def test_total_flux_sums_pixels_per_image() -> None:
    images = np.stack([gaussian(0.3, flux=f) for f in (1.0, 12.5, 300.0)])
    np.testing.assert_allclose(obs.total_flux(images), [1.0, 12.5, 300.0], rtol=1e-12)
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        obs.total_flux(images[0])


def test_radial_profile_of_a_gaussian_and_a_ring() -> None:
    sigma, fine = 0.5, 0.02  # a finely sampled image: pixel centres sample each annulus evenly
    x, y = obs.pixel_coordinates((320, 320), fine)
    image = np.exp(-0.5 * (x**2 + y**2) / sigma**2)[None]
    profile, r = obs.radial_profile(image, fine, n_bins=16, r_max=3.2)
    assert profile.shape == (1, 16) and r.shape == (16,)
    np.testing.assert_allclose(r, (np.arange(16) + 0.5) * 0.2)
    # Analytic mean of exp(-r^2 / 2 sigma^2) over each annulus [lo, hi): to 0.5% (pixelisation).
    lo, hi = r - 0.1, r + 0.1
    annulus_mean = ((np.exp(-lo**2 / (2 * sigma**2)) - np.exp(-hi**2 / (2 * sigma**2)))
                    * 2 * sigma**2 / (hi**2 - lo**2))
    np.testing.assert_allclose(profile[0], annulus_mean, rtol=0.005)
    assert not np.allclose(profile[0], np.exp(-0.5 * (r / sigma) ** 2), rtol=0.005)  # bin averaging matters
    # Ring of radius 1.5" on the reference's pixel grid: the profile peaks in the annulus holding 1.5".
    ring, r = obs.radial_profile(ring_image(1.5, lens_amp=0.0)[None], PIXEL, n_bins=16, r_max=3.2)
    assert r[np.argmax(ring[0])] == pytest.approx(1.5, abs=0.1)


def test_radial_profile_about_a_given_centre_per_event() -> None:
    shift = 4 * PIXEL  # a whole number of pixels: the shifted image is the centred one moved exactly
    centred = gaussian(0.3)
    shifted = gaussian(0.3, x0=shift, y0=-shift)
    profile, _ = obs.radial_profile(np.stack([centred, shifted]), PIXEL, n_bins=10, r_max=2.0,
                                    center=np.array([[0.0, 0.0], [shift, -shift]]))
    np.testing.assert_allclose(profile[1], profile[0], rtol=1e-10)
    off, _ = obs.radial_profile(shifted[None], PIXEL, n_bins=10, r_max=2.0)
    assert not np.allclose(off[0], profile[0], rtol=0.05)
    with pytest.raises(ValueError, match="center"):
        obs.radial_profile(np.stack([centred, shifted]), PIXEL, center=np.zeros((3, 2)))


# --------------------------------------------------------------------------------- ring radius


@pytest.mark.parametrize("radius", [0.6, 1.1, 1.7, 2.3])
def test_ring_radius_of_analytic_ring_on_lens_light(radius: float) -> None:
    # Lens light off the fit's template grid (R = 1", n = 3, another b_n), as bright as the ring at 1" and
    # 2.4 times brighter at 0.6". (A lens 10 times brighter than the ring at 1" defeats the fit: measured
    # 0.44, 2.92, 0.29, 2.52" for these radii.)
    images = np.stack([ring_image(radius), ring_image(radius, lens_amp=1.0, lens_r=1.0, lens_n=3.0)])
    fit = obs.ring_fit(images, PIXEL)
    np.testing.assert_allclose(fit.radius, radius, atol=0.02)  # 0.2 px
    np.testing.assert_allclose(fit.width, 0.12, atol=0.03)  # the ring's sigma, to the width grid


def test_ring_radius_about_per_event_centres() -> None:
    shifts = [(0.0, 0.0), (3 * PIXEL, -2 * PIXEL), (-0.25, 0.15)]
    images = np.stack([ring_image(1.2, x0=x0, y0=y0) for x0, y0 in shifts])
    np.testing.assert_allclose(obs.ring_radius(images, PIXEL, center=np.array(shifts)), 1.2, atol=0.02)
    # About the image centre, the off-centre rings are smeared over radius: the fit is pulled away.
    assert abs(obs.ring_radius(images, PIXEL)[2] - 1.2) > 0.02


# --------------------------------------------------------------------------------- quadrupole moments


@pytest.mark.parametrize(("q", "phi"), [(0.5, 0.3), (0.8, -1.0), (0.65, 2.0), (1.0, 0.0)])
def test_quadrupole_moments_of_an_elliptical_gaussian(q: float, phi: float) -> None:
    sigma = 0.35
    quad = obs.quadrupole_moments(gaussian(sigma, q=q, phi=phi, x0=0.12, y0=-0.2)[None], PIXEL)
    e = (1 - q) / (1 + q)
    expected = np.array([e * np.cos(2 * phi), e * np.sin(2 * phi)])
    measured = np.array([quad.e1[0], quad.e2[0]])
    assert np.linalg.norm(measured - expected) <= 0.01 * max(e, 0.05)  # < 1% of |e| (absolute 5e-4 at q = 1)
    # Second moments: R diag(sigma^2, (q sigma)^2) R^T about the centroid.
    c, s = np.cos(phi), np.sin(phi)
    a2, b2 = sigma**2, (q * sigma) ** 2
    np.testing.assert_allclose([quad.q_xx[0], quad.q_yy[0], quad.q_xy[0]],
                               [c * c * a2 + s * s * b2, s * s * a2 + c * c * b2, c * s * (a2 - b2)],
                               rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose([quad.x_c[0], quad.y_c[0]], [0.12, -0.2], atol=1e-9)
    assert quad.size[0] == pytest.approx(np.sqrt(q) * sigma, rel=1e-3)


def test_quadrupole_ellipticity_matches_lenstronomy_convention() -> None:
    """A lenstronomy GAUSSIAN_ELLIPSE with (e1, e2) gives back (e1, e2): same axes and sign convention."""
    from lenstronomy.LightModel.light_model import LightModel

    x, y = obs.pixel_coordinates((N_PIX, N_PIX), PIXEL)
    light = LightModel(["GAUSSIAN_ELLIPSE"])
    for e1, e2 in [(0.2, 0.0), (0.0, 0.2), (-0.1, 0.15), (0.12, -0.18)]:
        img = light.surface_brightness(x.ravel(), y.ravel(),
                                       [{"amp": 1.0, "sigma": 0.3, "e1": e1, "e2": e2, "center_x": 0.0,
                                         "center_y": 0.0}]).reshape(N_PIX, N_PIX)
        quad = obs.quadrupole_moments(img[None], PIXEL)
        np.testing.assert_allclose([quad.e1[0], quad.e2[0]], [e1, e2], atol=0.002)


def test_quadrupole_aperture_and_empty_image() -> None:
    img = gaussian(0.2)[None] + gaussian(0.2, x0=2.5, flux=5.0)[None]  # a bright blob outside 1.5"
    inside = obs.quadrupole_moments(img, PIXEL, r_max=1.5)
    everything = obs.quadrupole_moments(img, PIXEL)
    assert abs(inside.e1[0]) < 1e-3 and everything.e1[0] > 0.5
    assert np.isnan(obs.quadrupole_moments(np.zeros((1, 8, 8)), PIXEL).e1[0])


# --------------------------------------------------------------------------------- power spectrum


def _expected_binned(power_law: float, edges: np.ndarray, n_pix: int = N_PIX) -> np.ndarray:
    """Mean of P(k) = k^power_law over the full DFT grid's modes in each |k| bin (independent of rfft)."""
    kx = np.fft.fftfreq(n_pix, d=PIXEL)
    k = np.hypot(kx[None, :], kx[:, None]).ravel()
    return np.array([np.mean(k[(k >= lo) & (k < hi)] ** power_law) for lo, hi in itertools.pairwise(edges)])


def test_white_noise_power_is_flat_at_variance_times_pixel_area() -> None:
    rng = np.random.default_rng(0)
    sigma = 0.7
    power, k = obs.power_spectrum(rng.normal(0.0, sigma, size=(200, N_PIX, N_PIX)), PIXEL, n_bins=12)
    expected = sigma**2 * PIXEL**2
    mean, sem = power.mean(axis=0), power.std(axis=0) / np.sqrt(len(power))
    assert np.all(np.abs(mean - expected) < 4 * sem)
    assert abs(mean.mean() / expected - 1) < 0.01
    edges = obs.frequency_edges((N_PIX, N_PIX), PIXEL, 12)
    assert np.all((k > edges[:-1]) & (k < edges[1:]))
    assert edges[-1] == pytest.approx(0.5 / PIXEL) and edges[0] == pytest.approx(1 / (N_PIX * PIXEL))


def test_gaussian_random_field_recovers_its_power_law() -> None:
    """Field with E|f~(k)|^2 = area * k^-2.5 (arcsec units): each bin within 4 standard errors of the
    expectation, and the fitted log-log slope within 0.05 of -2.5."""
    rng = np.random.default_rng(1)
    n_fields, slope = 64, -2.5
    kx = np.fft.fftfreq(N_PIX, d=PIXEL)
    k = np.hypot(kx[None, :], kx[:, None])
    amplitude = np.zeros_like(k)
    amplitude[k > 0] = np.sqrt(k[k > 0] ** slope / PIXEL**2)  # white noise DFT has E|.|^2 = N_pix
    fields = np.fft.ifft2(np.fft.fft2(rng.normal(size=(n_fields, N_PIX, N_PIX))) * amplitude).real
    edges = obs.frequency_edges((N_PIX, N_PIX), PIXEL, 10)
    power, k_mean = obs.power_spectrum(fields, PIXEL, edges=edges)
    mean, sem = power.mean(axis=0), power.std(axis=0) / np.sqrt(n_fields)
    expected = _expected_binned(slope, edges)
    assert np.all(np.abs(mean - expected) < 4 * sem), (mean / expected)
    # Log-log slope of the binned spectrum: that of the binned expectation (wide linear bins steepen both
    # beyond -2.5 alike) to 0.05.
    fitted = np.polyfit(np.log(k_mean), np.log(mean), 1)[0]
    assert fitted == pytest.approx(np.polyfit(np.log(k_mean), np.log(expected), 1)[0], abs=0.05)
    # A different spectrum is told apart: k^-2 fields are rejected by the same comparison.
    assert not np.all(np.abs(mean - _expected_binned(-2.0, edges) * expected[0] / _expected_binned(-2.0, edges)[0])
                      < 4 * sem)


# --------------------------------------------------------------------------------- real lenstronomy images

EUCLID_VIS = {"read_noise": 4.2, "pixel_scale": PIXEL, "ccd_gain": 3.1, "exposure_time": 566.0,
              "sky_brightness": 22.3, "magnitude_zero_point": 25.72, "num_exposures": 4, "seeing": 0.16,
              "psf_type": "GAUSSIAN"}


def lens_image(theta_e: float, rng: np.random.Generator, noise_seed: int,
               subhalos: list[dict[str, float]] | None = None, lens_mag: float | None = None,
               shear: tuple[float, float] | None = None) -> np.ndarray:
    """One 64x64 lenstronomy image: SIE + shear (+ TNFW subhalos), Sersic lens light and source, noise.

    Nuisance parameters come from ``rng`` in a fixed order, so two calls with equally seeded rngs draw the
    same lens and source whatever ``subhalos`` or ``shear`` (gamma1, gamma2; replacing the drawn one) is.
    """
    from lenstronomy.SimulationAPI.sim_api import SimAPI

    lens_models = ["SIE", "SHEAR"]
    kwargs_lens: list[dict[str, float]] = [
        {"theta_E": theta_e, "e1": rng.uniform(-0.2, 0.2), "e2": rng.uniform(-0.2, 0.2),
         "center_x": 0.0, "center_y": 0.0},
        {"gamma1": rng.uniform(-0.05, 0.05), "gamma2": rng.uniform(-0.05, 0.05), "ra_0": 0.0, "dec_0": 0.0}]
    if shear is not None:
        kwargs_lens[1].update(gamma1=shear[0], gamma2=shear[1])
    for kw in subhalos or []:
        lens_models.append("TNFW")
        kwargs_lens.append(kw)
    sim = SimAPI(num_pix=N_PIX, kwargs_single_band=EUCLID_VIS,
                 kwargs_model={"lens_model_list": lens_models, "lens_light_model_list": ["SERSIC_ELLIPSE"],
                               "source_light_model_list": ["SERSIC_ELLIPSE"]})
    magnitude = rng.uniform(19.5, 21.0)
    lens_light = [{"magnitude": magnitude if lens_mag is None else lens_mag,
                   "R_sersic": rng.uniform(0.5, 1.2), "n_sersic": rng.uniform(3.0, 5.0),
                   "e1": rng.uniform(-0.2, 0.2), "e2": rng.uniform(-0.2, 0.2), "center_x": 0.0, "center_y": 0.0}]
    source = [{"magnitude": rng.uniform(20.5, 22.0), "R_sersic": rng.uniform(0.1, 0.3),
               "n_sersic": rng.uniform(1.0, 2.0), "e1": rng.uniform(-0.2, 0.2), "e2": rng.uniform(-0.2, 0.2),
               "center_x": rng.uniform(-0.15, 0.15), "center_y": rng.uniform(-0.15, 0.15)}]
    lens_light, source, _ = sim.magnitude2amplitude(lens_light, source, None)
    image = sim.image_model_class({"supersampling_factor": 3}).image(kwargs_lens, source, lens_light, None)
    return np.asarray(image + sim.noise_for_model(image, seed=noise_seed))


@pytest.mark.parametrize("lens_mag", [None, 19.0])  # lens 19.5-21 mag, and a lens 1.5-3 mag above the source
def test_ring_radius_tracks_theta_e_on_lenstronomy_images(lens_mag: float | None) -> None:
    rng = np.random.default_rng(2)
    theta_e = rng.uniform(0.6, 2.0, size=20)
    images = np.stack([lens_image(t, rng, noise_seed=i, lens_mag=lens_mag) for i, t in enumerate(theta_e)])
    radius = obs.ring_radius(images, PIXEL)
    corr = np.corrcoef(theta_e, radius)[0, 1]
    slope = np.polyfit(theta_e, radius, 1)[0]
    # Measured (seed 2), lens_mag None / 19: corr 0.997 / 0.997, slope 1.005 / 1.006, median radius /
    # theta_E 0.978 / 0.978 (the ring of the azimuthal mean sits ~2% inside theta_E), worst image 11% / 12%.
    assert corr > 0.95
    assert slope == pytest.approx(1.0, abs=0.1)
    assert np.median(radius / theta_e) == pytest.approx(1.0, abs=0.05)


def test_quadrupole_ellipticity_follows_external_shear_on_lenstronomy_images() -> None:
    """The same 10 lenses (same noise seed) with shear +0.08 and -0.08 along each axis: the image's
    moment ellipticity moves with the shear's sign (shear stretches the arcs along its axis)."""
    theta = np.random.default_rng(7).uniform(0.8, 1.8, size=10)
    moments = {}
    for g in [(0.08, 0.0), (-0.08, 0.0), (0.0, 0.08), (0.0, -0.08)]:
        images = np.stack([lens_image(t, np.random.default_rng(200 + i), noise_seed=i, shear=g)
                           for i, t in enumerate(theta)])
        moments[g] = obs.quadrupole_moments(images, PIXEL, r_max=3.2)
    d_e1 = moments[(0.08, 0.0)].e1 - moments[(-0.08, 0.0)].e1
    d_e2 = moments[(0.0, 0.08)].e2 - moments[(0.0, -0.08)].e2
    cross = moments[(0.08, 0.0)].e2 - moments[(-0.08, 0.0)].e2
    # Measured: d_e1 0.10-0.23 (mean 0.15), d_e2 0.11-0.20 (mean 0.17) for a shear step of 0.16; the
    # other component (e2 under gamma1) moves -0.08..+0.07 (mean |.| 0.04).
    assert np.all(d_e1 > 0.05) and np.all(d_e2 > 0.05), (d_e1, d_e2)
    assert np.abs(cross).mean() < 0.5 * d_e1.mean()


def _subhalos(theta_e: float, rng: np.random.Generator, n: int, log_m: tuple[float, float]) -> list[dict[str, float]]:
    """``n`` TNFW subhalos (masses log-uniform in log_m Msun, concentration 15, truncated at 5 r_s) within
    0.3" of the Einstein radius, z_lens 0.5, z_source 2 (lenstronomy's default cosmology)."""
    from lenstronomy.Cosmo.lens_cosmo import LensCosmo

    cosmo = LensCosmo(z_lens=0.5, z_source=2.0)
    halos = []
    for _ in range(n):
        r_s, alpha_rs = cosmo.nfw_physical2angle(10 ** rng.uniform(*log_m), 15.0)
        radius, angle = theta_e + rng.uniform(-0.3, 0.3), rng.uniform(0, 2 * np.pi)
        halos.append({"Rs": float(r_s), "alpha_Rs": float(alpha_rs), "r_trunc": 5 * float(r_s),
                      "center_x": radius * np.cos(angle), "center_y": radius * np.sin(angle)})
    return halos


def test_residual_power_rises_with_subhalos_at_fixed_noise_seed() -> None:
    """Thirty TNFW subhalos near the ring raise residual_power at a fixed noise seed; a new noise seed
    alone does not move it (the statistic is not noise).

    The statistic's settings were chosen on other seeds (36 lenses); these 16 were held out. Measured
    here, ratio to the smooth lens: 1e9-1e10 Msun subhalos mean 1.278 (median 1.18, 13 of 16 up, 0.80 to
    3.02); 1e8-1e9 Msun mean 1.034 (median 1.005, 9 of 16 up, 0.97 to 1.20); noise reseeded mean 0.999
    (0.973 to 1.015). At this Euclid-like resolution light subhalos move it by a few per cent: visible in
    the mean over lenses, not lens by lens.
    """
    n = 16
    theta = np.random.default_rng(21).uniform(0.8, 1.8, size=n)
    samples: dict[str, list[np.ndarray]] = {"smooth": [], "heavy": [], "light": [], "reseeded": []}
    for i, t in enumerate(theta):
        samples["smooth"].append(lens_image(t, np.random.default_rng(5000 + i), noise_seed=i))
        for name, log_m in (("heavy", (9.0, 10.0)), ("light", (8.0, 9.0))):
            halos = _subhalos(t, np.random.default_rng(600 + i), 30, log_m)
            samples[name].append(lens_image(t, np.random.default_rng(5000 + i), noise_seed=i, subhalos=halos))
        samples["reseeded"].append(lens_image(t, np.random.default_rng(5000 + i), noise_seed=700 + i))
    power = {name: obs.residual_power(np.stack(images), PIXEL) for name, images in samples.items()}
    heavy, light, control = (power[name] / power["smooth"] for name in ("heavy", "light", "reseeded"))
    assert heavy.mean() > 1.15 and (heavy > 1).sum() >= 12, heavy
    assert abs(control.mean() - 1) < 0.01 and np.abs(control - 1).max() < 0.05, control
    assert light.mean() - 1 > 2 * control.std(), (light, control.std())


def test_angular_smooth_model_keeps_smooth_images_and_leaves_compact_blobs() -> None:
    elliptical = gaussian(0.3, q=0.7, phi=0.4)
    blob = gaussian(0.08, x0=1.0, y0=0.5, flux=0.05)  # compact: many harmonics
    model = obs.angular_smooth_model(np.stack([elliptical, elliptical + blob]), PIXEL, m_max=4)
    # Measured: the smooth residual peaks at 0.5% of the peak; half the blob's flux stays in the residual.
    assert np.abs(elliptical - model[0]).max() < 0.01 * elliptical.max()
    core = blob > 0.1 * blob.max()
    residual = elliptical + blob - model[1]
    assert (residual * core).sum() > 0.4 * blob[core].sum()
    assert (residual**2).sum() > 100 * ((elliptical - model[0]) ** 2).sum()


# --------------------------------------------------------------------------------- labelled outputs


def test_observables_dataset_labels_and_agrees_with_the_functions() -> None:
    images = np.stack([ring_image(r) for r in (0.8, 1.3, 1.9)]) + gaussian(0.3, q=0.6, phi=0.5)[None] * 50
    ds = obs.observables_dataset(images, PIXEL, n_r=12, n_k=8, attrs={"sample": "analytic"})
    assert dict(ds.sizes) == {"event": 3, "r": 12, "k": 8, "k_res": obs.RESIDUAL_N_BINS}
    assert ds.attrs["pixel_scale_arcsec"] == PIXEL and ds.attrs["sample"] == "analytic"
    for name, (units, _) in obs.SCALARS.items():
        assert ds[name].dims == ("event",) and ds[name].attrs["units"] == units
    assert ds["r"].attrs["units"] == "arcsec" and ds["k"].attrs["units"] == "1/arcsec"
    np.testing.assert_allclose(ds["ring_radius"], [0.8, 1.3, 1.9], atol=0.03)
    np.testing.assert_allclose(ds["total_flux"], obs.total_flux(images))
    np.testing.assert_allclose(ds["power_spectrum"], obs.power_spectrum(images, PIXEL, n_bins=8)[0])
    np.testing.assert_allclose(ds["radial_profile"], obs.radial_profile(images, PIXEL, n_bins=12)[0])


def test_bad_pixel_scale_is_refused() -> None:
    with pytest.raises(ValueError, match="pixel_scale"):
        obs.radial_profile(np.zeros((1, 8, 8)), 0.0)
