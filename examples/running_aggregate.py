"""A keyed running aggregate over a generated stream of sensor readings.

A rate-limited generator emits readings ``(sensor, temperature)``; a keyed process
function keeps, per sensor, the count, the sum and the maximum in keyed state and emits
an update per reading; the sink prints every 5,000th update.

    python examples/running_aggregate.py [--records N] [--rate R] [-p P]
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from runtime import (
    KeyedProcessFunction,
    RuntimeContext,
    SinkFunction,
    StreamEnvironment,
    ValueStateDescriptor,
)

SENSORS = 10


def reading(i: int) -> tuple[str, float]:
    """The i-th reading: deterministic, so a replay after a restore is identical."""
    sensor = f"sensor-{i % SENSORS}"
    temperature = 20.0 + ((i * 7919) % 1000) / 100.0
    return sensor, temperature


class SensorStats(KeyedProcessFunction[tuple[str, float], dict[str, Any]]):
    """Count, sum and max per sensor, in keyed value state."""

    def open(self, ctx: RuntimeContext) -> None:
        self.stats = ctx.get_state(ValueStateDescriptor("stats", default=None))

    def process_element(
        self, value: tuple[str, float], ctx: RuntimeContext
    ) -> list[dict[str, Any]]:
        sensor, temperature = value
        count, total, high = self.stats.value() or (0, 0.0, float("-inf"))
        count, total, high = count + 1, total + temperature, max(high, temperature)
        self.stats.update((count, total, high))
        return [{"sensor": sensor, "count": count, "mean": total / count, "max": high}]


class EveryNth(SinkFunction[dict[str, Any]]):
    """Prints every n-th update."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.seen = 0

    def invoke(self, value: dict[str, Any]) -> None:
        self.seen += 1
        if self.seen % self.n == 0:
            print(
                f"{value['sensor']}: n={value['count']} mean={value['mean']:.2f} "
                f"max={value['max']:.2f}"
            )


async def main(records: int, rate: float | None, parallelism: int) -> None:
    env = StreamEnvironment(parallelism=parallelism)
    (
        env.generate(reading, records, records_per_second=rate, name="readings")
        .key_by(lambda r: r[0])
        .process(SensorStats(), name="stats", uid="stats")
        .sink_to(EveryNth(5_000), name="print")
    )
    result = await env.execute("running aggregate")
    print()
    print(result.summary())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Weir keyed running aggregate")
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--rate", type=float, default=None, help="records per second")
    parser.add_argument("-p", "--parallelism", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(main(args.records, args.rate, args.parallelism))
