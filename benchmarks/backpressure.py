"""Aligned vs unaligned vs aligned-with-timeout checkpoints under backpressure.

The job: an unbounded generator -> map -> key_by -> a sink that costs ``--sink-cost``
seconds per record (an ``async def`` sink awaiting ``asyncio.sleep``: an outside service).
The sink is the bottleneck, so every channel upstream of it is full. The cost is paced
rather than slept per record: the sink takes at most 1 / cost records per second and
awaits ``asyncio.sleep`` whenever it is ``PACE_SLACK`` or more ahead of that pace, since
the event loop cannot sleep for less than about 1 ms (its selector rounds timeouts up to
whole milliseconds): a sleep of 0.1 ms per record would cost 1 ms or more. Each mode runs for
``--duration`` seconds with a checkpoint every ``--interval`` seconds; the modes run
interleaved over ``--repeats`` rounds. Reported per mode (medians over every completed
checkpoint): end-to-end checkpoint duration, alignment duration, persisted in-flight
bytes, and the sink's throughput; and the ratio of aligned to unaligned duration.

Goal (issue 3): aligned / unaligned duration >= 100x with a 1 ms per record sink, and
unaligned <= 50 ms (Flink's own benchmark shows 133x to 356x).

With ``--state-keys N`` the job holds keyed state: a keyed ``reduce`` keeping the latest
record of each of N keys sits before the sink. The sink costs nothing until the state
holds every key, then turns slow; measuring starts ``SETTLE`` seconds later, once the
channels are full again, and only checkpoints triggered from then on count.
(``benchmarks.sweep`` varies the sink's cost, channel capacity, buffer size, parallelism
and state size.)

    python -m benchmarks.backpressure            # full run
    python -m benchmarks.backpressure --quick    # a smoke run of a few seconds
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from typing import Any

from benchmarks.harness import machine, machine_line, round_order, summarize, tick, write_report
from runtime import ExternalizedCheckpointRetention, SinkFunction, StreamEnvironment

MODES = {
    "aligned": {"unaligned": False, "aligned_timeout": 0.0},
    "unaligned": {"unaligned": True, "aligned_timeout": 0.0},
    "aligned_timeout": {"unaligned": True, "aligned_timeout": 0.01},
}


SETTLE = 0.5
"""Seconds between the sink turning slow (state built) and the start of measuring."""

MAX_EXTRA_WAIT = 60.0
"""Seconds a run may go on past ``--duration`` to complete ``--min-checkpoints``."""


class Gate:
    """Whether the sink costs anything yet; every copy of the sink shares this one.

    The runtime deep-copies function objects per subtask, so ``__deepcopy__`` returns
    the object itself.
    """

    def __init__(self, is_open: bool) -> None:
        self.is_open = is_open

    def __deepcopy__(self, memo: dict[int, Any]) -> Gate:
        return self


PACE_SLACK = 0.002
"""Seconds the slow sink may get ahead of its pace before it awaits a sleep."""


class SlowSink(SinkFunction[Any]):
    """Costs ``cost`` seconds per record, awaited (it does not block the event loop).

    Paced: each record makes the sink busy ``cost`` seconds longer, and it sleeps until
    then once that is ``PACE_SLACK`` or more away. A sleep that overran is made up for
    (by at most ``PACE_SLACK``: an idle sink does not save up), so the pace holds.
    """

    def __init__(self, cost: float, gate: Gate | None = None) -> None:
        self.cost = cost
        self.gate = gate if gate is not None else Gate(True)
        self.busy_until = 0.0

    async def invoke(self, value: Any) -> None:
        if not self.gate.is_open:
            return
        now = time.perf_counter()
        self.busy_until = max(self.busy_until, now - PACE_SLACK) + self.cost
        if self.busy_until - now >= PACE_SLACK:
            await asyncio.sleep(self.busy_until - now)


def record(i: int) -> tuple[int, int]:
    return (i % 64, i)


def key_of(r: tuple[int, int]) -> int:
    return r[0]


def latest(old: tuple[int, int], new: tuple[int, int]) -> tuple[int, int]:
    return new


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
    state_keys = getattr(args, "state_keys", 0)
    gate = Gate(not state_keys)
    if state_keys:
        stream = (
            env.generate(lambda i: (i % state_keys, i), name="source")
            .map(lambda r: r, name="map")
            .key_by(key_of)
            .reduce(latest, name="state")
        )
    else:
        stream = env.generate(record, name="source").map(lambda r: r, name="map").key_by(key_of)
    stream.sink_to(SlowSink(args.sink_cost, gate), name="sink")
    client = await env.start(f"backpressure-{mode}")
    if state_keys:
        # Build the state with a free sink, then make the sink slow and let it fill up.
        while client.metrics()["state"].records_in < state_keys:
            await asyncio.sleep(0.02)
        gate.is_open = True
        await asyncio.sleep(SETTLE)
    started_wall, started = time.time(), time.perf_counter()
    sink_before = client.metrics()["sink"].records_in
    await asyncio.sleep(args.duration)
    # A slow aligned checkpoint may take longer than the run: wait for enough of them.
    wanted = getattr(args, "min_checkpoints", 0)
    deadline = time.perf_counter() + MAX_EXTRA_WAIT
    while time.perf_counter() < deadline and _completed_since(client, started_wall) < wanted:
        await asyncio.sleep(0.05)
    client.cancel()
    result = await client.wait()
    elapsed = time.perf_counter() - started
    stats = result.checkpoints
    assert stats is not None
    done = [s for s in stats.completed() if s.trigger_time >= started_wall]
    return {
        "completed": len(done),
        "trigger_times": [s.trigger_time - started_wall for s in done],
        "durations": [s.end_to_end_duration for s in done],
        "alignments": [s.max_alignment_duration for s in done],
        "in_flight_bytes": [s.in_flight_bytes for s in done],
        "state_bytes": [s.state_size for s in done],
        "unaligned": [s.unaligned for s in done],
        "records_per_s": (result.records_in("sink") - sink_before) / elapsed,
    }


def _completed_since(client: Any, wall_time: float) -> int:
    stats = client.checkpoint_stats()
    return sum(1 for s in stats.completed() if s.trigger_time >= wall_time) if stats else 0


def run_modes(args: argparse.Namespace, label: str = "") -> dict[str, list[dict[str, Any]]]:
    """Every mode ``args.repeats`` times, interleaved (ABC CBA ...); the runs per mode."""
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory() as directory:
        for round_ in range(args.repeats):
            for mode in round_order(list(MODES), round_):
                runs[mode].append(asyncio.run(run_mode(mode, args, directory)))
                tick(f"{label}{mode}")
    return runs


def summarize_modes(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per mode: medians over every completed checkpoint of every run."""
    summary: dict[str, dict[str, Any]] = {}
    for mode, results in runs.items():
        durations = [d for r in results for d in r["durations"]]
        in_flight = [b for r in results for b in r["in_flight_bytes"]]
        summary[mode] = {
            "checkpoints": len(durations),
            "duration_median": median(durations),
            "duration_min": min(durations, default=float("nan")),
            "duration_max": max(durations, default=float("nan")),
            "alignment_median": median([a for r in results for a in r["alignments"]]),
            "in_flight_bytes_median": median(in_flight),
            "in_flight_bytes_min": min(in_flight, default=float("nan")),
            "in_flight_bytes_max": max(in_flight, default=float("nan")),
            "state_bytes_median": median([b for r in results for b in r["state_bytes"]]),
            "ended_unaligned": sum(u for r in results for u in r["unaligned"]),
            "records_per_s": summarize([r["records_per_s"] for r in results]),
            "records_per_s_median": median([r["records_per_s"] for r in results]),
        }
    return summary


