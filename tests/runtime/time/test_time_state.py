"""Timers and windows as state: restored queues, savepoints read offline, async I/O order."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from runtime import StreamEnvironment
from runtime.connectors.collection import CollectionSource
from runtime.testing import GatedSource, SourceGate
from runtime.time import OutputTag, WatermarkStrategy
from runtime.time.timers import EVENT_TIMERS, PROCESSING_TIMERS, TimerService
from runtime.windows import TumblingEventTimeWindows
from runtime.windows.operator import WINDOW_CONTENTS
from storage import HeapKeyedStateBackend, KeyGroupRange, ValueStateDescriptor
from storage.processor import load_savepoint


def strategy(delay: int) -> WatermarkStrategy:
    return (
        WatermarkStrategy.for_bounded_out_of_orderness(delay)
        .with_timestamp_assigner(lambda r: r[1])
        .with_emit_interval(0)
    )


def test_restored_timers_fire_in_order_and_past_processing_timers_are_due_at_once() -> None:
    backend = HeapKeyedStateBackend(8, KeyGroupRange(0, 7))
    events = backend.get_state(ValueStateDescriptor(EVENT_TIMERS))
    processing = backend.get_state(ValueStateDescriptor(PROCESSING_TIMERS))
    past = time.time() - 60
    for key, stamps in {"a": (10, 30), "b": (20,)}.items():
        events.put_for(key, stamps)
        processing.put_for(key, (past,))
    asked: list[float] = []
    service = TimerService(backend, asked.append)
    assert service.restore() == 5
    assert asked == [past]  # the task is asked to wake at once: its time passed
    assert sorted(k for _, k in service.due_processing_timers()) == ["a", "b"]
    assert service.advance_watermark(25) == [(10, "a"), (20, "b")]
    assert service.advance_watermark(25) == []  # fired timers are gone from state
    assert events.get_for("a") == (30,)
    assert events.get_for("b") is None


async def test_a_savepoint_holds_timers_and_window_contents_readable_offline(
    tmp_path: Path,
) -> None:
    gate = SourceGate(hold_at_end=True)
    env = StreamEnvironment(parallelism=1, max_parallelism=8)
    env.enable_checkpointing(3600.0, storage=f"file://{tmp_path / 'chk'}")
    records = [("a", 1, 1), ("a", 2, 1), ("b", 12, 1)]
    (
        env.from_source(GatedSource(CollectionSource(records), gate), uid="src")
        .assign_timestamps_and_watermarks(strategy(100), uid="ts")
        .key_by(lambda r: r[0])
        .window(TumblingEventTimeWindows.of(10))
        .reduce(lambda x, y: (x[0], x[1], x[2] + y[2]), name="sum", uid="sum")
        .collect(name="out")
    )
    client = await env.start("savepoint of windows")
    await gate.wait_held()
    path = await client.stop_with_savepoint(str(tmp_path / "sp"))
    await client.wait()
    state = load_savepoint(path)["sum"]
    assert state.keyed_state(EVENT_TIMERS) == {"a": (10,), "b": (20,)}
    assert state.keyed_state(WINDOW_CONTENTS) == {
        "a": {(0, 10): ("a", 1, 2)},
        "b": {(10, 20): ("b", 12, 1)},
    }


class Slow:
    """An async call whose delay makes results come back out of order."""

    async def __call__(self, record: Any) -> Any:
        await asyncio.sleep(0.002 if record[1] % 2 else 0)
        return record


async def test_a_watermark_never_overtakes_unordered_async_results() -> None:
    env = StreamEnvironment(parallelism=1, buffer_size=1)
    late = OutputTag("late")
    records = [("k", t, 1) for t in range(40)]
    windows = (
        env.from_collection(records)
        .assign_timestamps_and_watermarks(strategy(0))
        .async_map(Slow(), ordered=False, capacity=8)
        .key_by(lambda r: r[0])
        .window(TumblingEventTimeWindows.of(10), timestamp=lambda r: r[1])
        .side_output_late_data(late)
        .reduce(lambda x, y: (x[0], x[1], x[2] + y[2]))
    )
    windows.collect(name="sums")
    windows.get_side_output(late).collect(name="late")
    result = await env.execute("async order")
    assert result.collected["late"] == []
    assert sorted(r[2] for r in result.collected["sums"]) == [10, 10, 10, 10]


async def test_windows_and_timers_bootstrapped_with_the_state_processor_fire(
    tmp_path: Path,
) -> None:
    """A savepoint written offline, holding a window and its timer, restores and fires."""
    from storage.processor import SavepointWriter

    path = await (
        SavepointWriter.new(max_parallelism=8)
        .with_operator_state(
            "sum",
            parallelism=1,
            keyed={
                WINDOW_CONTENTS: {"a": {(0, 10): ("a", 5, 40)}},
                EVENT_TIMERS: {"a": (10,)},
            },
        )
        .write_async(str(tmp_path))
    )
    env = StreamEnvironment(parallelism=2, max_parallelism=8)
    (
        env.from_collection([("a", 7, 2), ("b", 25, 1)], uid="src")
        .assign_timestamps_and_watermarks(strategy(0), uid="ts")
        .key_by(lambda r: r[0])
        .window(TumblingEventTimeWindows.of(10))
        .reduce(lambda x, y: (x[0], max(x[1], y[1]), x[2] + y[2]), name="sum", uid="sum")
        .collect(name="out")
    )
    result = await env.execute("bootstrapped", restore_from=path, allow_non_restored_state=True)
    assert sorted(result.collected["out"]) == [("a", 7, 42), ("b", 25, 1)]
