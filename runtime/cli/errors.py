"""Errors of the command line: a message for the user and the exit status to end with.

Every command turns what went wrong into a :class:`CliError` (exit status 1) or a
:class:`UsageError` (2, like a bad option); ``runtime.cli.app`` prints the message on
standard error, or ``{"error": message}`` on standard output with ``--json``, and exits.
"""

from __future__ import annotations

from runtime.errors import WeirError

__all__ = ["CliError", "UsageError"]


class CliError(WeirError):
    """A command failed; ``message`` says why and ``exit_code`` is its exit status."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(CliError):
    """A command was given something it cannot use (a missing file, a bad value)."""

    exit_code = 2
