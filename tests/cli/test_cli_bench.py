"""``weir bench``: forwards to ``python -m benchmarks`` in a checkout, says why not elsewhere."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_driver import Outcome

import runtime

# The module, not the Typer app that ``runtime.cli`` exports under the same name.
cli_app = importlib.import_module("runtime.cli.app")


def test_bench_forwards_its_arguments_to_the_kit(weir: Callable[..., Outcome]) -> None:
    listed = weir("bench", "--list")
    assert listed.returncode == 0, listed.stderr
    for part in ("throughput", "bytewax", "overhead", "backpressure", "sweep", "recovery"):
        assert part in listed.stdout
    usage = weir("bench", "--help")
    assert usage.returncode == 0 and "--quick" in usage.stdout and "--only" in usage.stdout
    wrong = weir("bench", "--only", "nope")
    assert wrong.returncode == 2 and "unknown part(s): nope" in wrong.stderr


def test_bench_outside_a_checkout_says_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    installed = tmp_path / "site-packages" / "runtime" / "__init__.py"
    monkeypatch.setattr(runtime, "__file__", str(installed))
    monkeypatch.chdir(tmp_path)
    assert cli_app._checkout() is None
    assert cli_app.main(["bench", "--quick"]) == 1
    assert "clone of the" in capsys.readouterr().err
