"""Errors a user can act on.

Anything raised as :class:`SurrogateError` is printed by the CLI as one line (no traceback) and exits
with status 2. Messages name the file, the field and what was expected.
"""

from __future__ import annotations

from pathlib import Path


class SurrogateError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class ConfigError(SurrogateError):
    """A config key that does not exist, or a value of the wrong type or out of range."""


class InputError(SurrogateError):
    """A data file that cannot be used: ``InputError(path, field, problem)``."""

    def __init__(self, path: str | Path, field: str | None, problem: str) -> None:
        self.path = str(path)
        self.field = field
        self.problem = problem
        where = f"{self.path}: {field}" if field else self.path
        super().__init__(f"{where}: {problem}")


class OutputExistsError(SurrogateError):
    """Refusing to overwrite an existing output."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(f"{path}: already exists; choose another --out (outputs are never overwritten)")
