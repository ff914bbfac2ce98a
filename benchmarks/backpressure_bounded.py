"""Aligned vs unaligned checkpoints under backpressure with a *bounded* input (issue 11).

The job: a sequence source of ``--records`` records -> map -> key_by -> a sink that costs
``--sink-cost`` seconds per record (the paced ``SlowSink`` of ``benchmarks.backpressure``).
The channels are sized to hold the whole input (``--channel-capacity`` buffers of
``--buffer-size`` records), so the source reads all of it within the first moments and
then only takes part in checkpoints (FLIP-147) while the sink drains the backlog for
``records x cost`` seconds. Each mode runs to the job's end with a checkpoint every
``--interval`` seconds; the modes run interleaved over ``--repeats`` rounds.

Reported per mode: the median end-to-end checkpoint duration of every completed
checkpoint, whether they ended unaligned, their in-flight bytes, the longest gap between
two checkpoint completions (from the job's start to its end), and how long after the
start the source had read everything; and the ratio of aligned to unaligned duration.

Goals (issue 11): aligned / unaligned median duration >= 100x, unaligned <= 50 ms; a
checkpoint completes at least every 500 ms until the job ends (100 ms interval).

    python -m benchmarks.backpressure_bounded            # full run
    python -m benchmarks.backpressure_bounded --quick    # a smoke run of a few seconds
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import tempfile
import time
from typing import Any

from benchmarks.backpressure import (
    MODES,
    SlowSink,
    key_of,
    median,
    ratio_of,
    record,
    summarize_modes,
)
from benchmarks.harness import machine, machine_line, round_order, tick, write_report
from runtime import ExternalizedCheckpointRetention, StreamEnvironment


async def run_mode(mode: str, args: argparse.Namespace, directory: str) -> dict[str, Any]:
    """One bounded run in ``mode``, to the job's end."""
    env = StreamEnvironment(
        parallelism=1, buffer_size=args.buffer_size, channel_capacity=args.channel_capacity
    )
    env.enable_checkpointing(
        args.interval,
        timeout=120.0,
        storage=f"file://{directory}",
        retention=ExternalizedCheckpointRetention.NO_EXTERNALIZED_CHECKPOINTS,
        **MODES[mode],
    )
    (
        env.from_sequence(0, args.records - 1, name="source")
        .map(record, name="map")
        .key_by(key_of)
        .sink_to(SlowSink(args.sink_cost), name="sink")
    )
    started_wall, started = time.time(), time.perf_counter()
    client = await env.start(f"bounded-backpressure-{mode}")
    coordinator: Any = client._execution.coordinator
    read_all = None
    while not client.status.is_terminal:
        if read_all is None and set(coordinator.sources) <= coordinator.input_ended:
            read_all = time.perf_counter() - started
        await asyncio.sleep(0.005)
    result = await client.wait()
    ended = time.perf_counter() - started
    stats = result.checkpoints
    assert stats is not None
    done = stats.completed()
    completions = sorted(
        s.trigger_time - started_wall + (s.end_to_end_duration or 0.0) for s in done
    )
    marks = [0.0, *completions, ended]
    return {
        "completed": len(done),
        "failed": sum(1 for s in stats.history if s.status.value == "failed"),
        "trigger_times": [s.trigger_time - started_wall for s in done],
        "durations": [s.end_to_end_duration for s in done],
        "alignments": [s.max_alignment_duration for s in done],
        "in_flight_bytes": [s.in_flight_bytes for s in done],
        "state_bytes": [s.state_size for s in done],
        "unaligned": [s.unaligned for s in done],
        "records_per_s": result.records_in("sink") / ended,
        "longest_gap": max(b - a for a, b in itertools.pairwise(marks)),
        "seconds": ended,
        "source_read_all_after": read_all,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=6_000)
    parser.add_argument("--sink-cost", type=float, default=0.001, help="seconds per record")
    parser.add_argument("--interval", type=float, default=0.1, help="checkpoint interval")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--buffer-size", type=int, default=128)
    parser.add_argument("--channel-capacity", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="1 round of about 1 s per mode")
    args = parser.parse_args(argv)
    if args.quick:
        args.records = min(args.records, 1_000)
        args.repeats = 1
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory() as directory:
        for round_ in range(args.repeats):
            for mode in round_order(list(MODES), round_):
                runs[mode].append(asyncio.run(run_mode(mode, args, directory)))
                tick(f"bounded {mode}")
    summary = summarize_modes(runs)
    for mode, results in runs.items():
        summary[mode]["longest_gap_max"] = max(r["longest_gap"] for r in results)
        summary[mode]["seconds_median"] = median([r["seconds"] for r in results])
        summary[mode]["failed"] = sum(r["failed"] for r in results)
        reads = [r["source_read_all_after"] for r in results if r["source_read_all_after"]]
        summary[mode]["source_read_all_after_max"] = max(reads, default=float("nan"))
    ratio = ratio_of(summary, "aligned", "unaligned")
    info = machine()
    report = {
        "benchmark": "backpressure_bounded",
        "machine": info,
        "parameters": vars(args),
        "modes": summary,
        "ratio_aligned_to_unaligned": ratio,
        "ratio_aligned_to_aligned_timeout": ratio_of(summary, "aligned", "aligned_timeout"),
        "goal": "aligned/unaligned >= 100x; unaligned <= 50 ms; a checkpoint every <= 500 ms",
        "runs": runs,
    }
    rows = [
        f"Bounded input under backpressure: {args.records:,} records, sink "
        f"{args.sink_cost * 1e3:g} ms/record, buffer {args.buffer_size} records, capacity "
        f"{args.channel_capacity} buffers, checkpoint every {args.interval:g} s, "
        f"{args.repeats} round(s) per mode; {machine_line(info)}",
        "",
        "| mode | checkpoints | duration (median) | max | in-flight bytes | ended unaligned "
        "| longest gap between completions | source read all after | job |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mode, s in summary.items():
        rows.append(
            f"| {mode} | {s['checkpoints']} | {s['duration_median'] * 1e3:,.1f} ms | "
            f"{s['duration_max'] * 1e3:,.1f} ms | {s['in_flight_bytes_median']:,.0f} | "
            f"{s['ended_unaligned']} | {s['longest_gap_max'] * 1e3:,.0f} ms | "
            f"{s['source_read_all_after_max'] * 1e3:,.0f} ms | {s['seconds_median']:.2f} s |"
        )
    rows.append("")
    rows.append(
        f"**aligned / unaligned duration: {ratio:,.0f}x** (goal >= 100x); unaligned median "
        f"{summary['unaligned']['duration_median'] * 1e3:.1f} ms (goal <= 50 ms); longest gap "
        f"between unaligned completions {summary['unaligned']['longest_gap_max'] * 1e3:,.0f} ms "
        f"(goal <= 500 ms)"
    )
    markdown = "\n".join(rows)
    if not args.quick:
        write_report("backpressure_bounded", report, markdown)
    print(markdown)
    report["markdown"] = markdown
    return report


if __name__ == "__main__":
    main()
