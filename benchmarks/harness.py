"""Shared benchmark method: interleaved A/B runs, medians, ratios, the machine, reports.

Every benchmark measures its candidate and its baseline alternately (A B A B ...), after
a warm-up, so that a noisy neighbour slows both alike; it reports medians with min and
max and the ratio of medians, and describes the machine. A spread (max/min) above 1.25
is flagged as a noisy run. Nothing here asserts on time.
"""

from __future__ import annotations

import json
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
    for lib in ("weir", "anyio", "msgspec", "aiofiles"):
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            versions[lib] = "absent"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "libraries": versions,
    }


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

    def summary(self) -> dict[str, Any]:
        """Median, min, max, spread and the raw values."""
        return {
            "median": self.median,
            "min": min(self.values),
            "max": max(self.values),
            "spread": self.spread,
            "noisy": self.spread > 1.25,
            "values": self.values,
        }


def interleave(
    variants: dict[str, Callable[[], float]], repeats: int, warmup: int = 1
) -> dict[str, Series]:
    """Run each variant ``warmup`` times, then ``repeats`` rounds of all, alternating.

    Each callable returns one measurement (e.g. records/s).
    """
    for _ in range(warmup):
        for run in variants.values():
            run()
    series = {name: Series(name) for name in variants}
    for round_ in range(repeats):
        order = list(variants.items())
        if round_ % 2:
            order.reverse()  # ABBA: neither variant always runs first
        for name, run in order:
            series[name].values.append(run())
    return series


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
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(report, indent=2, default=_default) + "\n", encoding="utf-8")
    (RESULTS / f"{name}.md").write_text(markdown + "\n", encoding="utf-8")
    return path


def _default(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    return str(value)


def machine_line(info: dict[str, Any]) -> str:
    """One line describing the machine, for reports."""
    return (
        f"{info['cpu']}, {info['cores']} cores, {info['implementation']} {info['python']}, "
        f"weir {info['libraries']['weir']}"
    )
