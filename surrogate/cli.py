"""The ``surrogate`` command: parse arguments, load the config, call a stage. Nothing else lives here."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from surrogate import __version__

if TYPE_CHECKING:
    from surrogate.config import Config

EXAMPLES = """\
examples:
  surrogate run configs/calorimeter/quickstart.yaml
      every stage, Geant4 reference to validation report, in a new folder under runs/
  surrogate run configs/calorimeter/quickstart.yaml --out runs/mine --set train.loss=hinge
  surrogate simulate configs/calorimeter/quickstart.yaml --out runs/mine --set simulate.n_events=500
  surrogate prepare configs/calorimeter/prepare.yaml --out runs/ds2 --set 'prepare.inputs=[dataset_2_1.hdf5]'
  surrogate train configs/calorimeter/train.yaml --out runs/ds2 --set train.steps=20000
  surrogate generate configs/calorimeter/quickstart.yaml --out runs/ds2 --set 'generate.conditions=[50000]'
  surrogate validate configs/calorimeter/quickstart.yaml --out runs/ds2
  surrogate train configs/calorimeter/quickstart.yaml --dry-run      print the resolved config

Stages read their inputs from the previous stage's folder inside --out unless the config names files.
Outputs are never overwritten: a stage refuses an --out that already holds its folder.
Exit status: 0 success, 1 validation verdict FAIL, 2 bad input or config.
"""

STAGE_HELP = {
    "simulate": "run the reference simulator (Geant4 for the calorimeter) into <out>/simulate",
    "prepare": "check, split and transform HDF5 events with Dask into a training store in <out>/prepare",
    "train": "train the conditional GAN on <out>/prepare; checkpoints in <out>/train",
    "generate": "sample the trained surrogate into <out>/generate (same layout as the reference)",
    "validate": "compare generated and reference events; report, metrics and verdict in <out>/validate",
    "run": "all stages in order into one new run folder",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="surrogate", description="Fast GAN surrogates for slow physics simulators, with tracked validation.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"surrogate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in STAGE_HELP.items():
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=EXAMPLES,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("config", type=Path, help="YAML config, e.g. configs/calorimeter/quickstart.yaml")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, e.g. --set train.steps=100 (repeatable)")
        p.add_argument("--out", type=Path, default=None,
                       help="run folder (default: runs/<config name>-<date>-<time>)")
        p.add_argument("--tracking-uri", default=None,
                       help="MLflow tracking URI (default: sqlite:///<out>/mlflow.db)")
        p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
        p.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    args = build_parser().parse_args(argv)
    _show_status_lines(quiet=args.quiet)
    from surrogate.config import dump_config, load_config
    from surrogate.errors import SurrogateError

    run_dir: Path | None = None
    created = False
    try:
        cfg = load_config(args.config, args.overrides)
        if args.tracking_uri:
            cfg = dataclasses.replace(cfg, tracking=dataclasses.replace(cfg.tracking, uri=args.tracking_uri))
        if args.dry_run:
            sys.stdout.write(dump_config(cfg))
            return 0
        run_dir = args.out or Path("runs") / f"{args.config.stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        created = not run_dir.exists()
        if args.command == "run":
            return _run_all(cfg, run_dir, progress=not args.quiet)
        from surrogate import stages

        run_dir.mkdir(parents=True, exist_ok=True)
        result = stages.RUNNERS[args.command](cfg, run_dir, progress=not args.quiet)
        print(f"{args.command}: {result.out_dir} ({result.seconds:.1f} s)")
        if result.passed is not None:
            _print_validation(result.metrics)
            print(f"verdict: {'PASS' if result.passed else 'FAIL'}; report: {result.outputs['report']}")
            for failure in result.failures:
                print(f"  {failure}")
            return 0 if result.passed else 1
        return 0
    except SurrogateError as exc:
        _cleanup(run_dir, created)
        print(f"surrogate {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        _cleanup(run_dir, created)
        print(f"surrogate {args.command}: interrupted", file=sys.stderr)
        return 130


class _StatusHandler(logging.StreamHandler):
    """Plain lines on whatever ``sys.stderr`` is at the time (it is swapped by notebooks and pytest)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _show_status_lines(*, quiet: bool) -> None:
    """Stages report what they do on the ``surrogate`` logger: shown on stderr unless --quiet."""
    logger = logging.getLogger("surrogate")
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    if not any(isinstance(h, _StatusHandler) for h in logger.handlers):
        logger.addHandler(_StatusHandler())
        logger.propagate = False


def _run_all(cfg: Config, run_dir: Path, *, progress: bool) -> int:
    from surrogate import stages
    from surrogate.config import dump_config
    from surrogate.errors import OutputExistsError

    if run_dir.exists() and any(run_dir.iterdir()):
        raise OutputExistsError(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    # The resolved options are written before any work starts, so a run folder always says what it ran.
    (run_dir / "config.yaml").write_text(dump_config(cfg))
    results = stages.run_all(cfg, run_dir, progress=progress)
    print(f"run folder: {run_dir}")
    for r in results:
        print(f"  {r.stage:<9} {r.seconds:7.1f} s  {r.out_dir}")
    final = results[-1]
    metrics = final.metrics
    _print_validation(metrics)
    print(f"verdict: {'PASS' if final.passed else 'FAIL'}")
    for failure in final.failures:
        print(f"  {failure}")
    print(f"report: {final.outputs['report']}")
    from surrogate.tracking import default_uri, ui_hint

    print(f"MLflow UI: {ui_hint(cfg.tracking.uri or default_uri(run_dir))}")
    return 0 if final.passed else 1


def _print_validation(metrics: dict[str, float]) -> None:
    """The headline metrics as columns: floor, surrogate and every baseline (names as logged to MLflow)."""
    keys = ("auc_low_level", "auc_high_level", "fpd_x1e3", "kpd_x1e3", "mean_separation_power", "precision",
            "recall", "density", "coverage")
    baselines = sorted(k.removesuffix("_fpd_x1e3") for k in metrics
                       if k.endswith("_fpd_x1e3") and k != "floor_fpd_x1e3")
    columns = [("floor", "floor_"), ("surrogate", ""), *((name, f"{name}_") for name in baselines)]
    print(f"{'validation':<22}" + "".join(f"{name:>12}" for name, _ in columns))
    for key in keys:
        if key in metrics:
            print(f"{key:<22}" + "".join(f"{metrics.get(prefix + key, float('nan')):>12.4g}" for _, prefix in columns))


def _cleanup(run_dir: Path | None, created: bool) -> None:
    """A run folder this invocation created and that holds no finished stage is removed on failure."""
    if run_dir is None or not created or not run_dir.exists():
        return
    from surrogate.stages import STAGES

    if not any((run_dir / s).exists() for s in STAGES):
        shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
