"""Geant4 electromagnetic showers in the CaloChallenge dataset-2 calorimeter, run in worker processes.

Physics: Geant4 11.4 from the ``geant4-pybind`` wheel. ``em_datafree`` needs none of Geant4's data
sets (a small C++ extension, ext.cc, registers analytic EM models); it is Geant4-like but not identical
to the physics of the CaloChallenge files (no Seltzer-Berger bremsstrahlung tables, no Livermore
photo-effect, no Rayleigh scattering, Urban msc only). Stock lists such as G4EmStandardPhysics_option4
need the real data sets (GEANT4_DATA_DIR); without them Geant4 aborts, which surfaces here as a
SurrogateError while the caller keeps running.

Sharding: shard i holds events [i * shard_events, (i + 1) * shard_events). Its incident energies and
its MixMax seed both come from ``np.random.SeedSequence([seed, i])``, so a file depends on
(seed, shard_events, n_events, physics), never on n_workers or on which worker ran what.

Voxel energies: Si deposit per readout cell (MeV) divided by the sampling fraction, then cells below the
readout threshold (the caller's ``threshold_mev``, 15.15 keV for dataset 2) set to 0, applied to the rescaled
energies as in the CaloChallenge files. No threshold is applied to the Si deposit itself.

The simulator knows its geometry (``READOUT``) but no file layout: the domain that calls it passes the
writer and the threshold, so this package never imports a domain.

Sampling fraction: when ``cfg.sampling_fraction`` is 0 it is measured from the sample as
sum(Si in readout cells) / sum(incident energy), so that sum(voxels) / E_inc is 1 on average (the
convention of the CaloChallenge's 1/0.033 scaling), and written as a file attribute.
"""

from __future__ import annotations

import contextlib
import math
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from surrogate.errors import OutputExistsError, SurrogateError
from surrogate.simulators.geant4_calo import build, worker
from surrogate.simulators.shards import ShardStore, local_client, settings_key

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["READOUT", "Geant4Calorimeter", "Writer", "simulate"]

# What the simulated calorimeter reads out: (layers, angular bins, radial bins), radial cell size in mm.
READOUT = (worker.N_LAYERS, worker.N_ALPHA, worker.N_R, worker.R_CELL_MM)
# write(out_path, (showers (n, 6480) MeV, e_inc (n,) MeV) blocks, n_events, file attributes): the caller's
# file layout (the calorimeter domain's CaloChallenge writer).
Writer = Callable[[Path, Iterator[tuple[np.ndarray, np.ndarray]], int, dict[str, Any]], None]
# ``cfg`` below is the calorimeter's SimulateConfig (n_events, e_min_mev, e_max_mev, particle, physics_list,
# production_cut_mm, msc_step_limit, sampling_fraction, n_workers, shard_events, seed), typed Any here so
# that the simulator does not import the domain that owns it.

NOTE = ("Geant4-like physics: Geant4 11.4 (geant4-pybind) in the dataset-2 geometry, not identical to the "
        "physics of the CaloChallenge files")


@dataclass(frozen=True)
class _Shard:
    index: int
    e_inc_mev: np.ndarray  # (n,)
    seed: int  # MixMax seed


