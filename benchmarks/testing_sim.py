"""Testing kit: one exactly-once example in deterministic simulation vs on real time.

Goal (issue 20): a simulated exactly-once example (the kit's keyed topology, a running
count per key, 1,000 records, one failure) runs at least 10x faster than the same
example on real time, measured in the same run.

One example is ``check_exactly_once``: a run without failures and a run with one
injected failure (``'count'`` after 150 records), each a whole job with checkpoints,
then the validation. Two pacings, each variant interleaved (ABBA) over ``--repeats``
rounds after a warm-up:

* **kit default**: ``KitOptions()`` (4 splits x 250 records, 20,000 records/s per
  split, a checkpoint every 10 ms): the kit's own pace, sized to keep real-time CI
  short, so its runs are mostly CPU;
* **paced**: the same job paced as a production job is (1,000 records/s per split, a
  checkpoint every second): real time waits for the sources and the interval, the
  simulation does not.

Each simulated round also runs its seed twice and records whether both runs committed
the same transactions (names included) and took the same checkpoints: the replay
guarantee, measured where the speed is.

    python -m benchmarks.testing_sim            # 5 rounds
    python -m benchmarks.testing_sim --quick    # 2 rounds, kit default pacing only

Writes ``benchmarks/results/testing_sim.json`` and ``.md`` (full mode only). Asserts
nothing about time.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import time
from typing import Any

from benchmarks.harness import (
    Series,
    machine,
    machine_line,
    paired_ratios,
    round_order,
    tick,
    write_report,
)
from runtime.testing import (
    TOPOLOGIES,
    InjectedFailure,
    KitOptions,
    check_exactly_once,
    simulate,
)

KEYED = next(t for t in TOPOLOGIES if t.name == "keyed")
FAILURE = InjectedFailure("count", after_records=150)
PACINGS = {
    "kit default": KitOptions(),
    "paced": KitOptions(records_per_second=1_000.0, interval=1.0),
}


def check(options: KitOptions, *, simulated: bool, seed: int) -> Any:
    """One example; returns its report."""
    main = check_exactly_once(
        KEYED,
        schedule=[FAILURE],
        expected=KEYED.expected,
        options=options,
        simulate=simulated,
        seed=seed,
    )
    if not simulated:
        return asyncio.run(main)
    with simulate(seed) as sim:
        return sim.run(main)


def fingerprint(report: Any) -> tuple[Any, ...]:
    """What a run committed (transaction names included) and its checkpoints."""
    run = report.run
    return (
        tuple((t.subtask, t.txn_id, tuple(map(repr, t.records))) for t in run.output.transactions),
        tuple((c.checkpoint_id, c.state_size) for c in run.result.checkpoints.completed()),
    )


def timed(options: KitOptions, *, simulated: bool, seed: int) -> tuple[float, Any]:
    """Seconds of one example, and its report."""
    start = time.perf_counter()
    report = check(options, simulated=simulated, seed=seed)
    return time.perf_counter() - start, report


def measure(name: str, options: KitOptions, repeats: int) -> dict[str, Any]:
    """Both variants of one pacing, ABBA, and the replay check of each simulated seed."""
    series = {"real time": Series("real time"), "simulation": Series("simulation")}
    replays_identical = []
    timed(options, simulated=False, seed=0)
    timed(options, simulated=True, seed=0)
    tick(f"{name}: warm-up")
    for round_ in range(repeats):
        for variant in round_order(list(series), round_):
            simulated = variant == "simulation"
            seconds, report = timed(options, simulated=simulated, seed=round_)
            series[variant].values.append(seconds)
            if simulated:
                again = check(options, simulated=True, seed=round_)
                replays_identical.append(fingerprint(again) == fingerprint(report))
            tick(f"{name}: {variant}")
    speedup = paired_ratios(series["real time"], series["simulation"])
    return {
        "options": dataclasses.asdict(options),
        "seconds_per_example": {n: s.summary() for n, s in series.items()},
        "speedup": speedup,
        "replays_identical": all(replays_identical),
        "replays": len(replays_identical),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the part; returns its report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds, kit default only")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 5)
    info = machine()
    pacings = {"kit default": PACINGS["kit default"]} if args.quick else PACINGS
    results = {name: measure(name, options, repeats) for name, options in pacings.items()}
    headline = []
    for name, result in results.items():
        seconds, speedup = result["seconds_per_example"], result["speedup"]
        headline.append(
            {
                "part": "testing",
                "figure": f"exactly-once example ({name} pacing), simulation vs real time",
                "value": f"{seconds['simulation']['median'] * 1e3:,.0f} ms",
                "baseline": f"{seconds['real time']['median'] * 1e3:,.0f} ms",
                "ratio": speedup["ratio"],
                "per_round": {
                    "min": speedup["per_round"].get("min"),
                    "max": speedup["per_round"].get("max"),
                },
                "goal": ">= 10x faster" if name == "kit default" else "",
                "met": speedup["ratio"] >= 10 if name == "kit default" else None,
            }
        )
    report: dict[str, Any] = {
        "machine": info,
        "repeats": repeats,
        "pacings": results,
        "headline": headline,
    }
    lines = [
        f"One exactly-once example (keyed running count, 1,000 records, one failure), "
        f"medians of {repeats}; {machine_line(info)}",
        "",
        "| pacing | real time | simulation | speed-up (per-round range) | same seed, same run |",
        "|---|---:|---:|---:|---|",
    ]
    for name, result in results.items():
        seconds, speedup = result["seconds_per_example"], result["speedup"]
        rounds = speedup["per_round"]
        lines.append(
            f"| {name} | {seconds['real time']['median'] * 1e3:,.0f} ms | "
            f"{seconds['simulation']['median'] * 1e3:,.0f} ms | {speedup['ratio']:.1f}x "
            f"({rounds.get('min', float('nan')):.1f} to {rounds.get('max', float('nan')):.1f}) | "
            f"{'yes' if result['replays_identical'] else 'NO'} ({result['replays']} seeds) |"
        )
    markdown = "\n".join(lines)
    print(markdown)
    if not args.quick:
        write_report("testing_sim", report, markdown)
    return report


if __name__ == "__main__":
    main()
