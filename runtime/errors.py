"""Errors of the runtime.

The tree::

    WeirError                       base of everything raised by ``runtime``
    ├── ConfigError (ValueError)    the job or an option is invalid; raised when the job
    │                               is built, names the operator or option and what to do
    ├── OperatorError               a user function raised while a subtask ran it; names the
    │                               operator, the subtask and the record (its ``__cause__``
    │                               is the user's exception)
    └── JobFailedError              ``execute`` / ``JobClient.wait``: the job failed; carries
                                    the ``JobResult`` and the first failure as ``__cause__``

Errors of the actor kernel (``actors.errors``) and of storage (``storage.errors``) are
their own trees; the runtime wraps them where a user needs the job's context.
"""

from __future__ import annotations


class WeirError(Exception):
    """Base class of the runtime's errors."""


class ConfigError(WeirError, ValueError):
    """The job or one of its options is invalid. Raised when the job is built."""


def _short(value: object, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class OperatorError(WeirError):
    """A user function raised inside a subtask.

    Attributes:
        operator: the operator's name.
        subtask: the subtask's index (0-based).
        parallelism: the operator's parallelism.
        record: the record being processed, if there was one.
    """

    def __init__(
        self,
        operator: str,
        subtask: int,
        parallelism: int,
        cause: BaseException,
        *,
        record: object = None,
        has_record: bool = False,
        phase: str = "processing",
    ) -> None:
        where = f"operator {operator!r} (subtask {subtask + 1}/{parallelism})"
        what = f"{type(cause).__name__}: {cause}"
        if has_record:
            message = f"{where} raised {what} while processing record {_short(record)}"
        else:
            message = f"{where} raised {what} during {phase}"
        super().__init__(message)
        self.operator = operator
        self.subtask = subtask
        self.parallelism = parallelism
        self.record = record
        self.__cause__ = cause

