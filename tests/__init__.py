"""The test suite (a regular package: pyHalo 1.4.5 installs a top-level ``tests`` package into site-packages,
which would otherwise shadow this one in ``from tests.<dir> import ...``)."""
