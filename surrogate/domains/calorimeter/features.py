"""High-level shower observables of the CaloChallenge evaluation, and the classifier inputs built from them.

Definitions, binnings, readout threshold and conventions are the challenge's public evaluation code for
dataset 2 (repository CaloChallenge/homepage at 9b41df72, code/: evaluate.py, HighLevelFeatures.py,
XMLHandler.py, evaluate_plotting_helper.py); the code here is our own, vectorised over events, and
reproduces the challenge's numbers to the last bit on the same files (benchmarks/challenge_agreement.py,
tests/domains/test_calorimeter_features.py).

What the challenge does, and so do we:
- Readout: voxels below 0.5 keV / 0.033 = 15.15 keV are set to 0 in every sample compared, reference
  included, before anything is computed (evaluate.py, ``min_energy``); the comparison happens in the
  file's precision.
- Coordinates: alpha bin j is centred at -pi + (j + 1/2) 2 pi / n_alpha (XMLHandler.py: alpha bins run
  from -pi to pi; our Geant4 simulator numbers its phi cells the same way); radial bin k at the centre of
  its edges; x = r cos(alpha), y = r sin(alpha) (the challenge's "Eta" and "Phi").
- Per layer: centre = sum(c E) / (E_layer + 1e-16) and width = sqrt(max(sum(c^2 E) / (E_layer + 1e-16)
  - centre^2, 0)) for c in x, y, r, so an empty layer has centre and width 0; layer energies and E_tot
  are summed in the file's precision (float32 for our files), as HighLevelFeatures does.
- Histograms for separation power (evaluate_plotting_helper.py): which of them the challenge scores for
  dataset 2 and with which bin edges is in :func:`histogram_specs`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from surrogate.domains.base import HistogramSpec
from surrogate.domains.calorimeter.schema import THRESHOLD_MEV, Geometry

CHUNK_EVENTS = 2048  # events per float64 working block (~110 MB for dataset 2)

# Per-layer observables, in the order they enter the high-level classifier inputs.
PER_LAYER = ("E_layer", "center_x", "center_y", "center_r", "width_x", "width_y", "width_r", "sparsity")

# evaluate.py adds 1e-8 MeV before log10 so that empty layers stay finite.
LOG_FLOOR_MEV = 1e-8
# HighLevelFeatures.py adds 1e-16 MeV to the layer energy it divides by: an empty layer's centre is 0.
EC_FLOOR_MEV = 1e-16
# evaluate.py divides centres and widths (mm) by 100 so that they are O(0.1) like the other inputs.
LENGTH_SCALE_MM = 100.0
# Plot ranges of evaluate_plotting_helper.py for datasets 2 and 3, each 100 bins: centres (plot_ECEtas,
# plot_ECPhis) and widths (plot_ECWidthEtas/Phis); r centre and width (plot_ECR, plot_ECWidthR) and
# sparsity (plot_sparsity, 20 bins) are defined there too but not scored for any dataset.
CENTER_RANGE_MM = (-30.0, 30.0)
WIDTH_RANGE_MM = (0.0, 30.0)
CENTER_R_RANGE_MM = (0.0, 42.0)
WIDTH_R_RANGE_MM = (0.0, 20.0)
E_RATIO_RANGE = (0.5, 1.5)  # plot_Etot_Einc
N_LOG_EDGES_LAYER = 40  # plot_E_layers: np.logspace(..., 40) edges, i.e. 39 bins
N_LOG_EDGES_VOXEL = 50  # plot_cell_dist: 50 edges, 49 bins
# Where the reference has nothing above threshold the challenge's upper edge log10(max) is undefined
# (its np.histogram raises); we span one decade above the threshold and the score is NaN (empty reference).
EMPTY_REFERENCE_DECADES = 1.0


def readout(showers: np.ndarray) -> np.ndarray:
    """Voxels below the readout threshold set to 0, in the input's dtype, as evaluate.py does to both files.

    The comparison ``showers < THRESHOLD_MEV`` with a Python float happens in the array's precision
    (numpy's promotion rules), exactly as in evaluate.py; values at or above the threshold are kept.
    """
    showers = np.asarray(showers)
    return np.where(showers < THRESHOLD_MEV, np.zeros_like(showers), showers)


def alpha_centres(n_alpha: int) -> np.ndarray:
    """Centres (rad) of the angular bins, bin 0 starting at -pi: XMLHandler.SetEtaAndPhiFromPolar."""
    edges = np.linspace(-np.pi, np.pi, n_alpha + 1)
    return edges[:-1] + (edges[1:] - edges[:-1]) / 2  # XMLHandler.get_midpoint's arithmetic


def voxel_coordinates(geometry: Geometry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, r) of every cell of one layer, each (n_alpha * n_r,) float64 in mm, r fastest.

    x and y use XMLHandler's radial midpoints (a + (b - a) / 2), r HighLevelFeatures' ((a + b) * 0.5):
    the two formulas can differ in the last bit, and each feature uses the challenge's.
    """
    edges = np.asarray(geometry.r_edges_mm, dtype=np.float64)
    r_xy = np.tile(edges[:-1] + (edges[1:] - edges[:-1]) / 2, geometry.n_alpha)
    alpha = np.repeat(alpha_centres(geometry.n_alpha), geometry.n_r)
    r = np.tile((edges[:-1] + edges[1:]) * 0.5, geometry.n_alpha)
    return r_xy * np.cos(alpha), r_xy * np.sin(alpha), r


def _check_shapes(showers: np.ndarray, e_inc: np.ndarray, n_voxels: int) -> np.ndarray:
    if showers.ndim != 2 or showers.shape[1] != n_voxels:
        raise ValueError(f"showers: shape {showers.shape}, expected (N, {n_voxels})")
    e = np.asarray(e_inc).reshape(-1)
    if len(e) != len(showers):
        raise ValueError(f"e_inc: {len(e)} energies for {len(showers)} showers")
    return e


def high_level_features(showers: np.ndarray, e_inc: np.ndarray, geometry: Geometry) -> dict[str, np.ndarray]:
    """Per-event observables of thresholded showers (see :func:`readout`), every value (N,).

    showers: (N, n_voxels) MeV in (layer, alpha, r) order; e_inc: (N,) or (N, 1) MeV.
    Keys, for every layer l: ``E_layer_l`` (MeV), ``center_{x,y,r}_l`` and ``width_{x,y,r}_l`` (mm;
    HighLevelFeatures' energy-weighted mean and standard deviation, 0 for an empty layer),
    ``sparsity_l`` (fraction of voxels at 0 after the threshold); for every radial bin k: ``E_radial_k``
    (MeV, summed over layers and angles: the radial profile, ours); and ``E_tot`` (MeV), ``E_ratio`` =
    E_tot / E_inc, ``e_inc`` (MeV). Energies (E_layer, E_tot, E_ratio, e_inc) are in the inputs'
    precision, as the challenge sums them (float32 for float32 files); everything else is float64.
    """
    e = _check_shapes(showers, e_inc, geometry.n_voxels)
    if showers.dtype.kind != "f":
        showers = showers.astype(np.float64)
    n, n_layers = len(showers), geometry.n_layers
    coords = dict(zip("xyr", voxel_coordinates(geometry), strict=True))
    squares = {axis: c * c for axis, c in coords.items()}
    out = {f"{name}_{layer}": np.empty(n, dtype=showers.dtype if name == "E_layer" else np.float64)
           for name in PER_LAYER for layer in range(n_layers)}
    radial = np.empty((n, geometry.n_r))
    e_tot = np.empty(n, dtype=showers.dtype)
    for start in range(0, n, CHUNK_EVENTS):
        block = readout(showers[start:start + CHUNK_EVENTS])  # (n_block, n_voxels), the file's dtype
        sl = slice(start, start + len(block))
        cube = block.reshape(len(block), n_layers, -1)  # (n_block, L, n_alpha * n_r)
        e_layer = cube.sum(axis=-1)  # the file's dtype, as HighLevelFeatures' data[:, a:b].sum(axis=-1)
        denominator = e_layer + EC_FLOOR_MEV
        moments = {}
        for axis, c in coords.items():
            # (c * E).sum / (E_layer + 1e-16) and (c * c * E).sum / ...: HighLevelFeatures' arithmetic.
            centre = (c * cube).sum(axis=-1) / denominator
            second = (squares[axis] * cube).sum(axis=-1) / denominator
            moments[axis] = (centre, np.sqrt((second - centre**2).clip(min=0.0)))
        sparsity = 1.0 - (cube > 0).mean(axis=-1)
        radial[sl] = block.reshape(len(block), n_layers, geometry.n_alpha, geometry.n_r).sum(
            axis=(1, 2), dtype=np.float64)
        e_tot[sl] = block.sum(axis=-1)  # HighLevelFeatures: data.sum(axis=-1), not the sum of E_layer
        for layer in range(n_layers):
            out[f"E_layer_{layer}"][sl] = e_layer[:, layer]
            out[f"sparsity_{layer}"][sl] = sparsity[:, layer]
            for axis, (centre, width) in moments.items():
                out[f"center_{axis}_{layer}"][sl] = centre[:, layer]
                out[f"width_{axis}_{layer}"][sl] = width[:, layer]
    for k in range(geometry.n_r):
        out[f"E_radial_{k}"] = radial[:, k]
    out["E_tot"] = e_tot
    out["E_ratio"] = out["E_tot"] / e  # evaluate_plotting_helper.plot_Etot_Einc: GetEtot() / Einc
    out["e_inc"] = e
    return out


def flat_observables(showers: np.ndarray, e_inc: np.ndarray) -> dict[str, np.ndarray]:
    """Observables with many values per event, flattened over events.

    ``voxel_energy``: the energies (MeV, the input's dtype) of all voxels at or above the readout
    threshold, 1-D. The challenge histograms every voxel (plot_cell_dist) on log bins that start at the
    threshold, so the zeros it holds never enter a bin: dropping them gives the same histogram.
    """
    del e_inc  # part of the domain interface; voxel energies do not depend on it
    flat = readout(showers).reshape(-1)
    return {"voxel_energy": flat[flat > 0]}


def _log_edges(reference: np.ndarray, n_edges: int) -> np.ndarray:
    """evaluate_plotting_helper's log bins: threshold to the reference's maximum, in its precision."""
    top = reference.max() if reference.size else 0.0
    if not top > THRESHOLD_MEV:
        return np.logspace(np.log10(THRESHOLD_MEV), np.log10(THRESHOLD_MEV) + EMPTY_REFERENCE_DECADES,
                           n_edges)
    # np.log10 of the float32 maximum is a float32, as in the challenge: the top edge then sits where
    # the challenge's does, and the largest reference value falls inside or outside the last bin alike.
    return np.logspace(np.log10(THRESHOLD_MEV), np.log10(top), n_edges)


def histogram_specs(geometry: Geometry, features: Mapping[str, np.ndarray],
                    flat: Mapping[str, np.ndarray]) -> list[HistogramSpec]:
    """The histograms compared by separation power, binned as evaluate.py bins them for dataset 2.

    features / flat: the reference sample's observables (:func:`high_level_features`,
    :func:`flat_observables`). The challenge anchors the top edge of the log-energy binnings on the
    reference: E_layer_l has 40 log-spaced edges from the readout threshold to the reference's largest
    energy in layer l, voxel energies 50 edges up to its largest voxel.

    ``source="protocol"``: scored by evaluate.py's ``hist`` mode for dataset 2: E_tot/E_inc, E_layer,
    x/y centres ("EC Eta/Phi"), x/y widths ("Width Eta/Phi"), the voxel-energy distribution.
    ``source="ours"``: r centre and width and sparsity per layer, which the challenge computes but does
    not score for dataset 2; their bin edges are those of its (unused) plot_ECR, plot_ECWidthR and
    plot_sparsity.
    """
    centres = np.linspace(*CENTER_RANGE_MM, 101)
    widths = np.linspace(*WIDTH_RANGE_MM, 101)
    centres_r = np.linspace(*CENTER_R_RANGE_MM, 101)
    widths_r = np.linspace(*WIDTH_R_RANGE_MM, 101)
    sparsity = np.linspace(0.0, 1.0, 21)
    specs = [
        HistogramSpec("E_ratio", r"$E_\mathrm{tot} / E_\mathrm{inc}$", np.linspace(*E_RATIO_RANGE, 101),
                      source="protocol"),
        HistogramSpec("voxel_energy", "voxel energy [MeV]", _log_edges(flat["voxel_energy"], N_LOG_EDGES_VOXEL),
                      log_x=True, source="protocol"),
    ]
    for layer in range(geometry.n_layers):
        e_layer = _log_edges(features[f"E_layer_{layer}"], N_LOG_EDGES_LAYER)
        specs += [
            HistogramSpec(f"E_layer_{layer}", f"energy in layer {layer} [MeV]", e_layer, log_x=True,
                          source="protocol"),
            HistogramSpec(f"center_x_{layer}", f"x centre (EC Eta), layer {layer} [mm]", centres,
                          source="protocol"),
            HistogramSpec(f"center_y_{layer}", f"y centre (EC Phi), layer {layer} [mm]", centres,
                          source="protocol"),
            HistogramSpec(f"center_r_{layer}", f"r centre, layer {layer} [mm]", centres_r, source="ours"),
            HistogramSpec(f"width_x_{layer}", f"x width (Width Eta), layer {layer} [mm]", widths,
                          source="protocol"),
            HistogramSpec(f"width_y_{layer}", f"y width (Width Phi), layer {layer} [mm]", widths,
                          source="protocol"),
            HistogramSpec(f"width_r_{layer}", f"r width, layer {layer} [mm]", widths_r, source="ours"),
            HistogramSpec(f"sparsity_{layer}", f"sparsity, layer {layer}", sparsity, source="ours"),
        ]
    return specs


def low_level_inputs(showers: np.ndarray, e_inc: np.ndarray) -> np.ndarray:
    """Classifier inputs from thresholded voxels, (N, 1 + n_voxels) float32: [log10(E_inc / MeV), voxels / E_inc].

    As evaluate.py's ``prepare_low_data_for_classifier`` (threshold applied, not normalised per layer);
    float32 to halve the memory of the largest array (the classifier casts to its own precision).
    """
    e = np.asarray(e_inc, dtype=np.float64).reshape(-1, 1)
    if len(e) != len(showers):
        raise ValueError(f"e_inc: {len(e)} energies for {len(showers)} showers")
    out = np.empty((len(showers), 1 + showers.shape[1]), dtype=np.float32)
    out[:, 0] = np.log10(e[:, 0])
    for start in range(0, len(showers), CHUNK_EVENTS):
        sl = slice(start, start + CHUNK_EVENTS)
        out[sl, 1:] = readout(showers[sl]) / e[sl]
    return out


def high_level_inputs(features: dict[str, np.ndarray], geometry: Geometry) -> np.ndarray:
    """Classifier / FPD / KPD inputs from the high-level features, (N, 2 + 8 * n_layers) float32.

    Column blocks, each n_layers wide unless noted (the order of the challenge's high-level classifier,
    ``prepare_high_data_for_classifier``): log10 E_inc (1), log10(E_layer + 1e-8), centre x / 100,
    centre y / 100, width x / 100, width y / 100, log10(E_tot + 1e-8) (1), sparsity, centre r / 100,
    width r / 100; energies in MeV, lengths in mm.
    """
    layers = range(geometry.n_layers)

    def block(name: str) -> np.ndarray:
        return np.stack([features[f"{name}_{layer}"] for layer in layers], axis=1)

    columns = [
        np.log10(features["e_inc"])[:, None],
        np.log10(block("E_layer") + LOG_FLOOR_MEV),
        block("center_x") / LENGTH_SCALE_MM,
        block("center_y") / LENGTH_SCALE_MM,
        block("width_x") / LENGTH_SCALE_MM,
        block("width_y") / LENGTH_SCALE_MM,
        np.log10(features["E_tot"] + LOG_FLOOR_MEV)[:, None],
        block("sparsity"),
        block("center_r") / LENGTH_SCALE_MM,
        block("width_r") / LENGTH_SCALE_MM,
    ]
    return np.concatenate([c.astype(np.float64) for c in columns], axis=1).astype(np.float32)
