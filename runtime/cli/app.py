"""The ``weir`` command line: its commands and options (typer), delegating to the modules.

=================  ============================================================  =========
command            what                                                          module
=================  ============================================================  =========
run JOB.py         run a job script, with overrides and the HTTP API              run
list, status       the jobs of a ``weir run`` and one job's details               client
checkpoint         trigger a checkpoint of a running job                          client
savepoint, stop    take a savepoint; stop a job with one                          client
cancel             cancel a running job                                           client
checkpoints DIR    the checkpoints on disk, valid or not                          offline
info PATH          what a checkpoint or savepoint holds                           offline
dispose PATH       delete a savepoint                                             offline
advise             a checkpoint interval (Young, Daly)                            advise
bench              the benchmark kit of a checkout (``python -m benchmarks``)      (app)
version            the installed version
=================  ============================================================  =========

Results go to standard output (rich tables, or one JSON document with ``--json``);
errors and progress to standard error. Exit status: 0 done, 1 failed, 2 bad usage.
"""

from __future__ import annotations

import contextlib
import enum
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from runtime.cli.client import DEFAULT_ADDRESS, ApiFailure, RestClient
from runtime.cli.errors import CliError, UsageError
from runtime.cli.lazy import lazy_module

if TYPE_CHECKING:
    from runtime.cli import render
else:
    # rich is imported on the first output, not for ``weir --help`` (a 25 ms import).
    render = lazy_module("runtime.cli.render")

__all__ = ["app", "main"]