def simulate(cfg: Any, out_path: Path, write: Writer, *, threshold_mev: float,
             progress: bool = True) -> dict[str, float]:
    """Simulate ``cfg.n_events`` showers and write them to ``out_path`` with ``write``.

    Incident energies (N, 1) MeV are log-uniform in [e_min_mev, e_max_mev]; showers (N, 6480) MeV.
    Returns n_events, sampling_fraction, cpu_seconds (summed over workers and shards),
    wall_seconds, ms_per_shower (CPU), mean_containment (mean of deposit in W + Si over E_inc: what the
    calorimeter absorbs), mean_response (mean of sum(voxels) / E_inc after the threshold) and
    resumed_showers (showers of shards kept from an interrupted earlier call).

    Every finished shard is kept on disk beside ``out_path`` (``.<name>.shards/``) until the file is
    written: a call that is killed or interrupted loses at most the shards in flight, and the next call
    with the same settings resumes at the next shard. The file is the same, byte for byte.
    """
    start = time.perf_counter()
    out_path = Path(out_path)
    if out_path.exists():  # refuse before spending CPU hours, not only at the final rename
        raise OutputExistsError(out_path)
    shards = [_Shard(i, energies, seed) for i, (energies, seed) in
              enumerate(_plan(cfg.n_events, cfg.shard_events, cfg.seed, cfg.e_min_mev, cfg.e_max_mev))]
    # What a kept shard depends on: every setting but the number of workers (and the event count, as
    # shard i's content does not depend on how many shards follow, except for the last one's size).
    store = ShardStore(out_path.with_name(f".{out_path.name}.shards"), settings_key(cfg, exclude=("n_workers",)),
                       digits=7)
    todo = [s for s in shards if not store.has(s.index)]
    kept = cfg.n_events - sum(len(s.e_inc_mev) for s in todo)
    try:
        with _Workers(cfg) as pool:
            attrs = _attrs(cfg, pool.geant4_version, threshold_mev)
            for shard, result in pool.map_ordered(todo, progress=progress, done=kept):
                _save(store, shard, result)
    except BaseException:
        store.remove_if_empty()  # finished shards stay for the next call; an empty folder does not
        raise
    # Two passes over the kept shards: the totals (and the measured sampling fraction), then the file.
    totals = _Totals()
    for _ in _raw_blocks(_kept(store, shards), totals):
        pass
    sampling_fraction = cfg.sampling_fraction or totals.si_mev / totals.e_inc_mev
    attrs["sampling_fraction"] = sampling_fraction
    write(out_path, _voxel_blocks(_raw_blocks(_kept(store, shards), _Totals()), sampling_fraction, threshold_mev,
                                  totals), cfg.n_events, attrs)
    store.remove()
    wall = time.perf_counter() - start
    return {
        "n_events": float(cfg.n_events),
        "sampling_fraction": float(sampling_fraction),
        "cpu_seconds": totals.cpu_seconds,  # every shard's, kept ones included: what the sample cost
        "wall_seconds": wall,
        "ms_per_shower": 1e3 * totals.cpu_seconds / cfg.n_events,
        "mean_containment": totals.containment_sum / cfg.n_events,
        "mean_response": totals.response_sum / cfg.n_events,
        "resumed_showers": float(kept),
    }


def _save(store: ShardStore, shard: _Shard, result: worker.ShardResult) -> None:
    """A finished shard's deposits (MeV) and CPU time, compressed as before."""
    store.save(shard.index, {"si_mev": result.si_mev, "si_total_mev": result.si_total_mev,
                             "deposit_mev": result.deposit_mev, "cpu_seconds": np.float64(result.cpu_seconds)},
               compressed=True)


def _kept(store: ShardStore, shards: list[_Shard]) -> Iterator[tuple[_Shard, worker.ShardResult]]:
    """The kept shards' results, in shard order."""
    for shard in shards:
        f = store.load(shard.index)
        yield shard, worker.ShardResult(index=shard.index, si_mev=f["si_mev"], si_total_mev=f["si_total_mev"],
                                        deposit_mev=f["deposit_mev"], cpu_seconds=float(f["cpu_seconds"]))


class Geant4Calorimeter:
    """The :class:`~surrogate.simulators.Simulator` protocol on the same workers, for samples in memory.

    ``Geant4Calorimeter(cfg, threshold_mev)(e_inc_mev (N, 1), seed)`` -> showers (N, 6480) float32 MeV. It
    needs ``cfg.sampling_fraction > 0`` (a sample's own measurement would depend on the sample).
    """

    def __init__(self, cfg: Any, threshold_mev: float) -> None:
        if cfg.sampling_fraction <= 0:
            raise SurrogateError("simulate.sampling_fraction: set it (e.g. from a simulated file's "
                                 "attribute) to simulate showers at given energies")
        self.cfg = cfg
        self.threshold_mev = threshold_mev

    def __call__(self, cond: np.ndarray, seed: int) -> np.ndarray:
        e_inc = np.asarray(cond, dtype=np.float64).reshape(-1)
        if len(e_inc) == 0 or not (np.isfinite(e_inc).all() and (e_inc > 0).all()):
            raise SurrogateError("incident energies: expected a non-empty array of positive MeV values")
        step = self.cfg.shard_events
        shards = [_Shard(i, e_inc[lo:lo + step], _shard_seeds(seed, i)[1])
                  for i, lo in enumerate(range(0, len(e_inc), step))]
        totals = _Totals()
        with _Workers(self.cfg) as pool:
            blocks = _voxel_blocks(_raw_blocks(pool.map_ordered(shards, progress=False), totals),
                                   self.cfg.sampling_fraction, self.threshold_mev, totals)
            return np.concatenate([showers for showers, _ in blocks])


# --------------------------------------------------------------------------------------------------
# Planning and bookkeeping


