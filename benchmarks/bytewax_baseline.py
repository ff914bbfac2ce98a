"""Weir against Bytewax: the same keyed count job, with and without snapshots.

The job of ``benchmarks.throughput``: a source of ``--records`` integers -> map to
``(i % keys, 1)`` -> key by the first field -> running count per key (Weir: a keyed
``reduce``; Bytewax: ``stateful_map``, whose keys must be strings) -> a sink that counts
the records it gets. Parallelism 1, ``--keys`` keys, the same N and keys as
``benchmarks.throughput``. Bytewax 0.21 runs in this process through
``bytewax.testing.run_main``, reading a ``TestingSource`` in batches of
``--bytewax-batch`` records (Bytewax's speed depends much on its source's batches: see
the "small batches" variant), and snapshots its state into a SQLite recovery folder at
the end of every epoch (``epoch_interval``, Bytewax's ``snapshot_interval``); Weir
checkpoints aligned into files. Every variant writes to a folder of its own, fresh for
each run (a Bytewax run finding an earlier one's state would resume from it).

Variants, interleaved (ABBA) after a warm-up: Weir without checkpoints, every 1 s and
every 100 ms; Bytewax without recovery, with snapshots every 1 s and every 100 ms, and
without recovery reading batches of ``--bytewax-small-batch`` records.

Goals: Weir >= 3x Bytewax's records/s at parallelism 1 (against Bytewax's faster
source), and Weir with checkpoints every 1 s and 100 ms >= 0.95x and 0.90x of without.
When Bytewax is not installed (``pip install -e '.[bench]'``), the report says so and
measures Weir alone.

    python -m benchmarks.bytewax_baseline            # 2,000,000 records, 3 rounds
    python -m benchmarks.bytewax_baseline --quick    # a smoke run of a few seconds
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    Series,
    interleave,
    machine,
    machine_line,
    paired_ratios,
    ratio,
    write_report,
)
from benchmarks.overhead import run_job

GOAL_VS_BYTEWAX = 3.0
GOALS_TO_OFF = {"1 s": 0.95, "100 ms": 0.90}
INTERVALS = {"1 s": 1.0, "100 ms": 0.1}


def bytewax_version() -> str | None:
    """Bytewax's version, or None when it cannot be imported."""
    try:
        import bytewax  # noqa: F401
        from bytewax.testing import run_main  # noqa: F401
    except ImportError:
        return None
    from importlib import metadata

    try:
        return metadata.version("bytewax")
    except metadata.PackageNotFoundError:
        return "unknown"


def bytewax_flow(records: int, keys: int, batch: int) -> tuple[Any, list[int]]:
    """The keyed count job as a Bytewax dataflow, and the counter its sink increments."""
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.outputs import DynamicSink, StatelessSinkPartition
    from bytewax.testing import TestingSource

    counter = [0]

    class CountingPartition(StatelessSinkPartition[Any]):
        def write_batch(self, items: list[Any]) -> None:
            counter[0] += len(items)

    class CountingSink(DynamicSink[Any]):
        def build(self, step_id: str, worker_index: int, worker_count: int) -> Any:
            return CountingPartition()

    def to_pair(i: int) -> tuple[int, int]:
        return (i % keys, 1)

    def key_of(pair: tuple[int, int]) -> str:
        return str(pair[0])

    def count(
        state: tuple[int, int] | None, pair: tuple[int, int]
    ) -> tuple[tuple[int, int], tuple[int, int]]:
        state = pair if state is None else (state[0], state[1] + pair[1])
        return state, state

    flow = Dataflow("keyed_count")
    numbers = op.input("source", flow, TestingSource(range(records), batch_size=batch))
    pairs = op.map("map", numbers, to_pair)
    keyed = op.key_on("key", pairs, key_of)
    counts = op.stateful_map("count", keyed, count)
    op.output("sink", counts, CountingSink())
    return flow, counter


def run_bytewax(records: int, keys: int, batch: int, interval: float | None) -> float:
    """Records/s of the Bytewax job; snapshots every ``interval`` s (None: no recovery)."""
    from bytewax.recovery import RecoveryConfig, init_db_dir
    from bytewax.testing import run_main

    flow, counter = bytewax_flow(records, keys, batch)
    folder = Path(tempfile.mkdtemp(prefix="weir-bytewax-"))
    try:
        options: dict[str, Any] = {}
        if interval is not None:
            init_db_dir(folder, 1)
            options = {
                "epoch_interval": timedelta(seconds=interval),
                "recovery_config": RecoveryConfig(folder),
            }
        start = time.perf_counter()
        run_main(flow, **options)
        elapsed = time.perf_counter() - start
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    assert counter[0] == records, f"Bytewax's sink got {counter[0]} records of {records}"
    return records / elapsed


