"""The pipeline stages: ``run_<stage>(cfg, run_dir, ...) -> StageResult``.

These are the only entry points the CLI and ``pipelines/`` call. A run folder holds one subfolder per
stage; each stage refuses to write into a subfolder that already exists, and removes what it created if
it fails, so outputs are never overwritten and never partial. Stage inputs default to the previous
stage's outputs in the same run folder:

    <run>/simulate/showers.h5        reference events (the domain's native layout)
    <run>/prepare/store.h5           transformed train/val/test splits + transform.json,
                 reference_val.h5, reference_test.h5   (native layout, physical units)
    <run>/train/checkpoints/last.pt  full training state; train/generator.pt the exported EMA generator
    <run>/generate/generated.h5      surrogate events for the test split's conditions
                  baseline_<name>.h5  baselines (e.g. GFlash) for the same conditions, if any
    <run>/validate/report.html       metrics beside the floor and baselines, plots, verdict;
                  metrics.json, observables_<sample>.nc (labelled features and profiles)
    <run>/mlflow.db, mlartifacts/    the MLflow store (unless a tracking server is used)
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from surrogate.config import Config, config_to_dict, dump_config
from surrogate.domains import get_domain
from surrogate.errors import InputError, OutputExistsError, SurrogateError

STAGES = ("simulate", "prepare", "train", "generate", "validate")


@dataclass(frozen=True)
class StageResult:
    stage: str
    out_dir: Path
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, Path] = field(default_factory=dict)
    mlflow_run_id: str = ""
    passed: bool | None = None  # validation verdict; None for other stages
    failures: tuple[str, ...] = ()  # validation: one line per threshold the metrics exceed


_log = logging.getLogger("surrogate")


def say(message: str) -> None:
    """A status line for the user (the CLI shows the ``surrogate`` logger on stderr unless --quiet)."""
    _log.info(message)


@contextlib.contextmanager
def stage_dir(run_dir: Path, stage: str) -> Iterator[Path]:
    """Create ``run_dir/stage`` (it must not exist); remove it again if the stage fails."""
    out = run_dir / stage
    if out.exists():
        raise OutputExistsError(out)
    out.mkdir(parents=True)
    try:
        yield out
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise


def open_tracker(cfg: Config, run_dir: Path) -> Any:
    """The MLflow tracker of a run folder (``cfg.tracking.uri``, else the folder's own SQLite store)."""
    from surrogate.tracking import Tracker

    return Tracker(run_dir, cfg.tracking.uri, cfg.tracking.experiment or f"surrogate-{cfg.domain}")


def _default_input(explicit: str, default: Path, what: str, how: str) -> Path:
    if explicit:
        return Path(explicit)
    if not default.exists():
        raise SurrogateError(f"{what}: not set and {default} does not exist ({how})")
    return default


# --------------------------------------------------------------------------------------------------


def run_simulate(cfg: Config, run_dir: Path, *, tracker: Any = None, progress: bool = True) -> StageResult:
    domain = get_domain(cfg.domain)
    tracker = tracker or open_tracker(cfg, run_dir)
    t0 = time.perf_counter()
    with stage_dir(run_dir, "simulate") as out, tracker.run("simulate") as mlrun:
        mlrun.log_params({"domain": cfg.domain, "simulate": config_to_dict(cfg.simulate)})
        path = out / "showers.h5"
        say(f"simulate: {cfg.simulate.n_events} events with the {cfg.domain} reference simulator -> {path}")
        metrics = domain.simulate(cfg.simulate, path, progress=progress)
        mlrun.log_metrics(metrics)
        (out / "summary.json").write_text(json.dumps(metrics, indent=2))
    return StageResult("simulate", out, time.perf_counter() - t0, metrics, {"events": path}, mlrun.run_id)


def run_prepare(cfg: Config, run_dir: Path, *, tracker: Any = None, progress: bool = True) -> StageResult:
    from surrogate.data.prepare import dask_scheduler, prepare_store

    domain = get_domain(cfg.domain)
    inputs = cfg.prepare.inputs or (str(_default_input(
        "", run_dir / "simulate" / "showers.h5", "prepare.inputs",
        "run `surrogate simulate` into this --out first, or set prepare.inputs")),)
    for path in inputs:  # layout errors surface before any output or tracking run exists
        domain.check_file(path)
    tracker = tracker or open_tracker(cfg, run_dir)
    t0 = time.perf_counter()
    with stage_dir(run_dir, "prepare") as out, tracker.run("prepare") as mlrun:
        mlrun.log_params({"domain": cfg.domain, "prepare": config_to_dict(cfg.prepare)})
        say(f"prepare: {len(inputs)} file(s) with the {cfg.prepare.scheduler} dask scheduler -> {out}")
        with dask_scheduler(cfg.prepare):
            metrics = prepare_store(domain, cfg.prepare, tuple(inputs), out, progress=progress)
        mlrun.log_metrics(metrics)
        mlrun.log_artifact(out / "transform.json")
    return StageResult("prepare", out, time.perf_counter() - t0, dict(metrics), {"store": out / "store.h5"},
                       mlrun.run_id)


def _in_training_evaluator(cfg: Config, store_dir: Path) -> Any:
    """The cheap validation metrics on the validation split, computed by the same code as `validate`."""
    from surrogate.validation import quick_metrics

    domain = get_domain(cfg.domain)
    ref_path = store_dir / "reference_val.h5"
    if cfg.train.validate_every <= 0 or not ref_path.exists():
        return None
    ref_data, ref_cond = domain.read_events(ref_path, cfg.train.validate_events)

    def evaluate(sample: Any, step: int) -> dict[str, float]:
        gen = sample(ref_cond)
        # cfg.validate: the same seed, FPD, KPD and PRDC settings as the `validate` stage.
        return {f"val_{k}": v for k, v in
                quick_metrics(domain, ref_data, ref_cond, gen, ref_cond, cfg.validate).items()}

    return evaluate


def run_train(cfg: Config, run_dir: Path, *, tracker: Any = None, progress: bool = True) -> StageResult:
    from surrogate.generation import export_generator
    from surrogate.training.checkpoint import load_checkpoint
    from surrogate.training.loop import train

    store_dir = _default_input("", run_dir / "prepare", "train: prepared store",
                               "run `surrogate prepare` into this --out first")
    if not (store_dir / "store.h5").exists():
        raise SurrogateError(f"train: {store_dir / 'store.h5'} does not exist (run `surrogate prepare` first)")
    tracker = tracker or open_tracker(cfg, run_dir)
    t0 = time.perf_counter()
    with stage_dir(run_dir, "train") as out, tracker.run("train") as mlrun:
        mlrun.log_params({"domain": cfg.domain, "train": config_to_dict(cfg.train)})
        (out / "config.yaml").write_text(dump_config(cfg))
        say(f"train: {cfg.train.steps} steps, loss {cfg.train.loss} -> {out}")
        result = train(cfg, store_dir, out, log_metrics=mlrun.log_metrics,
                       evaluate=_in_training_evaluator(cfg, store_dir), progress=progress)
        generator = export_generator(load_checkpoint(result.checkpoint), out / "generator.pt")
        mlrun.log_artifact(generator, "model")
        mlrun.log_artifact(out / "config.yaml")
        metrics = {"steps": float(result.steps), "seconds": result.seconds,
                   "steps_per_second": result.steps_per_second}
        mlrun.log_metrics(metrics)
        mlrun.set_tags({"device": result.device, "checkpoint": result.checkpoint})
    return StageResult("train", out, time.perf_counter() - t0, metrics,
                       {"checkpoint": result.checkpoint, "generator": generator}, mlrun.run_id)


def run_generate(cfg: Config, run_dir: Path, *, tracker: Any = None, progress: bool = True) -> StageResult:
    import numpy as np

    from surrogate.generation import Surrogate, read_conditions
    from surrogate.tracking import download_model

    domain = get_domain(cfg.domain)
    gcfg = cfg.generate
    from_mlflow = gcfg.checkpoint.startswith(("runs:/", "models:/", "mlflow-artifacts:/"))
    ckpt_path = Path(gcfg.checkpoint)
    if not from_mlflow:
        ckpt_path = _default_input(gcfg.checkpoint, run_dir / "train" / "checkpoints" / "last.pt",
                                   "generate.checkpoint", "run `surrogate train` first or set it")
        if not ckpt_path.is_file():
            raise InputError(ckpt_path, None, "no such checkpoint file (generate.checkpoint)")
    cond_path: Path | None = None  # None: the conditions are gcfg.conditions
    if gcfg.conditions:
        if len(gcfg.conditions) % domain.n_cond:
            raise SurrogateError(f"generate.conditions: {len(gcfg.conditions)} values, expected a multiple of "
                                 f"{domain.n_cond} (one row of {domain.n_cond} per condition)")
        domain.check_conditions(np.asarray(gcfg.conditions, dtype=np.float32).reshape(-1, domain.n_cond),
                                "generate.conditions")
    else:
        cond_path = _default_input(gcfg.energies_from, run_dir / "prepare" / "reference_test.h5",
                                   "generate.energies_from", "set generate.conditions or energies_from")
        n_available = domain.check_file(cond_path)
        if gcfg.n_events > n_available:
            raise SurrogateError(f"generate.n_events: {gcfg.n_events} requested but {cond_path} "
                                 f"holds {n_available} conditions")
    tracker = tracker or open_tracker(cfg, run_dir)
    t0 = time.perf_counter()
    with stage_dir(run_dir, "generate") as out, tracker.run("generate") as mlrun:
        mlrun.log_params({"domain": cfg.domain, "generate": config_to_dict(gcfg)})
        if from_mlflow:
            ckpt_path = download_model(gcfg.checkpoint, out / "model", tracker.uri)
        sur = Surrogate.from_checkpoint(ckpt_path, device=gcfg.device, use_ema=gcfg.use_ema)
        if cond_path is None:
            per = gcfg.n_events or 1
            rows = np.asarray(gcfg.conditions, dtype=np.float32).reshape(-1, domain.n_cond)
            cond = np.repeat(rows, per, axis=0)  # each condition row n_events times
            source = f"conditions {list(gcfg.conditions)} x {per}"
        else:
            cond = read_conditions(domain, cond_path)
            cond = cond[:gcfg.n_events] if gcfg.n_events else cond
            source = str(cond_path)
        path = out / "generated.h5"
        say(f"generate: {len(cond)} events from {ckpt_path} -> {path}")
        blocks = sur.iter_generate(cond, seed=gcfg.seed, batch_size=gcfg.batch_size)
        t_gen = time.perf_counter()
        domain.write_events(path, _progress(blocks, len(cond), gcfg.batch_size, progress, "generate"),
                            len(cond), {"generator": str(ckpt_path), "generator_step": sur.step,
                                        "seed": gcfg.seed, "use_ema": gcfg.use_ema, "conditions_from": source,
                                        "simulator": "surrogate GAN"})
        seconds = time.perf_counter() - t_gen
        metrics = {"n_events": float(len(cond)), "seconds": seconds,
                   "ms_per_event": 1e3 * seconds / max(len(cond), 1)}
        mlrun.log_metrics(metrics)
    return StageResult("generate", out, time.perf_counter() - t0, metrics, {"events": path}, mlrun.run_id)


def _progress(blocks: Iterator[Any], total: int, batch: int, enabled: bool, desc: str) -> Iterator[Any]:
    from tqdm import tqdm

    with tqdm(total=total, desc=desc, unit="ev", disable=not enabled, file=sys.stderr) as bar:
        for block in blocks:
            yield block
            bar.update(len(block[0]))


def validate_inputs(cfg: Config, run_dir: Path) -> tuple[Path, Path, Path | None, dict[str, Path]]:
    """(generated, reference, reference_b or None = split the reference, baselines by name) of a validation.

    Defaults in a run folder: generate/generated.h5 against prepare/reference_test.h5; the floor from
    prepare/reference_val.h5 (an independent Geant4 sample of the same settings) when the reference is
    the default test split, else from two halves of the reference; baselines: ``validate.baselines``
    plus, with ``validate.discover_baselines``, every generate/baseline_<name>.h5.
    """
    from surrogate.validation.report import baseline_name

    vcfg = cfg.validate
    gen = _default_input(vcfg.generated, run_dir / "generate" / "generated.h5", "validate.generated",
                         "run `surrogate generate` first or set it")
    ref = _default_input(vcfg.reference, run_dir / "prepare" / "reference_test.h5",
                         "validate.reference", "run `surrogate prepare` first or set it")
    ref_b: Path | None = Path(vcfg.reference_b) if vcfg.reference_b else None
    if ref_b is None and not vcfg.reference and (run_dir / "prepare" / "reference_val.h5").exists():
        ref_b = run_dir / "prepare" / "reference_val.h5"
    found = sorted((run_dir / "generate").glob("baseline_*.h5")) if vcfg.discover_baselines else []
    baselines: dict[str, Path] = {}
    for path in [Path(p) for p in vcfg.baselines] + found:
        name = baseline_name(path)
        if name in baselines and baselines[name].resolve() != path.resolve():
            raise SurrogateError(f"validate.baselines: two baselines named {name!r}: {baselines[name]} and {path}")
        baselines[name] = path
    return gen, ref, ref_b, baselines


def run_validate(cfg: Config, run_dir: Path, *, tracker: Any = None, progress: bool = True) -> StageResult:
    from surrogate.validation import validate_files

    domain = get_domain(cfg.domain)
    gen, ref, ref_b, baselines = validate_inputs(cfg, run_dir)
    for path in (gen, ref, *([ref_b] if ref_b else []), *baselines.values()):
        domain.check_file(path)
    tracker = tracker or open_tracker(cfg, run_dir)
    t0 = time.perf_counter()
    with stage_dir(run_dir, "validate") as out, tracker.run("validate") as mlrun:
        mlrun.log_params({"domain": cfg.domain, "validate": config_to_dict(cfg.validate),
                          "generated": str(gen), "reference": str(ref),
                          "reference_b": str(ref_b) if ref_b else "half of the reference",
                          "baselines": ", ".join(f"{k}={v}" for k, v in baselines.items()) or "none"})
        floor_from = ref_b or f"two halves of {ref}"
        say(f"validate: {gen} against {ref}; floor from {floor_from}"
            + (f"; baselines {', '.join(baselines)}" if baselines else "") + f" -> {out}")
        report = validate_files(domain, gen, ref, cfg.validate, out, reference_b_path=ref_b,
                                baselines=baselines, progress=progress)
        (out / "config.yaml").write_text(dump_config(cfg))
        metrics = report.flat_metrics()
        mlrun.log_metrics(metrics)
        mlrun.set_tags({"verdict": "pass" if report.passed else "fail",
                        "failures": "; ".join(report.failures) or "none"})
        mlrun.log_artifacts(out)
    return StageResult("validate", out, time.perf_counter() - t0, metrics,
                       {"report": Path(report.report_path)}, mlrun.run_id, report.passed,
                       tuple(report.failures))


RUNNERS = {"simulate": run_simulate, "prepare": run_prepare, "train": run_train,
           "generate": run_generate, "validate": run_validate}


def run_all(cfg: Config, run_dir: Path, *, progress: bool = True,
            stages: tuple[str, ...] = STAGES) -> list[StageResult]:
    """Every stage in order into one run folder, as nested MLflow runs under one parent run."""
    tracker = open_tracker(cfg, run_dir)
    results: list[StageResult] = []
    with tracker.run(f"run-{run_dir.name}", tags={"surrogate.run_dir": str(run_dir)}) as parent:
        parent.log_params({"domain": cfg.domain})
        parent.log_text(dump_config(cfg), "config.yaml")
        for stage in stages:
            result = RUNNERS[stage](cfg, run_dir, tracker=tracker, progress=progress)
            say(f"{stage}: done in {result.seconds:.1f} s")
            parent.log_metrics({f"{stage}_seconds": result.seconds})
            results.append(result)
        verdict = results[-1].passed
        if verdict is not None:
            parent.set_tags({"verdict": "pass" if verdict else "fail"})
            # The summaries of every column (surrogate, floor_, baselines); per-histogram ones stay on the stage run.
            parent.log_metrics({k: v for k, v in results[-1].metrics.items() if "sep_" not in k})
    return results