def _shard_seeds(seed: int, index: int) -> tuple[np.random.SeedSequence, int]:
    """(seed sequence for the incident energies, MixMax seed) of shard ``index``: independent streams."""
    energy_seq, geant4_seq = np.random.SeedSequence([seed, index]).spawn(2)
    return energy_seq, int(geant4_seq.generate_state(1, dtype=np.uint32)[0])


def _plan(n_events: int, shard_events: int, seed: int, e_min_mev: float,
          e_max_mev: float) -> Iterator[tuple[np.ndarray, int]]:
    """Per shard: (incident energies (n,) MeV, log-uniform in [e_min, e_max]; MixMax seed)."""
    for index in range(math.ceil(n_events / shard_events)):
        n = min(shard_events, n_events - index * shard_events)
        energy_seq, geant4_seed = _shard_seeds(seed, index)
        log_e = np.random.default_rng(energy_seq).uniform(math.log(e_min_mev), math.log(e_max_mev), n)
        yield np.exp(log_e), geant4_seed


@dataclass
class _Totals:
    si_mev: float = 0.0  # sum over events of the Si deposit in readout cells
    e_inc_mev: float = 0.0
    cpu_seconds: float = 0.0
    containment_sum: float = 0.0  # sum over events of deposit(W + Si) / E_inc
    response_sum: float = 0.0  # sum over events of sum(voxels) / E_inc


def _raw_blocks(results: Iterator[tuple[_Shard, worker.ShardResult]],
                totals: _Totals) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(Si deposit per cell (n, 6480) MeV, E_inc (n,) MeV) per shard, in shard order; fills ``totals``."""
    for shard, result in results:
        totals.si_mev += float(result.si_mev.sum())
        totals.e_inc_mev += float(shard.e_inc_mev.sum())
        totals.cpu_seconds += result.cpu_seconds
        totals.containment_sum += float((result.deposit_mev / shard.e_inc_mev).sum())
        yield result.si_mev, shard.e_inc_mev


def _voxel_blocks(blocks: Iterator[tuple[np.ndarray, np.ndarray]], sampling_fraction: float,
                  threshold_mev: float, totals: _Totals) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Si deposits -> voxel energies (float32 MeV): / sampling fraction, then zero sub-threshold cells."""
    for si_mev, e_inc_mev in blocks:
        showers = (np.asarray(si_mev, dtype=np.float64) / sampling_fraction).astype(np.float32)
        showers[showers < threshold_mev] = 0.0
        totals.response_sum += float((showers.sum(axis=1, dtype=np.float64) / e_inc_mev).sum())
        yield showers, np.asarray(e_inc_mev, dtype=np.float32)


def _attrs(cfg: Any, geant4_version: str, threshold_mev: float) -> dict[str, Any]:
    datafree = cfg.physics_list == "em_datafree"
    return {
        "simulator": "geant4-pybind 0.1.3, data-free EM physics (surrogate)" if datafree
                     else f"geant4-pybind 0.1.3, {cfg.physics_list} with the user's Geant4 data sets",
        "note": NOTE + (" (no Seltzer-Berger bremsstrahlung tables, no Livermore photo-effect, no Rayleigh "
                        "scattering)" if datafree else ""),
        "geant4_version": geant4_version,
        "physics_list": cfg.physics_list,
        "particle": cfg.particle,
        "production_cut_mm": float(cfg.production_cut_mm),
        "msc_step_limit": cfg.msc_step_limit,
        "e_min_mev": float(cfg.e_min_mev),
        "e_max_mev": float(cfg.e_max_mev),
        "seed": int(cfg.seed),
        "shard_events": cfg.shard_events,  # part of the seeding: needed to reproduce the file
        "threshold_mev": threshold_mev,
        "voxel_energy": "Si deposit per readout cell / sampling_fraction; cells below threshold_mev set to 0",
        "sampling_fraction_definition": "sum(Si in readout cells) / sum(incident energy) over the sample"
                                        if cfg.sampling_fraction == 0 else "given in the config",
    }


# --------------------------------------------------------------------------------------------------
# Workers


