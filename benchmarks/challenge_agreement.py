"""Separation powers of our validation protocol beside the CaloChallenge's own evaluate.py, same two files.

Runs the challenge's ``code/evaluate.py --mode hist --dataset 2`` (from a checkout of its repository,
CaloChallenge/homepage) in a temporary folder through a subprocess, and our protocol
(``surrogate.validation.compute``: the calorimeter domain's features, histogram specs and separation
powers) on the same files, then prints both per histogram family with the largest absolute difference.

How the challenge's script is run, unchanged: its .py files and binning XML are copied into the temporary
folder (it writes a .pkl beside the reference file and its outputs into the working folder, so the two
input files are symlinked there too); a small runner disables matplotlib's LaTeX text (evaluate.py
switches it on at import and most machines have no LaTeX) and makes ``plt.savefig`` a no-op (the
separation powers come from ``plt.hist`` and are written to histogram_chi2_2.txt; the ~230 PNGs at
300 dpi would only cost time). Nothing that enters a number is touched.

``--scale`` multiplies the first file's voxels (a distorted sample); ``--empty-layers-from L`` zeroes its
layers L and deeper (histograms empty in one sample: NaN in both protocols).
"""

from __future__ import annotations

import argparse
import itertools
import math
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common

EPILOG = """examples:
  python benchmarks/challenge_agreement.py ~/CaloChallenge/code gen.h5 ref.h5
  python benchmarks/challenge_agreement.py ~/CaloChallenge/code val.h5 test.h5 --scale 1.05
  python benchmarks/challenge_agreement.py ~/CaloChallenge/code val.h5 test.h5 --empty-layers-from 30
"""

CHALLENGE_FILES = ("evaluate.py", "HighLevelFeatures.py", "XMLHandler.py", "evaluate_plotting_helper.py",
                   "resnet.py", "binning_dataset_2.xml")
RUNNER = """\
import runpy, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
_rc = plt.rc
def _no_usetex(group, **kwargs):
    if group == "text" and kwargs.get("usetex"):
        return None
    return _rc(group, **kwargs)
plt.rc = _no_usetex
plt.savefig = lambda *args, **kwargs: None
sys.argv = ["evaluate.py"] + sys.argv[1:]
runpy.run_path("evaluate.py", run_name="__main__")
"""
# Challenge histogram names (histogram_chi2_2.txt) -> our feature names.
NAMES = [(re.compile(r"^Etot / Einc$"), "E_ratio"),
         (re.compile(r"^E layer (\d+)$"), "E_layer_{}"),
         (re.compile(r"^EC Eta layer (\d+)$"), "center_x_{}"),
         (re.compile(r"^EC Phi layer (\d+)$"), "center_y_{}"),
         (re.compile(r"^Width Eta layer (\d+)$"), "width_x_{}"),
         (re.compile(r"^Width Phi layer (\d+)$"), "width_y_{}"),
         (re.compile(r"^Voxel distribution$"), "voxel_energy")]
FAMILY = re.compile(r"^(?P<family>.+)_(?P<index>\d+)$")


def parse_chi2(path: Path) -> dict[str, float]:
    """evaluate.py's histogram_chi2_<dataset>.txt: 'name: ' lines each followed by a value line."""
    lines = [line.strip() for line in path.read_text().splitlines()]
    out: dict[str, float] = {}
    for name_line, value_line in itertools.pairwise(lines):
        if not name_line.endswith(":"):
            continue
        label = name_line[:-1].strip()
        for pattern, ours in NAMES:
            match = pattern.match(label)
            if match:
                out[ours.format(*match.groups())] = float(value_line)
    return out


def run_challenge(code_dir: Path, generated: Path, reference: Path, work: Path) -> tuple[dict[str, float], float]:
    for name in CHALLENGE_FILES:
        source = code_dir / name
        if not source.is_file():
            raise SystemExit(f"{code_dir}: no {name}; expected the challenge's code/ folder")
        shutil.copy(source, work / name)
    (work / "run_evaluate.py").write_text(RUNNER)
    (work / "input.h5").symlink_to(generated.resolve())
    (work / "reference.h5").symlink_to(reference.resolve())
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "run_evaluate.py", "-i", "input.h5", "-r", "reference.h5",
                           "-m", "hist", "-d", "2", "--output_dir", "out/"], cwd=work,
                          capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"evaluate.py failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return parse_chi2(work / "out" / "histogram_chi2_2.txt"), seconds


def run_ours(generated: Path, reference: Path) -> tuple[dict[str, float], dict[str, str], float]:
    from surrogate.domains.calorimeter import DOMAIN
    from surrogate.validation.compute import observables, separation_powers

    t0 = time.perf_counter()
    ref_data, ref_cond = DOMAIN.read_events(reference)
    gen_data, gen_cond = DOMAIN.read_events(generated)
    ref = observables(DOMAIN, ref_data, ref_cond)
    gen = observables(DOMAIN, gen_data, gen_cond)
    specs = DOMAIN.histogram_specs(ref.features, ref.flat)
    seps = separation_powers(specs, ref, gen)
    return ({s.name: seps[f"sep_{s.name}"] for s in specs}, {s.name: s.source for s in specs},
            time.perf_counter() - t0)


