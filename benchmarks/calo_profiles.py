"""Issue 5's profile bars for a calorimeter run folder: the mean shower of each sample against Geant4's test split.

    python benchmarks/calo_profiles.py runs/quickstart-<date>-<time>

Bars (issue 5, item 4), each the worst case over the layers / bins that hold at least 1% of Geant4's mean
energy: mean longitudinal profile (mean E_layer) within 10%, mean radial profile (mean E_radial, the
challenge's r bins) within 15%, mean x / y / r widths per layer within 20%; mean E_tot / E_inc within 1.5%
and its standard deviation within 15%. Samples: the surrogate (generate/generated.h5), every baseline
(generate/baseline_*.h5) and the floor, Geant4's validation split (prepare/reference_val.h5). All against
prepare/reference_test.h5, with the features of the validation protocol (the 15.15 keV readout threshold
applied). Prints one row per sample and a line `SUMMARY {...json...}`; asserts nothing. The same numbers,
for the surrogate subsampled to the floor's size, are the report's ``*_dev_pct`` metrics
(surrogate.domains.calorimeter.profiles); here every generated shower is compared.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a calorimeter run folder with prepare/ and generate/")
    args = parser.parse_args()

    from surrogate.domains.calorimeter import Calorimeter
    from surrogate.domains.calorimeter.profiles import BARS, profile_agreement

    domain = Calorimeter()

    def features(path: Path) -> dict[str, Any]:
        data, cond = domain.read_events(path)
        return domain.features(data, cond)

    ref = features(args.run / "prepare" / "reference_test.h5")
    samples = {"surrogate": args.run / "generate" / "generated.h5",
               **{p.stem.removeprefix("baseline_"): p for p in sorted((args.run / "generate").glob("baseline_*.h5"))},
               "floor (Geant4 val)": args.run / "prepare" / "reference_val.h5"}
    header = f"{'sample':<20}" + "".join(f"{name:>22}" for name in BARS) + "  all bars"
    print(header)
    print(f"{'bar':<20}" + "".join(f"{bar:>21.1f}%" for bar in BARS.values()))
    summary: dict[str, object] = {"run": str(args.run), "bars": BARS}
    for label, path in samples.items():
        res = profile_agreement(ref, features(path))
        cells = []
        for name in BARS:
            value, where = res[name]
            cells.append(f"{value:.1f}%" + (f" (at {where})" if where >= 0 else ""))
        met = all(res[name][0] <= bar for name, bar in BARS.items())
        print(f"{label:<20}" + "".join(f"{c:>22}" for c in cells) + f"  {'met' if met else 'NOT met'}")
        summary[label] = {**{k: v for k, v in res.items()}, "all_met": met}
    print("SUMMARY " + json.dumps(summary))


if __name__ == "__main__":
    main()
