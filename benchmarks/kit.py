"""The benchmark kit: run the suite or parts of it, and write one report with plots.

``python -m benchmarks`` (or ``weir bench`` in a checkout) runs each part's script
in this process, as ``main(argv)`` (the scripts stay runnable on their own), with a
progress display on standard error; each script's own output goes to ``kit.log``. Then
it writes into ``--out``:

* ``report.json``: the machine, every part's report, the headline figures, which series
  were noisy, the plots (strict JSON: NaN is ``null``);
* ``report.md``: the headline table (every figure with its baseline from the same run,
  their ratio, the per-round range of that ratio and the goal), the plots, and each
  part's own table;
* PNG plots when matplotlib is installed (``pip install -e '.[bench]'``; see
  ``benchmarks.plots``);
* in a full run, each script's own ``<name>.json`` and ``.md``.

Method, in every part: a warm-up, then the variants interleaved in ABBA order, medians
with min and max, ratios to a baseline measured in the same run. A series whose max/min
is above 1.25 is flagged noisy, and the report lists those series at the top rather
than hiding them. Nothing asserts on time.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import importlib.util
import shlex
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from benchmarks import harness
from benchmarks.harness import machine, machine_line, to_json

RESULTS = Path(__file__).parent / "results"


@dataclass(frozen=True)
class Part:
    """One benchmark script of the suite."""

    module: str
    title: str
    full_args: tuple[str, ...] = ()
    quick_args: tuple[str, ...] = ("--quick",)
    optional: bool = False
    """Run only if its module exists (written separately)."""


PARTS: dict[str, Part] = {
    "throughput": Part("benchmarks.throughput", "Throughput: Weir against a bare Python loop"),
    "bytewax": Part("benchmarks.bytewax_baseline", "Weir against Bytewax"),
    "overhead": Part(
        "benchmarks.overhead",
        "Checkpoint overhead without backpressure",
        full_args=("--intervals", "3,1,0.3,0.1"),
    ),
    "backpressure": Part("benchmarks.backpressure", "Aligned vs unaligned vs aligned-with-timeout"),
    "backpressure_bounded": Part(
        "benchmarks.backpressure_bounded", "Aligned vs unaligned with a bounded input (FLIP-147)"
    ),
    "sweep": Part("benchmarks.sweep", "Backpressure sweep"),
    "recovery": Part("benchmarks.recovery", "Recovery"),
    "backends": Part("benchmarks.backends", "Heap state: checkpoint storages and state sizes"),
    "rocksdb": Part("benchmarks.state_backends", "RocksDB: incremental checkpoints, restore"),
    "changelog": Part("benchmarks.changelog", "Changelog state backend: checkpoints, restore"),
    "savepoint": Part("benchmarks.savepoint", "Savepoints", optional=True),
    "async_io": Part("benchmarks.async_io", "Async I/O: async_map against hand-written asyncio"),
    "event_time": Part(
        "benchmarks.event_time", "Event time: window count vs keyed count and Bytewax; timers"
    ),
    "connectors": Part(
        "benchmarks.connectors", "Connectors: PostgreSQL sinks, Redis Streams, JSON Lines files"
    ),
    "rest": Part(
        "benchmarks.rest", "HTTP API and dashboard: keyed count polled every second vs no server"
    ),
    "testing": Part(
        "benchmarks.testing_sim", "Testing kit: an exactly-once example in simulation vs real time"
    ),
    "processes": Part(
        "benchmarks.processes", "Worker processes: one process vs workers=2, one network channel"
    ),
}
"""Every part, in the order the kit runs them."""


def available_parts() -> dict[str, Part]:
    """The parts whose module exists (an optional part may not be written yet)."""
    return {
        name: part
        for name, part in PARTS.items()
        if not part.optional or importlib.util.find_spec(part.module) is not None
    }


def select_parts(only: str | None, parts: dict[str, Part]) -> list[str]:
    """The names ``--only`` asks for, in the kit's order; all of ``parts`` without it.

    Raises:
        ValueError: a name that is no part (the message lists the parts).
    """
    if not only:
        return list(parts)
    wanted = [name.strip() for name in only.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in parts]
    if unknown:
        raise ValueError(
            f"unknown part(s): {', '.join(unknown)}; the parts are: {', '.join(parts)}"
        )
    return [name for name in parts if name in wanted]


def part_argv(part: Part, quick: bool, extra: str = "") -> list[str]:
    """The arguments the kit gives a part's ``main``: its full or quick ones, then extras."""
    return [*(part.quick_args if quick else part.full_args), *shlex.split(extra)]