def run_weir(records: int, keys: int, interval: float | None) -> float:
    """Records/s of the Weir job; aligned checkpoints into files every ``interval`` s."""
    if interval is None:
        return run_job(records, keys, None)
    folder = Path(tempfile.mkdtemp(prefix="weir-baseline-"))
    try:
        return run_job(
            records, keys, {"interval": interval, "unaligned": False}, storage=folder.as_uri()
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=2_000_000)
    parser.add_argument("--keys", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bytewax-batch", type=int, default=4096, help="its source's batches")
    parser.add_argument("--bytewax-small-batch", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="200k records, 1 round")
    args = parser.parse_args(argv)
    if args.quick:
        args.records, args.repeats = 200_000, 1
    version = bytewax_version()
    n, k = args.records, args.keys
    variants = {
        "weir off": lambda: run_weir(n, k, None),
        **{f"weir {label}": lambda s=s: run_weir(n, k, s) for label, s in INTERVALS.items()},
    }
    if version is not None:
        batch, small = args.bytewax_batch, args.bytewax_small_batch
        variants["bytewax off"] = lambda: run_bytewax(n, k, batch, None)
        for label, seconds in INTERVALS.items():
            variants[f"bytewax {label}"] = lambda s=seconds: run_bytewax(n, k, batch, s)
        variants["bytewax off, small batches"] = lambda: run_bytewax(n, k, small, None)
    series = interleave(variants, repeats=args.repeats, warmup=0 if args.quick else 1)
    info = machine()
    report = build_report(series, args, version, info)
    markdown = render(report)
    if not args.quick:
        write_report("bytewax_baseline", report, markdown)
    print(markdown)
    report["markdown"] = markdown
    return report


def build_report(
    series: dict[str, Series], args: argparse.Namespace, version: str | None, info: dict[str, Any]
) -> dict[str, Any]:
    """The report: every variant's records/s, Weir / Bytewax, each system's ratio to off."""
    weir_off = series["weir off"]
    report: dict[str, Any] = {
        "benchmark": "bytewax_baseline",
        "records": args.records,
        "keys": args.keys,
        "parallelism": 1,
        "repeats": args.repeats,
        "bytewax": version or "absent",
        "bytewax_batch": args.bytewax_batch,
        "bytewax_small_batch": args.bytewax_small_batch,
        "machine": info,
        "records_per_s": {name: s.summary() for name, s in series.items()},
        "weir_ratio_to_off": {
            label: paired_ratios(series[f"weir {label}"], weir_off) for label in INTERVALS
        },
        "goals": {
            "weir_to_bytewax": f">= {GOAL_VS_BYTEWAX:g}",
            **{f"weir {label} to off": f">= {goal:.2f}" for label, goal in GOALS_TO_OFF.items()},
        },
    }
    if version is None:
        report["bytewax_note"] = (
            "Bytewax is not installed: install the bench extra (pip install -e '.[bench]') "
            "to compare; Weir was measured alone."
        )
        return report
    bytewax_off = series["bytewax off"]
    small = series["bytewax off, small batches"]
    # Against Bytewax's faster source: the comparison least kind to Weir.
    faster = bytewax_off if bytewax_off.median >= small.median else small
    report["bytewax_faster_source"] = faster.name
    report["weir_to_bytewax"] = paired_ratios(weir_off, faster)
    report["weir_to_bytewax_small_batches"] = paired_ratios(weir_off, small)
    report["bytewax_ratio_to_off"] = {
        label: paired_ratios(series[f"bytewax {label}"], bytewax_off) for label in INTERVALS
    }
    # "Snapshots cost it up to 1.15x the time": time with / time without = 1 / ratio.
    report["bytewax_time_with_snapshots"] = {
        label: ratio(1.0, r["ratio"]) for label, r in report["bytewax_ratio_to_off"].items()
    }
    return report


def render(report: dict[str, Any]) -> str:
    """The Markdown table of the report."""
    noisy = any(s["noisy"] for s in report["records_per_s"].values())
    lines = [
        f"Keyed count, Weir and Bytewax {report['bytewax']}, {report['records']:,} records, "
        f"{report['keys']:,} keys, parallelism 1, medians of {report['repeats']}"
        f"{' (noisy: spread > 1.25)' if noisy else ''}; {machine_line(report['machine'])}",
        "",
        "| variant | records/s (median) | min | max | ratio to its own off |",
        "|---|---:|---:|---:|---:|",
    ]
    own_ratios = {
        **{f"weir {k}": v for k, v in report["weir_ratio_to_off"].items()},
        **{f"bytewax {k}": v for k, v in report.get("bytewax_ratio_to_off", {}).items()},
    }
    for name, s in report["records_per_s"].items():
        shown = name.replace("weir", "Weir").replace("bytewax", "Bytewax")
        if name.startswith("bytewax off, small"):
            shown += f" ({report['bytewax_small_batch']})"
        elif name.startswith("bytewax"):
            shown += f" (batches of {report['bytewax_batch']})"
        own = own_ratios.get(name)
        goal = GOALS_TO_OFF.get(name.removeprefix("weir ")) if name.startswith("weir") else None
        own_text = "" if own is None else f"{own['ratio']:.3f}x"
        if goal is not None:
            own_text += f" (goal >= {goal:.2f}x)"
        lines.append(
            f"| {shown} | {s['median']:,.0f} | {s['min']:,.0f} | {s['max']:,.0f} | {own_text} |"
        )
    lines.append("")
    if "weir_to_bytewax" in report:
        vs = report["weir_to_bytewax"]
        times = report["bytewax_time_with_snapshots"]
        lines.append(
            f"**Weir / Bytewax: {vs['ratio']:.2f}x** (goal >= {GOAL_VS_BYTEWAX:g}x; against "
            f"Bytewax's faster source; per round {vs['per_round']['min']:.2f}x to "
            f"{vs['per_round']['max']:.2f}x); against its small batches "
            f"{report['weir_to_bytewax_small_batches']['ratio']:.1f}x. Bytewax's snapshots "
            f"make its run take {times['1 s']:.2f}x (1 s) and {times['100 ms']:.2f}x "
            f"(100 ms) as long as without."
        )
    else:
        lines.append(f"**Bytewax: not measured.** {report['bytewax_note']}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
