"""Calorimeter features and separation powers: analytic cases, and numbers pinned to the CaloChallenge's code.

Pinned values: the CaloChallenge's own code (repository CaloChallenge/homepage at 9b41df72, code/:
HighLevelFeatures.py, XMLHandler.py, evaluate.py, evaluate_plotting_helper.py, binning_dataset_2.xml)
was copied into a scratch folder and run once, with numpy 2.4.6, on the inputs that ``pinned_pair``
below builds (written to two HDF5 files, ``showers`` and ``incident_energies`` as float32):
- features: ``HighLevelFeatures("electron", "binning_dataset_2.xml").CalculateFeatures(x)`` on the
  reference showers after evaluate.py's readout, x = np.where(showers < 0.5e-3 / 0.033, 0, showers);
- bin edges: evaluate_plotting_helper's np.logspace(np.log10(0.5e-3 / 0.033), np.log10(max), n) with
  the reference's maximum per layer (n = 40) and over all voxels (n = 50);
- separation powers: ``python evaluate.py -i gen.h5 -r ref.h5 -m hist -d 2`` (matplotlib's LaTeX text
  switched off and plt.savefig made a no-op, which enter no number), read from histogram_chi2_2.txt;
- sign convention: the same HighLevelFeatures on one 10 MeV voxel in layer 2, r bin 4, alpha bin j.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from surrogate.domains.base import HistogramSpec
from surrogate.domains.calorimeter import DOMAIN, schema
from surrogate.domains.calorimeter.features import (
    alpha_centres,
    flat_observables,
    high_level_features,
    high_level_inputs,
    histogram_specs,
    low_level_inputs,
    readout,
)
from surrogate.validation.compute import observables, separation_powers

GEO = DOMAIN.geometry
R_CENTRES = 0.5 * (np.asarray(GEO.r_edges_mm[1:]) + np.asarray(GEO.r_edges_mm[:-1]))  # mm
THRESHOLD = 0.5e-3 / 0.033  # evaluate.py's min_energy for datasets 2 and 3, MeV
PIN_SEED = 20251202
N_PIN = 24


def empty(n: int = 1) -> np.ndarray:
    return np.zeros((n, *GEO.shape), dtype=np.float32)


def flat(showers: np.ndarray) -> np.ndarray:
    return showers.reshape(len(showers), -1)


def pinned_sample(rng: np.random.Generator, n: int, *, scale: float = 1.0, empty_from: int = 45,
                  hot_alpha: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """(showers (n, 6480) float32 MeV, e_inc (n, 1) float32 MeV): shower-like, every layer reached.

    Gamma-like depth profile, exponential radial fall-off, hits in 40% of voxels with log-normal
    energies; ``scale`` multiplies every voxel, ``hot_alpha`` adds 5 MeV in r bin 3 of that alpha bin of
    layers 0-9 (a displaced centre), layers from ``empty_from`` on are emptied.
    """
    e_inc = np.exp(rng.uniform(np.log(1e3), np.log(1e4), (n, 1)))
    layer = np.arange(45) + 0.5
    depth = layer ** 1.5 * np.exp(-layer / 8.0) + 0.2
    radial = np.exp(-np.arange(9) / 2.0)
    mean = (depth / depth.sum())[:, None, None] * (radial / radial.sum())[None, None, :] / 16
    hits = rng.random((n, 45, 16, 9)) < 0.4
    showers = e_inc[:, :, None, None] * mean[None] / 0.4 * rng.lognormal(-0.245, 0.7, (n, 45, 16, 9)) * hits
    showers *= scale
    if hot_alpha >= 0:
        showers[:, :10, hot_alpha, 3] += 5.0
    showers[:, empty_from:] = 0.0
    return showers.reshape(n, -1).astype(np.float32), e_inc.astype(np.float32)


def pinned_pair() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """(reference, generated): the generated sample is 10% hotter, displaced to +x, layers 40-44 empty."""
    rng = np.random.default_rng(PIN_SEED)
    reference = pinned_sample(rng, N_PIN)
    generated = pinned_sample(rng, N_PIN, scale=1.1, empty_from=40, hot_alpha=8)
    return reference, generated


# ---- analytic cases ---------------------------------------------------------------------------------

def test_alpha_bins_start_at_minus_pi() -> None:
    # XMLHandler.SetEtaAndPhiFromPolar: bin centres of np.linspace(-pi, pi, n_alpha + 1).
    centres = alpha_centres(16)
    assert centres[0] == pytest.approx(-np.pi + np.pi / 16)
    assert centres[8] == pytest.approx(np.pi / 16)  # bin 8 starts at +x, as our simulator's phi cell 0
    np.testing.assert_allclose(np.diff(centres), 2 * np.pi / 16)


def test_single_voxel_just_above_the_x_axis() -> None:
    s = empty()
    s[0, 3, 8, 2] = 50.0  # layer 3, alpha bin 8 (centred 11.25 deg above +x), r bin 2
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
    # An empty layer has centre and width 0, as the challenge defines them (1e-16 in the denominator).
    assert f["center_x_4"][0] == 0.0 and f["width_r_4"][0] == 0.0
    assert f["E_radial_2"][0] == 50.0 and f["E_radial_1"][0] == 0.0


@pytest.mark.parametrize(("alpha_bin", "x_mm", "y_mm"), [
    # HighLevelFeatures' GetECEtas / GetECPhis of one voxel in layer 2, r bin 4 (module docstring).
    (0, -20.5229319924376, -4.082264988187491),
    (4, 4.082264988187485, -20.5229319924376),
    (8, 20.5229319924376, 4.082264988187483),
    (12, -4.082264988187487, 20.5229319924376),
])
def test_centre_signs_are_the_challenges(alpha_bin: int, x_mm: float, y_mm: float) -> None:
    s = empty()
    s[0, 2, alpha_bin, 4] = 10.0
    f = high_level_features(flat(s), np.array([10.0]), GEO)
    assert f["center_x_2"][0] == pytest.approx(x_mm, rel=1e-12)
    assert f["center_y_2"][0] == pytest.approx(y_mm, rel=1e-12)


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


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_readout_threshold_is_the_challenges_in_the_files_precision(dtype: type) -> None:
    at = dtype(THRESHOLD)  # evaluate.py compares `showers < min_energy` in the array's precision: kept
    below = np.nextafter(at, dtype(0))
    s = np.zeros((1, GEO.n_voxels), dtype=dtype)
    s[0, :4] = [at, below, 1.0, 0.5 * THRESHOLD]
    out = readout(s)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out[0, :4], np.array([at, 0.0, 1.0, 0.0], dtype=dtype))
    f = high_level_features(s, np.ones(1, dtype=dtype), GEO)
    assert f["E_layer_0"][0] == dtype(at) + dtype(1.0) and f["E_layer_0"].dtype == dtype
    assert f["sparsity_0"][0] == pytest.approx(1 - 2 / 144)
    np.testing.assert_array_equal(np.sort(flat_observables(s, np.ones(1))["voxel_energy"]), [at, 1.0])
    assert low_level_inputs(s, np.ones(1))[0, 2] == 0.0  # the voxel below threshold
    assert schema.THRESHOLD_MEV == THRESHOLD


def test_energy_sums_and_chunking_on_random_showers() -> None:
    rng = np.random.default_rng(3)
    n = 2100  # more than one chunk of 2048
    s = ((rng.random((n, GEO.n_voxels)) < 0.3) * rng.exponential(1.0, (n, GEO.n_voxels))).astype(np.float32)
    e = rng.uniform(1e3, 1e4, (n, 1)).astype(np.float32)
    f = high_level_features(s, e, GEO)
    kept = np.where(s < THRESHOLD, 0.0, s).astype(np.float64)
    cube = kept.reshape(n, *GEO.shape)
    np.testing.assert_allclose(f["E_tot"], kept.sum(axis=1), rtol=1e-5)
    np.testing.assert_allclose(sum(f[f"E_layer_{i}"].astype(np.float64) for i in range(GEO.n_layers)),
                               f["E_tot"], rtol=1e-5)
    np.testing.assert_allclose(sum(f[f"E_radial_{k}"] for k in range(GEO.n_r)), kept.sum(axis=1), rtol=1e-9)
    np.testing.assert_allclose(f["E_layer_44"], cube[:, 44].sum(axis=(1, 2)), rtol=1e-5)
    np.testing.assert_allclose(f["sparsity_7"], (cube[:, 7] == 0).sum(axis=(1, 2)) / 144, rtol=0, atol=1e-15)
    np.testing.assert_allclose(f["E_ratio"], f["E_tot"] / e[:, 0], rtol=1e-6)
    # Each event's features do not depend on the chunk it was computed in.
    tail = high_level_features(s[2040:], e[2040:], GEO)
    for key in ("E_tot", "E_layer_5", "center_x_5", "width_r_30", "sparsity_44"):
        np.testing.assert_array_equal(tail[key], f[key][2040:])
    # Energies keep the file's precision (the challenge's sums), everything else is float64.
    energies = {"E_tot", "E_ratio", "e_inc"} | {f"E_layer_{i}" for i in range(GEO.n_layers)}
    assert all(v.shape == (n,) for v in f.values())
    assert all(v.dtype == (np.float32 if k in energies else np.float64) for k, v in f.items())


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
    x_centre = R_CENTRES[2] * np.cos(-np.pi + np.pi / 16) / 100  # alpha bin 0 is centred at -168.75 deg
    assert high[0, 1 + n_layers + 3] == pytest.approx(x_centre, rel=1e-6)
    assert high[0, 1 + 5 * n_layers] == pytest.approx(np.log10(50.0), rel=1e-6)  # log10 E_tot
    assert high[0, 2 + 5 * n_layers + 3] == pytest.approx(1 - 1 / 144)  # sparsity of layer 3
    assert high[0, 2 + 6 * n_layers + 3] == pytest.approx(R_CENTRES[2] / 100, rel=1e-6)  # r centre


def test_voxel_energies_are_the_voxels_above_threshold() -> None:
    s = empty(2)
    s[0, 1, 2, 3] = 4.0
    s[1, 0, 0, 0] = 0.5
    s[1, 0, 0, 1] = 0.01  # below the readout threshold
    v = flat_observables(flat(s), np.ones((2, 1)))["voxel_energy"]
    np.testing.assert_array_equal(np.sort(v), [0.5, 4.0])


def test_wrong_shapes_are_rejected() -> None:
    with pytest.raises(ValueError, match="6480"):
        high_level_features(np.zeros((2, 100)), np.ones(2), GEO)
    with pytest.raises(ValueError, match="energies"):
        high_level_features(np.zeros((2, GEO.n_voxels)), np.ones(3), GEO)
    with pytest.raises(ValueError, match="source"):
        HistogramSpec("x", "x", np.linspace(0, 1, 3), source="published")


# ---- pinned to the challenge's code ---------------------------------------------------------------

# HighLevelFeatures on the reference of pinned_pair(), event -> layer -> (E_layer, EC Eta, EC Phi,
# Width Eta, Width Phi, EC r, Width r, sparsity); "tot": (E_tot, E_tot / E_inc).
PINNED_FEATURES = {
    0: {0: (7.400449752807617, -0.5726727970695209, 0.7274533949664619, 7.70243660533075, 7.146899541239641,
            8.009998495532269, 6.863145735567103, 0.7152777777777778),
        7: (99.39109802246094, -0.7675765771460793, 0.3136630146789025, 7.330928235682137, 9.667260082673854,
            9.027739999519481, 8.147753990666242, 0.6666666666666667),
        44: (20.579822540283203, -0.17939635058204703, -0.13913046946821758, 9.083881303088063,
             8.497037482357351, 9.508192541979886, 8.022615560274174, 0.6111111111111112),
        "tot": (3527.41796875, 1.044707179069519)},
    5: {0: (7.253499984741211, 0.5898191091541543, 0.19756362622209792, 6.793730919445668, 7.146327568427854,
            6.666358754253056, 7.291869201283516, 0.75),
        7: (125.74641418457031, -2.1848928190578425, 1.3359825351739487, 7.262807766669755, 8.20656375167992,
            8.383479768068474, 7.508124813122928, 0.6388888888888888),
        44: (20.06705665588379, -0.169164766260384, -0.3082391213111473, 6.830219918327571, 6.843359260023624,
             7.048642667934465, 6.627498374823948, 0.6458333333333333),
        "tot": (2658.907470703125, 0.9738938808441162)},
}
# Separation powers from evaluate.py's histogram_chi2_2.txt for pinned_pair(): family -> (sum over the
# family's finite values, indices that are NaN), and some single histograms.
PINNED_FAMILIES = {
    "E_ratio": (0.7460317460317452, []),
    "E_layer": (7.954324874484793, [40, 41, 42, 43, 44]),  # layers 40-44 empty in the generated sample
    "center_x": (11.673303288031653, []),
    "center_y": (9.662830061156626, []),
    "width_x": (17.082813251563234, []),
    "width_y": (16.857986553207123, []),
    "voxel_energy": (0.0007488651761094498, []),
}
PINNED_SEPARATIONS = {
    "E_layer_0": 0.17308131769059543, "E_layer_20": 0.27636604986615537, "E_layer_39": 0.1896972889725583,
    "center_x_0": 0.9583333333333324, "center_y_5": 0.3035714285714284, "width_x_3": 0.3870370370370365,
    "width_y_7": 0.18306878306878274, "center_x_44": 0.6551724137931031,
}
# evaluate_plotting_helper's edges for the reference of pinned_pair(): (first, second, last, count).
PINNED_EDGES = {
    "E_layer_0": (0.015151515151515155, 0.018184694456405713, 18.672560512618933, 40),
    "E_layer_44": (0.015151515151515155, 0.018628244906995182, 47.79419725607235, 40),
}
PINNED_VOXEL_EDGES = (0.015151515151515155, 78.97181931070173, 50)


@pytest.fixture(scope="module")
def pinned(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The pinned pair written to real files and read back, as validate reads them."""
    d = tmp_path_factory.mktemp("pinned")
    (ref_s, ref_e), (gen_s, gen_e) = pinned_pair()
    schema.write_file(d / "ref.h5", [(ref_s, ref_e)], N_PIN, GEO, {})
    schema.write_file(d / "gen.h5", [(gen_s, gen_e)], N_PIN, GEO, {})
    ref = observables(DOMAIN, *DOMAIN.read_events(d / "ref.h5"))
    gen = observables(DOMAIN, *DOMAIN.read_events(d / "gen.h5"))
    specs = DOMAIN.histogram_specs(ref.features, ref.flat)
    return {"ref": ref, "gen": gen, "specs": specs, "seps": separation_powers(specs, ref, gen)}


