"""What checkpoints cost when nothing is backpressured, and the stall of a big snapshot.

Part 1, throughput: the keyed count job of ``benchmarks.throughput`` (``--records``
records over ``--keys`` keys, parallelism 1) with checkpoints off, every 1 s and every
100 ms, aligned and unaligned, interleaved over ``--repeats`` rounds. Reported: median
records/s per variant and its ratio to "off" in the same run. Goals (issue 3): >= 0.95x
at 1 s, >= 0.90x at 100 ms, unaligned on vs off >= 0.95x. The direct ratios at 1 s and
100 ms differ from 1 by less than the spread of single runs on a shared machine, so the
cost of one checkpoint is also measured where it stands out, at ``--cost-interval``
(10 ms; see :func:`checkpoint_cost`), and the ratio at each interval projected from it.

Part 2, stall: a job holding ``--stall-keys`` keys of in-memory keyed state takes a
checkpoint (file storage) while records keep flowing; a probe task measures the longest
time the event loop did not get to run it (the processing stall). Goal: <= 10 ms. Each
of ``--stall-repeats`` runs is a fresh process (nothing of one run's heap or collector
state carries over to the next); reported: the median of the runs' longest gaps, every
run's figures, the longest gap in CPU time of the loop's thread (what the loop did,
without the time other processes of a shared machine took from it), and the garbage
collector's pauses during each checkpoint.

    python -m benchmarks.overhead            # full run
    python -m benchmarks.overhead --quick    # a smoke run of a few seconds
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import interleave, machine, machine_line, paired_ratios, write_report
from benchmarks.throughput import CountingSink, time_keyed_count
from runtime import StreamEnvironment


def interval_label(seconds: float) -> str:
    """``1 s``, ``100 ms``: how a checkpoint interval is named in variants and reports."""
    return f"{seconds:g} s" if seconds >= 1 else f"{seconds * 1e3:g} ms"


def variants(intervals: list[float]) -> dict[str, dict[str, Any] | None]:
    """The variant "off", then aligned and unaligned at each interval."""
    result: dict[str, dict[str, Any] | None] = {"off": None}
    for unaligned in (False, True):
        for interval in intervals:
            name = f"{'unaligned' if unaligned else 'aligned'} {interval_label(interval)}"
            result[name] = {"interval": interval, "unaligned": unaligned}
    return result


VARIANTS = variants([1.0, 0.1])


def run_job(
    records: int, keys: int, checkpointing: dict[str, Any] | None, storage: str | None = None
) -> float:
    """Records/s of the keyed count job with the given checkpointing (and storage)."""
    seconds, _ = run_counted(records, keys, checkpointing, storage)
    return records / seconds


def run_counted(
    records: int, keys: int, checkpointing: dict[str, Any] | None, storage: str | None = None
) -> tuple[float, int]:
    """The keyed count job's run time in seconds, and how many checkpoints completed."""
    env = StreamEnvironment(parallelism=1)
    if checkpointing is not None:
        env.enable_checkpointing(
            checkpointing["interval"], unaligned=checkpointing["unaligned"], storage=storage
        )
    elapsed, result = time_keyed_count(env, records, keys)
    stats = result.checkpoints
    return elapsed, 0 if stats is None else stats.counts.completed


def checkpoint_cost(
    records: int, keys: int, interval: float, repeats: int
) -> dict[str, dict[str, Any]]:
    """What one checkpoint costs the job, in seconds of its run time, per mode.

    The overhead at 1 s or 100 ms is a few percent at most, below the run-to-run spread of
    a shared machine; at a short ``interval`` (10 ms) it is large and stands out. Off,
    aligned and unaligned runs alternate (ABBA); each round gives
    ``(run time with checkpoints - run time without) / checkpoints completed``, and the
    median over rounds is the cost. A job checkpointing every ``I`` seconds then spends
    ``cost / I`` of its time on checkpoints: its projected throughput ratio to "off" is
    ``1 - cost / I`` (a projection, reported next to the direct measurements).
    """
    seconds: dict[str, list[float]] = {}
    completed: dict[str, list[int]] = {}

    def runner(name: str, checkpointing: dict[str, Any] | None) -> Any:
        def run() -> float:
            elapsed, count = run_counted(records, keys, checkpointing)
            seconds.setdefault(name, []).append(elapsed)
            completed.setdefault(name, []).append(count)
            return records / elapsed

        return run

    modes = {"aligned": False, "unaligned": True}
    runs: dict[str, Any] = {"off": runner("off", None)}
    for mode, unaligned in modes.items():
        runs[mode] = runner(mode, {"interval": interval, "unaligned": unaligned})
    interleave(runs, repeats=repeats, warmup=0)
    result: dict[str, dict[str, Any]] = {}
    for mode in modes:
        per_round = [
            (on - off) / count if count else float("nan")
            for on, off, count in zip(seconds[mode], seconds["off"], completed[mode], strict=True)
        ]
        result[mode] = {
            "interval_s": interval,
            "cost_s": statistics.median(per_round),
            "cost_per_round_s": per_round,
            "checkpoints_per_run": statistics.median(completed[mode]),
        }
    return result


