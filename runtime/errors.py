"""Errors of the runtime: one tree, rooted at ``WeirError``.

The tree (where each class lives, when not here)::

    WeirError                         base of everything raised by ``runtime`` on purpose
    ├── ConfigError (ValueError)      the job or an option is invalid; raised when the job
    │   │                             is built, names the operator or option and what to do
    │   ├── RestoreFromError          ``restore_from=`` names no usable checkpoint
    │   │                             (runtime.scheduler.recovery)
    │   └── SimulationError           a simulation is set up wrong (runtime.testing)
    ├── OperatorError                 a user function raised while a subtask ran it; names
    │                                 the operator, the subtask and the record (its
    │                                 ``__cause__`` is the user's exception)
    ├── CheckpointError               a checkpoint failed, with a ``CheckpointFailureReason``
    │   └── CheckpointFailedError     (runtime.checkpoint.errors)
    ├── ConnectorError                a source or sink met bad data or a broken server
    │                                 (runtime.connectors.errors)
    ├── JobFailedError                ``execute`` / ``JobClient.wait``: the job failed;
    │                                 carries the ``JobResult`` and the first failure as
    │                                 ``__cause__`` (runtime.scheduler.result, beside the
    │                                 ``JobResult``: this module imports nothing)
    ├── CliError                      a ``weir`` command failed, with an exit code
    │   ├── UsageError                (runtime.cli.errors)
    │   └── ApiFailure                (runtime.cli.client)
    └── ApiError                      an HTTP answer with an error status (runtime.cli.api)

Outside the tree, on purpose:

* The actor kernel (``actors.errors.ActorError``) and storage
  (``storage.errors.WeirStorageError``, ``storage.checkpoint.errors.StorageError``) keep
  their own roots: the layering forbids them to import ``runtime``. The runtime wraps
  them where a user needs the job's context (``OperatorError``, ``CheckpointError``).
* ``RestoreWarning`` is a ``UserWarning``.
* The test kit's ``ValidationError`` is an ``AssertionError`` (a failed property is a
  failed test), ``InjectedFailureError`` a ``RuntimeError`` (it stands for any failure
  a user function may raise).
* The worker-process errors of ``runtime.cluster.master`` (``WorkerLostError``,
  ``WorkerStartError``, ``RemoteTaskError``) are ``RuntimeError`` for now: the failure
  of an attempt, handled by the restart strategy.

This module imports nothing of ``runtime`` (tests/test_layering.py): every sub-package
may raise its errors.
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
