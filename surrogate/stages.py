"""The pipeline stages: ``run_<stage>(cfg, run_dir, ...) -> StageResult``.

These are the only entry points the CLI and ``pipelines/`` call. A run folder holds one subfolder per
stage; each stage refuses to write into a subfolder that already exists, and removes what it created if
it fails, so outputs are never overwritten and never partial. Stage inputs default to the previous
stage's outputs in the same run folder:

    <run>/simulate/<events file>     reference events in the domain's native layout (Domain.events_file)
    <run>/prepare/store.h5           transformed train/val/test splits + transform.json,
                 reference_val.h5, reference_test.h5   (native layout, physical units)
                 reference_heldout.h5   events the domain holds out of training (if any)
    <run>/train/checkpoints/last.pt  full training state; train/generator.pt the exported EMA generator
    <run>/generate/generated.h5      surrogate events for the test split's conditions
                 generated_heldout.h5   ... and for the held-out events' conditions (if any)
                 baseline_<name>.h5, .json  classical baselines (generate.baselines) and their fitted parameters
    <run>/validate/report.html       metrics beside the floor and baselines, plots, verdict;
                  metrics.json, observables_<sample>.nc (labelled features and profiles);
                  heldout/ the same for the held-out events (validate.heldout_thresholds)
    <run>/mlflow.db, mlartifacts/    the MLflow store (unless a tracking server is used)

Each stage folder ends with ``stage.json``, its manifest (surrogate.runfolder): the stage's key (a hash
of its settings and of its inputs' contents), its outputs' SHA-256 and its metrics. ``surrogate run``
into an existing run folder keeps every finished stage whose key is unchanged, sets a stale one aside
(``<stage>.stale-<n>``) and redoes it, and resumes an interrupted one from what it kept (the simulator's
finished shards, training checkpoints).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from surrogate import runfolder
from surrogate.config import Config, config_to_dict, dump_config
from surrogate.domains import domain_for
from surrogate.errors import InputError, OutputExistsError, SurrogateError

STAGES = ("simulate", "prepare", "train", "generate", "validate")
HELDOUT_REFERENCE = "reference_heldout.h5"  # prepare's file of the events a domain holds out of training
HELDOUT_GENERATED = "generated_heldout.h5"  # generate's file for their conditions
HELDOUT_DIR = "heldout"  # validate's subfolder (and metric prefix) for them


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
    kept: bool = False  # the stage had finished with the same settings and inputs: nothing was redone


_log = logging.getLogger("surrogate")


def say(message: str) -> None:
    """A status line for the user (the CLI shows the ``surrogate`` logger on stderr unless --quiet)."""
    _log.info(message)


# What each stage's result depends on, besides its input files: these config settings. Settings that only
# say how fast or where (workers, schedulers, thread counts, logging cadence) are left out.
_RUNTIME_ONLY = {
    "simulate": ("n_workers",),
    "prepare": ("scheduler", "address", "n_workers"),
    "train": ("resume", "num_threads", "log_every", "checkpoint_every"),
    "generate": (),
    "validate": (),
}


def stage_settings(cfg: Config, stage: str) -> dict[str, Any]:
    section = config_to_dict(getattr(cfg, stage))
    return {"domain": cfg.domain,
            stage: {k: v for k, v in section.items() if k not in _RUNTIME_ONLY[stage]}}


def _kept(run_dir: Path, stage: str, key: str, *, continue_run: bool) -> StageResult | None:
    """The recorded result of a finished stage whose key is ``key``, when continuing a run; else None.

    A finished stage with another key is set aside when continuing a run, and refused otherwise
    (single-stage commands never overwrite outputs).
    """
    from surrogate import runfolder

    folder = run_dir / stage
    if runfolder.state(folder) != "complete":
        return None
    if not continue_run:
        raise OutputExistsError(folder)
    manifest = runfolder.read_manifest(folder) or {}
    if manifest.get("key") == key:
        say(f"{stage}: kept (settings and inputs unchanged since {manifest.get('finished_utc', '?')})")
        outputs = {name: folder / rel for name, rel in manifest.get("output_names", {}).items()}
        passed = manifest.get("passed")
        return StageResult(stage, folder, float(manifest.get("seconds", 0.0)), dict(manifest.get("metrics", {})),
                           outputs, str(manifest.get("mlflow_run_id", "")), passed,
                           tuple(manifest.get("failures", ())), kept=True)
    moved = runfolder.set_aside(folder)
    say(f"{stage}: settings or inputs changed: the finished folder is kept as {moved} and the stage redone")
    return None


def _finish(folder: Any, result: StageResult) -> StageResult:
    folder.finish(seconds=result.seconds, metrics=result.metrics,
                  outputs={k: v for k, v in result.outputs.items() if Path(v).is_file()},
                  extra={"mlflow_run_id": result.mlflow_run_id, "passed": result.passed,
                         "failures": list(result.failures)})
    return result


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


def run_simulate(cfg: Config, run_dir: Path, *, tracker: Any = None, progress: bool = True,
                 continue_run: bool = False) -> StageResult:
    """The reference simulator into ``run_dir/simulate``. ``continue_run``: keep a finished stage whose
    settings are unchanged (and set a stale one aside) instead of refusing it (module docstring)."""
    domain = domain_for(cfg)
    key = runfolder.stage_key("simulate", stage_settings(cfg, "simulate"), ())
    kept = _kept(run_dir, "simulate", key, continue_run=continue_run)
    if kept:
        return kept
    tracker = tracker or open_tracker(cfg, run_dir)
    t0 = time.perf_counter()
    with runfolder.open_stage(run_dir, "simulate", key) as folder:
        out = folder.path
        with tracker.run("simulate") as mlrun:
            mlrun.log_params({"domain": cfg.domain, "simulate": config_to_dict(cfg.simulate)})
            path = out / domain.events_file
            say(f"simulate: {cfg.simulate.n_events} events with the {cfg.domain} reference simulator -> {path}"
                + (" (resuming from the shards kept by an interrupted run)" if folder.resumed else ""))
            metrics = domain.simulate(cfg.simulate, path, progress=progress)
            mlrun.log_metrics(metrics)
            (out / "summary.json").write_text(json.dumps(metrics, indent=2))
        return _finish(folder, StageResult("simulate", out, time.perf_counter() - t0, metrics, {"events": path},
                                           mlrun.run_id))


def run_prepare(cfg: Config, run_dir: Path, *, tracker: Any = None, progress: bool = True,
                continue_run: bool = False) -> StageResult:
    from surrogate.data.prepare import dask_scheduler, prepare_store

    domain = domain_for(cfg)
    inputs = cfg.prepare.inputs or (str(_default_input(
        "", run_dir / "simulate" / domain.events_file, "prepare.inputs",
        "run `surrogate simulate` into this --out first, or set prepare.inputs")),)
    for path in inputs:  # layout errors surface before any output or tracking run exists
        domain.check_file(path)
    key = runfolder.stage_key("prepare", stage_settings(cfg, "prepare"), inputs, run_dir)
    kept = _kept(run_dir, "prepare", key, continue_run=continue_run)
    if kept:
        return kept
    tracker = tracker or open_tracker(cfg, run_dir)
    t0 = time.perf_counter()
    with runfolder.open_stage(run_dir, "prepare", key) as folder:
        out = folder.path
        with tracker.run("prepare") as mlrun:
            mlrun.log_params({"domain": cfg.domain, "prepare": config_to_dict(cfg.prepare)})
            say(f"prepare: {len(inputs)} file(s) with the {cfg.prepare.scheduler} dask scheduler -> {out}")
            with dask_scheduler(cfg.prepare):
                metrics = prepare_store(domain, cfg.prepare, tuple(inputs), out, progress=progress)
            mlrun.log_metrics(metrics)
            mlrun.log_artifact(out / "transform.json")
        outputs = {"store": out / "store.h5", "transform": out / "transform.json",
                   "reference_val": out / "reference_val.h5", "reference_test": out / "reference_test.h5",
                   "reference_heldout": out / HELDOUT_REFERENCE}
        return _finish(folder, StageResult("prepare", out, time.perf_counter() - t0, dict(metrics), outputs,
                                           mlrun.run_id))


def _in_training_evaluator(cfg: Config, store_dir: Path) -> Any:
    """The cheap validation metrics on the validation split, computed by the same code as `validate`."""
    from surrogate.validation import quick_metrics

    domain = domain_for(cfg)
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


def check_model_settings(cfg: Config, *, simulated: bool = False) -> None:
    """ConfigError (one line) for an unknown model or a bad ``train.model_options`` entry; with ``simulated``
    (the store will hold this config's simulator's events) also for a model that cannot learn them."""
    from surrogate.models import check_domain, resolve_options

    domain = domain_for(cfg)
    model = cfg.train.model or domain.default_model
    resolve_options(model, cfg.train.model_options)
    if simulated:
        check_domain(model, domain)


def run_train(cfg: Config, run_dir: Path, *, tracker: Any = None, progress: bool = True,
              continue_run: bool = False) -> StageResult:
    from surrogate.generation import export_generator
    from surrogate.training.checkpoint import load_checkpoint
    from surrogate.training.loop import train

    store_dir = _default_input("", run_dir / "prepare", "train: prepared store",
                               "run `surrogate prepare` into this --out first")
    if not (store_dir / "store.h5").exists():
        raise SurrogateError(f"train: {store_dir / 'store.h5'} does not exist (run `surrogate prepare` first)")
    check_model_settings(cfg)  # before any output or tracking store exists
    inputs = [store_dir / "store.h5", store_dir / "transform.json"]
    key = runfolder.stage_key("train", stage_settings(cfg, "train"), inputs, run_dir)
    kept = _kept(run_dir, "train", key, continue_run=continue_run)
    if kept:
        return kept
    tracker = tracker or open_tracker(cfg, run_dir)
    t0 = time.perf_counter()
    with runfolder.open_stage(run_dir, "train", key) as folder:
        out = folder.path
        last = out / "checkpoints" / "last.pt"
        if folder.resumed and last.is_file() and not cfg.train.resume:
            # an interrupted attempt with the same settings and store: continue it bit for bit
            cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, resume=str(last)))
        with tracker.run("train") as mlrun:
            mlrun.log_params({"domain": cfg.domain, "train": config_to_dict(cfg.train)})
            (out / "config.yaml").write_text(dump_config(cfg))
            say(f"train: {cfg.train.steps} steps, loss {cfg.train.loss} -> {out}"
                + (f" (resuming from {last})" if cfg.train.resume == str(last) else ""))
            result = train(cfg, store_dir, out, log_metrics=mlrun.log_metrics,
                           evaluate=_in_training_evaluator(cfg, store_dir), progress=progress)
            if result.best is not None:  # train.select_by: the best evaluated step, already exported
                generator = out / "generator.pt"
                shutil.copyfile(result.best, generator)
            else:
                generator = export_generator(load_checkpoint(result.checkpoint), out / "generator.pt")
            mlrun.log_artifact(generator, "model")
            mlrun.log_artifact(out / "config.yaml")
            metrics = {"steps": float(result.steps), "seconds": result.seconds,
                       "steps_per_second": result.steps_per_second}
            mlrun.log_metrics(metrics)
            mlrun.set_tags({"device": result.device, "checkpoint": result.checkpoint})
        return _finish(folder, StageResult("train", out, time.perf_counter() - t0, metrics,
                                           {"checkpoint": last, "generator": generator}, mlrun.run_id))


def run_generate(cfg: Config, run_dir: Path, *, tracker: Any = None, progress: bool = True,
                 continue_run: bool = False) -> StageResult:
    import numpy as np

    from surrogate.baselines import get_baseline
    from surrogate.generation import ExtrapolationWarning, Surrogate, read_conditions
    from surrogate.tracking import download_model

    domain = domain_for(cfg)
    gcfg = cfg.generate
    from_mlflow = gcfg.checkpoint.startswith(("runs:/", "models:/", "mlflow-artifacts:/"))
    ckpt_path = Path(gcfg.checkpoint)
    if not from_mlflow:
        # train.select_by leaves the best evaluated step's EMA generator beside the last checkpoint
        best = run_dir / "train" / "checkpoints" / "best.pt"
        ckpt_path = _default_input(gcfg.checkpoint, best if best.is_file() and gcfg.use_ema
                                   else run_dir / "train" / "checkpoints" / "last.pt",
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
        cond_path = _default_input(gcfg.conditions_from, run_dir / "prepare" / "reference_test.h5",
                                   "generate.conditions_from", "set generate.conditions or conditions_from")
        n_available = domain.check_file(cond_path)
        if gcfg.n_events > n_available:
            raise SurrogateError(f"generate.n_events: {gcfg.n_events} requested but {cond_path} "
                                 f"holds {n_available} conditions")
    store_dir = Path(gcfg.baseline_store) if gcfg.baseline_store else run_dir / "prepare"
    for name in gcfg.baselines:  # before any output: a baseline that cannot be fitted fails now
        get_baseline(name, cfg.domain)
        if not (store_dir / "store.h5").exists():
            raise SurrogateError(f"generate.baselines: {name} is fitted on {store_dir / 'store.h5'}, which does "
                                 "not exist (set generate.baseline_store to a prepare folder, or "
                                 "generate.baselines=[])")
    if gcfg.fit_events and not (store_dir / "store.h5").exists():
        raise SurrogateError(f"generate.fit_events: the training sample's conditions come from "
                             f"{store_dir / 'store.h5'}, which does not exist (set generate.baseline_store to a "
                             "prepare folder, or generate.fit_events=0)")
    # Events held out of training get their own generated file, for the default test-split conditions only.
    heldout_path = run_dir / "prepare" / HELDOUT_REFERENCE
    heldout: Path | None = heldout_path if (not gcfg.conditions and not gcfg.conditions_from
                                            and heldout_path.is_file()) else None
    inputs = [p for p in (None if from_mlflow else ckpt_path, cond_path, heldout) if p is not None]
    if gcfg.baselines or gcfg.fit_events:  # the baselines are fitted on the store's train split
        inputs += [store_dir / "store.h5"]
    key = runfolder.stage_key("generate", stage_settings(cfg, "generate"), inputs, run_dir)
    kept = _kept(run_dir, "generate", key, continue_run=continue_run)
    if kept:
        return kept
    tracker = tracker or open_tracker(cfg, run_dir)
    t0 = time.perf_counter()
    with runfolder.open_stage(run_dir, "generate", key) as folder, tracker.run("generate") as mlrun:
        out = folder.path
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
        cond = np.tile(cond, (gcfg.repeat, 1))  # the file keeps conditions_from a path: attributes derive from it
        path = out / "generated.h5"
        say(f"generate: {len(cond)} events from {ckpt_path} -> {path}")
        with warnings.catch_warnings(record=True) as caught:  # shown as one status line, not Python's two
            warnings.simplefilter("always", ExtrapolationWarning)
            blocks = sur.iter_generate(cond, seed=gcfg.seed, batch_size=gcfg.batch_size,
                                       extrapolate=gcfg.extrapolate, where=cond_path or "generate.conditions")
        for warning in caught:
            _log.warning(f"generate: warning: {warning.message}")
        t_gen = time.perf_counter()
        domain.write_events(path, _progress(blocks, len(cond), gcfg.batch_size, progress, "generate"),
                            len(cond), {"generator": str(ckpt_path), "generator_step": sur.step,
                                        "seed": gcfg.seed, "use_ema": gcfg.use_ema, "conditions_from": source,
                                        "conditions_repeat": gcfg.repeat, "simulator": "surrogate GAN"},
                            dtype=gcfg.dtype)
        seconds = time.perf_counter() - t_gen
        metrics = {"n_events": float(len(cond)), "seconds": seconds,
                   "ms_per_event": 1e3 * seconds / max(len(cond), 1)}
        outputs = {"events": path}
        if gcfg.fit_events:
            metrics["fit_events"] = float(_generate_fit_sample(sur, ckpt_path, domain, store_dir, gcfg, out, progress))
            outputs["fit"] = out / FIT_SAMPLE
        if heldout is not None:
            cond_h = np.tile(read_conditions(domain, heldout), (gcfg.repeat, 1))
            path_h = out / HELDOUT_GENERATED
            say(f"generate: {len(cond_h)} events for the held-out conditions of {heldout} -> {path_h}")
            blocks = sur.iter_generate(cond_h, seed=gcfg.seed + 1, batch_size=gcfg.batch_size,
                                       extrapolate=gcfg.extrapolate, where=heldout)
            domain.write_events(path_h, _progress(blocks, len(cond_h), gcfg.batch_size, progress, "generate"),
                                len(cond_h), {"generator": str(ckpt_path), "generator_step": sur.step,
                                              "seed": gcfg.seed + 1, "use_ema": gcfg.use_ema,
                                              "conditions_from": str(heldout), "conditions_repeat": gcfg.repeat,
                                              "simulator": "surrogate GAN"},
                                dtype=gcfg.dtype)
            outputs["heldout"] = path_h
            metrics["n_heldout_events"] = float(len(cond_h))
        for name in gcfg.baselines:
            metrics.update(_generate_baseline(name, domain, store_dir, cond, source, gcfg, out, mlrun, progress))
            outputs[f"baseline_{name}"] = out / f"baseline_{name}.h5"
        mlrun.log_metrics(metrics)
        return _finish(folder, StageResult("generate", out, time.perf_counter() - t0, metrics, outputs,
                                           mlrun.run_id))


FIT_SAMPLE = "generated_fit.h5"  # generate's training sample for validation metrics that learn


def fit_conditions(store_dir: Path, n_events: int) -> Any:
    """(n, n_cond) float32: the physical conditions of the first ``n_events`` events of a prepared store's
    train split (all of them if it holds fewer)."""
    import numpy as np

    from surrogate.data.hdf5 import open_h5, require_dataset

    with open_h5(store_dir / "store.h5") as f:
        return np.asarray(require_dataset(f, "train/cond_raw")[:n_events], dtype=np.float32)


def _generate_fit_sample(sur: Any, ckpt_path: Path, domain: Any, store_dir: Path, gcfg: Any, out: Path,
                         progress: bool) -> int:
    """generated_fit.h5: the surrogate at the conditions of the store's first ``fit_events`` training events,
    from latents of their own (seed stream 1 of generate.seed), so they share nothing with generated.h5."""
    import numpy as np

    cond = fit_conditions(store_dir, gcfg.fit_events)
    seed = int(np.random.SeedSequence([gcfg.seed, 1]).generate_state(1)[0])
    say(f"generate: the training sample, {len(cond)} events at the conditions of {store_dir / 'store.h5'} "
        f"(train split) -> {out / FIT_SAMPLE}")
    blocks = sur.iter_generate(cond, seed=seed, batch_size=gcfg.batch_size, extrapolate=gcfg.extrapolate,
                               where=str(store_dir / "store.h5"))
    domain.write_events(out / FIT_SAMPLE, _progress(blocks, len(cond), gcfg.batch_size, progress, "generate fit"),
                        len(cond), {"generator": str(ckpt_path),
                                    "generator_step": sur.step, "seed": seed, "use_ema": gcfg.use_ema,
                                    "conditions_from": f"{store_dir / 'store.h5'} train split",
                                    "simulator": "surrogate GAN"}, dtype=gcfg.dtype)
    return len(cond)


def _generate_baseline(name: str, domain: Any, store_dir: Path, cond: Any, source: str, gcfg: Any, out: Path,
                       mlrun: Any, progress: bool) -> dict[str, float]:
    """Fit baseline ``name`` on the store's train split; write baseline_<name>.h5 (+ .json) for ``cond``."""
    from surrogate.baselines import fit_store

    t_fit = time.perf_counter()
    model = fit_store(name, store_dir)
    fit_seconds = time.perf_counter() - t_fit
    params = model.save(out / f"baseline_{name}.json")
    path = out / f"baseline_{name}.h5"
    say(f"generate: baseline {name} fitted in {fit_seconds:.1f} s; {len(cond)} events -> {path}")
    t_gen = time.perf_counter()
    blocks = model.iter_generate(cond, seed=gcfg.seed, batch_size=gcfg.batch_size)
    domain.write_events(path, _progress(blocks, len(cond), gcfg.batch_size, progress, name), len(cond),
                        {**model.attrs(), "seed": gcfg.seed, "conditions_from": source}, dtype=gcfg.dtype)
    seconds = time.perf_counter() - t_gen
    mlrun.log_artifact(params, "baselines")
    return {f"{name}_fit_seconds": fit_seconds, f"{name}_seconds": seconds,
            f"{name}_ms_per_event": 1e3 * seconds / max(len(cond), 1)}


