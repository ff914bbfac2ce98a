"""What the commands print: rich tables for people, JSON for scripts.

Every command builds a JSON-able dict first; ``--json`` prints it as it is (one JSON
document on standard output), otherwise a ``render_*`` function here draws it with rich.
Errors and progress go to standard error, so standard output stays the result. Progress
(a spinner while a savepoint is taken or a checkpoint read) shows on a terminal only.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import sys
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

__all__ = [
    "emit_json",
    "error_console",
    "output_console",
    "progress",
    "render_advice",
    "render_info",
    "render_job",
    "render_jobs",
    "render_operation",
    "render_scan",
]


def output_console() -> Console:
    """The console of results (standard output)."""
    return Console(highlight=False)


def error_console() -> Console:
    """The console of errors, warnings and progress (standard error)."""
    return Console(stderr=True, highlight=False)


def emit_json(data: Any) -> None:
    """Print ``data`` as one JSON document on standard output."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


@contextlib.contextmanager
def progress(message: str, *, enabled: bool = True) -> Iterator[None]:
    """A spinner with ``message`` on standard error while the block runs (terminals only)."""
    console = error_console()
    if not enabled or not console.is_terminal:
        yield
        return
    with console.status(message):
        yield


def _fixed(*headers: str, fold: str | None = None) -> list[Column]:
    """Columns that never wrap (ids, sizes, times), but ``fold``, which folds long text."""
    return [Column(h, overflow="fold") if h == fold else Column(h, no_wrap=True) for h in headers]


def _bytes(value: int | None) -> str:
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _time(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.datetime.fromtimestamp(timestamp).strftime("%m-%d %H:%M:%S")


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1e3:.1f} ms"
    if value < 120:
        return f"{value:.2f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.2f} h"


def _milliseconds(value: float | None) -> str:
    return _seconds(None if value is None else value / 1000)


# -- running jobs ---------------------------------------------------------------------------


def render_jobs(jobs: list[dict[str, Any]]) -> None:
    """``weir list``."""
    console = output_console()
    if not jobs:
        console.print("no jobs yet")
        return
    table = Table("job id", "name", "status")
    for job in jobs:
        table.add_row(job["id"], job["name"], job["status"])
    console.print(table)


def render_job(details: dict[str, Any], checkpoints: dict[str, Any]) -> None:
    """``weir status``: a job, its operators and its latest checkpoints."""
    console = output_console()
    console.print(
        f"[bold]{details['name']}[/bold] {details['jid']}: {details['state']}, "
        f"{details['restarts']} restarts"
    )
    for failure in details.get("failures", []):
        console.print(f"  failure: {failure}", soft_wrap=True)
    table = Table("vertex", "p", "status", "records in", "records out", "backpressure")
    for vertex in details["vertices"]:
        metrics = vertex["metrics"]
        table.add_row(
            vertex["name"],
            str(vertex["parallelism"]),
            vertex["status"],
            f"{metrics['read-records']:,}",
            f"{metrics['write-records']:,}",
            f"{vertex['backpressure-level']} ({metrics['backPressuredRatio']:.0%})",
        )
    console.print(table)
    c = checkpoints["counts"]
    console.print(
        f"checkpoints: {c['triggered']} triggered, {c['completed']} completed, "
        f"{c['failed']} failed, {c['in_progress']} in progress, {c['restored']} restored"
    )
    restored = checkpoints["latest"]["restored"]
    if restored is not None:
        console.print(f"restored from {restored['external_path']}", soft_wrap=True)
    history = checkpoints["history"][:10]
    if history:
        table = Table("id", "status", "kind", "duration", "state", "in-flight", "unaligned")
        for entry in history:
            table.add_row(
                str(entry["id"]),
                entry["status"].lower(),
                "savepoint" if entry["is_savepoint"] else "checkpoint",
                _milliseconds(entry["end_to_end_duration"]),
                _bytes(entry["state_size"]),
                _bytes(entry["persisted_data"]),
                "yes" if entry["unaligned"] else "no",
            )
        console.print(table)


def render_operation(what: str, operation: dict[str, Any]) -> None:
    """The outcome of ``weir checkpoint``, ``savepoint`` or ``stop``."""
    checkpoint_id = operation.get("checkpointId")
    number = "" if checkpoint_id is None else f" {checkpoint_id}"
    output_console().print(f"{what}{number} completed: {operation['location']}", soft_wrap=True)


# -- files ----------------------------------------------------------------------------------


def _scan_table(entries: list[dict[str, Any]], savepoints: bool) -> Table:
    # Savepoints are aligned (no in-flight data); their folder names them.
    if savepoints:
        table = Table(
            *_fixed("id", "folder", "triggered", "on disk", "state", "status", fold="folder")
        )
    else:
        table = Table(*_fixed("id", "triggered", "on disk", "state", "in-flight", "status"))
    for entry in entries:
        status = {
            "valid": "[green]valid[/green]",
            "corrupt": "[red]corrupt[/red]",
            "incomplete": "[yellow]incomplete[/yellow]",
        }[entry["status"]]
        if entry["latest"]:
            status += " [bold](latest)[/bold]"
        checkpoint_id = "-" if entry["checkpoint_id"] is None else str(entry["checkpoint_id"])
        when, disk, state = (
            _time(entry["timestamp"]),
            _bytes(entry["size_on_disk"]),
            _bytes(entry["state_size"]),
        )
        if savepoints:
            folder = entry["path"].rpartition("/")[2]
            table.add_row(checkpoint_id, folder, when, disk, state, status)
        else:
            table.add_row(
                checkpoint_id, when, disk, state, _bytes(entry["in_flight_bytes"]), status
            )
    return table


