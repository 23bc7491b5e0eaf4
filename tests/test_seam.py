"""The domain seam: generic code names no domain, simulators do not import domains, every domain is complete.

Adding a domain must be adding its own modules (surrogate/domains/<name>/, a simulator, models, configs),
not editing generic code; these tests make the first two rules checkable.
"""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path

import pytest

from surrogate.domains import available, get_domain
from surrogate.domains.base import Domain

PACKAGE = Path(__file__).resolve().parents[1] / "surrogate"
# Words that belong to the calorimeter (its physics, its simulator, its models, its baseline). A generic
# module that needs one of them has grown a calorimeter branch. Citations of the CaloChallenge (the
# source of generic metric definitions such as the classifier test) are allowed.
CALORIMETER_WORDS = re.compile(
    r"calorimeter|shower|voxel|geant|gflash|incident|\bE_inc\b|\bMeV\b|\bcalo_|E_layer|E_ratio|E_radial",
    re.IGNORECASE)
# The calorimeter's own modules: where those words belong.
CALORIMETER_MODULES = ("domains/calorimeter/", "simulators/geant4_calo/", "models/calo_", "baselines/gflash")
# The same for strong lensing.
LENSING_WORDS = re.compile(r"lens|theta_E|einstein|pyhalo|subhalo|sersic", re.IGNORECASE)
LENSING_MODULES = ("domains/strong_lensing/", "simulators/lenstronomy_lens/", "models/lens_")
# The same for weak lensing (convergence maps conditioned on cosmology).
WEAK_LENSING_WORDS = re.compile(r"kappa|convergence|Omega_m|sigma_8|cosmolog|pyccl|halofit|lognormal|\bnfw\b",
                                re.IGNORECASE)
WEAK_LENSING_MODULES = ("domains/weak_lensing/", "simulators/convergence_maps/", "models/kappa_")


def _generic_modules() -> list[Path]:
    return [p for p in sorted(PACKAGE.rglob("*.py"))
            if not p.relative_to(PACKAGE).as_posix().startswith(CALORIMETER_MODULES + LENSING_MODULES
                                                                + WEAK_LENSING_MODULES)]


@pytest.mark.parametrize(("domain", "words"), [("calorimeter", CALORIMETER_WORDS), ("lensing", LENSING_WORDS),
                                               ("weak lensing", WEAK_LENSING_WORDS)])
def test_generic_code_names_no_domain_words(domain: str, words: re.Pattern[str]) -> None:
    hits = [f"{path.relative_to(PACKAGE)}:{n}: {line.strip()}"
            for path in _generic_modules()
            for n, line in enumerate(path.read_text().splitlines(), 1) if words.search(line)]
    assert not hits, f"{domain} words in generic code:\n" + "\n".join(hits)


def test_the_grep_sees_the_domains() -> None:
    """The word lists are not vacuous: they find each domain's words in its own modules."""
    generic = set(_generic_modules())
    for words, prefixes in ((CALORIMETER_WORDS, CALORIMETER_MODULES), (LENSING_WORDS, LENSING_MODULES),
                            (WEAK_LENSING_WORDS, WEAK_LENSING_MODULES)):
        own = [p for p in sorted(PACKAGE.rglob("*.py")) if p.relative_to(PACKAGE).as_posix().startswith(prefixes)]
        assert len(own) >= 4
        hits = sum(len(words.findall(p.read_text())) for p in own)
        assert hits > 100, hits
    assert len(generic) > 30


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_simulators_do_not_import_domains() -> None:
    """A domain imports its simulator, never the reverse (type-only imports included)."""
    modules = sorted((PACKAGE / "simulators").rglob("*.py"))
    assert len(modules) >= 4
    bad = {str(p.relative_to(PACKAGE)): sorted(m for m in _imports(p) if m.startswith("surrogate.domains"))
           for p in modules}
    assert not {k: v for k, v in bad.items() if v}


@pytest.mark.parametrize("name", available())
def test_every_domain_fulfils_the_contract(name: str) -> None:
    domain = get_domain(name)
    members = [m for m in Domain.__annotations__] + [m for m in vars(Domain) if not m.startswith("_")]
    missing = [m for m in members if not hasattr(domain, m)]
    assert not missing, f"{name} lacks {missing}"
    assert domain.name == name
    assert domain.n_features == math.prod(domain.event_shape) > 0
    assert domain.n_cond == len(domain.conditions) > 0
    assert len({c.name for c in domain.conditions}) == domain.n_cond
    assert all(c.units and c.description for c in domain.conditions)
    assert domain.events_file.endswith(".h5")
    assert domain.metrics and len({m.name for m in domain.metrics}) == len(domain.metrics)
    assert domain.protocol and domain.protocol_note
