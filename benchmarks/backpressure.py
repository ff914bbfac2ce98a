"""Aligned vs unaligned vs aligned-with-timeout checkpoints under backpressure.

The job: an unbounded generator -> map -> key_by -> a sink that costs ``--sink-cost``
seconds per record (an ``async def`` sink awaiting ``asyncio.sleep``: an outside service).
The sink is the bottleneck, so every channel upstream of it is full. Each mode runs for
``--duration`` seconds with a checkpoint every ``--interval`` seconds; the modes run
interleaved over ``--repeats`` rounds. Reported per mode (medians over every completed
checkpoint): end-to-end checkpoint duration, alignment duration, persisted in-flight
bytes, and the sink's throughput; and the ratio of aligned to unaligned duration.

Goal (issue 3): aligned / unaligned duration >= 100x with a 1 ms per record sink, and
unaligned <= 50 ms (Flink's own benchmark shows 133x to 356x).

    python -m benchmarks.backpressure            # full run
    python -m benchmarks.backpressure --quick    # a smoke run of a few seconds
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from typing import Any

from benchmarks.harness import machine, machine_line, write_report
from runtime import ExternalizedCheckpointRetention, SinkFunction, StreamEnvironment

MODES = {
    "aligned": {"unaligned": False, "aligned_timeout": 0.0},
    "unaligned": {"unaligned": True, "aligned_timeout": 0.0},
    "aligned_timeout": {"unaligned": True, "aligned_timeout": 0.01},
}


class SlowSink(SinkFunction[Any]):
    """Costs ``cost`` seconds per record, awaited (it does not block the event loop)."""

    def __init__(self, cost: float) -> None:
        self.cost = cost

    async def invoke(self, value: Any) -> None:
        await asyncio.sleep(self.cost)


def record(i: int) -> tuple[int, int]:
    return (i % 64, i)


def key_of(r: tuple[int, int]) -> int:
    return r[0]


async def run_mode(mode: str, args: argparse.Namespace, directory: str) -> dict[str, Any]:
    env = StreamEnvironment(
        parallelism=args.parallelism,
        buffer_size=args.buffer_size,
        channel_capacity=args.channel_capacity,
    )
    env.enable_checkpointing(
        args.interval,
        timeout=120.0,
        storage=f"file://{directory}",
        retention=ExternalizedCheckpointRetention.NO_EXTERNALIZED_CHECKPOINTS,
        **MODES[mode],
    )
    (
        env.generate(record, name="source")
        .map(lambda r: r, name="map")
        .key_by(key_of)
        .sink_to(SlowSink(args.sink_cost), name="sink")
    )
    client = await env.start(f"backpressure-{mode}")
    await asyncio.sleep(args.duration)
    client.cancel()
    result = await client.wait()
    stats = result.checkpoints
    assert stats is not None
    done = stats.completed()
    return {
        "completed": len(done),
        "durations": [s.end_to_end_duration for s in done],
        "alignments": [s.max_alignment_duration for s in done],
        "in_flight_bytes": [s.in_flight_bytes for s in done],
        "unaligned": [s.unaligned for s in done],
        "records_per_s": result.records_in("sink") / args.duration,
    }


def median(values: list[Any]) -> float:
    return statistics.median(values) if values else float("nan")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sink-cost", type=float, default=0.001, help="seconds per record")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per run")
    parser.add_argument("--interval", type=float, default=0.5, help="checkpoint interval")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--parallelism", type=int, default=1)
    parser.add_argument("--buffer-size", type=int, default=128)
    parser.add_argument("--channel-capacity", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s per mode")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.repeats, args.interval = 2.0, 1, 0.3
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory() as directory:
        for round_ in range(args.repeats):
            order = list(MODES) if round_ % 2 == 0 else list(reversed(MODES))
            for mode in order:
                runs[mode].append(asyncio.run(run_mode(mode, args, directory)))
    summary: dict[str, dict[str, Any]] = {}
    for mode, results in runs.items():
        durations = [d for r in results for d in r["durations"]]
        summary[mode] = {
            "checkpoints": len(durations),
            "duration_median": median(durations),
            "duration_min": min(durations, default=float("nan")),
            "duration_max": max(durations, default=float("nan")),
            "alignment_median": median([a for r in results for a in r["alignments"]]),
            "in_flight_bytes_median": median([b for r in results for b in r["in_flight_bytes"]]),
            "ended_unaligned": sum(u for r in results for u in r["unaligned"]),
            "records_per_s_median": median([r["records_per_s"] for r in results]),
        }
    ratio = summary["aligned"]["duration_median"] / summary["unaligned"]["duration_median"]
    ratio_timeout = (
        summary["aligned"]["duration_median"] / summary["aligned_timeout"]["duration_median"]
    )
    info = machine()
    report = {
        "benchmark": "backpressure",
        "machine": info,
        "parameters": vars(args),
        "modes": summary,
        "ratio_aligned_to_unaligned": ratio,
        "ratio_aligned_to_aligned_timeout": ratio_timeout,
        "goal": "aligned/unaligned >= 100x; unaligned <= 50 ms",
    }
    rows = [
        f"Backpressure: sink {args.sink_cost * 1e3:g} ms/record, buffer {args.buffer_size} "
        f"records, capacity {args.channel_capacity} buffers, parallelism {args.parallelism}, "
        f"{args.repeats} x {args.duration:g} s per mode; {machine_line(info)}",
        "",
        "| mode | checkpoints | duration (median) | min | max | alignment | in-flight bytes "
        "| ended unaligned | sink records/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mode, s in summary.items():
        rows.append(
            f"| {mode} | {s['checkpoints']} | {s['duration_median'] * 1e3:,.1f} ms | "
            f"{s['duration_min'] * 1e3:,.1f} ms | {s['duration_max'] * 1e3:,.1f} ms | "
            f"{s['alignment_median'] * 1e3:,.1f} ms | {s['in_flight_bytes_median']:,.0f} | "
            f"{s['ended_unaligned']} | {s['records_per_s_median']:,.0f} |"
        )
    rows.append("")
    rows.append(
        f"**aligned / unaligned duration: {ratio:,.0f}x** (goal >= 100x); "
        f"aligned / aligned-with-timeout: {ratio_timeout:,.0f}x; unaligned median "
        f"{summary['unaligned']['duration_median'] * 1e3:.1f} ms (goal <= 50 ms)"
    )
    markdown = "\n".join(rows)
    if not args.quick:
        write_report("backpressure", report, markdown)
    print(markdown)
    return report


if __name__ == "__main__":
    main()
