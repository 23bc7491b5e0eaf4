"""Geant4 inside a worker process: one run manager per process, reused for every shard it is given.

Nothing here may run in the user's process: a fatal Geant4 error aborts the whole process and a
second run manager in one process aborts too (../shared/GEANT4.md). The driver (``__init__.py``) only
ever calls :func:`run_shard` through worker processes.

Detector: the CaloChallenge dataset-2 calorimeter (the Par04 example's geometry). A tungsten cylinder
of radius 200 mm and 90 x 1.7 mm slabs, each 1.4 mm of W followed by 0.3 mm of Si; two consecutive Si
layers form one readout layer. In each Si layer a disc r < 41.85 mm is read out in 9 radial x 16
azimuthal cells. The beam enters along +z at the axis.
"""

from __future__ import annotations

import ctypes
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

N_LAYERS = 45  # readout layers
N_R = 9  # radial bins of 4.65 mm
N_ALPHA = 16  # azimuthal bins of 22.5 degrees
N_VOXELS = N_LAYERS * N_ALPHA * N_R
N_SLABS = 2 * N_LAYERS  # physical W + Si slabs
W_MM = 1.4  # tungsten per slab
SI_MM = 0.3  # silicon per slab
SLAB_MM = W_MM + SI_MM
CALO_RADIUS_MM = 200.0
R_CELL_MM = 4.65  # CaloChallenge binning_dataset_2.xml r_edges
READOUT_RADIUS_MM = N_R * R_CELL_MM  # 41.85 mm

SCORER_PREFIX = "surrogate_calo"


@dataclass(frozen=True)
class Physics:
    """Everything that fixes a worker's Geant4 set-up; a process serves one of these for its lifetime."""

    physics_list: str  # em_datafree or a geant4_pybind EM constructor class name
    particle: str  # Geant4 particle name of the beam
    production_cut_mm: float
    msc_step_limit: str  # UseSafety | UseDistanceToBoundary | Minimal | UseSafetyPlus
    extension: str  # compiled ext.cc (needed by em_datafree only)
    env: tuple[tuple[str, str], ...]  # set before importing geant4_pybind
    log_dir: str  # this worker's Geant4 output goes to <log_dir>/geant4-<pid>.log ("" = inherit stdout)


@dataclass(frozen=True)
class ShardResult:
    """One shard's showers. Energies in MeV; voxels in CaloChallenge order (layer, alpha, r), r fastest."""

    index: int
    si_mev: np.ndarray  # (n, 6480) float64: Si deposit per readout cell, no threshold, not rescaled
    si_total_mev: np.ndarray  # (n,) Si deposit in all silicon, inside and outside the readout disc
    deposit_mev: np.ndarray  # (n,) deposit in the whole calorimeter, W + Si
    cpu_seconds: float  # CPU time this shard took in the worker