# -- running ------------------------------------------------------------------------------


@dataclass
class PartRun:
    """What running one part gave."""

    name: str
    part: Part
    argv: list[str]
    status: str = "pending"  # ok, failed
    seconds: float = 0.0
    measurements: int = 0
    report: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The part's entry in ``report.json`` (its Markdown goes to ``report.md``)."""
        entry: dict[str, Any] = {
            "title": self.part.title,
            "module": self.part.module,
            "argv": self.argv,
            "status": self.status,
            "seconds": self.seconds,
            "measurements": self.measurements,
        }
        if self.error is not None:
            entry["error"] = self.error
        entry["report"] = {k: v for k, v in self.report.items() if k != "markdown"}
        return entry


def run_part(run: PartRun, log: TextIO, on_tick: Callable[[str], None]) -> None:
    """Import the part's module and call its ``main``; record its report or its error."""

    def tick(label: str) -> None:
        run.measurements += 1
        on_tick(label)

    previous = harness.set_progress(tick)
    started = time.perf_counter()
    print(f"\n== {run.name}: python -m {run.part.module} {shlex.join(run.argv)}", file=log)
    try:
        module = importlib.import_module(run.part.module)
        with contextlib.redirect_stdout(log):
            report = module.main(run.argv)
        run.report = report if isinstance(report, dict) else {"result": report}
        run.status = "ok"
    except (Exception, SystemExit) as error:  # a part's failure is reported, not raised
        run.status = "failed"
        run.error = f"{type(error).__name__}: {error}"
        print(traceback.format_exc(), file=log)
    finally:
        run.seconds = time.perf_counter() - started
        harness.set_progress(previous)
        log.flush()


class Progress:
    """The progress display: rich on a terminal, one line per part elsewhere."""

    def __init__(self, names: list[str], stream: TextIO) -> None:
        self.names = names
        self.stream = stream
        self.live: Any = None
        self.task: Any = None
        self.overall: Any = None
        if stream.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )
            from rich.progress import Progress as RichProgress

            self.live = RichProgress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(file=stream),
                refresh_per_second=2,  # a light touch on the machine being measured
                transient=False,
            )

    @contextlib.contextmanager
    def running(self) -> Iterator[Progress]:
        if self.live is None:
            yield self
            return
        with self.live:
            self.overall = self.live.add_task("parts", total=len(self.names))
            yield self

    def start(self, index: int, run: PartRun) -> None:
        if self.live is None:
            print(
                f"kit: [{index + 1}/{len(self.names)}] {run.name}: {run.part.title} ...",
                file=self.stream,
                flush=True,
            )
            return
        self.task = self.live.add_task(f"{run.name}: starting", total=None)

    def tick(self, run: PartRun, label: str) -> None:
        if self.live is not None and self.task is not None:
            self.live.update(
                self.task,
                description=f"{run.name}: {label} ({run.measurements} runs)",
                completed=run.measurements,
            )

    def finish(self, run: PartRun) -> None:
        summary = f"{run.name}: {run.status} in {run.seconds:,.1f} s, {run.measurements} runs"
        if run.error:
            summary += f" ({run.error})"
        if self.live is None:
            print(f"kit: {summary}", file=self.stream, flush=True)
            return
        self.live.update(self.task, description=summary, total=run.measurements or 1)
        self.live.advance(self.overall)


# -- the report ---------------------------------------------------------------------------


