"""Physics domains. Each is one package here exposing the :class:`~surrogate.domains.base.Domain` API.

Adding a domain = adding ``surrogate/domains/<name>/`` (+ a simulator in ``surrogate/simulators`` and
configs in ``configs/<name>/``); nothing else in the tree names a domain.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, Any

from surrogate.errors import ConfigError

if TYPE_CHECKING:
    from surrogate.domains.base import Domain


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name != "base")


def get_domain(name: str) -> Domain:
    if name not in available():
        raise ConfigError(f"domain: unknown domain {name!r} (available: {', '.join(available())})")
    module = importlib.import_module(f"surrogate.domains.{name}")
    return module.DOMAIN


def domain_for(cfg: Any) -> Domain:
    """The domain of a config, set up for its simulate settings (event shape, condition columns).

    ``cfg``: a surrogate.config.Config (its ``domain`` and ``simulate``). A domain whose event shape or
    conditions depend on its simulator's settings (an image size, a tier with more conditions) returns
    an instance for them; others return their one instance.
    """
    return get_domain(cfg.domain).configured(cfg.simulate)
