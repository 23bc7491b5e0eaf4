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

from surrogate.domains.base import FeatureLayout, HistogramSpec
from surrogate.validation.compute import FAMILY, Observables

REF_STYLE = {"linewidth": 2.5, "alpha": 0.5, "color": "tab:blue", "label": "reference A"}
# Columns of the report, drawn over reference A: the floor (reference B), the surrogate, baselines.
COLUMN_STYLES = {"floor": {"linewidth": 1.0, "color": "tab:gray", "linestyle": "--", "label": "reference B (floor)"},
                 "surrogate": {"linewidth": 1.2, "color": "tab:red", "label": "surrogate"}}
BASELINE_COLOURS = ("tab:green", "tab:purple", "tab:orange", "tab:brown", "tab:pink", "tab:olive")
DPI = 80
COLUMNS = 5  # panels per row of a family grid
# Histogram thumbnails per family (evenly spaced members, first and last included): drawing costs ~20 ms
# per panel, so 8 families of 45 members would take ~8 s; every member's separation power is in
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


def styles(columns: list[str]) -> dict[str, dict[str, Any]]:
    """Line style per report column: floor grey dashed, surrogate red, baselines in turn."""
    out = {}
    for i, name in enumerate(c for c in columns if c not in COLUMN_STYLES):
        out[name] = {"linewidth": 1.0, "color": BASELINE_COLOURS[i % len(BASELINE_COLOURS)], "label": name}
    return {c: COLUMN_STYLES.get(c) or out[c] for c in columns}


def _title(name: str, seps: dict[str, dict[str, float]], small: bool) -> str:
    """Separation power of the surrogate, with the floor's beside it."""
    key = f"sep_{name}"
    floor = seps.get("floor", {}).get(key)
    text = f"S={seps['surrogate'][key]:.3f}"
    return text + (f" (floor {floor:.3f})" if floor is not None else "")


def _histogram(ax: Any, spec: HistogramSpec, ref: np.ndarray, others: list[tuple[np.ndarray, dict[str, Any]]],
               title: str, small: bool) -> None:
    # Normalised to unit area inside the range, as the separation power compares shapes.
    # np.histogram + one step line per sample: ax.hist builds a patch per bin and patches make
    # matplotlib walk Bezier segments for the data limits (several times slower on 362 panels).
    drawn = False
    for values, style in [(ref, REF_STYLE), *others]:
        counts, _ = np.histogram(values[np.isfinite(values)], bins=spec.bins)
        if counts.sum() > 0:
            density = counts / (counts.sum() * np.diff(spec.bins))
            ax.plot(spec.bins, np.append(density, density[-1]), drawstyle="steps-post", **style)
            drawn = True
    if spec.log_x and drawn:  # log axes need something positive to show
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_title(title, fontsize=7 if small else 10, pad=2)
    if small:
        # No ticks on thumbnails: the shapes are what is compared, and tick layout dominates the cost.
        from matplotlib.ticker import NullLocator

        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_locator(NullLocator())
            axis.set_minor_locator(NullLocator())
    else:
        ax.set_xlabel(spec.label)
        ax.legend(fontsize=8)


