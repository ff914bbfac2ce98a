"""``examples/enrich.py`` runs: its loopback service, its httpx client and its job."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "enrich.py"


def test_enrich_example_runs_and_enriches_every_event() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--records", "120", "--latency", "0.001"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    line = next(x for x in done.stdout.splitlines() if x.startswith("events per tier: "))
    counts = ast.literal_eval(line.removeprefix("events per tier: "))
    assert set(counts) <= {"free", "pro", "team"}, "no lookup timed out"
    assert sum(counts.values()) == 120, counts
    assert "checkpoints:" in done.stdout
