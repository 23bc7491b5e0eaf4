"""``python -m surrogate`` is the ``surrogate`` command."""

import sys

from surrogate.cli import main

sys.exit(main())
