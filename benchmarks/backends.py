"""State backends: what a checkpoint of keyed state costs, by state size and storage.

Weir has one keyed state backend, the heap backend (copy-on-write tables: the
synchronous part of a snapshot does not grow with the state), and two checkpoint
storages: ``memory`` (the job manager's memory, Flink's JobManagerCheckpointStorage) and
``file`` (a folder, Flink's FileSystemCheckpointStorage). For each state size
(``--keys``) and storage, a job builds that many keys of keyed state with records still
flowing, then takes one checkpoint while a probe task measures the longest time the event
loop did not run it (the stall; ``benchmarks.overhead`` part 2). Storages alternate
(ABBA) over ``--repeats`` rounds after a warm-up. Reported per size and storage: median
end-to-end checkpoint time, synchronous and asynchronous parts, the stall, state bytes;
and the ratio file / memory of the checkpoint time, measured in the same run.

Goal (DESIGN.md): the synchronous part does not grow with the state, and the stall stays
<= 10 ms.

    python -m benchmarks.backends            # 10k, 100k and 1M keys, 3 rounds
    python -m benchmarks.backends --quick    # 10k keys, 1 round
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from typing import Any

from benchmarks.harness import (
    machine,
    machine_line,
    ratio,
    round_order,
    summarize,
    tick,
    write_report,
)
from benchmarks.overhead import measure_stall

STORAGES = {"memory": "memory", "file": None}
"""Checkpoint storage per variant (None: files in a temporary folder)."""

METRICS = {
    "checkpoint_seconds": "checkpoint",
    "sync_s": "sync part",
    "async_s": "async part",
    "max_stall_during_checkpoint_s": "stall",
}


def measure(keys: int, storage: str | None) -> dict[str, float]:
    """One checkpoint of ``keys`` keys of heap state into ``storage``."""
    with tempfile.TemporaryDirectory() as directory:
        return asyncio.run(measure_stall(keys, directory, storage))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="10k keys, 1 round")
    args = parser.parse_args(argv)
    if args.quick:
        args.keys, args.repeats = [10_000], 1
    rows: list[dict[str, Any]] = []
    for keys in args.keys:
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in STORAGES}
        warmup = 0 if args.quick else 1
        for round_ in range(-warmup, args.repeats):  # rounds below 0 warm up
            for name in round_order(list(STORAGES), max(round_, 0)):
                measured = measure(keys, STORAGES[name])
                tick(f"{keys:,} keys, {name}{' (warm-up)' if round_ < 0 else ''}")
                if round_ >= 0:
                    runs[name].append(measured)
        row: dict[str, Any] = {"keys": keys}
        for name, measured in runs.items():
            row[name] = {metric: summarize([m[metric] for m in measured]) for metric in METRICS} | {
                "state_bytes": measured[-1]["state_bytes"]
            }
        row["ratio_file_to_memory"] = ratio(
            row["file"]["checkpoint_seconds"]["median"],
            row["memory"]["checkpoint_seconds"]["median"],
        )
        rows.append(row)
    info = machine()
    report = {
        "benchmark": "backends",
        "backend": "heap (copy-on-write), the only keyed state backend",
        "machine": info,
        "parameters": vars(args),
        "sizes": rows,
        "goal": "sync part independent of the state size; stall <= 10 ms",
    }
    markdown = render(report)
    if not args.quick:
        write_report("backends", report, markdown)
    print(markdown)
    report["markdown"] = markdown
    return report


def render(report: dict[str, Any]) -> str:
    """One row per state size and storage."""
    noisy = any(
        row[name][metric]["noisy"]
        for row in report["sizes"]
        for name in STORAGES
        for metric in ("checkpoint_seconds",)
    )
    lines = [
        f"Heap keyed state backend, one checkpoint with records flowing, by checkpoint "
        f"storage; medians of {report['parameters']['repeats']}"
        f"{' (noisy: spread > 1.25)' if noisy else ''}; {machine_line(report['machine'])}",
        "",
        "| keys | storage | state bytes | checkpoint | sync part | async part | stall "
        "| file / memory |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["sizes"]:
        for name in STORAGES:
            m = row[name]
            lines.append(
                f"| {row['keys']:,} | {name} | {m['state_bytes']:,} "
                f"| {m['checkpoint_seconds']['median'] * 1e3:,.1f} ms "
                f"| {m['sync_s']['median'] * 1e3:,.2f} ms "
                f"| {m['async_s']['median'] * 1e3:,.1f} ms "
                f"| {m['max_stall_during_checkpoint_s']['median'] * 1e3:,.1f} ms | "
                + (f"{row['ratio_file_to_memory']:.2f}x |" if name == "file" else " |")
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
