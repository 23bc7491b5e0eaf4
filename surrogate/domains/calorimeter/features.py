"""High-level shower observables of the CaloChallenge evaluation, and the classifier inputs built from them.

Definitions follow the challenge's public evaluation code (repository CaloChallenge/homepage, files
code/HighLevelFeatures.py and code/evaluate.py); the code here is our own, vectorised over events.

Coordinates: voxel (alpha bin j, r bin k) sits at r = centre of radial bin k (mm) and
alpha = (j + 0.5) * 2 pi / n_alpha, alpha bin 0 starting at +x; x = r cos(alpha), y = r sin(alpha).
"""

from __future__ import annotations

import numpy as np

from surrogate.domains.base import HistogramSpec
from surrogate.domains.calorimeter.schema import THRESHOLD_MEV, Geometry

CHUNK_EVENTS = 2048  # events per float64 working block (~110 MB for dataset 2)

# Per-layer observables, in the order they enter the high-level classifier inputs.
PER_LAYER = ("E_layer", "center_x", "center_y", "center_r", "width_x", "width_y", "width_r", "sparsity")

# evaluate.py adds 1e-8 MeV before log10 so that empty layers stay finite.
LOG_FLOOR_MEV = 1e-8
# evaluate.py divides centres and widths (mm) by 100 so that they are O(0.1) like the other inputs.
LENGTH_SCALE_MM = 100.0
# Challenge plot ranges for datasets 2 and 3 (evaluate.py): centres in +-30 mm, widths in [0, 30] mm.
CENTER_RANGE_MM = 30.0