def noisy_series(value: Any, path: str = "") -> list[dict[str, Any]]:
    """Every summary under ``value`` flagged noisy: its path, spread, min and max."""
    found: list[dict[str, Any]] = []
    if isinstance(value, dict):
        if value.get("noisy") is True and "spread" in value:
            found.append(
                {
                    "series": path,
                    "spread": value["spread"],
                    "min": value.get("min"),
                    "max": value.get("max"),
                }
            )
        for key, item in value.items():
            if key not in ("values", "machine"):
                found += noisy_series(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += noisy_series(item, f"{path}[{index}]")
    return found


def count_series(value: Any) -> int:
    """How many summaries (dicts with a ``noisy`` flag) are under ``value``."""
    if isinstance(value, dict):
        own = 1 if "noisy" in value and "spread" in value else 0
        return own + sum(count_series(v) for k, v in value.items() if k != "values")
    if isinstance(value, list):
        return sum(count_series(v) for v in value)
    return 0


def headline_row(
    part: str,
    figure: str,
    value: str,
    baseline: str,
    ratio: float | None,
    goal: str = "",
    met: bool | None = None,
    per_round: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One row of the headline table."""
    return {
        "part": part,
        "figure": figure,
        "value": value,
        "baseline": baseline,
        "ratio": ratio,
        "per_round": None
        if per_round is None
        else {"min": per_round.get("min"), "max": per_round.get("max")},
        "goal": goal,
        "met": met,
    }


def _rate(summary: dict[str, Any]) -> str:
    return f"{summary['median']:,.0f} rec/s"


def _ms(seconds: float) -> str:
    if seconds != seconds:
        return "none"
    return f"{seconds * 1e3:,.1f} ms" if seconds >= 0.01 else f"{seconds * 1e3:.3f} ms"


def _at_least(ratio: float | None, goal: float) -> bool | None:
    return None if ratio is None or ratio != ratio else ratio >= goal


def headlines(name: str, report: dict[str, Any]) -> list[dict[str, Any]]:
    """The headline figures of one part's report (the part's own ``headline`` if it has)."""
    if isinstance(report.get("headline"), list):
        return [{"part": name, **row} for row in report["headline"]]
    extract = _HEADLINES.get(name)
    if extract is None:
        return []
    try:
        return extract(report)
    except (KeyError, TypeError, ValueError, ZeroDivisionError, StopIteration):
        return []  # a report of another shape: its section still shows in full


def _throughput(r: dict[str, Any]) -> list[dict[str, Any]]:
    ratio = r["ratio_weir_to_loop"]
    return [
        headline_row(
            "throughput",
            f"keyed count, {r['records']:,} records: Weir vs a bare Python loop",
            _rate(r["weir_records_per_s"]),
            _rate(r["loop_records_per_s"]),
            ratio,
            ">= 0.5x",
            _at_least(ratio, 0.5),
            r.get("ratio_weir_to_loop_per_round"),
        )
    ]


def _bytewax(r: dict[str, Any]) -> list[dict[str, Any]]:
    rates = r["records_per_s"]
    rows = []
    if "weir_to_bytewax" in r:
        faster = r["bytewax_faster_source"]
        vs = r["weir_to_bytewax"]
        rows.append(
            headline_row(
                "bytewax",
                f"keyed count, parallelism 1: Weir vs Bytewax {r['bytewax']} ({faster})",
                _rate(rates["weir off"]),
                _rate(rates[faster]),
                vs["ratio"],
                ">= 3x",
                _at_least(vs["ratio"], 3.0),
                vs["per_round"],
            )
        )
    else:
        rows.append(
            headline_row(
                "bytewax", "Weir vs Bytewax", _rate(rates["weir off"]), "not installed", None
            )
        )
    for label, goal in (("1 s", 0.95), ("100 ms", 0.90)):
        own = r["weir_ratio_to_off"][label]
        rows.append(
            headline_row(
                "bytewax",
                f"Weir, aligned checkpoints to files every {label} vs none",
                _rate(rates[f"weir {label}"]),
                _rate(rates["weir off"]),
                own["ratio"],
                f">= {goal:.2f}x",
                _at_least(own["ratio"], goal),
                own["per_round"],
            )
        )
    for label, own in r.get("bytewax_ratio_to_off", {}).items():
        rows.append(
            headline_row(
                "bytewax",
                f"Bytewax, snapshots every {label} vs none (for comparison)",
                _rate(rates[f"bytewax {label}"]),
                _rate(rates["bytewax off"]),
                own["ratio"],
                "",
                None,
                own["per_round"],
            )
        )
    return rows


def _overhead(r: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    rates = r["records_per_s"]
    for name, goal in r["goals"].items():
        if name not in rates:
            continue
        own = r["ratio_to_off"][name]
        rows.append(
            headline_row(
                "overhead",
                f"keyed count, checkpoints ({name}, memory storage) vs none",
                _rate(rates[name]),
                _rate(rates["off"]),
                own,
                f">= {goal:.2f}x",
                _at_least(own, goal),
                r.get("ratio_to_off_per_round", {}).get(name),
            )
        )
    cost = r.get("checkpoint_cost", {})
    for name, projected in r.get("projected_ratio_to_off", {}).items():
        goal = r["goals"].get(name)
        mode = name.split()[0]
        if goal is None or mode not in cost:
            continue
        rows.append(
            headline_row(
                "overhead",
                f"keyed count, checkpoints ({name}) vs none, projected from the cost of one "
                f"checkpoint ({cost[mode]['cost_s'] * 1e3:.1f} ms, measured at "
                f"{cost[mode]['interval_s'] * 1e3:g} ms intervals)",
                "",
                "",
                projected,
                f">= {goal:.2f}x",
                _at_least(projected, goal),
            )
        )
    stall = r["stall"]
    during, without = (
        stall["max_stall_during_checkpoint_s"],
        stall["max_stall_without_checkpoint_s"],
    )
    rows.append(
        headline_row(
            "overhead",
            f"longest event-loop stall, checkpoint of {stall['keys']:,} keys vs no checkpoint",
            _ms(during),
            _ms(without),
            during / without if without else None,
            "<= 10 ms",
            during <= 0.010,
        )
    )
    return rows


def _backpressure(r: dict[str, Any]) -> list[dict[str, Any]]:
    modes = r["modes"]
    cost = r["parameters"]["sink_cost"] * 1e3
    ratio = r["ratio_aligned_to_unaligned"]
    unaligned = modes["unaligned"]["duration_median"]
    return [
        headline_row(
            "backpressure",
            f"checkpoint duration under backpressure (sink {cost:g} ms/record): "
            "aligned vs unaligned",
            _ms(modes["aligned"]["duration_median"]),
            _ms(unaligned),
            ratio,
            ">= 100x",
            _at_least(ratio, 100.0),
        ),
        headline_row(
            "backpressure",
            "unaligned checkpoint duration under backpressure",
            _ms(unaligned),
            "",
            None,
            "<= 50 ms",
            unaligned <= 0.050 if unaligned == unaligned else None,
        ),
        headline_row(
            "backpressure",
            "aligned vs aligned-with-timeout (10 ms)",
            _ms(modes["aligned"]["duration_median"]),
            _ms(modes["aligned_timeout"]["duration_median"]),
            r["ratio_aligned_to_aligned_timeout"],
        ),
    ]


def _backpressure_bounded(r: dict[str, Any]) -> list[dict[str, Any]]:
    modes = r["modes"]
    ratio = r["ratio_aligned_to_unaligned"]
    unaligned = modes["unaligned"]["duration_median"]
    gap = modes["unaligned"]["longest_gap_max"]
    return [
        headline_row(
            "backpressure_bounded",
            "bounded input under backpressure: aligned vs unaligned checkpoint duration",
            _ms(modes["aligned"]["duration_median"]),
            _ms(unaligned),
            ratio,
            ">= 100x",
            _at_least(ratio, 100.0),
        ),
        headline_row(
            "backpressure_bounded",
            "bounded input: unaligned checkpoint duration while the job drains",
            _ms(unaligned),
            "",
            None,
            "<= 50 ms",
            unaligned <= 0.050 if unaligned == unaligned else None,
        ),
        headline_row(
            "backpressure_bounded",
            "bounded input: longest gap between unaligned checkpoint completions",
            _ms(gap),
            "",
            None,
            "<= 500 ms",
            gap <= 0.5,
        ),
    ]


def _sweep(r: dict[str, Any]) -> list[dict[str, Any]]:
    from benchmarks.sweep import LABELS, value_label

    rows = []
    for dimension, values in r["parameters"]["dimensions"].items():
        base = r["parameters"]["base"]
        ratios = []
        for value in values:
            point = next(p for p in r["points"] if p["point"] == {**base, dimension: value})
            ratios.append((value, point["ratio_aligned_to_unaligned"]))
        first, last = ratios[0], ratios[-1]
        rows.append(
            headline_row(
                "sweep",
                f"aligned / unaligned duration as {LABELS[dimension]} goes "
                f"{value_label(dimension, first[0])} -> {value_label(dimension, last[0])}",
                f"{first[1]:,.0f}x -> {last[1]:,.0f}x",
                "",
                None,
            )
        )
    return rows


RECOVERY_GOAL_BYTES = 50e6
"""The recovery goal is about ~100 MB of state; smaller states are not held to it."""


def _recovery(r: dict[str, Any]) -> list[dict[str, Any]]:
    row = max(r["sizes"], key=lambda s: s["state_bytes"])
    ratio = row["ratio_restore_to_read"]
    judged = row["state_bytes"] >= RECOVERY_GOAL_BYTES and ratio == ratio
    return [
        headline_row(
            "recovery",
            f"restore of {row['state_bytes'] / 1e6:,.1f} MB of state to the first record "
            "vs reading its files",
            _ms(row["restore_s"]["median"]),
            _ms(row["read_s"]["median"]),
            ratio,
            "<= 2x (for ~100 MB)",
            ratio <= 2.0 if judged else None,
        )
    ]


def _backends(r: dict[str, Any]) -> list[dict[str, Any]]:
    sizes = r["sizes"]
    small, large = sizes[0], sizes[-1]
    rows = [
        headline_row(
            "backends",
            f"checkpoint of {large['keys']:,} keys: file vs memory storage",
            _ms(large["file"]["checkpoint_seconds"]["median"]),
            _ms(large["memory"]["checkpoint_seconds"]["median"]),
            large["ratio_file_to_memory"],
        )
    ]
    if len(sizes) > 1:
        big = large["file"]["sync_s"]["median"]
        little = small["file"]["sync_s"]["median"]
        rows.append(
            headline_row(
                "backends",
                f"synchronous part of a snapshot, {large['keys']:,} vs {small['keys']:,} keys",
                _ms(big),
                _ms(little),
                big / little if little else None,
                "does not grow with the state",
            )
        )
    return rows


def _mb(size: float) -> str:
    return f"{size / 1e6:,.1f} MB"


def _rocksdb(r: dict[str, Any]) -> list[dict[str, Any]]:
    checkpoints, restore = r["checkpoints"], r["restore"]
    by_bytes = r["incremental_over_full_bytes"]
    by_time = r["incremental_over_full_seconds"]
    changed = f"{r['keys']:,} keys, 1 % changed"
    throughput = r["throughput_records_per_second"]
    return [
        headline_row(
            "rocksdb",
            f"incremental vs full checkpoint, bytes uploaded ({changed})",
            _mb(checkpoints["incremental_bytes"]["median"]),
            _mb(checkpoints["full_bytes"]["median"]),
            by_bytes["ratio"],
            "<= 0.05x",
            by_bytes["ratio"] <= 0.05,
            by_bytes["per_round"],
        ),
        headline_row(
            "rocksdb",
            f"incremental vs full checkpoint, duration ({changed})",
            _ms(checkpoints["incremental_seconds"]["median"]),
            _ms(checkpoints["full_seconds"]["median"]),
            by_time["ratio"],
            "<= 0.20x",
            by_time["ratio"] <= 0.20,
            by_time["per_round"],
        ),
        headline_row(
            "rocksdb",
            "restore from checkpoint storage vs reading its files",
            _ms(restore["restore"]["median"]),
            _ms(restore["read"]["median"]),
            r["restore_over_read"]["ratio"],
            per_round=r["restore_over_read"]["per_round"],
        ),
        headline_row(
            "rocksdb",
            "keyed count throughput, RocksDB vs heap",
            _rate(throughput["rocksdb"]),
            _rate(throughput["heap"]),
            r["rocksdb_over_heap_throughput"]["ratio"],
            per_round=r["rocksdb_over_heap_throughput"]["per_round"],
        ),
    ]


def _connectors(r: dict[str, Any]) -> list[dict[str, Any]]:
    pg, rd, fl = r["postgres"], r["redis"], r["files"]
    eo, alo = pg["exactly_once_rows_per_s"], pg["at_least_once_rows_per_s"]
    by_alo = pg["exactly_once_over_at_least_once"]
    redis_job = rd["job_entries_per_s"]
    by_plain = fl["job_over_plain"]
    return [
        headline_row(
            "connectors",
            f"PostgresSink exactly-once vs at-least-once batched ({pg['rows']:,} rows, p=1)",
            _rate(eo),
            _rate(alo),
            by_alo["ratio"],
            ">= 0.7x and >= 50,000 rows/s",
            _at_least(by_alo["ratio"], 0.7) and eo["median"] >= 50_000,
            by_alo["per_round"],
        ),
        headline_row(
            "connectors",
            f"RedisStreamSource, a job reading {rd['entries']:,} entries (p=1) vs bare XREAD",
            _rate(redis_job),
            _rate(rd["bare_xread_entries_per_s"]),
            rd["job_over_bare"]["ratio"],
            ">= 200,000 entries/s",
            redis_job["median"] >= 200_000,
            rd["job_over_bare"]["per_round"],
        ),
        headline_row(
            "connectors",
            f"FileSource JSON Lines job ({fl['lines']:,} lines) vs a plain decode loop",
            _rate(fl["job_lines_per_s"]),
            _rate(fl["plain_loop_lines_per_s"]),
            by_plain["ratio"],
            ">= 0.7x",
            _at_least(by_plain["ratio"], 0.7),
            by_plain["per_round"],
        ),
    ]


def _changelog(r: dict[str, Any]) -> list[dict[str, Any]]:
    changed = f"{r['keys']:,} keys of heap state, 1 % changed"
    by_seconds, by_bytes = r["changelog_over_full_seconds"], r["changelog_over_full_bytes"]
    seconds, written = r["checkpoint_seconds"], r["checkpoint_bytes"]
    restore, throughput = r["restore_over_read"], r["on_over_off_throughput"]
    rates = r["throughput_records_per_second"]
    return [
        headline_row(
            "changelog",
            f"changelog vs full heap checkpoint, duration ({changed})",
            _ms(seconds["changelog"]["median"]),
            _ms(seconds["full"]["median"]),
            by_seconds["ratio"],
            "<= 0.05x",
            by_seconds["ratio"] <= 0.05,
            by_seconds["per_round"],
        ),
        headline_row(
            "changelog",
            f"changelog vs full heap checkpoint, bytes written ({changed})",
            _mb(written["changelog"]["median"]),
            _mb(written["full"]["median"]),
            by_bytes["ratio"],
            "<= 0.05x",
            by_bytes["ratio"] <= 0.05,
            by_bytes["per_round"],
        ),
        headline_row(
            "changelog",
            "restore (materialized + changelog) vs reading its files",
            _ms(r["restore"]["restore"]["median"]),
            _ms(r["restore"]["read"]["median"]),
            restore["ratio"],
            "<= 3x",
            restore["ratio"] <= 3.0,
            restore["per_round"],
        ),
        headline_row(
            "changelog",
            "keyed count throughput, checkpoint every 1 s, changelog on vs off",
            _rate(rates["on"]),
            _rate(rates["off"]),
            throughput["ratio"],
            ">= 0.85x",
            throughput["ratio"] >= 0.85,
            throughput["per_round"],
        ),
    ]


_HEADLINES: dict[str, Callable[[dict[str, Any]], list[dict[str, Any]]]] = {
    "throughput": _throughput,
    "bytewax": _bytewax,
    "overhead": _overhead,
    "backpressure": _backpressure,
    "backpressure_bounded": _backpressure_bounded,
    "sweep": _sweep,
    "recovery": _recovery,
    "backends": _backends,
    "rocksdb": _rocksdb,
    "changelog": _changelog,
    "connectors": _connectors,
}


def assemble(
    runs: list[PartRun],
    *,
    quick: bool,
    started: datetime.datetime,
    seconds: float,
    machine_start: dict[str, Any],
    machine_end: dict[str, Any],
    argv: list[str],
) -> dict[str, Any]:
    """The kit's report from its parts' runs (plots are added once drawn)."""
    parts = {run.name: run.as_json() for run in runs}
    rows = [row for run in runs if run.status == "ok" for row in headlines(run.name, run.report)]
    noisy = [{"part": run.name, **series} for run in runs for series in noisy_series(run.report)]
    total = sum(count_series(run.report) for run in runs)
    return {
        "kit": "weir benchmarks",
        "format": 1,
        "mode": "quick" if quick else "full",
        "command": ["python", "-m", "benchmarks", *argv],
        "started": started.isoformat(timespec="seconds"),
        "seconds": seconds,
        "machine": machine_start,
        "load_average_end": machine_end.get("load_average"),
        "headline": rows,
        "noisy": {"count": len(noisy), "of": total, "series": noisy},
        "failed": [run.name for run in runs if run.status != "ok"],
        "parts": parts,
    }


def _ratio_text(row: dict[str, Any]) -> str:
    ratio = row["ratio"]
    if ratio is None or ratio != ratio:
        return ""
    text = f"**{ratio:,.2f}x**" if ratio < 10 else f"**{ratio:,.0f}x**"
    return text


def _range_text(row: dict[str, Any]) -> str:
    per_round = row.get("per_round")
    if not per_round or per_round.get("min") is None:
        return ""
    low, high = per_round["min"], per_round["max"]
    return f"{low:.2f}-{high:.2f}x"


def _met_text(met: bool | None) -> str:
    return "" if met is None else ("yes" if met else "**no**")


def headline_table(rows: list[dict[str, Any]]) -> str:
    """The headline rows as a Markdown table."""
    lines = [
        "| part | figure | Weir | baseline (same run) | ratio | ratio per round | goal | met |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['part']} | {row['figure']} | {row['value']} | {row['baseline']} "
            f"| {_ratio_text(row)} | {_range_text(row)} | {row['goal']} | "
            f"{_met_text(row['met'])} |"
        )
    return "\n".join(lines)


def noisy_text(report: dict[str, Any]) -> str:
    """The warning about a noisy run, or a line saying the run was steady."""
    noisy = report["noisy"]
    start = report["machine"].get("load_average")
    end = report.get("load_average_end")
    load = ""
    if start and end:
        load = f" Load average {start[0]:.1f} at the start, {end[0]:.1f} at the end."
    if not noisy["count"]:
        return f"Steady run: no series spread (max / min) above 1.25.{load}"
    worst = sorted(noisy["series"], key=lambda s: -(s["spread"] or 0))[:5]
    listed = ", ".join(f"{s['part']}.{s['series']} ({s['spread']:.2f})" for s in worst)
    return (
        f"**Noisy run: {noisy['count']} of {noisy['of']} series spread (max / min) above "
        f"1.25**, the widest: {listed}.{load} The machine was busy: trust the ratios "
        "(both sides ran alternately, so a neighbour slows both) more than the absolute "
        "figures, and rerun before concluding from a small difference."
    )


def render(report: dict[str, Any], runs: list[PartRun]) -> str:
    """``report.md``: headline table, noise, plots, then each part's own section."""
    kind = (
        "Quick smoke run (tiny sizes: not figures to quote)"
        if report["mode"] == "quick"
        else "Full run"
    )
    info = report["machine"]
    libraries = ", ".join(f"{k} {v}" for k, v in info["libraries"].items())
    lines = [
        "# Weir benchmark report",
        "",
        f"{kind}, {report['started']}, {report['seconds'] / 60:,.1f} min: "
        f"`{shlex.join(report['command'])}`.",
        "",
        f"Machine: {machine_line(info)}; {info['platform']}. Libraries: {libraries}.",
        "",
        noisy_text(report),
        "",
    ]
    if report["failed"]:
        lines += [f"**Failed parts: {', '.join(report['failed'])}** (see kit.log).", ""]
    lines += [
        "Every figure is a median over interleaved runs (ABBA, after a warm-up); its "
        'ratio is to the baseline measured in the same run; "ratio per round" is the '
        "range of the ratio between runs done side by side.",
        "",
        headline_table(report["headline"]),
        "",
    ]
    plots = report.get("plots", {})
    if plots.get("files"):
        lines += ["## Plots", ""]
        for title, filename in plots["files"].items():
            lines += [f"![{title}]({filename})", ""]
    elif plots.get("skipped"):
        lines += [f"Plots: not drawn ({plots['skipped']}).", ""]
    for run in runs:
        lines += [f"## {run.part.title} (`{run.name}`)", ""]
        if run.status != "ok":
            lines += [f"**Failed** after {run.seconds:,.1f} s: `{run.error}`", ""]
            continue
        lines += [
            f"`python -m {run.part.module} {shlex.join(run.argv)}`, {run.seconds:,.1f} s.",
            "",
            str(run.report.get("markdown", "(no table)")),
            "",
        ]
    return "\n".join(lines).rstrip() + "\n"


# -- the command --------------------------------------------------------------------------


def parse_args(argv: list[str] | None, parts: dict[str, Part]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Weir's benchmark kit: runs the suite or parts of it and writes "
        "report.json, report.md and PNG plots (with matplotlib).",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run of seconds (CI)")
    parser.add_argument(
        "--only",
        metavar="PARTS",
        help=f"comma-separated parts to run, of: {', '.join(parts)} (default: all)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where the report goes (default benchmarks/results, or "
        "benchmarks/results/quick with --quick)",
    )
    parser.add_argument(
        "--part-args",
        metavar="PART=ARGS",
        action="append",
        default=[],
        help="extra arguments for one part's script, e.g. overhead='--repeats 3' (repeatable)",
    )
    parser.add_argument("--no-plots", action="store_true", help="draw no plots")
    parser.add_argument("--list", action="store_true", help="list the parts and exit")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the kit; return 0, or 1 if a part failed (2 for bad usage, from argparse)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parts = available_parts()
    args = parse_args(argv, parts)
    if args.list:
        for name, part in parts.items():
            print(f"{name:13} {part.title} (python -m {part.module})")
        return 0
    try:
        names = select_parts(args.only, parts)
        extras = dict(_split_part_args(item, parts) for item in args.part_args)
    except ValueError as error:
        print(f"python -m benchmarks: {error}", file=sys.stderr)
        return 2
    out: Path = args.out or (RESULTS / "quick" if args.quick else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    harness.RESULTS = out  # the scripts' own reports (full runs) go there too
    started = datetime.datetime.now().astimezone()
    clock = time.perf_counter()
    machine_start = machine()
    runs = [
        PartRun(name, parts[name], part_argv(parts[name], args.quick, extras.get(name, "")))
        for name in names
    ]
    progress = Progress(names, sys.stderr)
    with open(out / "kit.log", "w", encoding="utf-8") as log, progress.running():
        for index, run in enumerate(runs):
            progress.start(index, run)
            run_part(run, log, lambda label, run=run: progress.tick(run, label))
            progress.finish(run)
    report = assemble(
        runs,
        quick=args.quick,
        started=started,
        seconds=time.perf_counter() - clock,
        machine_start=machine_start,
        machine_end=machine(),
        argv=argv,
    )
    if args.no_plots:
        report["plots"] = {"skipped": "--no-plots"}
    else:
        from benchmarks import plots

        report["plots"] = plots.draw(report, out)
    (out / "report.json").write_text(to_json(report) + "\n", encoding="utf-8")
    (out / "report.md").write_text(render(report, runs), encoding="utf-8")
    print(headline_table(report["headline"]))
    print()
    print(noisy_text(report))
    print(f"\nreport: {out / 'report.md'}, {out / 'report.json'}", end="")
    files = report["plots"].get("files", {})
    print(f"; plots: {', '.join(str(out / f) for f in files.values())}" if files else "")
    return 1 if report["failed"] else 0


def _split_part_args(item: str, parts: dict[str, Part]) -> tuple[str, str]:
    name, sep, extra = item.partition("=")
    if not sep or name not in parts:
        raise ValueError(f"--part-args wants PART=ARGS with a part of {', '.join(parts)}")
    return name, extra
