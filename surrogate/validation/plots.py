"""Reference-vs-generated comparison plots, written as PNG files.

Figures are built with ``matplotlib.figure.Figure`` and its Agg canvas directly, never through pyplot,
so no global backend is selected and nothing is drawn at import.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from surrogate.domains.base import HistogramSpec
from surrogate.validation.compute import FAMILY, Observables

REF_STYLE = {"linewidth": 2.5, "alpha": 0.5, "color": "tab:blue", "label": "reference"}
GEN_STYLE = {"linewidth": 1.2, "color": "tab:red", "label": "generated"}
DPI = 80
COLUMNS = 5  # panels per row of a family grid
# Histogram thumbnails per family (evenly spaced members, first and last included): drawing costs ~20 ms
# per panel, so all 8 x 45 calorimeter families would take ~8 s; every member's separation power is in
# the separation-power figure and the report's table.
THUMBNAILS = 10


def _figure(n_panels: int, columns: int, panel_in: tuple[float, float], *,
            small: bool) -> tuple[Any, list[Any]]:
    from matplotlib.figure import Figure

    cols = min(columns, n_panels)
    rows = math.ceil(n_panels / cols)
    # Constrained layout measures every tick label: 90% of the drawing time of a 45-panel grid.
    # Small panels get fixed spacing instead.
    fig = Figure(figsize=(panel_in[0] * cols, panel_in[1] * rows), dpi=DPI,
                 layout=None if small else "constrained")
    if small:
        fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=1 - 0.5 / (panel_in[1] * rows),
                            wspace=0.08, hspace=0.3)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, list(axes[:n_panels])


def _histogram(ax: Any, spec: HistogramSpec, ref: np.ndarray, gen: np.ndarray, sep: float,
               title: str, small: bool) -> None:
    # Normalised to unit area inside the range, as the separation power compares shapes.
    # np.histogram + one step line per sample: ax.hist builds a patch per bin and patches make
    # matplotlib walk Bezier segments for the data limits (several times slower on 362 panels).
    drawn = False
    for values, style in ((ref, REF_STYLE), (gen, GEN_STYLE)):
        counts, _ = np.histogram(values[np.isfinite(values)], bins=spec.bins)
        if counts.sum() > 0:
            density = counts / (counts.sum() * np.diff(spec.bins))
            ax.plot(spec.bins, np.append(density, density[-1]), drawstyle="steps-post", **style)
            drawn = True
    if spec.log_x and drawn:  # log axes need something positive to show
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_title(f"{title}  S={sep:.3f}", fontsize=7 if small else 10, pad=2)
    if small:
        # No ticks on thumbnails: the shapes are what is compared, and tick layout dominates the cost.
        from matplotlib.ticker import NullLocator

        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_locator(NullLocator())
            axis.set_minor_locator(NullLocator())
    else:
        ax.set_xlabel(spec.label)
        ax.legend(fontsize=8)


def plot_histograms(specs: list[HistogramSpec], ref: Observables, gen: Observables,
                    seps: dict[str, float], out_dir: Path) -> list[Path]:
    """One figure of all global observables, and one grid per family (``name_<index>``) of histograms.

    Every panel title carries the separation power S of its histogram. Returns the PNG paths.
    """
    families: dict[str, list[tuple[int, HistogramSpec]]] = defaultdict(list)
    singles: list[HistogramSpec] = []
    for spec in specs:
        match = FAMILY.match(spec.name)
        if match:
            families[match["family"]].append((int(match["index"]), spec))
        else:
            singles.append(spec)
    paths = []
    if singles:
        fig, axes = _figure(len(singles), 3, (4.5, 3.5), small=False)
        for ax, spec in zip(axes, singles, strict=True):
            _histogram(ax, spec, ref.values(spec.name), gen.values(spec.name), seps[f"sep_{spec.name}"],
                       spec.name, small=False)
        paths.append(_save(fig, out_dir / "global_observables.png"))
    for family, members in families.items():
        members.sort(key=lambda item: item[0])
        shown = sorted({round(i) for i in np.linspace(0, len(members) - 1, min(THUMBNAILS, len(members)))})
        fig, axes = _figure(len(shown), COLUMNS, (2.6, 1.9), small=True)
        for ax, (index, spec) in zip(axes, [members[i] for i in shown], strict=True):
            _histogram(ax, spec, ref.values(spec.name), gen.values(spec.name), seps[f"sep_{spec.name}"],
                       f"{family} {index}", small=True)
        mean_sep = np.mean([seps[f"sep_{spec.name}"] for _, spec in members])
        fig.suptitle(f"{family}: {len(shown)} of {len(members)} shown; mean S over all = {mean_sep:.3f}; "
                     "blue: reference, red: generated", fontsize=10)
        paths.append(_save(fig, out_dir / f"{family}.png"))
    if families:
        paths.append(_plot_family_separations(families, seps, out_dir))
    return paths


def _plot_family_separations(families: dict[str, list[tuple[int, HistogramSpec]]], seps: dict[str, float],
                             out_dir: Path) -> Path:
    """Separation power of every member of every family against its index, one line per family."""
    fig, axes = _figure(1, 1, (9.0, 4.0), small=False)
    ax = axes[0]
    for family, members in families.items():
        ax.plot([i for i, _ in members], [seps[f"sep_{spec.name}"] for _, spec in members], marker=".",
                label=family)
    ax.set_xlabel("index (layer)")
    ax.set_ylabel("separation power")
    ax.set_title("separation power of every per-index histogram")
    ax.legend(fontsize=8, ncols=2)
    return _save(fig, out_dir / "separation_powers.png")


def plot_profiles(ref: Observables, gen: Observables, out_dir: Path) -> Path:
    """Mean of every feature family (``name_<index>``) against its index, reference vs generated.

    For the calorimeter: the longitudinal profile (mean E_layer), the radial profile (mean E_radial)
    and the mean centres, widths and sparsity per layer. Error bars: standard error of the mean.
    """
    families: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for name in ref.features:
        match = FAMILY.match(name)
        if match:
            families[match["family"]].append((int(match["index"]), name))
    fig, axes = _figure(len(families), 3, (4.5, 3.2), small=False)
    for ax, (family, members) in zip(axes, sorted(families.items()), strict=True):
        members.sort()
        index = np.array([i for i, _ in members])
        for obs, style, marker in ((ref, REF_STYLE, "o"), (gen, GEN_STYLE, "s")):
            values = np.stack([obs.features[name] for _, name in members], axis=1)
            sem = values.std(axis=0) / math.sqrt(max(len(values), 1))
            ax.errorbar(index, values.mean(axis=0), yerr=sem, color=style["color"], marker=marker,
                        markersize=2.5, linewidth=1, label=style["label"])
        if family.startswith("E_"):
            ax.set_yscale("log")
        ax.set_title(f"mean {family}", fontsize=10)
        ax.set_xlabel("index (layer or radial bin)")
        ax.legend(fontsize=7)
    return _save(fig, out_dir / "profiles.png")


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=DPI)
    return path
