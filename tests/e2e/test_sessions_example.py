"""``examples/sessions.py`` runs: sessions found, stragglers in the side output, none lost."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sessions.py"


def test_sessions_example_accounts_for_every_click() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--clicks", "4000", "--users", "20"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    summary = re.search(
        r"sessions: (\d+), clicks in sessions: (\d+), late clicks: (\d+)", done.stdout
    )
    assert summary is not None, done.stdout
    sessions, clicks, late = map(int, summary.groups())
    assert sessions > 0 and late > 0
    assert clicks + late == 4000
    assert "clicks accounted for: 4000 of 4000" in done.stdout