def test_features_are_the_challenges_on_a_seeded_sample(pinned: dict) -> None:
    f = pinned["ref"].features
    names = ("E_layer", "center_x", "center_y", "width_x", "width_y", "center_r", "width_r", "sparsity")
    for event, layers in PINNED_FEATURES.items():
        for layer, values in layers.items():
            if layer == "tot":
                assert f["E_tot"][event] == pytest.approx(values[0], rel=1e-7)  # float32 sums
                assert f["E_ratio"][event] == pytest.approx(values[1], rel=1e-7)
                continue
            for name, expected in zip(names, values, strict=True):
                assert f[f"{name}_{layer}"][event] == pytest.approx(expected, rel=1e-12, abs=1e-14), (name, layer)


def test_bin_edges_are_the_challenges(pinned: dict) -> None:
    by_name = {s.name: s for s in pinned["specs"]}
    for name, (first, second, last, count) in PINNED_EDGES.items():
        bins = by_name[name].bins
        assert (len(bins), bins[0], bins[1], bins[-1]) == pytest.approx((count, first, second, last), rel=1e-14)
    voxel = by_name["voxel_energy"].bins
    assert (voxel[0], voxel[-1], len(voxel)) == pytest.approx(PINNED_VOXEL_EDGES, rel=1e-14)
    np.testing.assert_array_equal(by_name["E_ratio"].bins, np.linspace(0.5, 1.5, 101))
    for layer in (0, 44):
        np.testing.assert_array_equal(by_name[f"center_x_{layer}"].bins, np.linspace(-30.0, 30.0, 101))
        np.testing.assert_array_equal(by_name[f"center_y_{layer}"].bins, np.linspace(-30.0, 30.0, 101))
        np.testing.assert_array_equal(by_name[f"width_x_{layer}"].bins, np.linspace(0.0, 30.0, 101))
        np.testing.assert_array_equal(by_name[f"width_y_{layer}"].bins, np.linspace(0.0, 30.0, 101))
        # Ours, with the edges of the challenge's unused plot_ECR / plot_ECWidthR / plot_sparsity.
        np.testing.assert_array_equal(by_name[f"center_r_{layer}"].bins, np.linspace(0.0, 42.0, 101))
        np.testing.assert_array_equal(by_name[f"width_r_{layer}"].bins, np.linspace(0.0, 20.0, 101))
        np.testing.assert_array_equal(by_name[f"sparsity_{layer}"].bins, np.linspace(0.0, 1.0, 21))


