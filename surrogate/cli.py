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
examples (<domain> is one of: {domains}; each has configs/<domain>/):
  surrogate run configs/<domain>/quickstart.yaml
      every stage, reference simulator to validation report, in a new folder under runs/
  surrogate run configs/<domain>/quickstart.yaml --out runs/mine --set train.loss=hinge
  surrogate simulate configs/<domain>/quickstart.yaml --out runs/mine --set simulate.n_events=500
  surrogate prepare configs/<domain>/prepare.yaml --out runs/big --set 'prepare.inputs=[my_events.hdf5]'
  surrogate train configs/<domain>/train.yaml --out runs/big --set train.steps=20000
  surrogate generate configs/<domain>/quickstart.yaml --out runs/big --set 'generate.conditions=[<one row>]'
  surrogate validate configs/<domain>/quickstart.yaml --out runs/big
  surrogate train configs/<domain>/quickstart.yaml --dry-run      print the resolved config

Stages read their inputs from the previous stage's folder inside --out unless the config names files;
without --out, a stage that needs a previous one continues the newest runs/<config>-* folder where that
stage finished. Outputs are never overwritten: a stage refuses a folder that already holds its finished
output. `surrogate run` into an existing run folder keeps finished stages whose settings and inputs are
unchanged, redoes stale ones (the old folder is kept as <stage>.stale-<n>) and resumes interrupted ones.
Exit status: 0 success, 1 validation verdict FAIL, 2 bad input or config, 3 unexpected error (a bug:
one line on stderr, the traceback in <out>/logs/), 130 interrupted.
"""

# Exit codes, one meaning each: scripts (and `make quickstart`) tell a verdict from a crash.
EXIT_OK, EXIT_FAIL, EXIT_BAD_INPUT, EXIT_CRASH, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
LOG_DIR = "logs"  # inside the run folder: tracebacks of unexpected errors

STAGE_HELP = {
    "simulate": "run the domain's reference simulator into <out>/simulate",
    "prepare": "check, split and transform HDF5 events with Dask into a training store in <out>/prepare",
    "train": "train the conditional GAN on <out>/prepare; checkpoints in <out>/train",
    "generate": "sample the trained surrogate into <out>/generate (same layout as the reference)",
    "validate": "compare generated and reference events; report, metrics and verdict in <out>/validate",
    "run": "all stages in order into one new run folder",
}


def build_parser() -> argparse.ArgumentParser:
    from surrogate.domains import available

    examples = EXAMPLES.format(domains=", ".join(available()))
    parser = argparse.ArgumentParser(
        prog="surrogate", description="Fast GAN surrogates for slow physics simulators, with tracked validation.",
        epilog=examples, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"surrogate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in STAGE_HELP.items():
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=examples,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("config", type=Path, help="YAML config, e.g. configs/<domain>/quickstart.yaml")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, e.g. --set train.steps=100 (repeatable)")
        p.add_argument("--out", type=Path, default=None,
                       help="run folder (default: a new runs/<config name>-<date>-<time>, or for a stage that "
                            "needs a previous one the newest such folder where it finished)")
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
            return EXIT_OK
        run_dir = args.out or _default_run_dir(args.command, args.config, cfg)
        if run_dir.exists() and not run_dir.is_dir():
            run_dir, bad = None, run_dir  # not ours to clean up or to log into
            raise SurrogateError(f"--out: {bad} is a file; expected a run folder (new or existing)")
        # A folder that did not exist, or holds only the logs of a crash, is this command's to clean up.
        created = not run_dir.exists() or all(p.name == LOG_DIR for p in run_dir.iterdir())
        if args.command == "run":
            return _run_all(cfg, run_dir, progress=not args.quiet)
        from surrogate import stages

        run_dir.mkdir(parents=True, exist_ok=True)
        result = stages.RUNNERS[args.command](cfg, run_dir, progress=not args.quiet)
        print(f"{args.command}: {result.out_dir} ({result.seconds:.1f} s)")
        if result.passed is not None:
            _print_validation(cfg, result.metrics)
            print(f"verdict: {'PASS' if result.passed else 'FAIL'}; report: {result.outputs['report']}")
            for failure in result.failures:
                print(f"  {failure}")
            return EXIT_OK if result.passed else EXIT_FAIL
        return EXIT_OK
    except SurrogateError as exc:
        _cleanup(run_dir, created)
        print(f"surrogate {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        _cleanup(run_dir, created)
        print(f"surrogate {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug, not a verdict: one line here, the whole traceback in a log file
        _cleanup(run_dir, created)
        log = _write_traceback(run_dir, args.command)
        print(f"surrogate {args.command}: unexpected error: {type(exc).__name__}: {_first_line(exc)} "
              f"(traceback in {log}; please report it)", file=sys.stderr)
        return EXIT_CRASH


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else "(no message)"


def _write_traceback(run_dir: Path | None, command: str) -> Path:
    """Write the current exception's traceback to ``<run_dir>/logs/`` (else the temp dir); return the path."""
    import tempfile
    import traceback

    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder = run_dir / LOG_DIR if run_dir is not None else Path(tempfile.gettempdir())
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        folder = Path(tempfile.gettempdir())
    path = folder / f"surrogate-{command}-{stamp}-{os.getpid()}.traceback.txt"
    path.write_text(f"surrogate {__version__} {command} ({' '.join(sys.argv)})\n{traceback.format_exc()}")
    return path


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

    if run_dir.exists() and not _is_run_folder(run_dir):
        raise OutputExistsError(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    # The resolved options are written before any work starts, so a run folder always says what it ran;
    # a continued run whose options differ keeps the earlier file as config.previous-<n>.yaml.
    config_file = run_dir / "config.yaml"
    text = dump_config(cfg)
    if config_file.exists() and config_file.read_text() != text:
        n = 1
        while (run_dir / f"config.previous-{n}.yaml").exists():
            n += 1
        config_file.rename(run_dir / f"config.previous-{n}.yaml")
    config_file.write_text(text)
    results = stages.run_all(cfg, run_dir, progress=progress)
    print(f"run folder: {run_dir}")
    for r in results:
        print(f"  {r.stage:<9} {r.seconds:7.1f} s  {r.out_dir}{'  (kept)' if r.kept else ''}")
    final = results[-1]
    metrics = final.metrics
    _print_validation(cfg, metrics)
    print(f"verdict: {'PASS' if final.passed else 'FAIL'}")
    for failure in final.failures:
        print(f"  {failure}")
    print(f"report: {final.outputs['report']}")
    from surrogate.tracking import default_uri, ui_hint

    print(f"MLflow UI: {ui_hint(cfg.tracking.uri or default_uri(run_dir))}")
    return EXIT_OK if final.passed else EXIT_FAIL


RUNS_ROOT = Path("runs")  # where run folders go without --out


def _default_run_dir(command: str, config: Path, cfg: Config) -> Path:
    """Without --out: a new folder for work that starts a run, else the run folder this stage belongs to.

    A stage that reads a previous stage's output continues the newest run of the same config whose
    previous stage has finished (runs/<config>-<date>-<time>); with none, it asks for --out.
    """
    from surrogate import runfolder

    needs = {"prepare": "simulate" if not cfg.prepare.inputs else "",
             "train": "prepare",
             "generate": "" if cfg.generate.checkpoint and (cfg.generate.conditions or cfg.generate.conditions_from)
             else "train",
             "validate": "" if cfg.validate.generated and cfg.validate.reference else "generate"}.get(command, "")
    if needs:
        found = runfolder.find_run_dir(config, RUNS_ROOT, needs)
        logging.getLogger("surrogate").info(f"{command}: continuing the run folder {found} (no --out given)")
        return found
    return RUNS_ROOT / f"{config.stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def _is_run_folder(path: Path) -> bool:
    """Empty, or made by ``surrogate run`` (its config.yaml, stage folders, tracking store, logs)."""
    from surrogate.stages import STAGES

    names = {p.name for p in path.iterdir()}
    return not (names - {LOG_DIR}) or "config.yaml" in names or bool(names & set(STAGES))


def _print_validation(cfg: Config, metrics: dict[str, float]) -> None:
    """The domain's headline metrics as columns: floor, surrogate and every baseline (names as in MLflow)."""
    from surrogate.domains import domain_for
    from surrogate.validation.compute import headline_names

    keys = [k for k in headline_names(domain_for(cfg).metrics) if not k.endswith("_err")
            and k not in ("max_separation_power", "jsd_low_level", "jsd_high_level", "jsd_cnn")]
    baselines = sorted(k.removesuffix("_fpd_x1e3") for k in metrics
                       if k.endswith("_fpd_x1e3") and k != "floor_fpd_x1e3")
    columns = [("floor", "floor_"), ("surrogate", ""), *((name, f"{name}_") for name in baselines)]
    first = max([22, *(len(k) + 1 for k in keys if k in metrics)])
    width = max([12, *(len(name) + 2 for name, _ in columns)])
    print(f"{'validation':<{first}}" + "".join(f"{name:>{width}}" for name, _ in columns))
    for key in keys:
        if key in metrics:
            print(f"{key:<{first}}"
                  + "".join(f"{metrics.get(prefix + key, float('nan')):>{width}.4g}" for _, prefix in columns))


def _cleanup(run_dir: Path | None, created: bool) -> None:
    """A run folder this invocation created and that holds no finished stage is removed on failure.

    Earlier crashes' tracebacks (``<run>/logs/``) are kept, and the CLI writes a new one there after an
    unexpected error: the logs are the one thing a failed command leaves.
    """
    if run_dir is None or not created or not run_dir.exists():
        return
    from surrogate.stages import STAGES

    if any((run_dir / s).exists() for s in STAGES):
        return
    for child in run_dir.iterdir():
        if child.is_dir() and child.name != LOG_DIR:
            shutil.rmtree(child)
        elif not child.is_dir():
            child.unlink()
    if not any(run_dir.iterdir()):
        run_dir.rmdir()


if __name__ == "__main__":
    sys.exit(main())