def render_scan(scan: dict[str, Any]) -> None:
    """``weir checkpoints``: a table per job folder, one for savepoints, then the reasons."""
    console = output_console()
    entries = scan["checkpoints"]
    if not entries:
        console.print(f"no checkpoints or savepoints under {scan['path']}", soft_wrap=True)
        return
    groups: dict[str | None, list[dict[str, Any]]] = {}
    for entry in entries:
        groups.setdefault(entry["job_folder"], []).append(entry)
    for job_folder, group in groups.items():
        if job_folder is None:
            console.print("savepoints:")
        else:
            console.print(f"checkpoints of job folder {job_folder}:", soft_wrap=True)
        console.print(_scan_table(group, savepoints=job_folder is None))
    for entry in entries:
        if entry["reason"]:
            console.print(f"[red]{entry['path']}[/red]: {entry['reason']}", soft_wrap=True)
    for note in scan.get("jobs", []):
        _render_job_notes(console, note)


def _render_job_notes(console: Console, note: dict[str, Any]) -> None:
    """One line per thing a job folder says: ended, restored by later runs, orphans."""
    folder = escape(note["job_folder"])
    if note["status"] in ("finished", "canceled", "failed"):
        stale = (
            ": its checkpoints are that run's end, not a point to resume from"
            if note["status"] == "finished"
            else ""
        )
        console.print(f"{folder}: its job {note['status']}{stale}", soft_wrap=True)
    for restore in note["restored_by"]:
        console.print(
            f"{folder}: run {restore['job_id']} already continued from checkpoint "
            f"{restore['checkpoint_id']}",
            soft_wrap=True,
        )
    if note["orphans"]:
        console.print(
            f"[yellow]{folder}[/yellow]: {len(note['orphans'])} file(s) no retained "
            f"checkpoint uses (left by a killed run); once no job writes there, remove "
            f"them with: {escape(note['remove_orphans'])}",
            soft_wrap=True,
        )


def render_info(info: dict[str, Any]) -> None:
    """``weir info``."""
    console = output_console()
    console.print(
        f"[bold]{info['kind']} {info['checkpoint_id']}[/bold] of job {info['job_id']}, "
        f"triggered {_time(info['timestamp'])}, format version {info['format_version']}"
    )
    console.print(
        f"{info['path']}: {_bytes(info['size_on_disk'])} on disk, state "
        f"{_bytes(info['state_size'])}, in-flight data {_bytes(info['in_flight_bytes'])}",
        soft_wrap=True,
    )
    for op in info["operators"]:
        console.print(
            f"  {op['name']} ({op['uid']}): parallelism {op['parallelism']}, max parallelism "
            f"{op['max_parallelism']}, state {_bytes(op['state_size'])}",
            soft_wrap=True,
        )
    for note in info["notes"]:
        console.print(f"[yellow]note:[/yellow] {note}", soft_wrap=True)
    table = Table(
        *_fixed(
            "operator", "uid", "subtask", "key groups", "state", "in-flight", "keys", fold="keys"
        )
    )
    channels = Table(*_fixed("operator", "subtask", "direction", "peer", "records"))
    for op in info["operators"]:
        for sub in op["subtasks"]:
            key_groups = sub["key_groups"]
            keyed = sub["keyed_states"]
            keys = "-" if not keyed else ", ".join(f"{n}: {s['keys']:,}" for n, s in keyed.items())
            table.add_row(
                op["name"],
                op["uid"],
                f"{sub['index']}/{op['parallelism']}",
                "-" if key_groups is None else f"{key_groups[0]}-{key_groups[1]}",
                _bytes(sub["state_size"]),
                _bytes(sub["in_flight_bytes"]),
                keys,
            )
            for channel in sub["channels"] or []:
                channels.add_row(
                    op["uid"],
                    str(sub["index"]),
                    channel["direction"],
                    f"{channel['peer_uid']}[{channel['peer_subtask']}]",
                    f"{channel['records']:,}",
                )
    console.print(table)
    if channels.row_count:
        console.print("in-flight data (channel state), per channel:")
        console.print(channels)


def render_advice(advice: dict[str, Any]) -> None:
    """``weir advise``."""
    console = output_console()
    samples = f" (median of {advice['samples']})" if advice["samples"] else ""
    console.print(
        f"checkpoint cost C = {_seconds(advice['cost'])} from {advice['cost_source']}{samples}; "
        f"mean time between failures M = {_seconds(advice['mtbf'])}"
    )
    table = Table("rule", "interval", "expected overhead")
    for name, key in (("Young: sqrt(2CM)", "young"), ("Daly (higher order)", "daly")):
        overhead = advice[key]["overhead"]
        table.add_row(
            name,
            _seconds(advice[key]["interval"]),
            "unbounded" if overhead is None else f"{overhead:.2%}",
        )
    console.print(table)
    console.print(
        f"suggested: env.enable_checkpointing({advice['daly']['interval']:.3g}) "
        f"(Daly's interval, in seconds)"
    )
