"""Fixtures of the command-line tests: ``weir`` commands and the job script they run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from cli_driver import COMMAND_SECONDS, UNBOUNDED_JOB, Outcome, run_weir


@pytest.fixture
def weir(tmp_path: Path) -> Callable[..., Outcome]:
    """Run ``weir ARGS...`` in ``tmp_path`` (or ``cwd=``), with a timeout."""

    def run(*args: str, cwd: Path | None = None, timeout: float = COMMAND_SECONDS) -> Outcome:
        return run_weir(*args, cwd=cwd or tmp_path, timeout=timeout)

    return run


@pytest.fixture(scope="module")
def job_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("script") / "job.py"
    path.write_text(UNBOUNDED_JOB)
    return path
