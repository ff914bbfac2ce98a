"""``weir advise``: a checkpoint interval from the checkpoint cost and the time between failures.

With ``C`` the cost of one checkpoint and ``M`` the mean time between failures (both in
seconds), Young (1974) puts the interval that minimises the expected lost time at
``sqrt(2 C M)``. Daly (2006) refines it, for ``C < 2 M``, to

    sqrt(2 C M) * (1 + sqrt(C / (2 M)) / 3 + C / (9 * 2 M)) - C

and to ``M`` when ``C >= 2 M``. The expected overhead of an interval ``T`` is Daly's
complete model: with ``R`` the time a restart takes, a job whose useful work takes ``W``
without failures or checkpoints takes ``M exp(R/M) (exp((T + C)/M) - 1) W / T`` with
them; the overhead is that ratio minus 1 (checkpoints, work redone after a failure and
restarts together).

The cost comes from ``--cost``, or is measured: the median end-to-end duration of the
completed checkpoints of a running job (``--job``, over the HTTP API) or of saved
statistics (``--from stats.json``, the output of ``weir status JOB_ID --json``), or an
estimate from the checkpoints on disk (``--from DIR``, see :func:`cost_from_folder`:
files do not record durations, so it is a lower bound). End-to-end duration is itself an upper bound
of the cost when snapshots are asynchronous, since processing goes on meanwhile; give
``--cost`` if you know better. Everything here but the measurement is pure arithmetic.
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
from pathlib import Path
from typing import Any

from runtime.cli.errors import CliError, UsageError
from storage.checkpoint import METADATA_FILE, StorageError, load_metadata_file
from storage.checkpoint.layout import parse_checkpoint_dir_name

__all__ = [
    "advise",
    "cost_from",
    "cost_from_file",
    "cost_from_folder",
    "cost_from_history",
    "daly_interval",
    "expected_overhead",
    "parse_seconds",
    "young_interval",
]

_UNITS = {"": 1.0, "s": 1.0, "ms": 1e-3, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-z]*)\s*")


def parse_seconds(text: str, option: str) -> float:
    """Seconds from ``"90"``, ``"90s"``, ``"250ms"``, ``"15m"``, ``"6h"`` or ``"2d"``.

    Raises:
        UsageError: not a positive duration (names ``option``).
    """
    match = _DURATION.fullmatch(text.lower())
    if match is None or match.group(2) not in _UNITS:
        raise UsageError(f"{option}: {text!r} is not a duration (e.g. 30, 250ms, 15m, 6h, 2d)")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if not seconds > 0 or math.isinf(seconds):
        raise UsageError(f"{option}: must be greater than 0, got {text!r}")
    return seconds


def young_interval(cost: float, mtbf: float) -> float:
    """Young's interval, ``sqrt(2 C M)``."""
    return math.sqrt(2.0 * cost * mtbf)


def daly_interval(cost: float, mtbf: float) -> float:
    """Daly's interval: his higher-order refinement of Young's, ``M`` if ``C >= 2 M``."""
    if cost >= 2.0 * mtbf:
        return mtbf
    ratio = cost / (2.0 * mtbf)
    return math.sqrt(2.0 * cost * mtbf) * (1.0 + math.sqrt(ratio) / 3.0 + ratio / 9.0) - cost


def expected_overhead(interval: float, cost: float, mtbf: float, restart: float = 0.0) -> float:
    """Expected extra time, as a fraction of the useful work, under Daly's model.

    Args:
        interval: seconds of work between checkpoints.
        cost: seconds one checkpoint takes.
        mtbf: mean seconds between failures.
        restart: seconds a restart takes.
    """
    exponent = (interval + cost) / mtbf
    if exponent > 700:  # exp overflows: the job practically never finishes an interval
        return math.inf
    return mtbf / interval * math.exp(restart / mtbf) * math.expm1(exponent) - 1.0


def cost_from_history(stats: dict[str, Any]) -> tuple[float, int]:
    """Median end-to-end duration of the completed checkpoints in a job's statistics.

    Args:
        stats: the body of ``GET /jobs/{id}/checkpoints`` (durations in milliseconds).

    Returns:
        The median and the number of checkpoints it is over. Savepoints are left out.

    Raises:
        CliError: no completed checkpoint yet.
    """
    durations = [
        float(entry["end_to_end_duration"]) / 1000  # Flink's milliseconds
        for entry in stats.get("history", [])
        if str(entry.get("status")).upper() == "COMPLETED"
        and not entry.get("is_savepoint")
        and entry.get("end_to_end_duration") is not None
    ]
    if not durations:
        raise CliError("the job has completed no checkpoint yet: wait for one, or give --cost")
    return statistics.median(durations), len(durations)


