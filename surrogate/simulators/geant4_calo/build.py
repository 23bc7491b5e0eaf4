"""Compile the data-free EM physics extension (ext.cc) and lay out stand-in Geant4 data directories.

Both live in a per-user cache directory: ``$SURROGATE_CACHE_DIR``, else ``$XDG_CACHE_HOME/surrogate``,
else ``~/.cache/surrogate``. The compiled library is keyed by a hash of the source and of the
geant4-pybind module it links against (path and size), so upgrading either rebuilds it, and a build
is published by an atomic rename so concurrent processes never load a half-written file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

from surrogate.errors import SurrogateError

SOURCE = Path(__file__).with_name("ext.cc")


def cache_dir() -> Path:
    """The per-user cache directory (created on demand by the functions that write to it)."""
    override = os.environ.get("SURROGATE_CACHE_DIR")
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "surrogate"


def geant4_module() -> Path:
    """Path of the geant4-pybind extension module, found without importing it (importing needs env vars)."""
    spec = importlib.util.find_spec("geant4_pybind")
    if spec is None or spec.origin is None:
        raise SurrogateError("geant4_pybind is not installed: pip install geant4-pybind==0.1.3")
    return Path(spec.origin)


def extension_path() -> Path:
    """Where the compiled extension for this source and this geant4-pybind build lives (may not exist yet)."""
    module = geant4_module()
    key = hashlib.sha256()
    key.update(SOURCE.read_bytes())
    key.update(str(module.resolve()).encode())
    key.update(str(module.stat().st_size).encode())
    return cache_dir() / "geant4_calo" / f"libsurrogate_em_{key.hexdigest()[:16]}.so"


def build_extension() -> Path:
    """Compile ext.cc against geant4-pybind unless an identical build is cached; return its path."""
    target = extension_path()
    if target.exists():
        return target
    compiler = shutil.which(os.environ.get("CXX", "g++"))
    if compiler is None:
        raise SurrogateError("g++ not found: the data-free Geant4 physics list compiles a small C++ "
                             "extension (install g++, or set CXX to a C++17 compiler)")
    module = geant4_module()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    # No Geant4 headers needed: ext.cc declares the few symbols it uses; rpath finds the module at run time.
    cmd = [compiler, "-std=c++17", "-O2", "-fPIC", "-shared", str(SOURCE), "-o", str(partial), str(module),
           f"-Wl,-rpath,{module.parent}"]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise SurrogateError(f"compiling the Geant4 physics extension failed ({compiler}): {last}")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def stand_in_data_env() -> dict[str, str]:
    """Environment that lets geant4-pybind start without its data sets (../shared/GEANT4.md).

    GEANT4_DATA_DIR being set at all skips the wheel's interactive download check; the run manager
    aborts unless G4ENSDFSTATEDATA holds an ENSDFSTATE.dat (empty is enough: no radioactive decay is
    simulated); stock EM constructors read G4LEVELGAMMADATA (an empty directory is enough to start).
    """
    root = cache_dir() / "geant4-data"
    ensdf = root / "G4ENSDFSTATE3.0"
    levelgamma = root / "PhotonEvaporation"
    ensdf.mkdir(parents=True, exist_ok=True)
    levelgamma.mkdir(parents=True, exist_ok=True)
    (ensdf / "ENSDFSTATE.dat").touch()
    return {"GEANT4_DATA_DIR": str(root), "G4ENSDFSTATEDATA": str(ensdf), "G4LEVELGAMMADATA": str(levelgamma)}


def geant4_env() -> dict[str, str]:
    """Variables to set in a worker before importing geant4_pybind.

    A user who has the real data sets points GEANT4_DATA_DIR at them; then nothing is replaced and the
    stock physics lists work. Otherwise the stand-ins above are used, which suffice for em_datafree only.
    """
    if os.environ.get("GEANT4_DATA_DIR"):
        return {}
    return stand_in_data_env()