def median(values: list[Any]) -> float:
    return statistics.median(values) if values else float("nan")


def ratio_of(summary: dict[str, dict[str, Any]], mode: str, baseline: str) -> float:
    """Median checkpoint duration of ``mode`` over that of ``baseline``."""
    low = summary[baseline]["duration_median"]
    return summary[mode]["duration_median"] / low if low > 0 else float("nan")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sink-cost", type=float, default=0.001, help="seconds per record")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per run")
    parser.add_argument("--interval", type=float, default=0.5, help="checkpoint interval")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--parallelism", type=int, default=1)
    parser.add_argument("--buffer-size", type=int, default=128)
    parser.add_argument("--channel-capacity", type=int, default=8)
    parser.add_argument(
        "--state-keys", type=int, default=0, help="keys of keyed state before the sink (0: none)"
    )
    parser.add_argument(
        "--min-checkpoints",
        type=int,
        default=0,
        help="run past --duration until this many checkpoints completed (at most 60 s more)",
    )
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s per mode")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.repeats, args.interval = 2.0, 1, 0.3
    runs = run_modes(args)
    summary = summarize_modes(runs)
    ratio = ratio_of(summary, "aligned", "unaligned")
    ratio_timeout = ratio_of(summary, "aligned", "aligned_timeout")
    info = machine()
    report = {
        "benchmark": "backpressure",
        "machine": info,
        "parameters": vars(args),
        "modes": summary,
        "ratio_aligned_to_unaligned": ratio,
        "ratio_aligned_to_aligned_timeout": ratio_timeout,
        "goal": "aligned/unaligned >= 100x; unaligned <= 50 ms",
        "runs": runs,
    }
    rows = [
        f"Backpressure: sink {args.sink_cost * 1e3:g} ms/record, buffer {args.buffer_size} "
        f"records, capacity {args.channel_capacity} buffers, parallelism {args.parallelism}, "
        + (f"{args.state_keys:,} keys of state, " if args.state_keys else "")
        + f"{args.repeats} x {args.duration:g} s per mode; {machine_line(info)}",
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
    report["markdown"] = markdown
    return report


if __name__ == "__main__":
    main()