def _span(folder: Path) -> float | None:
    """Seconds from a checkpoint's start, as far as its files tell, to its ``_metadata``."""
    try:
        metadata = load_metadata_file(folder)
        completed = os.stat(folder / METADATA_FILE).st_mtime
        written = [
            entry.stat().st_mtime
            for entry in os.scandir(folder)
            if entry.is_file() and entry.name != METADATA_FILE
        ]
    except (StorageError, OSError):
        return None
    started = min([metadata.timestamp, *written])
    # File times are coarse (a few ms): a checkpoint shorter than that shows no span.
    return completed - started if completed > started else None


def cost_from_folder(path: str) -> tuple[float, int]:
    """Median duration of the checkpoints under ``path``, estimated from their files.

    A checkpoint's files do not record how long it took: the estimate runs from the
    earlier of its metadata timestamp and its first state file's write to the write of
    its ``_metadata``, the last file. It misses the time before the first state file was
    written (the barriers' travel, the alignment), so it is a lower bound, and file times
    are too coarse for checkpoints of a few milliseconds; measure a running job
    (``--job``), read saved statistics (``--from stats.json``) or give ``--cost`` when
    that matters.

    Args:
        path: a job's checkpoint folder (with ``chk-<n>`` folders), or a folder of them.

    Returns:
        The median and the number of checkpoints it is over.

    Raises:
        CliError: no checkpoint whose files show a duration.
    """
    root = Path(path)
    durations = []
    for folder in [root, *(c for c in root.iterdir() if c.is_dir())]:
        for child in folder.iterdir():
            if parse_checkpoint_dir_name(child.name) is not None:
                span = _span(child)
                if span is not None:
                    durations.append(span)
    if not durations:
        raise CliError(
            f"--from: no checkpoint under {path} whose files show how long it took (none, "
            f"or all shorter than the file times' resolution); give --cost or --job instead"
        )
    return statistics.median(durations), len(durations)


def cost_from_file(path: str) -> tuple[float, int]:
    """Median end-to-end duration in saved statistics (``weir status --json`` output).

    Args:
        path: a JSON file: the output of ``weir status JOB_ID --json`` or the body of
            ``GET /jobs/{id}/checkpoints``.

    Raises:
        CliError: it cannot be read or holds no completed checkpoint.
    """
    try:
        document = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise CliError(f"--from: cannot read statistics from {path}: {error}") from None
    if isinstance(document, dict) and isinstance(document.get("checkpoints"), dict):
        document = document["checkpoints"]
    if not isinstance(document, dict) or not isinstance(document.get("history"), list):
        raise CliError(
            f"--from: {path} holds no checkpoint history; save `weir status JOB_ID --json`"
        )
    return cost_from_history(document)


def cost_from(path: str) -> tuple[float, int, str]:
    """The cost measured in ``path``: saved statistics (a file) or checkpoints (a folder).

    Returns:
        The median, the number of checkpoints it is over, and where it came from.

    Raises:
        UsageError: ``path`` does not exist.
        CliError: nothing to measure there.
    """
    if Path(path).is_file():
        seconds, samples = cost_from_file(path)
        return seconds, samples, f"the statistics in {path}"
    if Path(path).is_dir():
        seconds, samples = cost_from_folder(path)
        return seconds, samples, f"the checkpoint files in {path} (a lower bound)"
    raise UsageError(f"--from: no such file or folder: {path}")


def advise(
    cost: float, mtbf: float, *, restart: float = 0.0, source: str = "--cost", samples: int = 0
) -> dict[str, Any]:
    """Young's and Daly's intervals for ``cost`` and ``mtbf``, with their overheads.

    Returns:
        ``{"cost", "cost_source", "samples", "mtbf", "restart_time", "young": {"interval",
        "overhead"}, "daly": {...}}``; an overhead is None where it is unbounded.
    """
    young = young_interval(cost, mtbf)
    daly = daly_interval(cost, mtbf)

    def overhead(interval: float) -> float | None:
        value = expected_overhead(interval, cost, mtbf, restart)
        return None if math.isinf(value) else value

    return {
        "cost": cost,
        "cost_source": source,
        "samples": samples,
        "mtbf": mtbf,
        "restart_time": restart,
        "young": {"interval": young, "overhead": overhead(young)},
        "daly": {"interval": daly, "overhead": overhead(daly)},
    }