def projected_ratio(cost: float, interval: float) -> float:
    """Throughput with a checkpoint every ``interval`` s, as a ratio to none (see above)."""
    return 1.0 - cost / interval


async def measure_stall(keys: int, directory: str, storage: str | None = None) -> dict[str, float]:
    """Run a job that builds ``keys`` keys of state, checkpoint it, probe the loop.

    ``storage`` is the checkpoint storage (default: files under ``directory``).
    """
    env = StreamEnvironment(parallelism=1)
    env.enable_checkpointing(3600.0, storage=storage or f"file://{directory}")
    (
        env.generate(lambda i: (i % keys, 1), records_per_second=None)
        .key_by(lambda r: r[0])
        .sum(1, name="count")
        .sink_to(CountingSink(), name="sink")
    )
    client = await env.start("stall")
    # Fill the state: wait until every key has been seen at least once.
    while client.metrics()["count"].records_in < keys * 1.2:
        await asyncio.sleep(0.05)
    gaps: list[float] = []
    stop = asyncio.Event()

    # The loop thread's CPU time per gap too: what the loop itself did, without the
    # time the OS gave the two cores to other processes (a shared machine).
    cpu_gaps: list[float] = []

    async def probe() -> None:
        last = time.perf_counter()
        last_cpu = time.thread_time()
        while not stop.is_set():
            await asyncio.sleep(0)
            now = time.perf_counter()
            now_cpu = time.thread_time()
            gaps.append(now - last)
            cpu_gaps.append(now_cpu - last_cpu)
            last, last_cpu = now, now_cpu

    # The collector's pauses during the checkpoint, by generation.
    pauses: list[tuple[int, float]] = []
    collecting: list[float] = []

    def on_collection(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            collecting[:] = [time.perf_counter()]
        elif collecting:
            pauses.append((info["generation"], time.perf_counter() - collecting[0]))

    # Baseline: the loop's longest gap with the job running and no checkpoint.
    probe_task = asyncio.create_task(probe())
    await asyncio.sleep(1.0)
    baseline = max(gaps)
    gaps.clear()
    cpu_gaps.clear()
    gc.callbacks.append(on_collection)
    started = time.perf_counter()
    try:
        completed = await client.trigger_checkpoint()
    finally:
        gc.callbacks.remove(on_collection)
    checkpoint_seconds = time.perf_counter() - started
    stop.set()
    await probe_task
    client.cancel()
    result = await client.wait()
    stats = result.checkpoints
    assert stats is not None
    latest = next(s for s in stats.completed() if s.checkpoint_id == completed.checkpoint_id)
    return {
        "keys": keys,
        "max_stall_during_checkpoint_s": max(gaps),
        "max_stall_cpu_during_checkpoint_s": max(cpu_gaps),
        "max_stall_without_checkpoint_s": baseline,
        "checkpoint_seconds": checkpoint_seconds,
        "sync_s": latest.max_sync_duration,
        "async_s": latest.max_async_duration,
        "state_bytes": latest.state_size,
        "longest_gc_pause_during_checkpoint_s": max((p for _, p in pauses), default=0.0),
        "full_collections_during_checkpoint": sum(1 for g, _ in pauses if g == 2),
    }


def measure_stall_in_fresh_process(keys: int) -> dict[str, Any]:
    """:func:`measure_stall` in a new Python process; its result."""
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "benchmarks.overhead", "--stall-once"]
    done = subprocess.run(
        [*command, "--stall-keys", str(keys)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"the stall run failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def stall_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of each figure over ``runs``, and the runs themselves."""
    summary: dict[str, Any] = {"keys": runs[0]["keys"], "repeats": len(runs)}
    for name in runs[0]:
        if name != "keys":
            summary[name] = statistics.median(run[name] for run in runs)
    summary["runs"] = runs
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=3_000_000)
    parser.add_argument("--keys", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--stall-keys", type=int, default=1_000_000)
    parser.add_argument("--stall-repeats", type=int, default=5)
    parser.add_argument("--stall-once", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--intervals",
        type=lambda text: [float(x) for x in text.split(",")],
        default=[1.0, 0.1],
        help="checkpoint intervals in seconds, comma-separated (default 1,0.1)",
    )
    parser.add_argument(
        "--cost-interval",
        type=float,
        default=0.01,
        help="the short checkpoint interval at which the cost of one checkpoint is measured",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 round")
    args = parser.parse_args(argv)
    if args.stall_once:  # one stall run, for measure_stall_in_fresh_process
        with tempfile.TemporaryDirectory() as directory:
            once = asyncio.run(measure_stall(args.stall_keys, directory))
        print(json.dumps(once))
        return once
    if args.quick:
        args.records, args.repeats, args.stall_keys = 300_000, 1, 50_000
        args.stall_repeats = 1
    series = interleave(
        {
            name: (lambda cfg=cfg: run_job(args.records, args.keys, cfg))
            for name, cfg in variants(args.intervals).items()
        },
        repeats=args.repeats,
    )
    off = series["off"].median
    cost = checkpoint_cost(args.records, args.keys, args.cost_interval, args.repeats)
    stall = stall_summary(
        [measure_stall_in_fresh_process(args.stall_keys) for _ in range(args.stall_repeats)]
    )
    info = machine()
    goals = {
        "aligned 1 s": 0.95,
        "aligned 100 ms": 0.90,
        "unaligned 1 s": 0.95,
        "unaligned 100 ms": 0.90,
    }
    report = {
        "benchmark": "overhead",
        "machine": info,
        "parameters": vars(args),
        "records_per_s": {name: s.summary() for name, s in series.items()},
        "ratio_to_off": {name: s.median / off for name, s in series.items()},
        "ratio_to_off_per_round": {
            name: paired_ratios(s, series["off"])["per_round"] for name, s in series.items()
        },
        "intervals": {
            name: cfg["interval"] for name, cfg in variants(args.intervals).items() if cfg
        },
        "goals": goals,
        "checkpoint_cost": cost,
        "projected_ratio_to_off": {
            name: projected_ratio(
                cost["unaligned" if cfg["unaligned"] else "aligned"]["cost_s"], cfg["interval"]
            )
            for name, cfg in variants(args.intervals).items()
            if cfg
        },
        "stall": stall,
    }
    noisy = " (noisy: spread > 1.25)" if any(s.noisy for s in series.values()) else ""
    rows = [
        f"Checkpoint overhead, keyed count, {args.records:,} records, {args.keys:,} keys, "
        f"parallelism 1, medians of {args.repeats}{noisy}; {machine_line(info)}",
        "",
        "| checkpoints | records/s (median) | min | max | ratio to off | goal |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, s in series.items():
        goal = f">= {goals[name]:.2f}x" if name in goals else ""
        rows.append(
            f"| {name} | {s.median:,.0f} | {min(s.values):,.0f} | {max(s.values):,.0f} | "
            f"{s.median / off:.3f}x | {goal} |"
        )
    rows += [
        "",
        f"Cost of one checkpoint, measured where it stands out of the noise: checkpoints "
        f"every {interval_label(args.cost_interval)}, off / aligned / unaligned alternating, "
        f"median over {args.repeats} rounds of (run time - run time off) / checkpoints "
        "completed; the projected ratio at an interval I is 1 - cost / I.",
        "",
        "| mode | checkpoints per run | cost per checkpoint | projected ratio at "
        + " | ".join(interval_label(i) for i in args.intervals)
        + " |",
        "|---|---:|---:|" + "---:|" * len(args.intervals),
    ]
    for mode, measured in cost.items():
        projected = " | ".join(
            f"{projected_ratio(measured['cost_s'], i):.3f}x" for i in args.intervals
        )
        rows.append(
            f"| {mode} | {measured['checkpoints_per_run']:,.0f} | "
            f"{measured['cost_s'] * 1e3:.2f} ms | {projected} |"
        )
    each = ", ".join(f"{run['max_stall_during_checkpoint_s'] * 1e3:.1f}" for run in stall["runs"])
    rows += [
        "",
        f"Stall while {stall['keys']:,} keys of heap state are checkpointed to files, "
        f"medians of {stall['repeats']} runs (each a fresh process): longest event-loop gap "
        f"{stall['max_stall_during_checkpoint_s'] * 1e3:.1f} ms (runs: {each} ms; goal "
        f"<= 10 ms); in CPU time of the loop's thread "
        f"{stall['max_stall_cpu_during_checkpoint_s'] * 1e3:.1f} ms; without a checkpoint "
        f"{stall['max_stall_without_checkpoint_s'] * 1e3:.1f}"
        f" ms; longest garbage-collector pause during the checkpoint "
        f"{stall['longest_gc_pause_during_checkpoint_s'] * 1e3:.1f} ms; sync part "
        f"{stall['sync_s'] * 1e3:.2f} ms, async part {stall['async_s'] * 1e3:,.0f} ms, "
        f"{stall['state_bytes']:,.0f} bytes.",
    ]
    markdown = "\n".join(rows)
    if not args.quick:
        write_report("overhead", report, markdown)
    print(markdown)
    report["markdown"] = markdown
    return report


if __name__ == "__main__":
    main()
