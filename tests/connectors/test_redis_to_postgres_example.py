"""``examples/redis_to_postgres.py`` runs end to end on its throwaway servers."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_example_counts_every_view_once() -> None:
    done = subprocess.run(
        [sys.executable, "examples/redis_to_postgres.py", "--views", "1000"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    # 1,000 views over 50 users: 20 each, one row per view.
    top = re.findall(r"^(user\d+): (\d+) views \((\d+) rows\)$", done.stdout, re.MULTILINE)
    assert len(top) == 5, done.stdout
    assert all(views == rows == "20" for _, views, rows in top), top
