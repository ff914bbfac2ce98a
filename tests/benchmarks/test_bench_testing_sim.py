"""The kit's ``testing`` part, end to end at a tiny size (asserts nothing on time)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_testing_part_reports_the_speedup_and_the_replays(tmp_path: Path) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--only",
            "testing",
            "--out",
            str(tmp_path),
            "--part-args",
            "testing=--quick --repeats 1",
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
    rows = [row for row in report["headline"] if row["part"] == "testing"]
    assert [row["goal"] for row in rows] == [">= 10x faster"]
    assert "simulation vs real time" in rows[0]["figure"]
    part = report["parts"]["testing"]["report"]
    assert part["pacings"]["kit default"]["replays_identical"] is True