app = typer.Typer(
    name="weir",
    help="Run Weir stream jobs, control them while they run, and inspect their checkpoints.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Plain (click) help: typer's rich help imports rich.markdown and pygments, 60 ms of
    # the 150 ms `weir --help` may take.
    rich_markup_mode=None,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class FormatChoice(enum.StrEnum):
    """A savepoint's format (``runtime.scheduler.result.SavepointFormat``)."""

    CANONICAL = "canonical"
    NATIVE = "native"


class LogLevel(enum.StrEnum):
    """The lowest level of ``weir`` log records ``weir run`` shows (``runtime.cli.logs``)."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


Json = Annotated[bool, typer.Option("--json", help="Print one JSON document for scripts.")]
Address = Annotated[
    str,
    typer.Option("--address", "-a", envvar="WEIR_ADDRESS", help="The HTTP API of the `weir run`."),
]
Timeout = Annotated[
    float, typer.Option("--timeout", min=0.1, help="Seconds to wait for the answer.")
]
JobId = Annotated[
    str,
    typer.Argument(
        metavar="JOB_ID", help="The job's id (or a unique prefix of at least 8 characters)."
    ),
]
Format = Annotated[FormatChoice, typer.Option("--format", help="canonical (portable) or native.")]


def _version() -> str:
    from importlib import metadata  # 18 ms: only for ``weir version``

    try:
        return metadata.version("weir")
    except metadata.PackageNotFoundError:
        return "unknown"


@contextlib.contextmanager
def _reporting(json_output: bool) -> Iterator[None]:
    """Turn a ``CliError`` into its message (and ``{"error"}`` with --json) and exit code."""
    try:
        yield
    except CliError as error:
        if json_output:
            body: dict[str, Any] = {"error": error.message}
            if isinstance(error, ApiFailure):
                body["status"] = error.status
            render.emit_json(body)
        render.error_console().print(
            f"[red]weir: error:[/red] {error.message}", markup=True, soft_wrap=True
        )
        raise typer.Exit(error.exit_code) from None


def _show_version(value: bool) -> None:
    if value:
        print(f"weir {_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Run Weir stream jobs, control them while they run, and inspect their checkpoints."""


# -- running --------------------------------------------------------------------------------


@app.command(
    context_settings={"allow_interspersed_args": False, "ignore_unknown_options": True},
)
def run(
    job: Annotated[Path, typer.Argument(metavar="JOB.py", help="The job script.")],
    args: Annotated[
        list[str] | None, typer.Argument(metavar="ARGS", help="The script's arguments.")
    ] = None,
    from_savepoint: Annotated[
        str | None,
        typer.Option(
            "--from-savepoint",
            "-s",
            metavar="PATH",
            help="Start from this savepoint or checkpoint.",
        ),
    ] = None,
    allow_non_restored_state: Annotated[
        bool,
        typer.Option(
            "--allow-non-restored-state",
            "-n",
            help="Skip state of operators the job no longer has.",
        ),
    ] = False,
    allow_older_than_committed: Annotated[
        bool,
        typer.Option(
            "--allow-older-than-committed",
            help="Restore a checkpoint older than one whose output two-phase-commit "
            "sinks already committed (sinks that cannot skip it write it again).",
        ),
    ] = False,
    parallelism: Annotated[
        int | None,
        typer.Option("--parallelism", "-p", min=1, help="Default parallelism of the job."),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=1,
            help="Worker processes that run the subtasks (default 1: this process).",
        ),
    ] = None,
    checkpoint_dir: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint-dir", metavar="DIR", help="Checkpoint storage (file system) for jobs."
        ),
    ] = None,
    define: Annotated[
        list[str] | None,
        typer.Option(
            "--define",
            "-D",
            metavar="KEY=VALUE",
            help="A configuration value for every job of the script (repeatable; Flink's "
            "keys, e.g. execution.checkpointing.interval=10s). The script's own settings win.",
        ),
    ] = None,
    checkpoint_interval: Annotated[
        str | None,
        typer.Option(
            "--checkpoint-interval",
            metavar="DURATION",
            help="Checkpoint every DURATION (500ms, 10s...): -D execution.checkpointing.interval.",
        ),
    ] = None,
    checkpointing_mode: Annotated[
        str | None,
        typer.Option(
            "--checkpointing-mode",
            metavar="MODE",
            help="exactly_once or at_least_once: -D execution.checkpointing.mode.",
        ),
    ] = None,
    unaligned: Annotated[
        bool | None,
        typer.Option(
            "--unaligned/--aligned",
            help="Unaligned checkpoints: -D execution.checkpointing.unaligned.",
            show_default=False,
        ),
    ] = None,
    savepoint_dir: Annotated[
        list[str] | None,
        typer.Option(
            "--savepoint-dir",
            metavar="DIR",
            help="A folder the HTTP API may write savepoints under (repeatable; the first is "
            "the default target). Default: the current folder only, no default target.",
        ),
    ] = None,
    rest_port: Annotated[
        int | None,
        typer.Option(
            "--rest-port", min=0, max=65535, help="Port of the HTTP API (0: a free one). [8081]"
        ),
    ] = None,
    rest_address: Annotated[
        str,
        typer.Option(
            "--rest-address",
            help="Address of the HTTP API. Any address that is not loopback needs --rest-token.",
        ),
    ] = "127.0.0.1",
    rest_token: Annotated[
        str | None,
        typer.Option(
            "--rest-token",
            envvar="WEIR_REST_TOKEN",
            metavar="TOKEN",
            show_envvar=True,
            help="Bearer token every request to the HTTP API must carry (weir commands "
            "send WEIR_REST_TOKEN).",
        ),
    ] = None,
    no_rest: Annotated[bool, typer.Option("--no-rest", help="Serve no HTTP API.")] = False,
    no_progress: Annotated[
        bool,
        typer.Option(
            "--no-progress",
            help="No live progress line (records/s, checkpoints, backpressure) on a terminal.",
        ),
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", "-v", help="Show tracebacks of configuration and restore errors."
        ),
    ] = False,
    detached: Annotated[
        bool,
        typer.Option(
            "--detached",
            "-d",
            help="Run in a background process that outlives the terminal; print the job's "
            "id and HTTP API address, then return (weir list/status/stop reach it).",
        ),
    ] = False,
    log_file: Annotated[
        Path | None,
        typer.Option(
            "--log-file",
            metavar="PATH",
            help="With -d: where the job's output goes "
            "[$XDG_STATE_HOME/weir/logs/run-<time>-<pid>.log].",
        ),
    ] = None,
    log_level: Annotated[
        LogLevel,
        typer.Option(
            "--log-level",
            help="Show weir's log records (failures, restarts, restores) of this level "
            "and above on stderr.",
        ),
    ] = LogLevel.INFO,
) -> None:
    """Run a job script (as `python JOB.py ARGS...` would), with the HTTP API.

    Options go before JOB.py; everything after it is the script's.
    """
    from runtime.cli.run import DEFAULT_REST_PORT, RunOptions, execute_script, prepare_run

    defines = list(define or [])
    for key, value in (
        ("execution.checkpointing.interval", checkpoint_interval),
        ("execution.checkpointing.mode", checkpointing_mode),
        ("execution.checkpointing.unaligned", None if unaligned is None else str(unaligned)),
    ):
        if value is not None:
            defines.append(f"{key}={value}")
    options = RunOptions(
        job=job,
        args=list(args or []),
        parallelism=parallelism,
        workers=workers,
        checkpoint_dir=checkpoint_dir,
        defines=defines,
        from_savepoint=from_savepoint,
        allow_non_restored_state=allow_non_restored_state,
        allow_older_than_committed=allow_older_than_committed,
        savepoint_dirs=list(savepoint_dir or []),
        rest_port=None if no_rest else (DEFAULT_REST_PORT if rest_port is None else rest_port),
        rest_port_given=rest_port is not None,
        rest_address=rest_address,
        rest_token=rest_token,
        log_level=log_level.value,
        verbose=verbose,
        progress=not no_progress,
    )
    if detached:
        _run_detached(options, log_file)
        return
    if log_file is not None:
        with _reporting(False):
            raise UsageError("--log-file goes with -d/--detached (attached, output is yours)")
    with _reporting(False):
        server, lines = prepare_run(options)
    for line in lines:
        print(f"weir: {line}", file=sys.stderr, flush=True)
    with _reporting(False):  # a refused restore: one line, no traceback
        execute_script(options, server)


