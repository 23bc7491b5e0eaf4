"""Issue 5's profile bars for a calorimeter run folder: the mean shower of each sample against Geant4's test split.

    python benchmarks/calo_profiles.py runs/quickstart-<date>-<time>

Bars (issue 5, item 4), each the worst case over the layers / bins that hold at least 1% of Geant4's mean
energy: mean longitudinal profile (mean E_layer) within 10%, mean radial profile (mean E_radial, the
challenge's r bins) within 15%, mean x / y / r widths per layer within 20%; mean E_tot / E_inc within 1.5%
and its standard deviation within 15%. Samples: the surrogate (generate/generated.h5), every baseline
(generate/baseline_*.h5) and the floor, Geant4's validation split (prepare/reference_val.h5). All against
prepare/reference_test.h5, with the features of the validation protocol (the 15.15 keV readout threshold
applied). Prints one row per sample and a line `SUMMARY {...json...}`; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

BARS = {"longitudinal": 0.10, "radial": 0.15, "width_x": 0.20, "width_y": 0.20, "width_r": 0.20,
        "response_mean": 0.015, "response_std": 0.15}
MIN_SHARE = 0.01  # a layer / radial bin counts when it holds at least 1% of the reference's mean energy


def _mean(features: dict[str, np.ndarray], name: str) -> float:
    return float(np.mean(np.asarray(features[name], dtype=np.float64)))


def agreement(ref: dict[str, np.ndarray], gen: dict[str, np.ndarray], n_layers: int, n_r: int) -> dict[str, object]:
    """Worst relative deviation of each bar and where it is (layer or radial bin)."""
    e_ref = np.array([_mean(ref, f"E_layer_{i}") for i in range(n_layers)])
    e_gen = np.array([_mean(gen, f"E_layer_{i}") for i in range(n_layers)])
    r_ref = np.array([_mean(ref, f"E_radial_{k}") for k in range(n_r)])
    r_gen = np.array([_mean(gen, f"E_radial_{k}") for k in range(n_r)])
    layers = np.flatnonzero(e_ref / e_ref.sum() >= MIN_SHARE)
    bins = np.flatnonzero(r_ref / r_ref.sum() >= MIN_SHARE)

    def worst(dev: np.ndarray, where: np.ndarray) -> tuple[float, int]:
        i = int(np.argmax(np.abs(dev)))
        return float(abs(dev[i])), int(where[i])

    out: dict[str, object] = {
        "longitudinal": worst(e_gen[layers] / e_ref[layers] - 1, layers),
        "radial": worst(r_gen[bins] / r_ref[bins] - 1, bins),
    }
    for axis in "xyr":
        w_ref = np.array([_mean(ref, f"width_{axis}_{i}") for i in layers])
        w_gen = np.array([_mean(gen, f"width_{axis}_{i}") for i in layers])
        out[f"width_{axis}"] = worst(w_gen / w_ref - 1, layers)
    resp_ref = np.asarray(ref["E_ratio"], dtype=np.float64)
    resp_gen = np.asarray(gen["E_ratio"], dtype=np.float64)
    out["response_mean"] = (abs(resp_gen.mean() / resp_ref.mean() - 1), -1)
    out["response_std"] = (abs(resp_gen.std() / resp_ref.std() - 1), -1)
    out["response"] = (float(resp_gen.mean()), float(resp_gen.std()), float(resp_ref.mean()), float(resp_ref.std()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a calorimeter run folder with prepare/ and generate/")
    args = parser.parse_args()

    from surrogate.domains.calorimeter import Calorimeter

    domain = Calorimeter()
    n_layers, n_r = domain.geometry.n_layers, domain.geometry.n_r

    def features(path: Path) -> dict[str, np.ndarray]:
        data, cond = domain.read_events(path)
        return domain.features(data, cond)

    ref = features(args.run / "prepare" / "reference_test.h5")
    samples = {"surrogate": args.run / "generate" / "generated.h5",
               **{p.stem.removeprefix("baseline_"): p for p in sorted((args.run / "generate").glob("baseline_*.h5"))},
               "floor (Geant4 val)": args.run / "prepare" / "reference_val.h5"}
    header = f"{'sample':<20}" + "".join(f"{name:>22}" for name in BARS) + "  all bars"
    print(header)
    print(f"{'bar':<20}" + "".join(f"{100 * bar:>21.1f}%" for bar in BARS.values()))
    summary: dict[str, object] = {"run": str(args.run), "bars": BARS}
    for label, path in samples.items():
        res = agreement(ref, features(path), n_layers, n_r)
        cells = []
        for name in BARS:
            value, where = res[name]  # type: ignore[misc]
            cells.append(f"{100 * value:.1f}%" + (f" (at {where})" if where >= 0 else ""))
        met = all(res[name][0] <= bar for name, bar in BARS.items())  # type: ignore[index]
        print(f"{label:<20}" + "".join(f"{c:>22}" for c in cells) + f"  {'met' if met else 'NOT met'}")
        summary[label] = {**{k: v for k, v in res.items()}, "all_met": met}
    print("SUMMARY " + json.dumps(summary))


if __name__ == "__main__":
    main()
