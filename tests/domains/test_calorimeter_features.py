"""High-level calorimeter features on hand-built showers with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from surrogate.domains.calorimeter import DOMAIN
from surrogate.domains.calorimeter.features import (
    flat_observables,
    high_level_features,
    high_level_inputs,
    histogram_specs,
    low_level_inputs,
)

GEO = DOMAIN.geometry
R_CENTRES = 0.5 * (np.asarray(GEO.r_edges_mm[1:]) + np.asarray(GEO.r_edges_mm[:-1]))  # mm


def empty(n: int = 1) -> np.ndarray:
    return np.zeros((n, *GEO.shape), dtype=np.float32)


def flat(showers: np.ndarray) -> np.ndarray:
    return showers.reshape(len(showers), -1)


def test_single_voxel_on_the_x_axis() -> None:
    s = empty()
    s[0, 3, 0, 2] = 50.0  # layer 3, alpha bin 0 (centred 11.25 deg above +x), r bin 2
    f = high_level_features(flat(s), np.array([[100.0]]), GEO)
    alpha = np.pi / GEO.n_alpha
    assert f["center_x_3"][0] == pytest.approx(R_CENTRES[2] * np.cos(alpha))
    assert f["center_y_3"][0] == pytest.approx(R_CENTRES[2] * np.sin(alpha))
    assert f["center_r_3"][0] == pytest.approx(R_CENTRES[2])
    for axis in "xyr":
        assert f[f"width_{axis}_3"][0] == pytest.approx(0.0, abs=1e-6)
    assert f["E_layer_3"][0] == 50.0 and f["E_tot"][0] == 50.0
    assert f["E_ratio"][0] == pytest.approx(0.5)
    assert f["sparsity_3"][0] == pytest.approx(1 - 1 / 144)
    assert f["sparsity_4"][0] == 1.0
    # An empty layer has centre and width 0, as the challenge defines them.
    assert f["center_x_4"][0] == 0.0 and f["width_r_4"][0] == 0.0
    assert f["E_radial_2"][0] == 50.0 and f["E_radial_1"][0] == 0.0


def test_ring_is_centred_with_the_radius_as_width() -> None:
    s = empty()
    s[0, 10, :, 4] = 2.0  # equal energy in every alpha bin of r bin 4
    f = high_level_features(flat(s), np.array([100.0]), GEO)
    assert f["center_x_10"][0] == pytest.approx(0.0, abs=1e-9)
    assert f["center_y_10"][0] == pytest.approx(0.0, abs=1e-9)
    assert f["center_r_10"][0] == pytest.approx(R_CENTRES[4])
    assert f["width_r_10"][0] == pytest.approx(0.0, abs=1e-6)
    # <x^2> over a uniform ring of radius r is r^2 / 2 (16 equally spaced angles average cos^2 to 1/2).
    assert f["width_x_10"][0] == pytest.approx(R_CENTRES[4] / np.sqrt(2))
    assert f["width_y_10"][0] == pytest.approx(R_CENTRES[4] / np.sqrt(2))
    assert f["sparsity_10"][0] == pytest.approx(1 - 16 / 144)


def test_two_voxels_give_the_weighted_mean_and_width() -> None:
    s = empty()
    s[0, 0, 0, 0] = 3.0
    s[0, 0, 0, 4] = 1.0
    f = high_level_features(flat(s), np.array([10.0]), GEO)
    r0, r4 = R_CENTRES[0], R_CENTRES[4]
    mean = (3 * r0 + r4) / 4
    assert f["center_r_0"][0] == pytest.approx(mean)
    assert f["width_r_0"][0] == pytest.approx(np.sqrt((3 * r0**2 + r4**2) / 4 - mean**2))


def test_energy_sums_and_chunking_on_random_showers() -> None:
    rng = np.random.default_rng(3)
    n = 2100  # more than one chunk of 2048
    s = (rng.random((n, GEO.n_voxels)) < 0.3) * rng.exponential(1.0, (n, GEO.n_voxels))
    e = rng.uniform(1e3, 1e4, (n, 1))
    f = high_level_features(s.astype(np.float32), e, GEO)
    cube = s.reshape(n, *GEO.shape)
    np.testing.assert_allclose(f["E_tot"], s.sum(axis=1), rtol=1e-5)
    np.testing.assert_allclose(sum(f[f"E_layer_{i}"] for i in range(GEO.n_layers)), f["E_tot"], rtol=1e-9)
    np.testing.assert_allclose(sum(f[f"E_radial_{k}"] for k in range(GEO.n_r)), f["E_tot"], rtol=1e-9)
    np.testing.assert_allclose(f["E_layer_44"], cube[:, 44].sum(axis=(1, 2)), rtol=1e-5)
    np.testing.assert_array_equal(f["sparsity_7"], (cube[:, 7] == 0).sum(axis=(1, 2)) / 144)
    np.testing.assert_allclose(f["E_ratio"], f["E_tot"] / e[:, 0])
    assert all(v.shape == (n,) and v.dtype == np.float64 for v in f.values())


def test_classifier_inputs_follow_the_challenge_layout() -> None:
    s = empty(2)
    s[0, 3, 0, 2] = 50.0
    s[1, 5, 8, 0] = 20.0
    e = np.array([[100.0], [1000.0]])
    low = low_level_inputs(flat(s), e)
    assert low.shape == (2, 1 + GEO.n_voxels) and low.dtype == np.float32
    np.testing.assert_allclose(low[:, 0], [2.0, 3.0])
    np.testing.assert_allclose(low[0, 1 + 3 * 144 + 0 * 9 + 2], 0.5)
    assert low[1, 1:].sum() == pytest.approx(0.02)

    f = high_level_features(flat(s), e, GEO)
    high = high_level_inputs(f, GEO)
    n_layers = GEO.n_layers
    assert high.shape == (2, 2 + 8 * n_layers) and high.dtype == np.float32
    np.testing.assert_allclose(high[:, 0], [2.0, 3.0])
    np.testing.assert_allclose(high[0, 1 + 3], np.log10(50.0), rtol=1e-6)
    assert high[0, 1 + 4] == pytest.approx(-8.0)  # the floor of an empty layer
    x_centre = R_CENTRES[2] * np.cos(np.pi / 16) / 100
    assert high[0, 1 + n_layers + 3] == pytest.approx(x_centre, rel=1e-6)
    assert high[0, 1 + 5 * n_layers] == pytest.approx(np.log10(50.0), rel=1e-6)  # log10 E_tot
    assert high[0, 2 + 5 * n_layers + 3] == pytest.approx(1 - 1 / 144)  # sparsity of layer 3
    assert high[0, 2 + 6 * n_layers + 3] == pytest.approx(R_CENTRES[2] / 100, rel=1e-6)  # r centre


def test_histogram_specs_cover_every_feature_with_challenge_binnings() -> None:
    specs = histogram_specs(GEO, (1e3, 1e4))
    by_name = {s.name: s for s in specs}
    assert len(specs) == 2 + 8 * GEO.n_layers
    ratio = by_name["E_ratio"].bins
    assert (ratio[0], ratio[-1], len(ratio)) == (0.5, 1.5, 101)
    e_layer = by_name["E_layer_0"].bins
    assert len(e_layer) == 41 and e_layer[0] == pytest.approx(15.15e-3) and e_layer[-1] == pytest.approx(1e4)
    assert len(by_name["voxel_energy"].bins) == 51 and by_name["voxel_energy"].log_x
    assert by_name["center_x_7"].bins[0] == -30.0 and len(by_name["center_x_7"].bins) == 101
    # Sparsity values k / 144 never sit on a bin edge.
    edges = by_name["sparsity_0"].bins * 144
    assert np.all(np.abs(edges - np.round(edges)) == pytest.approx(0.5))
    assert edges[0] < 0 and edges[-1] > 144
    features = high_level_features(np.zeros((1, GEO.n_voxels)), np.ones(1), GEO)
    flat_names = set(flat_observables(np.zeros((1, GEO.n_voxels)), np.ones(1)))
    assert set(by_name) <= set(features) | flat_names


def test_voxel_energies_are_the_non_zero_voxels() -> None:
    s = empty(2)
    s[0, 1, 2, 3] = 4.0
    s[1, 0, 0, 0] = 0.5
    v = flat_observables(flat(s), np.ones((2, 1)))["voxel_energy"]
    np.testing.assert_array_equal(np.sort(v), [0.5, 4.0])


def test_wrong_shapes_are_rejected() -> None:
    with pytest.raises(ValueError, match="6480"):
        high_level_features(np.zeros((2, 100)), np.ones(2), GEO)
    with pytest.raises(ValueError, match="energies"):
        high_level_features(np.zeros((2, GEO.n_voxels)), np.ones(3), GEO)
