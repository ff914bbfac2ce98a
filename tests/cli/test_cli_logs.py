"""``weir run`` shows the ``weir`` loggers' records on stderr, and only while it runs."""

from __future__ import annotations

import logging

import pytest

from runtime.cli.logs import showing_logs


def test_weir_records_are_shown_on_stderr_meanwhile(capsys: pytest.CaptureFixture[str]) -> None:
    logger = logging.getLogger("weir.scheduler")
    before = logging.getLogger("weir").level
    with showing_logs("info"):
        logger.warning("job 'demo' restarts in 1.5s (restart 1, restart strategy none)")
        logger.debug("not shown at info")
        logging.getLogger("elsewhere").warning("not a weir record")
    logger.warning("after the run: not shown")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "job 'demo' restarts in 1.5s (restart 1" in captured.err
    assert "WARNING" in captured.err
    assert "not shown" not in captured.err
    assert "not a weir record" not in captured.err
    assert logging.getLogger("weir").level == before


def test_an_unknown_level_is_refused() -> None:
    levels = "log level must be one of debug, info, warning, error"
    with pytest.raises(ValueError, match=levels), showing_logs("loud"):
        pass