def _geant4_to_challenge_order() -> np.ndarray:
    """perm with challenge_row = geant4_row[perm].

    G4PSEnergyDeposit3D numbers cells layer*144 + r*16 + phi with phi cell k spanning [22.5k, 22.5(k+1))
    degrees from +x. The challenge numbers them layer*144 + alpha*9 + r with alpha bin j spanning
    [-180 + 22.5j, -180 + 22.5(j+1)) degrees (code/XMLHandler.py: alpha bins from -pi to pi), so
    alpha j is phi cell (j + 8) mod 16.
    """
    layer, alpha, r = np.meshgrid(np.arange(N_LAYERS), np.arange(N_ALPHA), np.arange(N_R), indexing="ij")
    phi = (alpha + N_ALPHA // 2) % N_ALPHA
    return (layer * N_R * N_ALPHA + r * N_ALPHA + phi).reshape(-1)


PERMUTATION = _geant4_to_challenge_order()


def _import_geant4(physics: Physics) -> Any:
    """Import geant4_pybind in this process with the data-set variables it needs set beforehand."""
    if "geant4_pybind" not in sys.modules:
        for key, value in physics.env:
            os.environ[key] = value
        if physics.log_dir:
            # Geant4's banner, tables and, on a fatal error, the exception text go to a file (its G4cout
            # writes to file descriptor 1); the driver reads the text back to explain an abort.
            log = os.open(Path(physics.log_dir) / f"geant4-{os.getpid()}.log",
                          os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(log, 1)
            os.dup2(log, 2)
            os.close(log)
    import geant4_pybind

    return geant4_pybind


def geant4_version(physics: Physics) -> str:
    """Geant4's release as the wheel reports it, e.g. 'geant4-11-04-patch-01'."""
    g4 = _import_geant4(physics)
    match = re.search(r"geant4-[0-9a-z-]+", g4.G4Version)
    return match.group(0) if match else str(g4.G4Version)


class _Session:
    """The Geant4 application of one worker process: geometry, physics, scorers and actions."""

    def __init__(self, physics: Physics) -> None:
        g4 = _import_geant4(physics)

        self.g4 = g4
        self.physics = physics
        self.run_manager = g4.G4RunManager()
        self._detector = _detector_class(g4)()
        self.run_manager.SetUserInitialization(self._detector)
        self._physics_list = _physics_list(g4, physics)
        self.run_manager.SetUserInitialization(self._physics_list)
        self._gun = g4.G4ParticleGun(1)
        particle = g4.G4ParticleTable.GetParticleTable().FindParticle(physics.particle)
        if particle is None:
            raise ValueError(f"unknown Geant4 particle {physics.particle!r}")
        self._gun.SetParticleDefinition(particle)
        self._gun.SetParticleMomentumDirection(g4.G4ThreeVector(0, 0, 1))
        self._actions = _actions_class(g4)(self)
        self.run_manager.SetUserInitialization(self._actions)
        ui = g4.G4UImanager.GetUIpointer()
        for command in ("/control/verbose 0", "/run/verbose 0", "/event/verbose 0", "/tracking/verbose 0",
                        "/process/em/verbose 0", "/process/msc/verbose 0"):
            ui.ApplyCommand(command)
        # /process/msc/* commands are silently ignored unless G4EmParameters exists (../shared/GEANT4.md).
        g4.G4EmParameters.Instance()
        ui.ApplyCommand(f"/process/msc/StepLimit {physics.msc_step_limit}")
        self.run_manager.Initialize()
        # A cut set through the physics list is ignored from Python; the UI command after Initialize works.
        ui.ApplyCommand(f"/run/setCut {physics.production_cut_mm} mm")
        sd = g4.G4SDManager.GetSDMpointer()
        self._hc_cells = sd.GetCollectionID(f"{SCORER_PREFIX}_cells/edep")
        self._hc_si = sd.GetCollectionID(f"{SCORER_PREFIX}_si/edep")
        self._hc_w = sd.GetCollectionID(f"{SCORER_PREFIX}_w/edep")
        self._energies = np.zeros(0)
        self._beam_xy_mm = (0.0, 0.0)
        self._next = 0
        self._cells = np.zeros((0, N_VOXELS))
        self._si_total = np.zeros(0)
        self._deposit = np.zeros(0)

    def run(self, energies_mev: np.ndarray, seed: int,
            beam_xy_mm: tuple[float, float]) -> tuple[np.ndarray, ...]:
        g4 = self.g4
        n = len(energies_mev)
        self._energies = np.asarray(energies_mev, dtype=np.float64)
        self._beam_xy_mm = beam_xy_mm
        self._next = 0
        self._cells = np.zeros((n, N_VOXELS))
        self._si_total = np.zeros(n)
        self._deposit = np.zeros(n)
        # Reseeding MixMax per shard makes a shard's showers independent of which process ran it and
        # of what it ran before, so the file is identical for any number of workers.
        g4.G4Random.setTheEngine(g4.MixMaxRng())
        g4.G4Random.setTheSeed(seed)
        self.run_manager.BeamOn(n)
        if self._next != n:
            raise RuntimeError(f"Geant4 processed {self._next} of {n} events")
        return self._cells[:, PERMUTATION], self._si_total, self._deposit

    # Called back from Geant4 through the user actions.
    def generate(self, event: Any) -> None:
        g4 = self.g4
        x, y = self._beam_xy_mm
        self._gun.SetParticleEnergy(float(self._energies[self._next]) * g4.MeV)
        # Start just in front of the calorimeter, in vacuum.
        z0 = -0.5 * N_SLABS * SLAB_MM - 1.0
        self._gun.SetParticlePosition(g4.G4ThreeVector(x * g4.mm, y * g4.mm, z0 * g4.mm))
        self._gun.GeneratePrimaryVertex(event)

    def collect(self, event: Any) -> None:
        i = self._next
        hce = event.GetHCofThisEvent()
        cells = hce.GetHC(self._hc_cells)
        row = self._cells[i]
        for index, value in cells:
            row[index] = value
        si_outside = sum(value for _, value in hce.GetHC(self._hc_si))
        w = sum(value for _, value in hce.GetHC(self._hc_w))
        self._si_total[i] = row.sum() + si_outside
        self._deposit[i] = self._si_total[i] + w
        self._next += 1


def _physics_list(g4: Any, physics: Physics) -> Any:
    if physics.physics_list == "em_datafree":
        lib = ctypes.CDLL(physics.extension)
        construct = lib.surrogate_construct_em_datafree
        construct.restype = ctypes.c_int

        class DataFreeEm(g4.G4VPhysicsConstructor):
            def __init__(self) -> None:
                super().__init__("surrogate_em_datafree")

            def ConstructParticle(self) -> None:
                g4.G4Gamma.GammaDefinition()
                g4.G4Electron.ElectronDefinition()
                g4.G4Positron.PositronDefinition()
                g4.G4Proton.ProtonDefinition()
                g4.G4GenericIon.GenericIonDefinition()

            def ConstructProcess(self) -> None:
                construct()

        constructor = DataFreeEm()
    else:
        # geant4_pybind binds the stock EM constructors by their C++ class names.
        constructor = getattr(g4, physics.physics_list)()

    class PhysicsList(g4.G4VModularPhysicsList):
        def __init__(self) -> None:
            super().__init__()
            self.SetVerboseLevel(0)
            self.constructor = constructor  # Python owns it: keep it alive as long as the list
            self.RegisterPhysics(constructor)

    return PhysicsList()


def _detector_class(g4: Any) -> Any:
    class Calorimeter(g4.G4VUserDetectorConstruction):
        def __init__(self) -> None:
            super().__init__()
            self.keep: list[Any] = []  # Geant4 holds raw pointers: Python must keep the objects alive

        def Construct(self) -> Any:
            nist = g4.G4NistManager.Instance()
            vacuum = nist.FindOrBuildMaterial("G4_Galactic")
            tungsten = nist.FindOrBuildMaterial("G4_W")
            silicon = nist.FindOrBuildMaterial("G4_Si")
            mm, deg = g4.mm, g4.deg
            half_z = 0.5 * N_SLABS * SLAB_MM * mm
            world_s = g4.G4Box("World", 1000 * mm, 1000 * mm, 1000 * mm)
            world_l = g4.G4LogicalVolume(world_s, vacuum, "World")
            world_p = g4.G4PVPlacement(None, g4.G4ThreeVector(), world_l, "World", None, False, 0)
            calo_s = g4.G4Tubs("Calorimeter", 0, CALO_RADIUS_MM * mm, half_z, 0, 360 * deg)
            calo_l = g4.G4LogicalVolume(calo_s, tungsten, "Calorimeter")
            calo_p = g4.G4PVPlacement(None, g4.G4ThreeVector(), calo_l, "Calorimeter", world_l, False, 0)
            half_si = 0.5 * SI_MM * mm
            si_s = g4.G4Tubs("SiLayer", 0, CALO_RADIUS_MM * mm, half_si, 0, 360 * deg)
            si_l = g4.G4LogicalVolume(si_s, silicon, "SiLayer")
            placements = []
            for slab in range(N_SLABS):
                z = -half_z + (slab * SLAB_MM + W_MM) * mm + half_si
                # Copy number = readout layer: two Si layers share one, the scorer sums them.
                placements.append(g4.G4PVPlacement(None, g4.G4ThreeVector(0, 0, z), si_l, "SiLayer", calo_l,
                                                   False, slab // 2))
            disc_s = g4.G4Tubs("Readout", 0, READOUT_RADIUS_MM * mm, half_si, 0, 360 * deg)
            disc_l = g4.G4LogicalVolume(disc_s, silicon, "Readout")
            disc_p = g4.G4PVPlacement(None, g4.G4ThreeVector(), disc_l, "Readout", si_l, False, 0)
            ring_s = g4.G4Tubs("Ring", 0, R_CELL_MM * mm, half_si, 0, 360 * deg)
            ring_l = g4.G4LogicalVolume(ring_s, silicon, "Ring")
            ring_p = g4.G4PVReplica("Ring", ring_l, disc_l, g4.kRho, N_R, R_CELL_MM * mm)
            width = 360.0 / N_ALPHA * deg
            # A phi replica's solid is centred on phi = 0; copy k then spans [k, k+1) x width from +x.
            cell_s = g4.G4Tubs("Cell", 0, R_CELL_MM * mm, half_si, -0.5 * width, width)
            cell_l = g4.G4LogicalVolume(cell_s, silicon, "Cell")
            cell_p = g4.G4PVReplica("Cell", cell_l, ring_l, g4.kPhi, N_ALPHA, width)
            self.keep += [world_s, world_l, world_p, calo_s, calo_l, calo_p, si_s, si_l, *placements, disc_s,
                          disc_l, disc_p, ring_s, ring_l, ring_p, cell_s, cell_l, cell_p]
            self._logical = {"cells": cell_l, "si": si_l, "w": calo_l}
            return world_p

        def ConstructSDandField(self) -> None:
            sd = g4.G4SDManager.GetSDMpointer()
            # Cell index = layer*144 + r*16 + phi: layer is the copy number 3 levels up (cell, ring,
            # disc, Si layer), r the ring's copy number, phi the cell's (../shared/GEANT4.md).
            scorers = {
                "cells": g4.G4PSEnergyDeposit3D("edep", N_LAYERS, N_R, N_ALPHA, 3, 1, 0),
                "si": g4.G4PSEnergyDeposit("edep"),
                "w": g4.G4PSEnergyDeposit("edep"),
            }
            for name, scorer in scorers.items():
                detector = g4.G4MultiFunctionalDetector(f"{SCORER_PREFIX}_{name}")
                sd.AddNewDetector(detector)
                detector.RegisterPrimitive(scorer)
                self.SetSensitiveDetector(self._logical[name], detector)
                self.keep += [detector, scorer]

    return Calorimeter


def _actions_class(g4: Any) -> Any:
    class Generator(g4.G4VUserPrimaryGeneratorAction):
        def __init__(self, session: _Session) -> None:
            super().__init__()
            self.session = session

        def GeneratePrimaries(self, event: Any) -> None:
            self.session.generate(event)

    class EventAction(g4.G4UserEventAction):
        def __init__(self, session: _Session) -> None:
            super().__init__()
            self.session = session

        def EndOfEventAction(self, event: Any) -> None:
            self.session.collect(event)

    class Actions(g4.G4VUserActionInitialization):
        def __init__(self, session: _Session) -> None:
            super().__init__()
            self.session = session

        def Build(self) -> None:
            self.SetUserAction(Generator(self.session))
            self.SetUserAction(EventAction(self.session))

    return Actions


_SESSION: _Session | None = None


def run_shard(physics: Physics, index: int, energies_mev: np.ndarray, seed: int,
              beam_xy_mm: tuple[float, float] = (0.0, 0.0)) -> ShardResult:
    """Simulate one shard in this process: showers of ``energies_mev`` (n,) with MixMax seeded by ``seed``.

    The first call in a process builds the Geant4 application; later calls must use the same physics.
    ``beam_xy_mm`` moves the beam off the axis (used to check the voxel order).
    """
    global _SESSION
    if _SESSION is None:
        _SESSION = _Session(physics)
    elif _SESSION.physics != physics:
        raise RuntimeError("a Geant4 worker process serves one physics set-up (one run manager per process)")
    start = time.process_time()
    cells, si_total, deposit = _SESSION.run(energies_mev, seed, beam_xy_mm)
    return ShardResult(index=index, si_mev=cells, si_total_mev=si_total, deposit_mev=deposit,
                       cpu_seconds=time.process_time() - start)
