"""Throughput of the keyed count job against a bare Python loop doing the same work.

The job: source -> map -> key_by -> count -> sink, ``--records`` records over
``--keys`` keys, parallelism 1. The count is a keyed ``reduce`` (its running value in
keyed state) and the sink discards records after counting them. The baseline is a plain
``for`` loop calling the same map, key and reduce functions and updating a dict: what the
job would cost with no runtime at all. Goal (issue 2): Weir >= 0.5x the loop.

    python -m benchmarks.throughput            # 2,000,000 records, 5 rounds
    python -m benchmarks.throughput --quick    # a smoke run of a few seconds
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from benchmarks.harness import interleave, machine, machine_line, paired_ratios, write_report
from runtime import SinkFunction, StreamEnvironment


class CountingSink(SinkFunction[Any]):
    """Discards records, counting them."""

    def __init__(self) -> None:
        self.count = 0

    def write_batch(self, values: list[Any]) -> None:
        self.count += len(values)


def make_functions(keys: int) -> tuple[Any, Any, Any]:
    def to_pair(i: int) -> tuple[int, int]:
        return (i % keys, 1)

    def key_of(pair: tuple[int, int]) -> int:
        return pair[0]

    def add(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
        return (a[0], a[1] + b[1])

    return to_pair, key_of, add


def time_keyed_count(env: StreamEnvironment, records: int, keys: int) -> tuple[float, Any]:
    """Build the keyed count job on ``env``, run it; ``(seconds, JobResult)``.

    The job: ``records`` numbers -> map to ``(key, 1)`` -> key_by -> reduce -> a counting
    sink. Fails if the sink did not see every record exactly once.
    """
    to_pair, key_of, add = make_functions(keys)
    (
        env.from_sequence(0, records - 1)
        .map(to_pair, name="map")
        .key_by(key_of)
        .reduce(add, name="count")
        .sink_to(CountingSink(), name="sink")
    )

    async def job() -> tuple[float, Any]:
        start = time.perf_counter()
        result = await env.execute("keyed count")
        elapsed = time.perf_counter() - start
        assert result.records_in("sink") == records, "the job lost or duplicated records"
        return elapsed, result

    return asyncio.run(job())


def run_weir(records: int, keys: int, parallelism: int = 1) -> float:
    """Records/s of the keyed count job."""
    seconds, _ = time_keyed_count(StreamEnvironment(parallelism=parallelism), records, keys)
    return records / seconds


def run_loop(records: int, keys: int) -> float:
    """Records/s of a bare loop doing the same per-record work."""
    to_pair, key_of, add = make_functions(keys)
    start = time.perf_counter()
    counts: dict[int, tuple[int, int]] = {}
    emitted = 0
    for i in range(records):
        pair = to_pair(i)
        key = key_of(pair)
        current = counts.get(key)
        current = pair if current is None else add(current, pair)
        counts[key] = current
        emitted += 1
    elapsed = time.perf_counter() - start
    assert emitted == records
    return records / elapsed


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=2_000_000)
    parser.add_argument("--keys", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="200k records, 2 rounds")
    args = parser.parse_args(argv)
    if args.quick:
        args.records, args.repeats = 200_000, 2
    series = interleave(
        {
            "weir": lambda: run_weir(args.records, args.keys),
            "loop": lambda: run_loop(args.records, args.keys),
        },
        repeats=args.repeats,
    )
    weir, loop = series["weir"], series["loop"]
    ratio = weir.median / loop.median
    info = machine()
    report = {
        "benchmark": "throughput",
        "records": args.records,
        "keys": args.keys,
        "parallelism": 1,
        "machine": info,
        "weir_records_per_s": weir.summary(),
        "loop_records_per_s": loop.summary(),
        "ratio_weir_to_loop": ratio,
        "ratio_weir_to_loop_per_round": paired_ratios(weir, loop)["per_round"],
        "goal": ">= 0.5",
    }
    noisy = " (noisy: spread > 1.25)" if weir.noisy or loop.noisy else ""
    markdown = "\n".join(
        [
            f"Keyed count, {args.records:,} records, {args.keys:,} keys, parallelism 1, "
            f"medians of {args.repeats}{noisy}; {machine_line(info)}",
            "",
            "| variant | records/s (median) | min | max |",
            "|---|---:|---:|---:|",
            f"| Weir | {weir.median:,.0f} | {min(weir.values):,.0f} | {max(weir.values):,.0f} |",
            f"| bare loop | {loop.median:,.0f} | {min(loop.values):,.0f} | "
            f"{max(loop.values):,.0f} |",
            f"| **ratio Weir / loop** | **{ratio:.2f}x** (goal >= 0.5x) | | |",
        ]
    )
    if not args.quick:
        write_report("throughput", report, markdown)
    print(markdown)
    report["markdown"] = markdown
    return report


if __name__ == "__main__":
    main()