def _run_detached(options: Any, log_file: Path | None) -> None:
    from runtime.cli.detach import start_detached

    with _reporting(False):
        job = start_detached(options, log_file)
    # Flink's words, which scripts look for; then where to reach it.
    print(f"Job has been submitted with JobID {job.job_id}", flush=True)
    out = render.error_console()
    out.print(f"weir: job {job.name!r} runs detached (pid {job.pid})", soft_wrap=True)
    out.print(f"weir: job HTTP API on {job.address}", soft_wrap=True)
    out.print(f"weir: log: {job.log_file}", soft_wrap=True)
    out.print(
        f"weir: weir status {job.job_id[:8]} --address {job.address}; "
        f"weir stop {job.job_id[:8]} --address {job.address}",
        soft_wrap=True,
    )


@app.command()
def version() -> None:
    """Print the installed version."""
    print(f"weir {_version()}")


# -- running jobs, over the HTTP API --------------------------------------------------------


@app.command(name="list")
def list_jobs(
    address: Address = DEFAULT_ADDRESS, timeout: Timeout = 10.0, json_output: Json = False
) -> None:
    """List the jobs of a `weir run`."""
    with _reporting(json_output):
        jobs = RestClient(address, timeout).list_jobs()
    if json_output:
        render.emit_json({"jobs": jobs})
    else:
        render.render_jobs(jobs)


@app.command()
def status(
    job_id: JobId,
    address: Address = DEFAULT_ADDRESS,
    timeout: Timeout = 10.0,
    json_output: Json = False,
) -> None:
    """Show a running job: status, restarts, records per operator, checkpoints."""
    with _reporting(json_output):
        client = RestClient(address, timeout)
        details = client.job(job_id)
        checkpoints = client.checkpoints(job_id)
    if json_output:
        render.emit_json({"job": details, "checkpoints": checkpoints})
    else:
        render.render_job(details, checkpoints)


@app.command()
def checkpoint(
    job_id: JobId,
    address: Address = DEFAULT_ADDRESS,
    timeout: Timeout = 600.0,
    json_output: Json = False,
) -> None:
    """Trigger a checkpoint of a running job now and wait until it completes."""
    with _reporting(json_output), render.progress(f"checkpoint of job {job_id}..."):
        operation = RestClient(address, timeout).trigger_checkpoint(job_id)
    if json_output:
        render.emit_json(operation)
    else:
        render.render_operation("checkpoint", operation)


