"""The kit's ``connectors`` part, end to end at a tiny size (asserts nothing on time)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_connectors_part_reports_every_figure(tmp_path: Path) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--only",
            "connectors",
            "--out",
            str(tmp_path),
            "--part-args",
            "connectors=--quick --rows 3000 --entries 3000 --lines 3000",
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
    figures = [row["figure"] for row in report["headline"] if row["part"] == "connectors"]
    assert len(figures) == 3, figures
    assert any("PostgresSink exactly-once" in f for f in figures)
    assert any("RedisStreamSource" in f for f in figures)
    assert any("FileSource JSON Lines" in f for f in figures)
