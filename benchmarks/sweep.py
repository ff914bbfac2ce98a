"""Backpressure sweep: aligned vs unaligned vs aligned-with-timeout as the job changes.

The job and the modes of ``benchmarks.backpressure``, run at a base point (sink 1 ms per
record, channel capacity 8 buffers, buffer 128 records, parallelism 1, no keyed state)
and at points that vary one dimension at a time from it:

* the sink's cost per record: 0.1, 0.3, 1 and 3 ms;
* channel capacity: 2, 8 and 32 buffers;
* buffer size: 32, 128 and 512 records;
* parallelism: 1 and 2;
* state size: none, 100,000 and 1,000,000 keys of keyed state (a keyed ``reduce`` before
  the sink; see ``--state-keys`` of ``benchmarks.backpressure``).

Aligned checkpoints wait for the queued records to drain through the slow sink, so their
duration grows with the sink's cost and with the records queued (capacity x buffer
size); unaligned ones do not, but persist those records instead, and both include the
asynchronous write of the state. At each point the modes run interleaved (ABC CBA),
each run lasting ``--duration`` seconds or until ``--min-checkpoints`` checkpoints
completed. Reported per point and mode: median checkpoint duration (min, max),
persisted in-flight bytes, the sink's records/s; and the ratio aligned / unaligned.

    python -m benchmarks.sweep                       # every dimension (several minutes)
    python -m benchmarks.sweep --dimensions sink_cost
    python -m benchmarks.sweep --quick               # two sink costs and a small state
"""

from __future__ import annotations

import argparse
from typing import Any

from benchmarks.backpressure import MODES, ratio_of, run_modes, summarize_modes
from benchmarks.harness import machine, machine_line, write_report

BASE: dict[str, Any] = {
    "sink_cost": 0.001,
    "channel_capacity": 8,
    "buffer_size": 128,
    "parallelism": 1,
    "state_keys": 0,
}
"""The point every dimension is varied from."""

DIMENSIONS: dict[str, list[Any]] = {
    "sink_cost": [0.0001, 0.0003, 0.001, 0.003],
    "channel_capacity": [2, 8, 32],
    "buffer_size": [32, 128, 512],
    "parallelism": [1, 2],
    "state_keys": [0, 100_000, 1_000_000],
}
"""The values of each dimension in a full run."""

QUICK_DIMENSIONS: dict[str, list[Any]] = {
    "sink_cost": [0.001, 0.003],
    "state_keys": [0, 5_000],
}
"""The values of each dimension in a ``--quick`` run."""

QUICK_BASE: dict[str, Any] = {**BASE, "channel_capacity": 2}
"""A ``--quick`` run's base point: short channels, so aligned checkpoints end soon."""

LABELS = {
    "sink_cost": "sink cost per record",
    "channel_capacity": "channel capacity (buffers)",
    "buffer_size": "buffer size (records)",
    "parallelism": "parallelism",
    "state_keys": "keyed state (keys)",
}


def points(dimensions: dict[str, list[Any]], base: dict[str, Any]) -> list[dict[str, Any]]:
    """The base point varied one dimension at a time, without duplicates, in order."""
    result: list[dict[str, Any]] = []
    for name, values in dimensions.items():
        for value in values:
            point = {**base, name: value}
            if point not in result:
                result.append(point)
    return result


def value_label(dimension: str, value: Any) -> str:
    """A point's value of ``dimension`` for tables."""
    if dimension == "sink_cost":
        return f"{value * 1e3:g} ms"
    return f"{value:,}"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--dimensions",
        type=lambda text: text.split(","),
        default=list(DIMENSIONS),
        help=f"comma-separated, of: {', '.join(DIMENSIONS)}",
    )
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per run, at least")
    parser.add_argument("--min-checkpoints", type=int, default=2, help="per run, if it can")
    parser.add_argument("--interval", type=float, default=0.5, help="checkpoint interval")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="2 sink costs, a small state, 1 s")
    args = parser.parse_args(argv)
    unknown = set(args.dimensions) - set(DIMENSIONS)
    if unknown:
        parser.error(f"unknown dimensions: {', '.join(sorted(unknown))}")
    dimensions = {name: DIMENSIONS[name] for name in args.dimensions}
    base = BASE
    if args.quick:
        dimensions = {k: v for k, v in QUICK_DIMENSIONS.items() if k in args.dimensions}
        base = QUICK_BASE
        args.duration, args.min_checkpoints, args.interval, args.repeats = 0.5, 1, 0.2, 1
    results: list[dict[str, Any]] = []
    for point in points(dimensions, base):
        label = ", ".join(value_label(k, v) for k, v in point.items() if v != base[k]) or "base"
        run_args = argparse.Namespace(
            **point,
            duration=args.duration,
            interval=args.interval,
            repeats=args.repeats,
            min_checkpoints=args.min_checkpoints,
        )
        summary = summarize_modes(run_modes(run_args, label=f"{label}: "))
        results.append(
            {
                "point": point,
                "modes": summary,
                "ratio_aligned_to_unaligned": ratio_of(summary, "aligned", "unaligned"),
                "ratio_aligned_to_aligned_timeout": ratio_of(summary, "aligned", "aligned_timeout"),
            }
        )
    info = machine()
    report = {
        "benchmark": "sweep",
        "machine": info,
        "parameters": {**vars(args), "dimensions": dimensions, "base": base},
        "points": results,
        "goal": "none of its own; the goal of benchmarks.backpressure is at the base point",
    }
    markdown = render(report)
    if not args.quick:
        write_report("sweep", report, markdown)
    print(markdown)
    report["markdown"] = markdown
    return report


def render(report: dict[str, Any]) -> str:
    """One table per dimension: each value's checkpoint durations per mode and the ratio."""
    parameters = report["parameters"]
    base = parameters["base"]
    described = ", ".join(f"{LABELS[k]} {value_label(k, v)}" for k, v in base.items())
    lines = [
        f"Backpressure sweep: one dimension at a time from the base point ({described}); "
        f"checkpoint every {parameters['interval']:g} s; {parameters['repeats']} run(s) per "
        f"mode and point, each >= {parameters['duration']:g} s; medians over the checkpoints "
        f"of all runs; {machine_line(report['machine'])}",
    ]
    for dimension, values in parameters["dimensions"].items():
        lines += [
            "",
            f"**{LABELS[dimension]}**",
            "",
            f"| {LABELS[dimension]} | "
            + " | ".join(f"{mode} duration" for mode in MODES)
            + " | aligned / unaligned | unaligned in-flight bytes | sink records/s (unaligned) |",
            "|---:|" + "---:|" * (len(MODES) + 3),
        ]
        for value in values:
            row = next(r for r in report["points"] if r["point"] == {**base, dimension: value})
            cells = []
            for mode in MODES:
                s = row["modes"][mode]
                cells.append(
                    f"{s['duration_median'] * 1e3:,.1f} ms "
                    f"({s['duration_min'] * 1e3:,.0f}-{s['duration_max'] * 1e3:,.0f}, "
                    f"n={s['checkpoints']})"
                )
            unaligned = row["modes"]["unaligned"]
            lines.append(
                f"| {value_label(dimension, value)} | "
                + " | ".join(cells)
                + f" | **{row['ratio_aligned_to_unaligned']:,.0f}x** | "
                f"{unaligned['in_flight_bytes_median']:,.0f} | "
                f"{unaligned['records_per_s_median']:,.0f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