def plot_histograms(specs: list[HistogramSpec], ref: Observables, columns: dict[str, Observables],
                    seps: dict[str, dict[str, float]], out_dir: Path, layout: FeatureLayout) -> list[Path]:
    """One figure of all global observables, and one grid per family (``name_<index>``) of histograms.

    ref: reference A; columns: the report's columns (``floor``, ``surrogate``, baselines by name), each
    drawn over the reference; seps: column -> its metrics (``sep_<name>``). Panel titles carry the
    surrogate's separation power S and the floor's. Returns the PNG paths.
    """
    style = styles(list(columns))

    def others(name: str) -> list[tuple[np.ndarray, dict[str, Any]]]:
        return [(obs.values(name), style[column]) for column, obs in columns.items()]

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
            _histogram(ax, spec, ref.values(spec.name), others(spec.name),
                       f"{spec.name}  {_title(spec.name, seps, small=False)}", small=False)
        paths.append(_save(fig, out_dir / "global_observables.png"))
    for family, members in families.items():
        members.sort(key=lambda item: item[0])
        shown = sorted({round(i) for i in np.linspace(0, len(members) - 1, min(THUMBNAILS, len(members)))})
        fig, axes = _figure(len(shown), COLUMNS, (2.6, 1.9), small=True)
        for ax, (index, spec) in zip(axes, [members[i] for i in shown], strict=True):
            _histogram(ax, spec, ref.values(spec.name), others(spec.name),
                       f"{family} {index}  {_title(spec.name, seps, small=True)}", small=True)
        mean_sep = np.nanmean([seps["surrogate"][f"sep_{spec.name}"] for _, spec in members])
        legend = "; ".join(f"{st['color'].removeprefix('tab:')}: {st['label']}" for st in style.values())
        fig.suptitle(f"{family}: {len(shown)} of {len(members)} shown; surrogate's mean S over all = "
                     f"{mean_sep:.3f}; blue: reference A; {legend}", fontsize=9)
        paths.append(_save(fig, out_dir / f"{family}.png"))
    if families:
        paths.append(_plot_family_separations(families, seps, out_dir, layout))
    return paths


def _dims(families: Any, layout: FeatureLayout) -> str:
    """The index dimensions of these families, as the domain names them (e.g. "layer or r_bin")."""
    dims = sorted({layout.families[f].dim if f in layout.families else "index" for f in families})
    return " or ".join(dims)


def _plot_family_separations(families: dict[str, list[tuple[int, HistogramSpec]]],
                             seps: dict[str, dict[str, float]], out_dir: Path, layout: FeatureLayout) -> Path:
    """Separation power of every member of every family against its index: surrogate solid, floor dotted."""
    fig, axes = _figure(1, 1, (9.0, 4.0), small=False)
    ax = axes[0]
    for family, members in families.items():
        index = [i for i, _ in members]
        (line,) = ax.plot(index, [seps["surrogate"][f"sep_{spec.name}"] for _, spec in members], marker=".",
                          label=family)
        if "floor" in seps:
            ax.plot(index, [seps["floor"][f"sep_{spec.name}"] for _, spec in members], linestyle=":",
                    color=line.get_color(), linewidth=1)
    ax.set_xlabel(f"index ({_dims(families, layout)})")
    ax.set_ylabel("separation power")
    ax.set_title("separation power of every per-index histogram: surrogate (solid), floor (dotted)")
    ax.legend(fontsize=8, ncols=2)
    return _save(fig, out_dir / "separation_powers.png")


def plot_profiles(ref: Observables, columns: dict[str, Observables], out_dir: Path, layout: FeatureLayout) -> Path:
    """Mean of every feature family (``name_<index>``) against its index, reference A and every column.

    Axes are labelled with the family's dimension and units (``layout``), on a log scale where the
    domain says its profile spans decades. Error bars: standard error of the mean.
    """
    style = styles(list(columns))
    families: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for name in ref.features:
        match = FAMILY.match(name)
        if match:
            families[match["family"]].append((int(match["index"]), name))
    fig, axes = _figure(len(families), 3, (4.5, 3.2), small=False)
    drawn = [(ref, REF_STYLE, "o")] + [(obs, style[c], "s") for c, obs in columns.items()]
    for ax, (family, members) in zip(axes, sorted(families.items()), strict=True):
        members.sort()
        index = np.array([i for i, _ in members])
        for obs, st, marker in drawn:
            values = np.stack([obs.features[name] for _, name in members], axis=1)
            sem = values.std(axis=0) / math.sqrt(max(len(values), 1))
            ax.errorbar(index, values.mean(axis=0), yerr=sem, color=st["color"], marker=marker,
                        markersize=2.5, linewidth=1, linestyle=st.get("linestyle", "-"), label=st["label"])
        spec = layout.families.get(family)
        if spec is not None and spec.log_scale:
            ax.set_yscale("log")
        ax.set_title(f"mean {family}" + (f" [{spec.units}]" if spec is not None else ""), fontsize=10)
        ax.set_xlabel(spec.dim if spec is not None else "index")
        ax.legend(fontsize=7)
    return _save(fig, out_dir / "profiles.png")


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=DPI)
    return path