def test_separation_powers_are_the_challenges_with_nan_for_empty_histograms(pinned: dict) -> None:
    seps = pinned["seps"]
    for family, (total, nan_at) in PINNED_FAMILIES.items():
        members = {k.removeprefix("sep_"): v for k, v in seps.items()
                   if re.fullmatch(rf"sep_{family}(_\d+)?", k)}
        assert len(members) in (1, GEO.n_layers)
        nan = sorted(int(k.rsplit("_", 1)[1]) for k, v in members.items() if math.isnan(v))
        assert nan == nan_at, family
        assert math.fsum(v for v in members.values() if not math.isnan(v)) == pytest.approx(total, rel=1e-12)
    for name, expected in PINNED_SEPARATIONS.items():
        assert seps[f"sep_{name}"] == pytest.approx(expected, rel=1e-12)
    # The mean skips the NaN histograms and says how many there were.
    values = np.array([v for k, v in seps.items() if k.startswith("sep_")])
    assert seps["n_nan_separation_power"] == 5
    assert seps["mean_separation_power"] == pytest.approx(np.nanmean(values))
    assert seps["max_separation_power"] == np.nanmax(values)


def test_sources_label_the_challenges_histograms(pinned: dict) -> None:
    source = {s.name: s.source for s in pinned["specs"]}
    assert len(source) == 2 + 8 * GEO.n_layers
    ours = {name for name, src in source.items() if src == "ours"}
    assert ours == {f"{f}_{i}" for f in ("center_r", "width_r", "sparsity") for i in range(GEO.n_layers)}
    features = set(pinned["ref"].features) | set(pinned["ref"].flat)
    assert set(source) <= features


def test_a_reference_layer_with_nothing_above_threshold_scores_nan() -> None:
    # The challenge's log10(max) edge is undefined there (its np.histogram raises); ours is NaN.
    (clean, e_inc), _ = pinned_pair()
    ref_s = clean.copy().reshape(N_PIN, *GEO.shape)
    ref_s[:, 44] = 0.5 * THRESHOLD
    ref = observables(DOMAIN, ref_s.reshape(N_PIN, -1), e_inc)
    gen = observables(DOMAIN, clean, e_inc)
    specs = histogram_specs(GEO, ref.features, ref.flat)
    seps = separation_powers(specs, ref, gen)
    assert math.isnan(seps["sep_E_layer_44"])
    assert not math.isnan(seps["sep_E_layer_43"])
    bins = {s.name: s.bins for s in specs}["E_layer_44"]
    assert np.all(np.diff(bins) > 0) and bins[-1] == pytest.approx(10 * bins[0])
