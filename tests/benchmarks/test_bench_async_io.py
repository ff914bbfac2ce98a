"""The kit's ``async_io`` part, end to end at a tiny size (asserts nothing on time)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_async_io_part_reports_every_figure(tmp_path: Path) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--only",
            "async_io",
            "--out",
            str(tmp_path),
            "--part-args",
            "async_io=--quick --records 300 --map-records 5 --http-records 60 "
            "--latency-records 200 --checkpoint-seconds 0.6",
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
    figures = [row["figure"] for row in report["headline"] if row["part"] == "async_io"]
    assert len(figures) == 9, figures
    # Every figure says which variant it measured.
    assert all("ordered" in figure for figure in figures), figures
    markdown = (tmp_path / "report.md").read_text()
    assert "(`async_io`)" in markdown
