"""The kit run end to end in a subprocess, as a user runs it (asserts nothing on time).

The default test runs three parts at tiny sizes (a few seconds). The ``stress`` one runs
the whole ``--quick`` suite, which takes minutes since the kit has 17 parts: only with
``WEIR_KIT_SMOKE=full`` (most parts have a smoke test of their own). Both check the
report files, not figures: Bytewax and matplotlib may be absent (the bench extra), and
the report must say so.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_kit(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def check_report(out: Path, parts: list[str]) -> dict:
    report = json.loads((out / "report.json").read_text())  # strict JSON
    assert report["failed"] == [], (out / "kit.log").read_text()
    assert list(report["parts"]) == parts
    assert all(report["parts"][name]["status"] == "ok" for name in parts)
    assert report["machine"]["cores"] and report["machine"]["python"]
    assert report["headline"]
    markdown = (out / "report.md").read_text()
    assert markdown.startswith("# Weir benchmark report")
    for name in parts:
        assert f"(`{name}`)" in markdown
    if importlib.util.find_spec("bytewax") is None and "bytewax" in parts:
        assert "Bytewax is not installed" in markdown
    if importlib.util.find_spec("matplotlib") is None:
        assert "matplotlib is not installed" in markdown
    else:
        for filename in report["plots"]["files"].values():
            assert (out / filename).stat().st_size > 0
            assert f"]({filename})" in markdown
    return report


def test_kit_runs_tiny_parts_end_to_end(tmp_path: Path) -> None:
    done = run_kit(
        "--only",
        "throughput,bytewax,overhead",
        "--out",
        str(tmp_path),
        "--part-args",
        "throughput=--records 20000 --repeats 1",
        "--part-args",
        "bytewax=--records 20000 --repeats 1",
        "--part-args",
        "overhead=--records 20000 --repeats 1 --stall-keys 2000 --intervals 1,0.1",
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = check_report(tmp_path, ["throughput", "bytewax", "overhead"])
    assert report["mode"] == "full"
    # A full run also writes each script's own report.
    for name in ("throughput", "bytewax_baseline", "overhead"):
        assert (tmp_path / f"{name}.json").exists() and (tmp_path / f"{name}.md").exists()
    if importlib.util.find_spec("matplotlib") is not None:
        assert "throughput_vs_interval.png" in report["plots"]["files"].values()
    assert "report:" in done.stdout and "| part | figure |" in done.stdout


@pytest.mark.stress
@pytest.mark.skipif(
    os.environ.get("WEIR_KIT_SMOKE") != "full",
    reason="the whole --quick kit takes minutes (17 parts); the kit's machinery runs "
    "above and most parts have their own smoke test: set WEIR_KIT_SMOKE=full to run it",
)
def test_quick_kit_runs_the_whole_suite(tmp_path: Path) -> None:
    done = run_kit("--quick", "--out", str(tmp_path), timeout=600)
    assert done.returncode == 0, done.stderr
    parts = json.loads((tmp_path / "report.json").read_text())["parts"]
    report = check_report(tmp_path, list(parts))
    assert report["mode"] == "quick"
    assert {"throughput", "bytewax", "overhead", "backpressure", "sweep", "recovery"} <= set(parts)
