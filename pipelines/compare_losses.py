"""Train one surrogate per GAN objective on the same reference sample and compare their validations.

    python pipelines/compare_losses.py configs/calorimeter/quickstart.yaml --out runs/losses
    python pipelines/compare_losses.py configs/calorimeter/quickstart.yaml --out runs/losses \\
        --losses wgan_gp hinge --set train.steps=3000

Simulates and prepares once (``<out>/simulate``, ``<out>/prepare``), then for each objective trains,
generates and validates in ``<out>/<loss>/`` with every other setting equal, so the only difference
between the rows is the objective. Everything is tracked in ``<out>/mlflow.db`` (or ``--tracking-uri``):
one parent run ``compare-<folder>`` with a nested run per objective, each holding its stage runs. The
table of headline metrics goes to stdout and to ``<out>/comparison.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from surrogate import stages
from surrogate.config import LOSSES, dump_config, load_config
from surrogate.errors import OutputExistsError, SurrogateError

HEADLINE = ("auc_low_level", "auc_high_level", "fpd_x1e3", "kpd_x1e3", "mean_separation_power")


def compare(config: Path, out: Path, losses: tuple[str, ...], overrides: list[str], tracking_uri: str,
            progress: bool) -> dict[str, dict[str, float]]:
    base = load_config(config, overrides)
    if tracking_uri:
        base = dataclasses.replace(base, tracking=dataclasses.replace(base.tracking, uri=tracking_uri))
    if out.exists() and any(out.iterdir()):
        raise OutputExistsError(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(dump_config(base))
    tracker = stages.open_tracker(base, out)
    table: dict[str, dict[str, float]] = {}
    with tracker.run(f"compare-{out.name}", tags={"surrogate.run_dir": str(out)}) as parent:
        parent.log_params({"losses": ",".join(losses)})
        stages.run_simulate(base, out, tracker=tracker, progress=progress)
        stages.run_prepare(base, out, tracker=tracker, progress=progress)
        for loss in losses:
            cfg = dataclasses.replace(base, train=dataclasses.replace(base.train, loss=loss))
            run_dir = out / loss
            run_dir.mkdir()
            # train, generate and validate read <run>/prepare: every objective sees the same store
            (run_dir / "prepare").symlink_to(Path("..") / "prepare", target_is_directory=True)
            with tracker.run(loss, tags={"train.loss": loss}) as per_loss:
                for stage in ("train", "generate", "validate"):
                    result = stages.RUNNERS[stage](cfg, run_dir, tracker=tracker, progress=progress)
                per_loss.log_metrics({k: v for k, v in result.metrics.items() if k in HEADLINE})
                per_loss.set_tags({"verdict": "pass" if result.passed else "fail"})
            table[loss] = {k: result.metrics[k] for k in HEADLINE} | {"passed": float(bool(result.passed))}
    (out / "comparison.json").write_text(json.dumps(table, indent=2))
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path, help="YAML config, e.g. configs/calorimeter/quickstart.yaml")
    parser.add_argument("--out", type=Path, required=True, help="new folder for the comparison")
    parser.add_argument("--losses", nargs="+", choices=LOSSES, default=list(LOSSES), help="objectives to train")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--tracking-uri", default="", help="MLflow tracking URI (default: <out>/mlflow.db)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    try:
        table = compare(args.config, args.out, tuple(args.losses), args.overrides, args.tracking_uri,
                        progress=not args.quiet)
    except SurrogateError as exc:
        print(f"compare_losses: error: {exc}", file=sys.stderr)
        return 2
    print(f"{'loss':<14}" + "".join(f"{k:>24}" for k in HEADLINE) + "  verdict")
    for loss, row in table.items():
        print(f"{loss:<14}" + "".join(f"{row[k]:>24.4g}" for k in HEADLINE)
              + f"  {'PASS' if row['passed'] else 'FAIL'}")
    print(f"comparison: {args.out / 'comparison.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
