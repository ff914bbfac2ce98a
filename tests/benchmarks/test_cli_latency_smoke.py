"""The CLI latency benchmark runs end to end: it times ``weir --help`` and ``weir status``
of a real ``weir run`` and writes its result (no assertion on the times)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_cli_latency_benchmark_runs(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.cli_latency", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "weir --help" in done.stdout and "weir status" in done.stdout, done.stdout
    result = json.loads((tmp_path / "cli_latency.json").read_text())
    assert result["runs"] == 3
    for key in ("python_start_s", "help_s", "status_s"):
        assert result[key] > 0, result
