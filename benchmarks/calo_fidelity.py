"""Calorimeter fidelity at the dataset-2 geometry: the GAN and GFlash against Geant4's own floor.

Simulates as many Geant4 showers as ``--sim-minutes`` of ``--workers`` CPU cores allow (a pilot run of
``--pilot`` showers measures the CPU time per shower first), then prepares, trains the GAN, generates it
and GFlash for the held-out test split, and validates both with the full protocol: the challenge-sized
classifier (3 x 2048, up to 50 epochs, early stopping on the held-out loss), FPD/KPD with the challenge's
sample sizes capped by the test split, separation powers, precision/recall/density/coverage, and the
reference-vs-reference floor at the same sample size. Prints every protocol metric for floor, GAN and
GFlash with the sample sizes, times, hardware and which classifier ran; ends with one ``SUMMARY {...}``
line.

The run folder (``--out``) is an ordinary run folder: a second call continues it (finished stages are
kept), and the MLflow store in it holds the report.

    python benchmarks/calo_fidelity.py --out runs/fidelity                  # ~30 min Geant4 + training
    python benchmarks/calo_fidelity.py --out runs/fidelity-gpu --device cuda --train-steps 20000
    python benchmarks/calo_fidelity.py --quick --out /tmp/fid               # a few minutes, smoke level
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "configs" / "calorimeter" / "quickstart.yaml"
HEADLINE = ("auc_low_level", "auc_high_level", "jsd_low_level", "jsd_high_level", "fpd_x1e3", "kpd_x1e3",
            "mean_separation_power", "precision", "recall", "density", "coverage",
            # the mean-profile bars (surrogate.domains.calorimeter.profiles), in %
            "longitudinal_max_dev_pct", "radial_max_dev_pct", "width_x_max_dev_pct", "width_y_max_dev_pct",
            "width_r_max_dev_pct", "response_mean_dev_pct", "response_std_dev_pct")


def _args() -> Any:
    p = _common.parser(__doc__.split("\n\n")[0], __doc__.split("\n\n", 2)[2])
    p.add_argument("--out", type=Path, required=True, help="run folder (continued if it exists)")
    p.add_argument("--sim-minutes", type=float, default=30.0, help="Geant4 budget in wall minutes (default 30)")
    p.add_argument("--workers", type=int, default=2, help="Geant4 worker processes = CPU cores (default 2)")
    p.add_argument("--e-min-mev", type=float, default=1000.0, help="incident energies log-uniform from ...")
    p.add_argument("--e-max-mev", type=float, default=10000.0, help="... to (MeV; default the quickstart's)")
    p.add_argument("--pilot", type=int, default=200, help="showers of the pilot that measures Geant4's cost")
    p.add_argument("--max-showers", type=int, default=100_000, help="cap on the sample (default 100k, DS2's)")
    p.add_argument("--train-steps", type=int, default=0, help="GAN steps (default: the quickstart's, scaled "
                                                              "with the sample to the same number of epochs)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="any other config override, e.g. --set train.loss=hinge")
    return p.parse_args()


def _pilot_ms_per_shower(args: Any) -> float:
    """Geant4 CPU ms per shower over the energy range, from a pilot sample simulated apart."""
    from surrogate.config import load_config
    from surrogate.domains import get_domain

    cfg = load_config(QUICKSTART, [f"simulate.n_events={args.pilot}", f"simulate.e_min_mev={args.e_min_mev}",
                                   f"simulate.e_max_mev={args.e_max_mev}", f"simulate.n_workers={args.workers}",
                                   f"simulate.shard_events={max(1, args.pilot // (2 * args.workers))}",
                                   f"simulate.seed={args.seed + 1000}"])
    with tempfile.TemporaryDirectory() as tmp:
        summary = get_domain("calorimeter").simulate(cfg.simulate, Path(tmp) / "pilot.h5", progress=False)
    return float(summary["ms_per_shower"])


def main() -> int:
    args = _args()
    from surrogate import stages
    from surrogate.config import load_config

    base = load_config(QUICKSTART)
    t0 = time.perf_counter()
    ms = _pilot_ms_per_shower(args)
    budget = args.sim_minutes * 60.0 * args.workers
    n_showers = int(min(args.max_showers, max(1000, budget / (ms / 1e3))))
    if args.quick:
        n_showers = min(n_showers, 1500)
    n_train = round(n_showers * (1 - base.prepare.val_fraction - base.prepare.test_fraction))
    qs_train = round(base.simulate.n_events * (1 - base.prepare.val_fraction - base.prepare.test_fraction))
    steps = args.train_steps or max(200, round(base.train.steps * n_train / qs_train))
    if args.quick:
        steps = min(steps, 200)
    overrides = [
        f"simulate.n_events={n_showers}", f"simulate.e_min_mev={args.e_min_mev}",
        f"simulate.e_max_mev={args.e_max_mev}", f"simulate.n_workers={args.workers}",
        f"simulate.seed={args.seed}", f"prepare.chunk_events={min(2048, max(64, n_showers // 16))}",
        f"train.steps={steps}", f"train.device={args.device}",
        # the full protocol: the challenge's classifier and FPD/KPD sizes (capped by the test split)
        "validate.classifier_hidden=2048", "validate.classifier_epochs=50", "validate.fpd_min_samples=10000",
        "validate.kpd_batches=10", "validate.kpd_batch_size=10000", f"validate.seed={args.seed}",
        *args.overrides]
    cfg = load_config(QUICKSTART, overrides)
    args.out.mkdir(parents=True, exist_ok=True)
    results = stages.run_all(cfg, args.out, progress=not args.quick)
    wall = time.perf_counter() - t0
    by_stage = {r.stage: r for r in results}
    report = json.loads((args.out / "validate" / "metrics.json").read_text())
    columns = {"floor (Geant4 vs Geant4)": report.get("floor", {}), "GAN": report["metrics"],
               **{f"{name}": values for name, values in report.get("baselines", {}).items()}}
    rows = [{"metric": name, **{title: col.get(name) for title, col in columns.items()}} for name in HEADLINE
            if any(name in col for col in columns.values())]
    classifier = report.get("classifier", {})
    comparison = report.get("comparison", {})
    print(f"Geant4: {ms:.1f} CPU ms per shower at {args.e_min_mev:g}-{args.e_max_mev:g} MeV (pilot of "
          f"{args.pilot}); budget {args.sim_minutes:g} min x {args.workers} cores -> {n_showers} showers")
    print(f"train: {steps} steps in {by_stage['train'].seconds:.0f} s on {args.device}"
          f"{' (kept from an earlier call)' if by_stage['train'].kept else ''}")
    print(f"validate: {comparison.get('n_per_column', '?')} events per column; floor: "
          f"{comparison.get('floor_method', '?')}")
    _common.print_table("every protocol metric (AUC/JSD: challenge-sized classifier; FPD, KPD x 1e3)", rows,
                        ["metric", *columns])
    print(f"classifier: {json.dumps(classifier)[:400]}")
    print(f"verdict: {'PASS' if report['passed'] else 'FAIL'}"
          + "".join(f"\n  {failure}" for failure in report.get("failures", []))
          + f"\nreport: {args.out / 'validate' / 'report.html'}")
    _common.print_summary("calo_fidelity", args, {k: {m: v.get(m) for m in HEADLINE} for k, v in columns.items()},
                          geant4_ms_per_shower=ms, n_showers=n_showers, train_steps=steps,
                          stage_seconds={r.stage: r.seconds for r in results}, wall_seconds=wall,
                          passed=report["passed"], classifier=classifier, comparison=comparison)
    return 0


if __name__ == "__main__":
    sys.exit(main())
