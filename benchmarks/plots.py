"""The kit's PNG plots, drawn with matplotlib when it is installed (the bench extra).

From the assembled kit report (``benchmarks.kit``), each when its part ran:

* ``checkpoint_duration_over_time.png``: every completed checkpoint's end-to-end
  duration against its trigger time, per mode, under backpressure (``backpressure``);
* ``duration_vs_sink_cost.png``: median checkpoint duration (min to max) per mode against
  the sink's cost per record, both on log scales (``sweep``);
* ``in_flight_bytes.png``: persisted in-flight bytes per checkpoint, per mode
  (``backpressure``);
* ``throughput_vs_interval.png``: records/s and its ratio to no checkpoints against the
  checkpoint interval, aligned and unaligned (``overhead``), with Weir to files and
  Bytewax's snapshots at 1 s and 100 ms (``bytewax``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

MODE_COLOURS = {"aligned": "tab:red", "unaligned": "tab:blue", "aligned_timeout": "tab:green"}
MODE_LABELS = {
    "aligned": "aligned",
    "unaligned": "unaligned",
    "aligned_timeout": "aligned, 10 ms timeout",
}


def draw(report: dict[str, Any], out: Path) -> dict[str, Any]:
    """Draw every plot the report has data for into ``out``; say which, or why none."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {"skipped": "matplotlib is not installed: pip install -e '.[bench]'"}
    parts = {
        name: entry["report"]
        for name, entry in report["parts"].items()
        if entry["status"] == "ok" and entry["report"]
    }
    files: dict[str, str] = {}
    errors: dict[str, str] = {}
    for title, filename, needs, plot in PLOTS:
        if not all(name in parts for name in needs):
            continue
        try:
            figure = plot(plt, parts)
        except (KeyError, TypeError, ValueError, IndexError) as error:
            errors[filename] = f"{type(error).__name__}: {error}"
            continue
        if figure is None:
            continue
        figure.savefig(out / filename, dpi=110, bbox_inches="tight")
        plt.close(figure)
        files[title] = filename
    result: dict[str, Any] = {"files": files}
    if errors:
        result["errors"] = errors
    return result


def _duration_over_time(plt: Any, parts: dict[str, Any]) -> Any:
    report = parts["backpressure"]
    figure, axes = plt.subplots(figsize=(8, 4.5))
    for mode, runs in report["runs"].items():
        for index, run in enumerate(runs):
            axes.plot(
                run["trigger_times"],
                [d * 1e3 for d in run["durations"]],
                marker="o",
                markersize=3,
                linewidth=1,
                alpha=0.8,
                color=MODE_COLOURS.get(mode),
                label=MODE_LABELS.get(mode, mode) if index == 0 else None,
            )
    p = report["parameters"]
    axes.set_yscale("log")
    axes.set_xlabel("trigger time (s since measuring started; every run overlaid)")
    axes.set_ylabel("end-to-end checkpoint duration (ms)")
    axes.set_title(
        f"Checkpoint duration under backpressure (sink {p['sink_cost'] * 1e3:g} ms/record, "
        f"checkpoint every {p['interval']:g} s)"
    )
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    return figure


def _duration_vs_sink_cost(plt: Any, parts: dict[str, Any]) -> Any:
    report = parts["sweep"]
    costs = report["parameters"]["dimensions"].get("sink_cost")
    if not costs:
        return None
    base = report["parameters"]["base"]
    rows = [
        next(r for r in report["points"] if r["point"] == {**base, "sink_cost": cost})
        for cost in costs
    ]
    figure, axes = plt.subplots(figsize=(8, 4.5))
    x = [cost * 1e3 for cost in costs]
    for mode in MODE_COLOURS:
        median = [r["modes"][mode]["duration_median"] * 1e3 for r in rows]
        low = [
            m - r["modes"][mode]["duration_min"] * 1e3 for m, r in zip(median, rows, strict=True)
        ]
        high = [
            r["modes"][mode]["duration_max"] * 1e3 - m for m, r in zip(median, rows, strict=True)
        ]
        axes.errorbar(
            x,
            median,
            yerr=[low, high],
            marker="o",
            capsize=3,
            color=MODE_COLOURS[mode],
            label=MODE_LABELS[mode],
        )
    axes.set_xscale("log")
    axes.set_yscale("log")
    _label_ticks(axes, x, [f"{v:g} ms" for v in x])
    axes.set_xlabel("sink cost per record (log)")
    axes.set_ylabel("checkpoint duration (ms, log; median, min to max)")
    axes.set_title("Checkpoint duration against the sink's cost per record")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    return figure


