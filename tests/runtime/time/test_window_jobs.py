"""Windows, timers and side outputs in small jobs; window results against a reference model."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime import (
    CollectionSource,
    JobFailedError,
    KeyedProcessFunction,
    SinkFunction,
    StreamEnvironment,
    ValueStateDescriptor,
)
from runtime.errors import ConfigError
from runtime.testing import GatedSource, SourceGate
from runtime.time import OutputTag, WatermarkStrategy
from runtime.windows import (
    AggregateFunction,
    EventTimeSessionWindows,
    ProcessWindowFunction,
    TumblingEventTimeWindows,
    TumblingProcessingTimeWindows,
    WindowContext,
)


def strategy(delay: int) -> WatermarkStrategy:
    return (
        WatermarkStrategy.for_bounded_out_of_orderness(delay)
        .with_timestamp_assigner(lambda r: r[1])
        .with_emit_interval(0)
    )


class Labelled(ProcessWindowFunction):
    def process(self, key: Any, context: WindowContext, elements: list[Any]) -> list[Any]:
        (value,) = elements
        return [(key, int(context.window[0]), value[2])]


def reference(
    records: list[tuple[str, int, int]], size: int, delay: int, lateness: int
) -> tuple[list[Any], list[Any]]:
    """Flink's semantics, one record and one watermark at a time (buffer size 1)."""
    watermark = float("-inf")
    highest = float("-inf")
    acc: dict[tuple[str, int], int] = {}
    timer_pending: set[tuple[str, int]] = set()
    out: list[Any] = []
    late: list[Any] = []

    def advance(to: float) -> None:
        nonlocal watermark
        if to <= watermark:
            return
        watermark = to
        for key, start in sorted(acc, key=lambda ks: ks[1]):
            end = start + size
            if (key, start) in timer_pending and end <= watermark:
                out.append((key, start, acc[(key, start)]))
                timer_pending.discard((key, start))
        for key, start in list(acc):
            if start + size + lateness <= watermark:
                del acc[(key, start)]

    for record in records:
        key, ts, value = record
        start = ts - ts % size
        end = start + size
        if end + lateness <= watermark:
            late.append(record)
        else:
            new = (key, start) not in acc
            acc[(key, start)] = acc.get((key, start), 0) + value
            if new and end > watermark:
                timer_pending.add((key, start))
            if end <= watermark:
                out.append((key, start, acc[(key, start)]))
        highest = max(highest, ts)
        advance(highest - delay)
    advance(float("inf"))
    return out, late


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.sampled_from("ab"), st.integers(0, 60), st.just(1)), max_size=40),
    st.integers(1, 15),
    st.integers(0, 10),
    st.sampled_from([0, 5]),
)
async def test_tumbling_windows_with_late_data_match_the_reference(
    records: list[tuple[str, int, int]], size: int, delay: int, lateness: int
) -> None:
    env = StreamEnvironment(parallelism=1, buffer_size=1)
    late_tag = OutputTag("late")
    results = (
        env.from_collection(records)
        .assign_timestamps_and_watermarks(strategy(delay))
        .key_by(lambda r: r[0])
        .window(TumblingEventTimeWindows.of(size))
        .allowed_lateness(lateness)
        .side_output_late_data(late_tag)
        .reduce(lambda a, b: (a[0], max(a[1], b[1]), a[2] + b[2]), Labelled())
    )
    results.collect(name="out")
    results.get_side_output(late_tag).collect(name="late")
    result = await env.execute("reference")
    want_out, want_late = reference(records, size, delay, lateness)
    assert sorted(result.collected["out"]) == sorted(want_out)
    assert result.collected["late"] == want_late


