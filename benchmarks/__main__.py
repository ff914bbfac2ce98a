"""``python -m benchmarks``: the benchmark kit (see ``benchmarks.kit``)."""

import sys

from benchmarks.kit import main

sys.exit(main())