class _Workers:
    """Geant4 worker processes under a dask.distributed LocalCluster.

    Why distributed rather than dask's multiprocessing scheduler: its worker processes persist across
    tasks, so each keeps its one Geant4 run manager for every shard it runs; futures can be collected
    in order while later shards run, so shards stream to disk with bounded memory; workers start with
    "spawn" (never fork after torch is imported); and a worker killed by a Geant4 abort is reported as
    KilledWorker to this process, which stays alive. allowed-failures = 1: a shard whose worker dies is
    run once more on another worker, so a worker lost to something outside Geant4 (killed, out of
    memory) costs one shard's time and changes no byte of the output (a shard depends only on its
    seed); a Geant4 abort, being deterministic, kills the second worker too and is reported then.
    """

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self._stack = contextlib.ExitStack()
        self.client: Client | None = None
        self.geant4_version = ""

    def __enter__(self) -> _Workers:
        import dask
        import distributed  # noqa: F401  (its config defaults must exist before dask.config.set below)

        cfg = self.cfg
        try:
            extension = str(build.build_extension()) if cfg.physics_list == "em_datafree" else ""
            logs = tempfile.TemporaryDirectory(prefix="surrogate-geant4-")
            self.log_dir = Path(self._stack.enter_context(logs))
            self.physics = worker.Physics(
                physics_list=cfg.physics_list, particle=cfg.particle, production_cut_mm=cfg.production_cut_mm,
                msc_step_limit=cfg.msc_step_limit, extension=extension,
                env=tuple(sorted(build.geant4_env().items())), log_dir=str(self.log_dir))
            self._stack.enter_context(dask.config.set({"distributed.scheduler.allowed-failures": 1}))
            self.client = local_client(self._stack, n_workers=cfg.n_workers, threads_per_worker=1, processes=True)
            version = self.client.submit(worker.geant4_version, self.physics, pure=False)
            self.geant4_version = self._result(version, "starting Geant4")
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def map_ordered(self, shards: list[_Shard], *, progress: bool,
                    done: int = 0) -> Iterator[tuple[_Shard, worker.ShardResult]]:
        """Run ``shards`` on the workers; yield results in shard order, at most 2 per worker in flight.

        ``done``: showers finished earlier (kept shards), where the progress bar starts.
        """
        from tqdm import tqdm

        assert self.client is not None
        client = self.client
        window = 2 * self.cfg.n_workers
        pending: dict[int, Any] = {}
        submitted = 0
        total = done + sum(len(s.e_inc_mev) for s in shards)
        bar = tqdm(total=total, initial=done, unit="shower", desc="geant4", file=sys.stderr,
                   disable=not progress, dynamic_ncols=True)
        try:
            for position, shard in enumerate(shards):
                while submitted < len(shards) and submitted < position + window:
                    s = shards[submitted]
                    pending[submitted] = client.submit(worker.run_shard, self.physics, s.index, s.e_inc_mev,
                                                       s.seed, pure=False)
                    submitted += 1
                future = pending.pop(position)
                result = self._result(future, f"simulating shard {shard.index}")
                future.release()
                bar.update(len(shard.e_inc_mev))
                yield shard, result
        finally:
            bar.close()
            for future in pending.values():
                future.cancel()

    def _result(self, future: Any, doing: str) -> Any:
        from distributed.scheduler import KilledWorker

        try:
            return future.result()
        except KilledWorker:
            raise SurrogateError(f"Geant4 aborted while {doing} with physics list {self.cfg.physics_list}: "
                                 f"{_abort_reason(self.log_dir, self.cfg.physics_list)}") from None
        except SurrogateError:
            raise
        except Exception as exc:
            raise SurrogateError(f"Geant4 failed while {doing} with physics list {self.cfg.physics_list}: "
                                 f"{type(exc).__name__}: {exc}") from None


_EXCEPTION = re.compile(r"-+ EEEE -+ G4Exception-START -+ EEEE -+\n(.*?)-+ EEEE -+ G4Exception-END", re.S)


def _abort_reason(log_dir: Path, physics_list: str) -> str:
    """One line from the workers' Geant4 logs: the fatal G4Exception, plus what to do about it."""
    hint = ("stock physics lists need Geant4's data sets: point GEANT4_DATA_DIR at them, or use "
            "simulate.physics_list=em_datafree") if physics_list != "em_datafree" else \
        "the worker process died; see Geant4's output with simulate.n_workers=1"
    for log in sorted(log_dir.glob("*.log")):
        match = _EXCEPTION.search(log.read_text(errors="replace"))
        if match:
            lines = [line.strip() for line in match.group(1).splitlines() if line.strip()]
            fields = {key: ln.split(":", 1)[1].strip() for ln in lines
                      for key in ("*** G4Exception", "issued by") if ln.startswith(key)}
            code, issuer = fields.get("*** G4Exception", "?"), fields.get("issued by", "?")
            message = next((ln for ln in lines if not ln.startswith(("***", "issued by"))), "")
            return f"G4Exception {code} in {issuer}: {message} ({hint})"
    return f"worker process died ({hint})"