def _in_flight_bytes(plt: Any, parts: dict[str, Any]) -> Any:
    modes = parts["backpressure"]["modes"]
    names = list(modes)
    median = [_zero_if_nan(modes[m]["in_flight_bytes_median"]) for m in names]
    low = [
        m - _zero_if_nan(modes[n].get("in_flight_bytes_min", m))
        for m, n in zip(median, names, strict=True)
    ]
    high = [
        _zero_if_nan(modes[n].get("in_flight_bytes_max", m)) - m
        for m, n in zip(median, names, strict=True)
    ]
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.bar(
        [MODE_LABELS.get(m, m) for m in names],
        [value / 1e3 for value in median],
        yerr=[[v / 1e3 for v in low], [v / 1e3 for v in high]],
        capsize=4,
        color=[MODE_COLOURS.get(m) for m in names],
    )
    for index, value in enumerate(median):
        axes.annotate(
            f"{value / 1e3:,.1f} kB",
            (index, value / 1e3),
            xytext=(14, 3),
            textcoords="offset points",
            ha="left",
            va="bottom",
        )
    axes.set_ylabel("persisted in-flight kB per checkpoint (median, min to max)")
    axes.set_title("In-flight data persisted per checkpoint, under backpressure")
    axes.grid(True, axis="y", alpha=0.3)
    return figure


def _throughput_vs_interval(plt: Any, parts: dict[str, Any]) -> Any:
    report = parts["overhead"]
    intervals: dict[str, float] = report["intervals"]
    rates = report["records_per_s"]
    per_round = report.get("ratio_to_off_per_round", {})
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    for mode, colour in (("aligned", "tab:red"), ("unaligned", "tab:blue")):
        names = sorted((n for n in intervals if n.startswith(f"{mode} ")), key=intervals.get)
        x = [intervals[n] for n in names]
        median = [rates[n]["median"] for n in names]
        left.errorbar(
            x,
            median,
            yerr=[
                [m - rates[n]["min"] for m, n in zip(median, names, strict=True)],
                [rates[n]["max"] - m for m, n in zip(median, names, strict=True)],
            ],
            marker="o",
            capsize=3,
            color=colour,
            label=f"{mode} (memory storage)",
        )
        ratios = [report["ratio_to_off"][n] for n in names]
        right.plot(x, ratios, marker="o", color=colour, label=f"{mode} (memory storage)")
        for n, xi in zip(names, x, strict=True):
            rounds = per_round.get(n)
            if rounds and rounds.get("min") is not None:
                right.vlines(xi, rounds["min"], rounds["max"], color=colour, alpha=0.4)
    off = rates["off"]
    left.axhspan(off["min"], off["max"], color="grey", alpha=0.2, label="no checkpoints (min-max)")
    left.axhline(off["median"], color="grey", linestyle="--")
    if "bytewax" in parts:
        bytewax = parts["bytewax"]
        seconds = {"1 s": 1.0, "100 ms": 0.1}
        weir = bytewax["weir_ratio_to_off"]
        right.plot(
            [seconds[k] for k in weir],
            [v["ratio"] for v in weir.values()],
            marker="s",
            linestyle=":",
            color="tab:purple",
            label="Weir aligned, file storage",
        )
        theirs = bytewax.get("bytewax_ratio_to_off")
        if theirs:
            right.plot(
                [seconds[k] for k in theirs],
                [v["ratio"] for v in theirs.values()],
                marker="D",
                linestyle=":",
                color="tab:orange",
                label="Bytewax snapshots (SQLite)",
            )
    right.axhline(1.0, color="grey", linestyle="--")
    right.plot([1.0, 0.1], [0.95, 0.90], "k_", markersize=20, label="goals (0.95x, 0.90x)")
    ticks = sorted(set(intervals.values()))
    for axes in (left, right):
        axes.set_xscale("log")
        _label_ticks(axes, ticks, [_interval_label(t) for t in ticks])
        axes.set_xlabel("checkpoint interval (log)")
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize=8)
    left.set_ylabel("records/s (median, min to max)")
    left.set_title("Keyed count throughput against checkpoint interval")
    right.set_ylabel("ratio to no checkpoints (same run)")
    right.set_title("Throughput with checkpoints / without")
    figure.tight_layout()
    return figure


def _label_ticks(axes: Any, ticks: list[float], labels: list[str]) -> None:
    """Ticks at the measured values only, labelled in words (not 2 x 10^0)."""
    axes.set_xticks(ticks, labels)
    axes.xaxis.set_minor_locator(_null_locator())


def _null_locator() -> Any:
    from matplotlib.ticker import NullLocator

    return NullLocator()


def _interval_label(seconds: float) -> str:
    return f"{seconds:g} s" if seconds >= 1 else f"{seconds * 1e3:g} ms"


def _zero_if_nan(value: float) -> float:
    return 0.0 if value != value else value


PLOTS = [
    (
        "Checkpoint duration over time, per mode",
        "checkpoint_duration_over_time.png",
        ("backpressure",),
        _duration_over_time,
    ),
    (
        "Checkpoint duration against the sink's cost per record",
        "duration_vs_sink_cost.png",
        ("sweep",),
        _duration_vs_sink_cost,
    ),
    (
        "Persisted in-flight bytes per mode",
        "in_flight_bytes.png",
        ("backpressure",),
        _in_flight_bytes,
    ),
    (
        "Throughput against checkpoint interval",
        "throughput_vs_interval.png",
        ("overhead",),
        _throughput_vs_interval,
    ),
]
"""Title, file name, the parts it needs, and the function drawing it."""
