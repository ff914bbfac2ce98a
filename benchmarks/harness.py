"""Shared benchmark method: interleaved A/B runs, medians, ratios, the machine, reports.

Every benchmark measures its candidate and its baseline alternately (A B A B ...), after
a warm-up, so that a noisy neighbour slows both alike; it reports medians with min and
max and the ratio of medians, and describes the machine. A spread (max/min) above 1.25
is flagged as a noisy run. Nothing here asserts on time.

The kit (``python -m benchmarks``) sets a progress callback with :func:`set_progress`;
:func:`interleave` reports every measurement to it through :func:`tick`.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
"""Where :func:`write_report` writes; the kit points it at its ``--out`` folder."""

NOISY_SPREAD = 1.25
"""A series whose max / min exceeds this is flagged noisy."""

LIBRARIES = ("weir", "anyio", "msgspec", "rocksdict", "rich", "bytewax", "matplotlib")

_progress: Callable[[str], None] | None = None


def set_progress(callback: Callable[[str], None] | None) -> Callable[[str], None] | None:
    """Call ``callback(label)`` after each measurement; return the previous callback."""
    global _progress
    previous, _progress = _progress, callback
    return previous


def tick(label: str) -> None:
    """Report one finished measurement to the progress callback, if any."""
    if _progress is not None:
        _progress(label)


def machine() -> dict[str, Any]:
    """CPU, cores, Python and library versions of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = {}
    for lib in LIBRARIES:
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            versions[lib] = "absent"
    try:
        load: list[float] | None = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "libraries": versions,
        "load_average": load,
    }


def summarize(values: list[float]) -> dict[str, Any]:
    """Median, min, max, spread (max / min), the noisy flag and the values themselves.

    An empty list gives NaNs (a variant that measured nothing, e.g. no checkpoint
    completed) and is not flagged noisy.
    """
    if not values:
        nan = float("nan")
        return {"median": nan, "min": nan, "max": nan, "spread": nan, "noisy": False, "values": []}
    low, high = min(values), max(values)
    spread = high / low if low > 0 else float("inf")
    return {
        "median": statistics.median(values),
        "min": low,
        "max": high,
        "spread": spread,
        "noisy": spread > NOISY_SPREAD,
        "values": list(values),
    }


def ratio(candidate: float, baseline: float) -> float:
    """``candidate / baseline``; NaN when the baseline is zero or either is NaN."""
    if baseline == 0 or math.isnan(baseline) or math.isnan(candidate):
        return float("nan")
    return candidate / baseline


def paired_ratios(candidate: Series, baseline: Series) -> dict[str, Any]:
    """The ratio of medians, and the summary of the per-round ratios.

    Round *i* of ``candidate`` ran next to round *i* of ``baseline`` (see
    :func:`interleave`), so their ratio shares that round's noise; the spread of the
    per-round ratios says how far the ratio of medians can be trusted.
    """
    rounds = [ratio(a, b) for a, b in zip(candidate.values, baseline.values, strict=True)]
    return {"ratio": ratio(candidate.median, baseline.median), "per_round": summarize(rounds)}


@dataclass
class Series:
    """Repeated measurements of one variant."""

    name: str
    values: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        """The median value."""
        return statistics.median(self.values)

    @property
    def spread(self) -> float:
        """max / min (1.0 is perfectly steady)."""
        low = min(self.values)
        return max(self.values) / low if low > 0 else float("inf")

    @property
    def noisy(self) -> bool:
        """Whether the spread exceeds :data:`NOISY_SPREAD`."""
        return self.spread > NOISY_SPREAD

    def summary(self) -> dict[str, Any]:
        """Median, min, max, spread and the raw values."""
        return summarize(self.values)


def interleave(
    variants: dict[str, Callable[[], float]], repeats: int, warmup: int = 1
) -> dict[str, Series]:
    """Run each variant ``warmup`` times, then ``repeats`` rounds of all, alternating.

    Each callable returns one measurement (e.g. records/s).
    """
    for _ in range(warmup):
        for name, run in variants.items():
            run()
            tick(f"{name} (warm-up)")
    series = {name: Series(name) for name in variants}
    for round_ in range(repeats):
        for name in round_order(list(variants), round_):
            series[name].values.append(variants[name]())
            tick(name)
    return series


def round_order(names: list[str], round_: int) -> list[str]:
    """The order of round ``round_``: as given in even rounds, reversed in odd ones (ABBA).

    Neither variant always runs first, and a drift over the run (a neighbour starting
    up, the CPU warming) weighs on every variant alike over two rounds.
    """
    return list(reversed(names)) if round_ % 2 else list(names)


def timed_async(make: Callable[[], Awaitable[Any]]) -> float:
    """Seconds that ``asyncio.run(make())`` takes, measured inside the loop."""
    import asyncio

    async def go() -> float:
        start = time.perf_counter()
        await make()
        return time.perf_counter() - start

    return asyncio.run(go())


def write_report(name: str, report: dict[str, Any], markdown: str) -> Path:
    """Write ``results/<name>.json`` and ``results/<name>.md``; return the JSON path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(to_json(report) + "\n", encoding="utf-8")
    (RESULTS / f"{name}.md").write_text(markdown + "\n", encoding="utf-8")
    return path


def to_json(report: dict[str, Any]) -> str:
    """Strict JSON (NaN and infinities become ``null``), indented."""
    return json.dumps(_finite(report), indent=2, default=_default, allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    if hasattr(value, "__dataclass_fields__"):
        return _finite(asdict(value))
    return value


def _default(value: Any) -> Any:
    return str(value)


def machine_line(info: dict[str, Any]) -> str:
    """One line describing the machine, for reports."""
    load = info.get("load_average")
    return (
        f"{info['cpu']}, {info['cores']} cores, {info['implementation']} {info['python']}, "
        f"weir {info['libraries']['weir']}" + (f", load average {load[0]:.1f}" if load else "")
    )