def distort(path: Path, out: Path, scale: float, empty_from: int) -> Path:
    """A copy of ``path`` with voxels x ``scale`` and layers >= ``empty_from`` zeroed, same dtype."""
    import h5py

    from surrogate.domains.calorimeter import DOMAIN, schema

    with h5py.File(path, "r") as f:
        showers = f[schema.SHOWERS][:]
        e_inc = f[schema.INCIDENT][:]
    showers = (showers * showers.dtype.type(scale)).reshape(len(showers), *DOMAIN.geometry.shape)
    if empty_from >= 0:
        showers[:, empty_from:] = 0
    schema.write_file(out, [(showers.reshape(len(showers), -1), e_inc)], len(showers), DOMAIN.geometry,
                      {"distorted_from": str(path), "scale": scale, "empty_layers_from": empty_from},
                      dtype=showers.dtype.name)
    return out


def family(name: str) -> str:
    match = FAMILY.match(name)
    return match["family"] if match else name


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("challenge_code", type=Path, help="the challenge's code/ folder (CaloChallenge/homepage)")
    p.add_argument("generated", type=Path, help="file evaluated (evaluate.py -i), CaloChallenge layout")
    p.add_argument("reference", type=Path, help="reference file (evaluate.py -r)")
    p.add_argument("--scale", type=float, default=1.0, help="multiply the evaluated file's voxels by this")
    p.add_argument("--empty-layers-from", type=int, default=-1,
                   help="zero the evaluated file's layers from this index on (default: none)")
    p.add_argument("--all", action="store_true", help="print every histogram, not only the families")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="challenge_agreement_") as tmp:
        work = Path(tmp)
        generated = args.generated
        if args.scale != 1.0 or args.empty_layers_from >= 0:
            generated = distort(args.generated, work / "distorted.h5", args.scale, args.empty_layers_from)
        theirs, t_theirs = run_challenge(args.challenge_code, generated, args.reference, work)
        ours, source, t_ours = run_ours(generated, args.reference)

    missing = sorted(set(theirs) - set(ours))
    if missing:
        raise SystemExit(f"histograms the challenge scores that we do not: {missing}")
    rows: dict[str, dict[str, float]] = {}
    per_hist = []
    for name, value in theirs.items():
        mine = ours[name]
        both_nan = math.isnan(value) and math.isnan(mine)
        diff = 0.0 if both_nan else abs(mine - value)  # one NaN only: diff is NaN and shows
        per_hist.append({"histogram": name, "challenge": value, "ours": mine, "abs_diff": diff})
        row = rows.setdefault(family(name), {"histograms": 0, "max_abs_diff": 0.0, "nan_both": 0,
                                             "nan_one": 0, "mean_challenge": 0.0, "mean_ours": 0.0})
        row["histograms"] += 1
        row["nan_both"] += both_nan
        row["nan_one"] += math.isnan(value) != math.isnan(mine)
        if not math.isnan(diff):
            row["max_abs_diff"] = max(row["max_abs_diff"], diff)
        if not both_nan:
            row["mean_challenge"] += value
            row["mean_ours"] += mine
    for row in rows.values():
        scored = row["histograms"] - row["nan_both"]
        row["mean_challenge"] = row["mean_challenge"] / scored if scored else float("nan")
        row["mean_ours"] = row["mean_ours"] / scored if scored else float("nan")
    table = [{"family": f, **{k: int(v) if k in ("histograms", "nan_both", "nan_one") else v
                              for k, v in r.items()}} for f, r in rows.items()]
    changes = ([f"voxels x {args.scale}"] if args.scale != 1.0 else []) + (
        [f"layers >= {args.empty_layers_from} zeroed"] if args.empty_layers_from >= 0 else [])
    print(f"evaluated: {args.generated}" + (f" ({', '.join(changes)})" if changes else ""))
    print(f"reference: {args.reference}")
    _common.print_table("separation power, challenge (evaluate.py hist) vs ours, per family", table,
                        ("family", "histograms", "mean_challenge", "mean_ours", "max_abs_diff", "nan_both",
                         "nan_one"))
    if args.all:
        _common.print_table("every histogram", per_hist, ("histogram", "challenge", "ours", "abs_diff"))
    extra = sorted(set(ours) - set(theirs))
    print(f"\nours only ({len(extra)} histograms, source 'ours': "
          f"{sorted({family(n) for n in extra if source[n] == 'ours'})})")
    max_diff = max((r["max_abs_diff"] for r in rows.values()), default=0.0)
    nan_one = sum(int(r["nan_one"]) for r in rows.values())
    print(f"max abs difference over {len(theirs)} histograms: {max_diff:.3g}; NaN in one protocol only: "
          f"{nan_one}; seconds: challenge {t_theirs:.1f}, ours {t_ours:.1f}")
    _common.print_summary("challenge_agreement", args, {"families": table, "max_abs_diff": max_diff,
                                                        "nan_in_one_only": nan_one,
                                                        "seconds_challenge": t_theirs, "seconds_ours": t_ours})


if __name__ == "__main__":
    main()
