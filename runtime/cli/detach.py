"""``weir run -d``: run a job script in a background process that outlives the terminal.

As Flink's ``run -d`` does: the command starts ``weir run`` (without ``-d``) in a new
session, its standard input closed and its output going to a log file, waits until the
script's first job runs and serves its HTTP API, prints the job's id, the API's address,
the process id and the log file, and returns. The job is then reached like any other
with ``weir list``, ``status``, ``checkpoint``, ``savepoint``, ``stop`` and ``cancel``
(``--address`` or ``WEIR_ADDRESS``), and lives until it ends or is stopped.

Every option is checked here first, so a mistake is one line now rather than a line in
a log later. The child gets the same options with paths made absolute; a bearer token
travels in its environment (``WEIR_REST_TOKEN``), never on its command line.
"""

from __future__ import annotations

import datetime
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from runtime.cli.client import RestClient
from runtime.cli.errors import CliError, UsageError
from runtime.cli.run import RunOptions, check_options

__all__ = ["START_SECONDS", "DetachedJob", "default_log_file", "start_detached"]

START_SECONDS = 60.0
"""How long ``weir run -d`` waits for the script's first job to run."""

_ADDRESS = re.compile(r"job HTTP API on (https?://\S+)")
_POLL_SECONDS = 0.05


@dataclass(frozen=True, slots=True)
class DetachedJob:
    """A job running in the background: its id and name, where to reach it, its process."""

    job_id: str
    name: str
    address: str
    pid: int
    log_file: Path


def default_log_file(now: datetime.datetime | None = None) -> Path:
    """``$XDG_STATE_HOME/weir/logs/run-<time>-<pid>.log`` (``~/.local/state`` by default)."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(Path.home(), ".local", "state")
    stamp = (now or datetime.datetime.now()).strftime("%Y%m%d-%H%M%S")
    return Path(base, "weir", "logs", f"run-{stamp}-{os.getpid()}.log")


def child_argv(options: RunOptions) -> list[str]:
    """The ``weir run`` command line the background process runs (paths absolute)."""
    argv = [sys.executable, "-m", "runtime.cli", "run", "--log-level", options.log_level]
    if options.rest_port_given and options.rest_port is not None:
        argv += ["--rest-port", str(options.rest_port)]
    argv += ["--rest-address", options.rest_address]
    if options.parallelism is not None:
        argv += ["--parallelism", str(options.parallelism)]
    if options.checkpoint_dir is not None:
        argv += ["--checkpoint-dir", os.path.abspath(options.checkpoint_dir)]
    for define in options.defines:
        argv += ["-D", define]
    if options.from_savepoint is not None:
        restore = options.from_savepoint
        argv += ["--from-savepoint", restore if "://" in restore else os.path.abspath(restore)]
    if options.allow_non_restored_state:
        argv.append("--allow-non-restored-state")
    if options.allow_older_than_committed:
        argv.append("--allow-older-than-committed")
    if options.verbose:
        argv.append("--verbose")
    argv.append("--no-progress")  # its output is a file
    for folder in options.savepoint_dirs:
        argv += ["--savepoint-dir", folder if "://" in folder else os.path.abspath(folder)]
    return [*argv, str(options.job.absolute()), *options.args]


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


def _ended(process: subprocess.Popen[bytes], log_file: Path, what: str) -> CliError:
    tail = _tail(log_file)
    return CliError(
        f"the job script ended {what} (exit status {process.returncode}); its log: "
        f"{log_file}" + (f"; last lines: {tail}" if tail else "")
    )


def start_detached(
    options: RunOptions, log_file: Path | None = None, timeout: float = START_SECONDS
) -> DetachedJob:
    """Start ``options``' script in the background; return once its first job runs.

    Raises:
        UsageError: a bad option (as ``weir run`` would say), or ``--no-rest``.
        CliError: the script ended, or ran no job within ``timeout`` seconds (it is
            stopped then), or its log file cannot be written.
    """
    if options.rest_port is None:
        raise UsageError(
            "weir run -d: a detached job is reached through its HTTP API; drop --no-rest"
        )
    check_options(options)
    log_file = (log_file or default_log_file()).absolute()
    try:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        log = log_file.open("wb")
    except OSError as error:
        raise CliError(f"cannot write the job's log file {log_file}: {error.strerror}") from None
    env = dict(os.environ)
    if options.rest_token is not None:
        env["WEIR_REST_TOKEN"] = options.rest_token
    with log:
        process = subprocess.Popen(
            child_argv(options),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # not killed with the terminal's process group
        )
    deadline = time.monotonic() + timeout
    address = None
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise _ended(process, log_file, "before it started a job")
            if address is None:
                match = _ADDRESS.search(log_file.read_text(errors="replace"))
                address = match.group(1) if match else None
            if address is not None:
                try:
                    # Until the first job registers, the request waits in the backlog.
                    left = max(0.1, min(5.0, deadline - time.monotonic()))
                    jobs = RestClient(address, timeout=left, token=options.rest_token).list_jobs()
                except CliError:
                    jobs = []
                if jobs:
                    job = jobs[0]
                    return DetachedJob(job["id"], job["name"], address, process.pid, log_file)
            time.sleep(_POLL_SECONDS)
    except BaseException:
        if process.poll() is None:
            process.terminate()
        raise
    process.terminate()
    raise CliError(
        f"the job script started no job in {timeout:g} s and was stopped; its log: {log_file}"
    )