def voxel_coordinates(geometry: Geometry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, r) of every (alpha, r) cell of one layer, each (n_alpha, n_r) in mm."""
    edges = np.asarray(geometry.r_edges_mm, dtype=np.float64)
    r_centres = 0.5 * (edges[:-1] + edges[1:])
    alpha = (np.arange(geometry.n_alpha) + 0.5) * 2.0 * np.pi / geometry.n_alpha
    r = np.broadcast_to(r_centres[None, :], (geometry.n_alpha, geometry.n_r))
    return r * np.cos(alpha)[:, None], r * np.sin(alpha)[:, None], np.array(r)


def _check_shapes(showers: np.ndarray, e_inc: np.ndarray, n_voxels: int) -> np.ndarray:
    if showers.ndim != 2 or showers.shape[1] != n_voxels:
        raise ValueError(f"showers: shape {showers.shape}, expected (N, {n_voxels})")
    e = np.asarray(e_inc, dtype=np.float64).reshape(-1)
    if len(e) != len(showers):
        raise ValueError(f"e_inc: {len(e)} energies for {len(showers)} showers")
    return e


def high_level_features(showers: np.ndarray, e_inc: np.ndarray, geometry: Geometry) -> dict[str, np.ndarray]:
    """Per-event observables, every value (N,) float64.

    showers: (N, n_voxels) MeV in (layer, alpha, r) order; e_inc: (N,) or (N, 1) MeV.
    Keys, for every layer l: ``E_layer_l`` (MeV), ``center_{x,y,r}_l`` and ``width_{x,y,r}_l`` (mm;
    energy-weighted mean and standard deviation over the layer's voxels, 0 for an empty layer as in the
    challenge), ``sparsity_l`` (fraction of voxels at exactly 0); for every radial bin k: ``E_radial_k``
    (MeV, summed over layers and angles: the radial profile); and ``E_tot`` (MeV), ``E_ratio`` =
    E_tot / E_inc, ``e_inc`` (MeV).
    """
    e = _check_shapes(showers, e_inc, geometry.n_voxels)
    n_layers = geometry.n_layers
    x, y, r = voxel_coordinates(geometry)
    # Second moments per coordinate: (coordinate, coordinate^2), each (n_alpha, n_r).
    weights = np.stack([x, y, r, x * x, y * y, r * r]).reshape(6, -1).T  # (n_alpha * n_r, 6)
    out = {f"{name}_{layer}": np.empty(len(showers)) for name in PER_LAYER for layer in range(n_layers)}
    radial = np.empty((len(showers), geometry.n_r))
    for start in range(0, len(showers), CHUNK_EVENTS):
        block = np.asarray(showers[start:start + CHUNK_EVENTS], dtype=np.float64)
        block = block.reshape(len(block), *geometry.shape)
        sl = slice(start, start + len(block))
        e_layer = block.sum(axis=(2, 3))  # (n, L)
        moments = block.reshape(len(block), n_layers, -1) @ weights  # (n, L, 6)
        safe = np.where(e_layer > 0, e_layer, 1.0)[:, :, None]
        mean = np.where(e_layer[:, :, None] > 0, moments / safe, 0.0)
        centre = mean[:, :, :3]
        width = np.sqrt(np.clip(mean[:, :, 3:] - centre**2, 0.0, None))  # clip: rounding below 0
        sparsity = (block == 0).sum(axis=(2, 3)) / (geometry.n_alpha * geometry.n_r)
        radial[sl] = block.sum(axis=(1, 2))
        for layer in range(n_layers):
            out[f"E_layer_{layer}"][sl] = e_layer[:, layer]
            out[f"sparsity_{layer}"][sl] = sparsity[:, layer]
            for axis, name in enumerate("xyr"):
                out[f"center_{name}_{layer}"][sl] = centre[:, layer, axis]
                out[f"width_{name}_{layer}"][sl] = width[:, layer, axis]
    for k in range(geometry.n_r):
        out[f"E_radial_{k}"] = radial[:, k]
    e_tot = sum(out[f"E_layer_{layer}"] for layer in range(n_layers))
    out["E_tot"] = np.asarray(e_tot, dtype=np.float64)
    out["E_ratio"] = out["E_tot"] / e
    out["e_inc"] = e
    return out


def flat_observables(showers: np.ndarray, e_inc: np.ndarray) -> dict[str, np.ndarray]:
    """Observables with many values per event, flattened over events.

    ``voxel_energy``: the energies (MeV) of all non-zero voxels, 1-D. Zeros are dropped because the
    challenge histograms voxel energies on a log axis starting at the readout threshold.
    """
    del e_inc  # part of the domain interface; voxel energies do not depend on it
    flat = np.asarray(showers).reshape(-1)
    return {"voxel_energy": flat[flat > 0]}


def histogram_specs(geometry: Geometry, cond_range: tuple[float, float]) -> list[HistogramSpec]:
    """CaloChallenge binnings (evaluate.py) for every feature compared by separation power.

    cond_range: (min, max) incident energy in MeV; it bounds the log-energy axes. The challenge takes the
    reference sample's maximum instead; a fixed range keeps the binning independent of the sample.
    Energies start at the readout threshold (0.5 keV / 0.033 = 15.15 keV, as in evaluate.py).
    """
    e_max = float(cond_range[1])
    if not e_max > THRESHOLD_MEV:
        raise ValueError(f"cond_range: maximum incident energy {e_max} MeV is below the readout threshold")
    log_e = np.logspace(np.log10(THRESHOLD_MEV), np.log10(e_max), 41)  # 40 log bins
    centres = np.linspace(-CENTER_RANGE_MM, CENTER_RANGE_MM, 101)
    widths = np.linspace(0.0, CENTER_RANGE_MM, 101)
    r_max = geometry.r_edges_mm[-1]
    # Not plotted by the challenge: the r centre lies within the readout disc, its width below half of it.
    centres_r = np.linspace(0.0, r_max, 101)
    widths_r = np.linspace(0.0, r_max / 2.0, 101)
    # Sparsity takes the values k / n_cells: bins of `step` values with edges half-way between values,
    # so that no value sits on an edge.
    n_cells = geometry.n_alpha * geometry.n_r
    step = max(1, n_cells // 36)
    sparsity = (np.arange(0, n_cells + step + 1, step) - 0.5) / n_cells
    specs = [
        HistogramSpec("E_ratio", r"$E_\mathrm{tot} / E_\mathrm{inc}$", np.linspace(0.5, 1.5, 101)),
        HistogramSpec("voxel_energy", "voxel energy [MeV]", np.logspace(np.log10(THRESHOLD_MEV),
                                                                        np.log10(e_max), 51), log_x=True),
    ]
    for layer in range(geometry.n_layers):
        specs += [
            HistogramSpec(f"E_layer_{layer}", f"energy in layer {layer} [MeV]", log_e, log_x=True),
            HistogramSpec(f"center_x_{layer}", f"x centre, layer {layer} [mm]", centres),
            HistogramSpec(f"center_y_{layer}", f"y centre, layer {layer} [mm]", centres),
            HistogramSpec(f"center_r_{layer}", f"r centre, layer {layer} [mm]", centres_r),
            HistogramSpec(f"width_x_{layer}", f"x width, layer {layer} [mm]", widths),
            HistogramSpec(f"width_y_{layer}", f"y width, layer {layer} [mm]", widths),
            HistogramSpec(f"width_r_{layer}", f"r width, layer {layer} [mm]", widths_r),
            HistogramSpec(f"sparsity_{layer}", f"sparsity, layer {layer}", sparsity),
        ]
    return specs


def low_level_inputs(showers: np.ndarray, e_inc: np.ndarray) -> np.ndarray:
    """Classifier inputs from voxels, (N, 1 + n_voxels) float32: [log10(E_inc / MeV), voxels / E_inc].

    As evaluate.py's ``prepare_low_data_for_classifier`` (not normalised per layer).
    """
    e = np.asarray(e_inc, dtype=np.float64).reshape(-1, 1)
    if len(e) != len(showers):
        raise ValueError(f"e_inc: {len(e)} energies for {len(showers)} showers")
    out = np.empty((len(showers), 1 + showers.shape[1]), dtype=np.float32)
    out[:, 0] = np.log10(e[:, 0])
    out[:, 1:] = showers / e
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
    return np.concatenate(columns, axis=1).astype(np.float32)