class Average(AggregateFunction):
    def create_accumulator(self) -> tuple[int, int]:
        return (0, 0)

    def add(self, value: Any, accumulator: tuple[int, int]) -> tuple[int, int]:
        return (accumulator[0] + value[2], accumulator[1] + 1)

    def get_result(self, accumulator: tuple[int, int]) -> float:
        return accumulator[0] / accumulator[1]

    def merge(self, a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
        return (a[0] + b[0], a[1] + b[1])


async def test_session_windows_aggregate_and_merge() -> None:
    env = StreamEnvironment(parallelism=2, buffer_size=2)
    clicks = [("u1", 0, 2), ("u1", 3, 4), ("u2", 1, 10), ("u1", 20, 6), ("u1", 1, 0)]
    (
        env.from_collection(clicks)
        .assign_timestamps_and_watermarks(strategy(100))
        .key_by(lambda r: r[0])
        .window(EventTimeSessionWindows.with_gap(5))
        .aggregate(Average())
        .collect(name="avg")
    )
    result = await env.execute("sessions")
    assert sorted(result.collected["avg"]) == [2.0, 6.0, 10.0]


class Alarm(KeyedProcessFunction):
    """Counts per key; an event-time timer 10 after the first record reports the count;
    a second timer registered and deleted never fires; a processing-time timer in the
    past fires at once; odd values go to a side output."""

    def __init__(self, tag: OutputTag) -> None:
        self.tag = tag

    def open(self, ctx: Any) -> None:
        self.count = ctx.get_state(ValueStateDescriptor("count", default=0))

    def process_element(self, value: Any, ctx: Any) -> list[Any]:
        n = self.count.value()
        self.count.update(n + 1)
        timers = ctx.timer_service
        if n == 0:
            timers.register_event_time_timer(value[1] + 10)
            timers.register_event_time_timer(value[1] + 11)
            timers.delete_event_time_timer(value[1] + 11)
            timers.register_processing_time_timer(timers.current_processing_time() - 1)
        if value[2] % 2:
            ctx.output(self.tag, value)
        return []

    def on_timer(self, timestamp: float, ctx: Any) -> list[Any]:
        return [(ctx.timer_domain, ctx.current_key, timestamp, self.count.value())]


class Seen(SinkFunction):
    """Shared by every subtask copy: the records, and an event once ``n`` have a tag."""

    def __init__(self, tag: str, n: int) -> None:
        self.records: list[Any] = []
        self.tag, self.n = tag, n
        self.reached = asyncio.Event()

    def __deepcopy__(self, memo: dict[int, Any]) -> Seen:
        return self

    def invoke(self, value: Any) -> None:
        self.records.append(value)
        if sum(1 for r in self.records if r[0] == self.tag) >= self.n:
            self.reached.set()


@pytest.mark.parametrize("side_consumer_only", [False, True])
async def test_timers_fire_once_and_side_outputs_reach_their_consumers(
    side_consumer_only: bool,
) -> None:
    env = StreamEnvironment(parallelism=2, buffer_size=1)  # a watermark after each record
    odd = OutputTag("odd")
    records = [("a", t, t) for t in range(30)] + [("b", 5, 7)]
    # The source holds at its end until both processing-time timers fired: pending
    # processing-time timers do not fire at the end of input (as in Flink).
    gate = SourceGate(hold_at_end=True)
    seen = Seen("processing", 2)
    processed = (
        env.from_source(GatedSource(CollectionSource(records), gate))
        .assign_timestamps_and_watermarks(strategy(0), parallelism=1)
        .key_by(lambda r: r[0])
        .process(Alarm(odd), name="alarm")
    )
    if not side_consumer_only:
        processed.sink_to(seen, name="main")
    processed.get_side_output(odd).collect(name="odd")
    client = await env.start("timers")
    if not side_consumer_only:
        await seen.reached.wait()
    else:
        await gate.wait_held()
    gate.open()
    result = await client.wait()
    assert sorted(result.collected["odd"]) == sorted(r for r in records if r[2] % 2)
    if not side_consumer_only:
        main = seen.records
        event = sorted(r for r in main if r[0] == "event")
        assert event == [("event", "a", 10, 11), ("event", "b", 15, 1)]
        processing = sorted(r[1] for r in main if r[0] == "processing")
        assert processing == ["a", "b"]


def test_bad_window_options_are_config_errors() -> None:
    env = StreamEnvironment()
    keyed = env.from_collection([1]).key_by(lambda r: r)
    with pytest.raises(ConfigError, match="processing-time windows have no late records"):
        keyed.window(TumblingProcessingTimeWindows.of(1)).allowed_lateness(5)
    with pytest.raises(ConfigError, match="event-time windows need timestamps"):
        keyed.window(TumblingEventTimeWindows.of(1)).reduce(lambda a, b: a)
    with pytest.raises(ConfigError, match="allowed_lateness must be >= 0"):
        keyed.window(TumblingEventTimeWindows.of(1)).allowed_lateness(-1)
    with pytest.raises(ConfigError, match="expected a window assigner"):
        keyed.window(5)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="expected an OutputTag"):
        keyed.window(TumblingEventTimeWindows.of(1)).side_output_late_data("late")  # type: ignore[arg-type]


def _instantiate(env: StreamEnvironment) -> None:
    for node in env._nodes:
        if node.factory is not None:
            node.factory(node.name, node.name)


async def test_a_timestamp_that_is_not_a_number_fails_naming_operator_and_record() -> None:
    env = StreamEnvironment(parallelism=1)
    (
        env.from_collection([("a", 1), ("b", "noon")])
        .assign_timestamps_and_watermarks(strategy(0), name="stamps")
        .collect()
    )
    with pytest.raises(JobFailedError) as failure:
        await env.execute("bad timestamps")
    message = str(failure.value.__cause__)
    assert "stamps" in message and "noon" in message and "str" in message


