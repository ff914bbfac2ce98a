"""``weir run JOB.py``: run a job script with the command line's overrides and HTTP API.

The script runs in this process, as ``python JOB.py ARGS...`` would run it (``runpy``,
``__name__ == "__main__"``, ``sys.argv`` and ``sys.path[0]`` set for it). Before it
runs, ``weir run`` sets ``runtime.api.overrides.OVERRIDES`` (``-p``,
``--checkpoint-dir``, ``--from-savepoint``, ``--allow-non-restored-state``: Flink's
``-p``, ``-s`` and ``-n``), binds the HTTP API's socket and registers the server that
starts with the script's first job (``runtime.cli.server``). Everything is undone when
the script ends, however it ends.
"""

from __future__ import annotations

import logging
import os
import runpy
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from runtime.api.config_keys import parse_assignment
from runtime.api.overrides import JOBS, OVERRIDES
from runtime.cli.errors import CliError, UsageError
from runtime.cli.logs import showing_logs
from runtime.cli.progress import RunProgress
from runtime.cli.server import JobServer, bind_listener, is_loopback
from runtime.cli.targets import SavepointTargets
from runtime.errors import ConfigError
from runtime.scheduler.recovery import RestoreFromError, RestoreWarning
from runtime.scheduler.result import JobFailedError
from storage.checkpoint import NoValidCheckpointError, RestoreRefusedError

if TYPE_CHECKING:
    from runtime.scheduler.executor import JobExecution

__all__ = [
    "DEFAULT_REST_PORT",
    "RunOptions",
    "check_options",
    "execute_script",
    "overridden_parallelism",
    "prepare_run",
]

logger = logging.getLogger("weir.cli")

DEFAULT_REST_PORT = 8081
"""Flink's REST port."""


@dataclass(slots=True)
class RunOptions:
    """What ``weir run`` was given.

    Attributes:
        job: the job script.
        args: the script's own arguments.
        parallelism: default parallelism of the script's environments.
        workers: default number of worker processes of the script's environments.
        checkpoint_dir: checkpoint storage of jobs that enable checkpointing without one.
        defines: ``KEY=VALUE`` configuration of ``-D`` and its shorthands
            (``runtime.api.config_keys``).
        from_savepoint: the savepoint or checkpoint to start from.
        allow_non_restored_state: skip state of operators the job no longer has.
        allow_older_than_committed: let recovery go back past committed output.
        savepoint_dirs: folders the HTTP API may write savepoints under.
        rest_port: the HTTP API's port (0: a free one), None: no API.
        rest_port_given: whether the port was given (a busy default falls back).
        rest_address: the address the API binds to.
        rest_token: the bearer token the API requires (required for an address that
            is not loopback).
        log_level: the lowest level of ``weir`` log records shown on stderr.
        verbose: show the traceback of a configuration error or refused restore.
        progress: draw the live progress line when stderr is a terminal.
    """

    job: Path
    args: list[str] = field(default_factory=list)
    parallelism: int | None = None
    workers: int | None = None
    checkpoint_dir: Path | None = None
    defines: list[str] = field(default_factory=list)
    from_savepoint: str | None = None
    allow_non_restored_state: bool = False
    allow_older_than_committed: bool = False
    savepoint_dirs: list[str] = field(default_factory=list)
    rest_port: int | None = DEFAULT_REST_PORT
    rest_port_given: bool = False
    rest_address: str = "127.0.0.1"
    rest_token: str | None = None
    log_level: str = "info"
    verbose: bool = False
    progress: bool = True


def check_options(options: RunOptions) -> None:
    """Check what ``weir run`` was given, before anything starts.

    Raises:
        UsageError: names the option at fault and what to do.
    """
    if not options.job.is_file():
        raise UsageError(f"no such job file: {options.job}")
    defined_config(options)
    restore = options.from_savepoint
    if restore is not None and "://" not in restore and not Path(restore).exists():
        raise UsageError(f"no savepoint or checkpoint at {options.from_savepoint}")
    if options.allow_non_restored_state and options.from_savepoint is None:
        raise UsageError("--allow-non-restored-state needs --from-savepoint")
    if options.rest_token is not None and not options.rest_token.strip():
        raise UsageError("--rest-token (or WEIR_REST_TOKEN) must not be empty")
    if (
        options.rest_port is not None
        and not is_loopback(options.rest_address)
        and options.rest_token is None
    ):
        raise UsageError(
            f"--rest-address {options.rest_address} is reachable from other machines: give "
            "a bearer token with --rest-token or WEIR_REST_TOKEN (clients send it from "
            "WEIR_REST_TOKEN), or keep the default 127.0.0.1"
        )


def _bind(options: RunOptions, warn: list[str]) -> JobServer | None:
    if options.rest_port is None:
        return None
    targets = SavepointTargets.from_options(options.savepoint_dirs)
    try:
        listener = bind_listener(options.rest_address, options.rest_port)
    except OSError as error:
        if options.rest_port_given or options.rest_port == 0:
            reason = os.strerror(error.errno) if error.errno else str(error)
            raise CliError(
                f"cannot serve the HTTP API on {options.rest_address}:{options.rest_port}: "
                f"{reason} (try --rest-port 0 for a free port)"
            ) from None
        listener = bind_listener(options.rest_address, 0)
        warn.append(f"port {options.rest_port} is in use; serving on another port instead")
    return JobServer(listener, targets, options.rest_token)


