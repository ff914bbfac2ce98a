"""Count and purging triggers, count windows, and their bad input."""

from __future__ import annotations

from typing import Any

import pytest

from runtime import StreamEnvironment
from runtime.errors import ConfigError
from runtime.time import WatermarkStrategy
from runtime.windows import (
    CountTrigger,
    EventTimeTrigger,
    GlobalWindows,
    ProcessingTimeTrigger,
    PurgingTrigger,
    TumblingEventTimeWindows,
    TumblingProcessingTimeWindows,
)


def stamped(delay: int = 0) -> WatermarkStrategy:
    return (
        WatermarkStrategy.for_bounded_out_of_orderness(delay)
        .with_timestamp_assigner(lambda r: r[1])
        .with_emit_interval(0)
    )


def add(a: Any, b: Any) -> Any:
    return (a[0], max(a[1], b[1]), a[2] + b[2])


async def test_count_windows_fire_and_purge_every_n_records_per_key() -> None:
    env = StreamEnvironment(parallelism=2)
    records = [("a", i, 1) for i in range(7)] + [("b", i, 10) for i in range(3)]
    (
        env.from_collection(records)
        .key_by(lambda r: r[0])
        .count_window(3)
        .reduce(add)
        .collect(name="out")
    )
    result = await env.execute("count windows")
    # a: two windows of 3 (the 7th record waits for 2 more, which never come); b: one.
    assert sorted((r[0], r[2]) for r in result.collected["out"]) == [
        ("a", 3),
        ("a", 3),
        ("b", 30),
    ]


async def test_a_count_trigger_replaces_the_time_trigger_and_keeps_contents() -> None:
    env = StreamEnvironment(parallelism=1, buffer_size=1)
    records = [("a", t, 1) for t in range(5)] + [("a", 12, 1)]
    (
        env.from_collection(records)
        .assign_timestamps_and_watermarks(stamped())
        .key_by(lambda r: r[0])
        .window(TumblingEventTimeWindows.of(10))
        .trigger(CountTrigger.of(2))
        .reduce(add)
        .collect(name="out")
    )
    result = await env.execute("count trigger")
    # Every 2nd record of window [0, 10) fires its running sum; the watermark does not.
    assert [r[2] for r in result.collected["out"]] == [2, 4]


async def test_a_purging_event_time_trigger_fires_a_late_record_alone() -> None:
    env = StreamEnvironment(parallelism=1, buffer_size=1)
    records = [("a", 1, 1), ("a", 2, 1), ("a", 15, 1), ("a", 3, 1)]
    (
        env.from_collection(records)
        .assign_timestamps_and_watermarks(stamped())
        .key_by(lambda r: r[0])
        .window(TumblingEventTimeWindows.of(10))
        .allowed_lateness(100)
        .trigger(PurgingTrigger.of(EventTimeTrigger.create()))
        .reduce(add)
        .collect(name="out")
    )
    result = await env.execute("purging")
    # [0,10) fires with 2 at watermark 15 and is purged; the late record fires alone.
    assert [(r[1], r[2]) for r in result.collected["out"]] == [(2, 2), (3, 1), (15, 1)]


def test_bad_triggers_are_config_errors() -> None:
    env = StreamEnvironment()
    keyed = env.from_collection([1]).key_by(lambda r: r)
    with pytest.raises(ConfigError, match="count must be an int >= 1"):
        CountTrigger.of(0)
    with pytest.raises(ConfigError, match="expected a trigger"):
        PurgingTrigger.of(PurgingTrigger.of(CountTrigger.of(2)))
    with pytest.raises(ConfigError, match="EventTimeTrigger on processing-time windows"):
        keyed.window(TumblingProcessingTimeWindows.of(1)).trigger(EventTimeTrigger.create())
    with pytest.raises(ConfigError, match="ProcessingTimeTrigger on event-time windows"):
        keyed.window(TumblingEventTimeWindows.of(1), timestamp=lambda r: r).trigger(
            ProcessingTimeTrigger.create()
        )
    with pytest.raises(ConfigError, match="GlobalWindows never fire by time"):
        keyed.window(GlobalWindows.create()).reduce(lambda a, b: a)
    with pytest.raises(ConfigError, match="expected a Trigger"):
        keyed.window(GlobalWindows.create()).trigger("count")  # type: ignore[arg-type]