@app.command()
def savepoint(
    job_id: JobId,
    directory: Annotated[
        str | None,
        typer.Argument(
            metavar="[DIR]", help="Folder to write it under (default: the job's --savepoint-dir)."
        ),
    ] = None,
    savepoint_format: Format = FormatChoice.CANONICAL,
    address: Address = DEFAULT_ADDRESS,
    timeout: Timeout = 600.0,
    json_output: Json = False,
) -> None:
    """Take a savepoint of a running job; print its folder."""
    with _reporting(json_output), render.progress(f"savepoint of job {job_id}..."):
        operation = RestClient(address, timeout).trigger_savepoint(
            job_id, directory, savepoint_format.value
        )
    if json_output:
        render.emit_json(operation)
    else:
        render.render_operation("savepoint", operation)


@app.command()
def stop(
    job_id: JobId,
    savepoint_path: Annotated[
        str | None,
        typer.Option(
            "--savepoint-path",
            "-p",
            metavar="DIR",
            help="Folder to write the savepoint under (default: the job's --savepoint-dir).",
        ),
    ] = None,
    drain: Annotated[
        bool,
        typer.Option(
            "--drain", "-d", help="End the input first; the savepoint is the final checkpoint."
        ),
    ] = False,
    savepoint_format: Format = FormatChoice.CANONICAL,
    address: Address = DEFAULT_ADDRESS,
    timeout: Timeout = 600.0,
    json_output: Json = False,
) -> None:
    """Stop a running job with a savepoint; print its folder."""
    with _reporting(json_output), render.progress(f"stopping job {job_id}..."):
        operation = RestClient(address, timeout).stop(
            job_id, savepoint_path, drain, savepoint_format.value
        )
    if json_output:
        render.emit_json(operation)
    else:
        render.render_operation("stop with savepoint", operation)


@app.command()
def cancel(
    job_id: JobId,
    address: Address = DEFAULT_ADDRESS,
    timeout: Timeout = 10.0,
    json_output: Json = False,
) -> None:
    """Cancel a running job (no savepoint)."""
    with _reporting(json_output):
        RestClient(address, timeout).cancel(job_id)
    if json_output:
        render.emit_json({"job": job_id, "cancelled": True})
    else:
        render.output_console().print(f"cancelling job {job_id}", soft_wrap=True)


# -- checkpoint files -----------------------------------------------------------------------


@app.command()
def checkpoints(
    directory: Annotated[
        str, typer.Argument(metavar="DIR", help="A checkpoint, job or savepoint folder.")
    ],
    verify: Annotated[
        bool, typer.Option("--verify", help="Also check every state file's checksum.")
    ] = False,
    json_output: Json = False,
) -> None:
    """List the checkpoints and savepoints under DIR: valid or not (why), time, size."""
    from runtime.cli.offline import scan_checkpoints

    with _reporting(json_output), render.progress(f"reading {directory}...", enabled=verify):
        scan = scan_checkpoints(directory, verify=verify)
    if json_output:
        render.emit_json(scan)
    else:
        render.render_scan(scan)


@app.command()
def info(
    path: Annotated[
        str, typer.Argument(metavar="PATH", help="A chk-<n> or savepoint folder, or a job's.")
    ],
    allow_pickle: Annotated[
        bool,
        typer.Option(
            "--allow-pickle", help="Decode pickled values (runs code: trusted files only)."
        ),
    ] = False,
    json_output: Json = False,
) -> None:
    """Show a checkpoint or savepoint: operators, subtasks, key groups, sizes, in-flight data."""
    from runtime.cli.offline import describe_checkpoint

    with _reporting(json_output), render.progress(f"reading {path}..."):
        description = describe_checkpoint(path, allow_pickle=allow_pickle)
    if json_output:
        render.emit_json(description)
    else:
        render.render_info(description)


