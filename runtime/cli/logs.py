"""What ``weir run`` shows of the ``weir`` loggers: their records, rich-formatted, on stderr.

The runtime logs under one hierarchy (``weir.scheduler``: task failures, restarts and
the job's end; ``weir.checkpoint``: declined and expired checkpoints; ``weir.restore``:
what a job restores from, and state that cannot be restored; ``weir.cli``: refused HTTP
requests). As a library it only adds a ``NullHandler``; ``weir run`` attaches a
``rich`` handler to ``weir`` for as long as the script runs (:func:`showing_logs`),
so that a job that fails and restarts says so where its user looks.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.logging import RichHandler

__all__ = ["LOG_LEVELS", "showing_logs"]

LOG_LEVELS = ("debug", "info", "warning", "error")
"""The values of ``weir run --log-level``."""


@contextmanager
def showing_logs(level: str = "info", console: Console | None = None) -> Iterator[logging.Handler]:
    """Show the ``weir`` loggers' records of ``level`` and above on stderr, meanwhile.

    Args:
        level: One of :data:`LOG_LEVELS`.
        console: The stderr console to print on (shared with a progress display).

    Yields:
        The handler (removed, and the logger's level restored, on exit).

    Raises:
        ValueError: An unknown level.
    """
    if level not in LOG_LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    handler = RichHandler(
        console=console or Console(stderr=True, highlight=False),
        show_path=False,
        markup=False,
        rich_tracebacks=True,
        tracebacks_show_locals=False,
        log_time_format="%H:%M:%S",
    )
    handler.setLevel(level.upper())
    logger = logging.getLogger("weir")
    saved = logger.level
    logger.setLevel(min(logging.getLevelName(level.upper()), saved or logging.WARNING))
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved)