def _progress(blocks: Iterator[Any], total: int, batch: int, enabled: bool, desc: str) -> Iterator[Any]:
    from tqdm import tqdm

    with tqdm(total=total, desc=desc, unit="ev", disable=not enabled, file=sys.stderr) as bar:
        for block in blocks:
            yield block
            bar.update(len(block[0]))


def validate_inputs(cfg: Config, run_dir: Path) -> tuple[Path, Path, Path | None, dict[str, Path]]:
    """(generated, reference, reference_b or None = split the reference, baselines by name) of a validation.

    Defaults in a run folder: generate/generated.h5 against prepare/reference_test.h5; the floor from
    prepare/reference_val.h5 (an independent reference sample of the same settings) when the reference is
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


def fit_inputs(cfg: Config, run_dir: Path) -> tuple[Path, Path] | None:
    """(store.h5, generated_fit.h5) of this run when generate wrote a training sample for the surrogate that
    validate scores (validate.generated not set), else None."""
    fit = run_dir / "generate" / FIT_SAMPLE
    store_dir = Path(cfg.generate.baseline_store) if cfg.generate.baseline_store else run_dir / "prepare"
    if cfg.validate.generated or not fit.is_file() or not (store_dir / "store.h5").is_file():
        return None
    return store_dir / "store.h5", fit


def read_fit_samples(domain: Any, store: Path, fit: Path) -> tuple[tuple[Any, Any], tuple[Any, Any]]:
    """((reference data, cond), (generated data, cond)): generate's training sample and the store's train
    split events at the same rows (physical units)."""
    import numpy as np

    from surrogate.baselines import iter_store_split

    gen_data, gen_cond = domain.read_events(fit)
    blocks, n = [], 0
    for data, cond in iter_store_split(store.parent, "train"):
        blocks.append((data[:len(gen_cond) - n], cond[:len(gen_cond) - n]))
        n += len(blocks[-1][1])
        if n >= len(gen_cond):
            break
    ref_data = np.concatenate([b[0] for b in blocks])
    ref_cond = np.concatenate([b[1] for b in blocks])
    if len(ref_cond) != len(gen_cond):
        raise InputError(fit, None, f"{len(gen_cond)} events, but the train split of {store} holds {len(ref_cond)}")
    return (ref_data, ref_cond), (gen_data, gen_cond)


def heldout_inputs(cfg: Config, run_dir: Path) -> tuple[Path, Path] | None:
    """(generated, reference) of the events held out of training, when validating a run folder's own files
    and both exist (prepare/reference_heldout.h5, generate/generated_heldout.h5); else None."""
    if cfg.validate.generated or cfg.validate.reference:
        return None
    pair = (run_dir / "generate" / HELDOUT_GENERATED, run_dir / "prepare" / HELDOUT_REFERENCE)
    return pair if all(p.is_file() for p in pair) else None


def run_validate(cfg: Config, run_dir: Path, *, tracker: Any = None, progress: bool = True,
                 continue_run: bool = False) -> StageResult:
    from surrogate.validation import validate_files

    domain = domain_for(cfg)
    gen, ref, ref_b, baselines = validate_inputs(cfg, run_dir)
    fit_paths = fit_inputs(cfg, run_dir)
    heldout = heldout_inputs(cfg, run_dir)
    # the floor's reference, the baselines, the training samples and the held-out pair are inputs too: a
    # changed file redoes the stage
    inputs = [gen, ref, *([ref_b] if ref_b else []), *baselines.values(), *(fit_paths[1:] if fit_paths else ()),
              *(heldout or ())]
    for path in inputs:
        domain.check_file(path)
    if cfg.validate.reference and not cfg.validate.accept_implausible:
        # a reference brought from outside the run is checked as prepare checks its inputs
        domain.check_plausible(ref, setting="validate.accept_implausible")
    key = runfolder.stage_key("validate", stage_settings(cfg, "validate"), [*inputs, *(fit_paths or ())[:1]],
                              run_dir)
    kept = _kept(run_dir, "validate", key, continue_run=continue_run)
    if kept:
        return kept
    tracker = tracker or open_tracker(cfg, run_dir)
    t0 = time.perf_counter()
    with runfolder.open_stage(run_dir, "validate", key) as folder, tracker.run("validate") as mlrun:
        out = folder.path
        mlrun.log_params({"domain": cfg.domain, "validate": config_to_dict(cfg.validate),
                          "generated": str(gen), "reference": str(ref),
                          "reference_b": str(ref_b) if ref_b else "half of the reference",
                          "baselines": ", ".join(f"{k}={v}" for k, v in baselines.items()) or "none"})
        floor_from = ref_b or f"two halves of {ref}"
        say(f"validate: {gen} against {ref}; floor from {floor_from}"
            + (f"; baselines {', '.join(baselines)}" if baselines else "") + f" -> {out}")
        fit_samples = None
        if fit_paths:
            say(f"validate: training samples for the metrics that learn: {fit_paths[1]} and the train split "
                f"of {fit_paths[0]}")
            fit_samples = read_fit_samples(domain, *fit_paths)
        report = validate_files(domain, gen, ref, cfg.validate, out, reference_b_path=ref_b,
                                baselines=baselines, fit_samples=fit_samples, progress=progress)
        metrics = report.flat_metrics()
        passed, failures = report.passed, list(report.failures)
        outputs = {"report": Path(report.report_path), "metrics": report.metrics_path}
        if heldout is not None:
            # held-out conditions: the floor is two seeded halves of their reference file
            say(f"validate: {heldout[0]} against the held-out {heldout[1]} -> {out / HELDOUT_DIR}")
            held = validate_files(domain, heldout[0], heldout[1],
                                  dataclasses.replace(cfg.validate, thresholds=cfg.validate.heldout_thresholds),
                                  out / HELDOUT_DIR, progress=progress)
            metrics.update({f"{HELDOUT_DIR}_{k}": v for k, v in held.flat_metrics().items()})
            passed = passed and held.passed
            failures += [f"{HELDOUT_DIR}: {reason}" for reason in held.failures]
            outputs.update({"heldout_report": Path(held.report_path), "heldout_metrics": held.metrics_path})
        (out / "config.yaml").write_text(dump_config(cfg))
        mlrun.log_metrics(metrics)
        mlrun.set_tags({"verdict": "pass" if passed else "fail", "failures": "; ".join(failures) or "none"})
        mlrun.log_artifacts(out)
        return _finish(folder, StageResult("validate", out, time.perf_counter() - t0, metrics, outputs,
                                           mlrun.run_id, passed, tuple(failures)))


RUNNERS = {"simulate": run_simulate, "prepare": run_prepare, "train": run_train,
           "generate": run_generate, "validate": run_validate}


def run_all(cfg: Config, run_dir: Path, *, progress: bool = True,
            stages: tuple[str, ...] = STAGES) -> list[StageResult]:
    """Every stage in order into one run folder, as nested MLflow runs under one parent run.

    The folder may hold an earlier run: finished stages whose settings and inputs are unchanged are kept,
    stale ones set aside and redone, interrupted ones resumed (module docstring).
    """
    if "train" in stages:  # a bad model option, or a model for other data, fails now, not after the simulation
        check_model_settings(cfg, simulated="simulate" in stages and not cfg.prepare.inputs)
    tracker = open_tracker(cfg, run_dir)
    results: list[StageResult] = []
    with tracker.run(f"run-{run_dir.name}", tags={"surrogate.run_dir": str(run_dir)}) as parent:
        parent.log_params({"domain": cfg.domain})
        parent.log_text(dump_config(cfg), "config.yaml")
        for stage in stages:
            result = RUNNERS[stage](cfg, run_dir, tracker=tracker, progress=progress, continue_run=True)
            if not result.kept:
                say(f"{stage}: done in {result.seconds:.1f} s")
            parent.log_metrics({f"{stage}_seconds": result.seconds})
            results.append(result)
        verdict = results[-1].passed
        if verdict is not None:
            parent.set_tags({"verdict": "pass" if verdict else "fail"})
            # The summaries of every column (surrogate, floor_, baselines); per-histogram ones stay on the stage run.
            parent.log_metrics({k: v for k, v in results[-1].metrics.items() if "sep_" not in k})
    return results