@app.command()
def dispose(
    path: Annotated[str, typer.Argument(metavar="PATH", help="The savepoint's folder.")],
    json_output: Json = False,
) -> None:
    """Delete a savepoint (checkpoints are the runtime's: it refuses them)."""
    from runtime.cli.offline import dispose as dispose_savepoint

    with _reporting(json_output):
        folder = dispose_savepoint(path)
    if json_output:
        render.emit_json({"disposed": folder})
    else:
        render.output_console().print(f"disposed of savepoint {folder}", soft_wrap=True)


# -- advice ---------------------------------------------------------------------------------


@app.command()
def advise(
    mtbf: Annotated[
        str,
        typer.Option(
            "--mtbf", metavar="DURATION", help="Mean time between failures (e.g. 6h, 3600)."
        ),
    ],
    cost: Annotated[
        str | None,
        typer.Option("--cost", metavar="DURATION", help="Seconds one checkpoint costs."),
    ] = None,
    from_folder: Annotated[
        str | None,
        typer.Option(
            "--from",
            metavar="PATH",
            help="Measure the cost in saved `weir status --json` statistics (a file), or "
            "estimate it from a job's checkpoint files (a folder: a lower bound).",
        ),
    ] = None,
    job_id: Annotated[
        str | None,
        typer.Option("--job", metavar="JOB_ID", help="Measure the cost on a running job."),
    ] = None,
    restart: Annotated[
        str,
        typer.Option("--restart-time", metavar="DURATION", help="Seconds a restart takes."),
    ] = "0",
    address: Address = DEFAULT_ADDRESS,
    json_output: Json = False,
) -> None:
    """Suggest a checkpoint interval from the checkpoint cost and the MTBF (Young, Daly)."""
    from runtime.cli import advise as advice

    with _reporting(json_output):
        given = [o for o in (cost, from_folder, job_id) if o is not None]
        if len(given) != 1:
            raise UsageError("give exactly one of --cost, --from PATH and --job JOB_ID")
        mean = advice.parse_seconds(mtbf, "--mtbf")
        restart_time = (
            0.0
            if restart.strip() in {"0", "0s"}
            else advice.parse_seconds(restart, "--restart-time")
        )
        samples = 0
        if cost is not None:
            seconds, source = advice.parse_seconds(cost, "--cost"), "--cost"
        elif from_folder is not None:
            seconds, samples, source = advice.cost_from(from_folder)
        else:
            assert job_id is not None
            stats = RestClient(address, 10.0).checkpoints(job_id)
            seconds, samples = advice.cost_from_history(stats)
            source = f"checkpoints of job {job_id}"
        result = advice.advise(seconds, mean, restart=restart_time, source=source, samples=samples)
    if json_output:
        render.emit_json(result)
    else:
        render.render_advice(result)


# -- benchmarks -----------------------------------------------------------------------------


def _checkout() -> Path | None:
    """The Weir checkout holding ``benchmarks/``: the one ``runtime`` runs from, or here."""
    import runtime

    for folder in (Path(runtime.__file__).resolve().parents[1], Path.cwd()):
        if (folder / "benchmarks" / "kit.py").is_file():
            return folder
    return None


@app.command(
    context_settings={
        "allow_extra_args": True,
        "ignore_unknown_options": True,
        "help_option_names": [],
    },
    add_help_option=False,
)
def bench(ctx: typer.Context) -> None:
    """Run the benchmark kit of a Weir checkout: `python -m benchmarks ARGS` (see --help)."""
    import subprocess

    with _reporting(False):
        root = _checkout()
        if root is None:
            raise CliError(
                "weir bench runs the benchmark kit in benchmarks/ of a Weir checkout, which "
                "the installed package does not include: run it from a clone of the "
                "repository (cd weir && weir bench, or python -m benchmarks)"
            )
    # The checkout goes first on the path; the current folder stays (for a relative --out).
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-m", "benchmarks", *ctx.args], env=env, check=False)
    raise typer.Exit(done.returncode)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``weir`` console script; returns the exit status."""
    try:
        app(args=argv, prog_name="weir")
    except SystemExit as exit_:
        code = exit_.code
        if code is None or isinstance(code, int):
            return code or 0
        print(code, file=sys.stderr)
        return 1
    return 0
