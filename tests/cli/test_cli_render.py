"""Paths the commands print are never wrapped, whatever the width: they must copy whole."""

from __future__ import annotations

import pytest

from runtime.cli import render

LONG = "/var/weir/savepoints/" + "/".join(["a-rather-long-folder-name"] * 8) + "/savepoint-1"


def test_operation_path_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    render.render_operation("savepoint", {"checkpointId": 3, "location": LONG})
    out = capsys.readouterr().out
    assert out == f"savepoint 3 completed: {LONG}\n"


def test_restored_path_and_failures_are_one_line_each(capsys: pytest.CaptureFixture[str]) -> None:
    details = {
        "name": "job",
        "jid": "0" * 32,
        "state": "RUNNING",
        "restarts": 1,
        "failures": [f"OperatorError: cannot read {LONG}"],
        "vertices": [],
    }
    checkpoints = {
        "counts": {"triggered": 0, "completed": 0, "failed": 0, "in_progress": 0, "restored": 1},
        "latest": {"restored": {"external_path": LONG}},
        "history": [],
    }
    render.render_job(details, checkpoints)
    lines = capsys.readouterr().out.splitlines()
    assert f"restored from {LONG}" in lines
    assert f"  failure: OperatorError: cannot read {LONG}" in lines