def prepare_run(options: RunOptions) -> tuple[JobServer | None, list[str]]:
    """Check the options and bind the HTTP API's socket, before the script runs.

    Args:
        options: what ``weir run`` was given.

    Returns:
        The server (None with ``--no-rest``) and the lines to tell the user: the API's
        address and any warning.

    Raises:
        UsageError: the job file or the savepoint does not exist.
        CliError: the API's port cannot be bound.
    """
    check_options(options)
    lines: list[str] = []
    server = _bind(options, lines)
    if server is not None:
        lines.append(f"job HTTP API on http://{server.address}:{server.port}")
        lines.append(f"dashboard: http://{server.address}:{server.port}/")
        if not is_loopback(server.address):
            lines.append(
                "warning: the HTTP API is reachable from other machines, protected by its "
                "bearer token only (plain HTTP: use it on a network you trust)"
            )
    return server, lines


RESTORE_ERRORS = (RestoreRefusedError, NoValidCheckpointError, RestoreFromError)
"""What a restore refuses or cannot find: one line on stderr, no traceback."""


_FLAGS = (
    (
        "allow_older_than_committed=True (weir run --allow-older-than-committed)",
        "--allow-older-than-committed",
    ),
    ("allow_older_than_committed=True", "--allow-older-than-committed"),
    ("allow_non_restored_state=True", "--allow-non-restored-state (-n)"),
)
"""Keyword arguments that runtime messages name, and the ``weir run`` flag that sets them."""


def _one_line(error: BaseException) -> str:
    """``error``'s message on one line, naming ``weir run``'s flags, not keyword arguments."""
    text = " ".join(str(error).split())
    for keyword, flag in _FLAGS:
        text = text.replace(keyword, flag)
    return text


def overridden_parallelism(execution: JobExecution, parallelism: int) -> str | None:
    """The warning for a job whose script overrides ``weir run -p``, or None.

    The script's own settings win over the command line's, as in Flink: ``-p`` is the
    parallelism of environments made without one and of operators without their own.
    Every vertex of the job graph that runs with another parallelism was set so by the
    script, which ``weir run`` says, rather than losing ``-p`` silently.
    """
    graph = getattr(execution, "graph", None)
    if graph is None:
        return None
    other = [v for v in graph.vertices if v.parallelism != parallelism]
    if not other:
        return None
    names = ", ".join(f"{v.name!r} ({v.parallelism})" for v in other)
    return (
        f"job {execution.job_name!r}: the script sets the parallelism of {names}, which wins "
        f"over -p {parallelism} (the script's settings win over weir run's options)"
    )


def defined_config(options: RunOptions) -> dict[str, Any]:
    """The options ``-D`` (and its shorthands) set, parsed.

    Raises:
        UsageError: an unknown key or a bad value (the message names the key).
    """
    config: dict[str, Any] = {}
    for text in options.defines:
        try:
            option, value = parse_assignment(text)
        except ConfigError as error:
            raise UsageError(str(error)) from None
        config[option] = value
    return config


def execute_script(options: RunOptions, server: JobServer | None) -> None:
    """Run the script to its end; undo the overrides and close the API afterwards.

    Raises:
        SystemExit: the script exited; anything else the script raised, as is.
    """
    OVERRIDES.parallelism = options.parallelism
    OVERRIDES.workers = options.workers
    OVERRIDES.checkpoint_dir = (
        None if options.checkpoint_dir is None else os.path.abspath(options.checkpoint_dir)
    )
    restore = options.from_savepoint
    OVERRIDES.restore_from = (
        restore if restore is None or "://" in restore else os.path.abspath(restore)
    )
    OVERRIDES.allow_non_restored_state = options.allow_non_restored_state
    OVERRIDES.allow_older_than_committed = options.allow_older_than_committed
    OVERRIDES.config = defined_config(options)
    if server is not None:
        JOBS.add_listener(server.on_job_registered)
    parallelism = options.parallelism

    def warn_overridden(execution: JobExecution) -> None:
        warning = None if parallelism is None else overridden_parallelism(execution, parallelism)
        if warning is not None:
            logger.warning("%s", warning)

    JOBS.add_listener(warn_overridden)
    console = Console(stderr=True, highlight=False)
    progress = RunProgress(console) if options.progress and console.is_terminal else None
    if progress is not None:
        JOBS.add_listener(progress.on_job_registered)
    script = options.job.absolute()
    saved_argv, saved_path = sys.argv, list(sys.path)
    sys.argv = [str(options.job), *options.args]
    sys.path.insert(0, str(script.parent))
    try:
        with showing_logs(options.log_level, console), warnings.catch_warnings():
            # The weir.restore log line says it once; no second, multi-line warning.
            warnings.simplefilter("ignore", RestoreWarning)
            runpy.run_path(str(script), run_name="__main__")
    except RESTORE_ERRORS as error:
        if options.verbose:
            raise
        raise CliError(_one_line(error)) from None
    except ConfigError as error:
        # The script's own setup (a missing uid, a bad option): a user error, one line.
        if options.verbose:
            raise
        raise UsageError(f"{_one_line(error)} (--verbose: the traceback)") from None
    except JobFailedError as error:
        if options.verbose:
            raise
        cause = error.__cause__
        if isinstance(cause, RESTORE_ERRORS):
            raise CliError(f"job {error.result.job_name!r}: {_one_line(cause)}") from None
        if isinstance(cause, ConfigError):
            raise UsageError(
                f"job {error.result.job_name!r}: {_one_line(cause)} (--verbose: the traceback)"
            ) from None
        raise
    finally:
        sys.argv = saved_argv
        sys.path[:] = saved_path
        OVERRIDES.clear()
        JOBS.remove_listener(warn_overridden)
        if progress is not None:
            JOBS.remove_listener(progress.on_job_registered)
        if server is not None:
            JOBS.remove_listener(server.on_job_registered)
            server.close()
