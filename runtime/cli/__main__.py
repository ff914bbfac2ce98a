"""``python -m runtime.cli``: the ``weir`` command line."""

from __future__ import annotations

import sys

from runtime.cli.app import main

sys.exit(main())