async def test_window_all_counts_the_whole_stream_per_window() -> None:
    env = StreamEnvironment(parallelism=3)
    counts: dict[int, int] = defaultdict(int)
    records = [("x", t % 50, 1) for t in range(200)]
    for _, t, _ in records:
        counts[t - t % 10] += 1
    (
        env.from_collection(records)
        .assign_timestamps_and_watermarks(strategy(60))
        .window_all(TumblingEventTimeWindows.of(10))
        .reduce(lambda a, b: (a[0], a[1], a[2] + b[2]), Labelled())
        .collect(name="all")
    )
    result = await env.execute("window all")
    assert sorted(result.collected["all"]) == sorted((0, s, n) for s, n in counts.items())


async def test_a_window_timestamp_that_is_not_a_number_names_the_window_and_record() -> None:
    env = StreamEnvironment(parallelism=1)
    (
        env.from_collection([("a", 1), ("b", "noon")])
        .key_by(lambda r: r[0])
        .window(TumblingEventTimeWindows.of(10), timestamp=lambda r: r[1])
        .reduce(lambda x, y: x, name="tumbling")
        .collect()
    )
    with pytest.raises(JobFailedError) as failure:
        await env.execute("bad window timestamps")
    message = str(failure.value.__cause__)
    assert "tumbling" in message and "noon" in message
    assert "the timestamp assigner returned str" in message


class Total(SinkFunction):
    """Shared by every subtask copy: sums counts, sets an event once ``n`` are in."""

    def __init__(self, n: int) -> None:
        self.total, self.n = 0, n
        self.reached = asyncio.Event()

    def __deepcopy__(self, memo: dict[int, Any]) -> Total:
        return self

    def invoke(self, value: Any) -> None:
        self.total += value[1]
        if self.total >= self.n:
            self.reached.set()


async def test_processing_time_windows_fire_on_the_clock() -> None:
    env = StreamEnvironment(parallelism=2)
    records = [(f"k{i % 3}", 1) for i in range(30)]
    gate = SourceGate(hold_at_end=True)  # the job stays up until every window fired
    total = Total(len(records))
    (
        env.from_source(GatedSource(CollectionSource(records), gate))
        .key_by(lambda r: r[0])
        .window(TumblingProcessingTimeWindows.of(0.05))
        .reduce(lambda a, b: (a[0], a[1] + b[1]))
        .sink_to(total, name="total")
    )
    client = await env.start("processing time")
    await total.reached.wait()
    gate.open()
    await client.wait()
    assert total.total == len(records)


class AsyncAlarm(KeyedProcessFunction):
    """An ``async def on_timer`` that awaits before it reads state and emits."""

    def open(self, ctx: Any) -> None:
        self.count = ctx.get_state(ValueStateDescriptor("count", default=0))

    def process_element(self, value: Any, ctx: Any) -> None:
        self.count.update(self.count.value() + 1)
        ctx.timer_service.register_event_time_timer(100)
        return None

    async def on_timer(self, timestamp: float, ctx: Any) -> list[Any]:
        await asyncio.sleep(0)
        return [(ctx.current_key, self.count.value())]


async def test_an_async_on_timer_is_awaited_with_its_key_set() -> None:
    env = StreamEnvironment(parallelism=2)
    records = [("a", 1), ("b", 2), ("a", 3), ("c", 4)]
    (
        env.from_collection(records)
        .assign_timestamps_and_watermarks(strategy(0))
        .key_by(lambda r: r[0])
        .process(AsyncAlarm())
        .collect(name="out")
    )
    result = await env.execute("async timers")
    assert sorted(result.collected["out"]) == [("a", 2), ("b", 1), ("c", 1)]


class AsyncProcessingAlarm(KeyedProcessFunction):
    """A processing-time timer in the past, and an ``async def on_timer``."""

    def process_element(self, value: Any, ctx: Any) -> None:
        timers = ctx.timer_service
        timers.register_processing_time_timer(timers.current_processing_time() - 1)
        return None

    async def on_timer(self, timestamp: float, ctx: Any) -> list[Any]:
        await asyncio.sleep(0)
        return [("processing", ctx.current_key)]


async def test_async_processing_time_timers_fire_while_the_task_is_idle() -> None:
    env = StreamEnvironment(parallelism=1)
    gate = SourceGate(hold_at_end=True)  # input stays open: the task idles, no buffer comes
    seen = Seen("processing", 2)
    (
        env.from_source(GatedSource(CollectionSource([("a", 1), ("b", 2)]), gate))
        .key_by(lambda r: r[0])
        .process(AsyncProcessingAlarm())
        .sink_to(seen, name="seen")
    )
    client = await env.start("async processing timers")
    await seen.reached.wait()
    gate.open()
    await client.wait()
    assert sorted(seen.records) == [("processing", "a"), ("processing", "b")]
