"""The kit's ``event_time`` part, end to end at a tiny size (asserts nothing on time)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_event_time_part_reports_every_figure(tmp_path: Path) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--only",
            "event_time",
            "--out",
            str(tmp_path),
            "--part-args",
            "event_time=--quick --records 20000 --timers 2000",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["failed"] == [], (tmp_path / "kit.log").read_text()
    figures = [row["figure"] for row in report["headline"] if row["part"] == "event_time"]
    # Window vs keyed count, the timer checkpoint's stall, and Bytewax if installed.
    assert len(figures) in (2, 3), figures
