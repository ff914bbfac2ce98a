"""Event time: a tumbling window count against the keyed running count and Bytewax 0.21.

Part 1, throughput, parallelism 1, ``--keys`` keys, ``--records`` records whose event
time advances ``1 / --events-per-second`` per record (so 1 s windows hold that many
records, spread over the keys):

* Weir window count: numbers -> map to ``(key, timestamp, 1)`` -> monotonous watermarks
  (every 0.2 s, Flink's default) -> key_by -> ``TumblingEventTimeWindows.of(1.0)`` ->
  reduce -> a counting sink;
* Weir keyed running count (``benchmarks.throughput``'s job), in the same run: the
  baseline of the 0.5x goal;
* Bytewax 0.21: the same input through ``windowing.count_window`` with an ``EventClock``
  (``wait_for_system_duration`` of a day: its watermark follows the system clock too, so
  with no wait most of this input would be late; its windows then close at the end)
  and a 1 s ``TumblingWindower``, reading a ``TestingSource`` in batches of
  ``--bytewax-batch`` (its keys must be str, its timestamps datetimes: the timestamp
  getter builds one from the float).

The variants alternate (ABBA) after a warm-up. Part 2: the longest event-loop stall
during a checkpoint of a job holding ``--timers`` event-time timers (one per key, in
keyed state), measured as ``benchmarks.overhead`` measures it for keyed state, in a
fresh process.

Goals (issue 15): window count >= 0.5x the keyed count, >= 3x Bytewax; stall <= 10 ms.

    python -m benchmarks.event_time            # 1,000,000 records, 3 rounds, 1M timers
    python -m benchmarks.event_time --quick    # a smoke run of a few seconds
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks.bytewax_baseline import bytewax_version
from benchmarks.harness import interleave, machine, machine_line, paired_ratios, write_report
from benchmarks.throughput import CountingSink, time_keyed_count
from runtime import KeyedProcessFunction, StreamEnvironment
from runtime.time import WatermarkStrategy
from runtime.windows import TumblingEventTimeWindows

GOAL_VS_KEYED = 0.5
GOAL_VS_BYTEWAX = 3.0
GOAL_STALL = 0.010
ALIGN = datetime(2024, 1, 1, tzinfo=UTC)


def run_weir_windows(records: int, keys: int, eps: float) -> float:
    """Records/s of the tumbling window count."""
    step = 1.0 / eps

    def to_event(i: int) -> tuple[int, float, int]:
        return (i % keys, i * step, 1)

    def timestamp(event: tuple[int, float, int]) -> float:
        return event[1]

    def key_of(event: tuple[int, float, int]) -> int:
        return event[0]

    def add(a: tuple[int, float, int], b: tuple[int, float, int]) -> tuple[int, float, int]:
        return (a[0], a[1], a[2] + b[2])

    env = StreamEnvironment(parallelism=1)
    strategy = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(timestamp)
    (
        env.from_sequence(0, records - 1)
        .map(to_event, name="map")
        .assign_timestamps_and_watermarks(strategy, name="timestamps")
        .key_by(key_of)
        .window(TumblingEventTimeWindows.of(1.0))
        .reduce(add, name="window")
        .sink_to(CountingSink(), name="sink")
    )

    async def job() -> float:
        start = time.perf_counter()
        result = await env.execute("window count")
        elapsed = time.perf_counter() - start
        assert result.records_in("window") == records, "the window lost or duplicated records"
        windows = -(-records // int(eps)) * min(keys, int(eps))
        assert result.records_in("sink") == windows, (result.records_in("sink"), windows)
        return records / elapsed

    return asyncio.run(job())


def run_weir_keyed(records: int, keys: int) -> float:
    """Records/s of the keyed running count (the same run's baseline)."""
    seconds, _ = time_keyed_count(StreamEnvironment(parallelism=1), records, keys)
    return records / seconds


def run_bytewax_windows(records: int, keys: int, eps: float, batch: int) -> float:
    """Records/s of Bytewax's tumbling window count on the same input."""
    import bytewax.operators as op
    import bytewax.operators.windowing as win
    from bytewax.dataflow import Dataflow
    from bytewax.outputs import DynamicSink, StatelessSinkPartition
    from bytewax.testing import TestingSource, run_main

    counted = [0]
    step = 1.0 / eps

    class Partition(StatelessSinkPartition[Any]):
        def write_batch(self, items: list[Any]) -> None:
            for _key, (_window, count) in items:
                counted[0] += count

    class Sink(DynamicSink[Any]):
        def build(self, step_id: str, worker_index: int, worker_count: int) -> Any:
            return Partition()

    def to_event(i: int) -> tuple[str, float]:
        return (str(i % keys), i * step)

    def ts_getter(event: tuple[str, float]) -> datetime:
        return ALIGN + timedelta(seconds=event[1])

    flow = Dataflow("window_count")
    numbers = op.input("source", flow, TestingSource(range(records), batch_size=batch))
    events = op.map("map", numbers, to_event)
    # Bytewax's watermark also advances with the system clock: with no wait, most of
    # this input (10 us of event time per record) would be late; a day's wait makes
    # none late (every window closes at the end of input instead).
    clock = win.EventClock(ts_getter, wait_for_system_duration=timedelta(days=1))
    windower = win.TumblingWindower(length=timedelta(seconds=1), align_to=ALIGN)
    counts = win.count_window("count", events, clock, windower, lambda e: e[0])
    op.output("sink", counts.down, Sink())
    start = time.perf_counter()
    run_main(flow)
    elapsed = time.perf_counter() - start
    assert counted[0] == records, f"Bytewax counted {counted[0]} of {records}"
    return records / elapsed


class OneTimerPerKey(KeyedProcessFunction):
    """Registers one event-time timer per key (far ahead: it never fires here)."""

    def process_element(self, value: Any, ctx: Any) -> None:
        ctx.timer_service.register_event_time_timer(1e12 + value[0])

    def on_timer(self, timestamp: float, ctx: Any) -> None:
        return None


async def measure_timer_stall(timers: int, directory: str) -> dict[str, float]:
    """Fill ``timers`` timers, checkpoint into files, and probe the event loop meanwhile."""
    env = StreamEnvironment(parallelism=1)
    env.enable_checkpointing(3600.0, storage=f"file://{directory}")
    (
        env.generate(lambda i: (i % timers,), records_per_second=None)
        .key_by(lambda r: r[0])
        .process(OneTimerPerKey(), name="timers")
        .sink_to(CountingSink(), name="sink")
    )
    client = await env.start("timers")
    while client.metrics()["timers"].records_in < timers:
        await asyncio.sleep(0.05)  # a benchmark: waiting for the state to fill
    gaps: list[float] = []
    stop = asyncio.Event()

    async def probe() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    probe_task = asyncio.create_task(probe())
    await asyncio.sleep(0.5)
    baseline = max(gaps)
    gaps.clear()
    started = time.perf_counter()
    completed = await client.trigger_checkpoint()
    seconds = time.perf_counter() - started
    stop.set()
    await probe_task
    client.cancel()
    result = await client.wait()
    stats = result.checkpoints
    assert stats is not None
    latest = next(s for s in stats.completed() if s.checkpoint_id == completed.checkpoint_id)
    return {
        "timers": timers,
        "max_stall_during_checkpoint_s": max(gaps),
        "max_stall_without_checkpoint_s": baseline,
        "checkpoint_seconds": seconds,
        "sync_s": latest.max_sync_duration,
        "async_s": latest.max_async_duration,
        "state_bytes": latest.state_size,
    }


def measure_timer_stall_in_fresh_process(timers: int) -> dict[str, Any]:
    """:func:`measure_timer_stall` in a new Python process (no garbage of earlier runs)."""
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.event_time", "--stall-once", "--timers", str(timers)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"the timer stall run failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _row(
    figure: str,
    value: str,
    baseline: str,
    ratio: float | None,
    goal: str,
    met: bool | None,
    per_round: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
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


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=1_000)
    parser.add_argument("--events-per-second", type=float, default=100_000.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bytewax-batch", type=int, default=4096)
    parser.add_argument("--timers", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="100k records, 1 round, 50k timers")
    parser.add_argument("--stall-once", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stall_once:
        with tempfile.TemporaryDirectory(prefix="weir-timers-") as folder:
            print(json.dumps(asyncio.run(measure_timer_stall(args.timers, folder))))
        return {}
    if args.quick:
        args.records, args.repeats, args.timers = 100_000, 1, 50_000
    n, k, eps = args.records, args.keys, args.events_per_second
    version = bytewax_version()
    variants = {
        "window count": lambda: run_weir_windows(n, k, eps),
        "keyed count": lambda: run_weir_keyed(n, k),
    }
    if version is not None:
        variants["bytewax window count"] = lambda: run_bytewax_windows(
            n, k, eps, args.bytewax_batch
        )
    series = interleave(variants, repeats=args.repeats, warmup=0 if args.quick else 1)
    stall = measure_timer_stall_in_fresh_process(args.timers)
    info = machine()
    windows, keyed = series["window count"], series["keyed count"]
    vs_keyed = paired_ratios(windows, keyed)
    headline = [
        _row(
            f"tumbling 1 s window count, {k:,} keys, p=1; baseline: keyed running count",
            f"{windows.median:,.0f} rec/s",
            f"{keyed.median:,.0f} rec/s",
            vs_keyed["ratio"],
            f">= {GOAL_VS_KEYED}x",
            vs_keyed["ratio"] >= GOAL_VS_KEYED,
            vs_keyed["per_round"],
        )
    ]
    if version is not None:
        bytewax = series["bytewax window count"]
        vs_bytewax = paired_ratios(windows, bytewax)
        headline.append(
            _row(
                f"tumbling 1 s window count; baseline: Bytewax {version} count_window "
                f"(batches of {args.bytewax_batch})",
                f"{windows.median:,.0f} rec/s",
                f"{bytewax.median:,.0f} rec/s",
                vs_bytewax["ratio"],
                f">= {GOAL_VS_BYTEWAX:g}x",
                vs_bytewax["ratio"] >= GOAL_VS_BYTEWAX,
                vs_bytewax["per_round"],
            )
        )
    worst = stall["max_stall_during_checkpoint_s"]
    headline.append(
        _row(
            f"longest loop stall, checkpoint of {args.timers:,} timers (heap, files); "
            "baseline: without a checkpoint",
            f"{worst * 1e3:.1f} ms",
            f"{stall['max_stall_without_checkpoint_s'] * 1e3:.1f} ms",
            None,
            "<= 10 ms",
            worst <= GOAL_STALL,
        )
    )
    report = {
        "benchmark": "event_time",
        "parameters": {
            "records": n,
            "keys": k,
            "events_per_second": eps,
            "repeats": args.repeats,
            "bytewax_batch": args.bytewax_batch,
            "timers": args.timers,
            "parallelism": 1,
        },
        "bytewax": version or "absent",
        "machine": info,
        "records_per_s": {name: s.summary() for name, s in series.items()},
        "timer_checkpoint": stall,
        "headline": headline,
    }
    lines = [
        f"Event time, {n:,} records, {k:,} keys, parallelism 1, medians of {args.repeats}; "
        f"{machine_line(info)}",
        "",
        "| figure | value | baseline | ratio | goal |",
        "|---|---:|---:|---:|---|",
    ]
    for row in headline:
        ratio_text = "" if row["ratio"] is None else f"{row['ratio']:.2f}x"
        lines.append(
            f"| {row['figure']} | {row['value']} | {row['baseline']} | {ratio_text} | "
            f"{row['goal']} {'met' if row['met'] else 'NOT met'} |"
        )
    lines += [
        "",
        f"Timer checkpoint: {stall['checkpoint_seconds'] * 1e3:,.0f} ms end to end, sync part "
        f"{stall['sync_s'] * 1e3:.2f} ms, async part {stall['async_s'] * 1e3:,.0f} ms, "
        f"{stall['state_bytes']:,} bytes.",
    ]
    if version is None:
        lines.append("Bytewax is not installed (pip install -e '.[bench]'): not compared.")
    markdown = "\n".join(lines)
    if not args.quick:
        write_report("event_time", report, markdown)
    print(markdown)
    report["markdown"] = markdown
    return report


if __name__ == "__main__":
    main()
