"""The watermark valve and the watermark generators, against reference models."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.errors import ConfigError
from runtime.time.valve import WatermarkValve
from runtime.time.watermarks import (
    ACTIVE,
    IDLE,
    MIN_WATERMARK,
    WatermarkStatus,
    WatermarkStrategy,
    check_timestamp,
)

# An event: (channel, watermark) or (channel, idle?).
events = st.lists(
    st.tuples(
        st.integers(0, 3),
        st.one_of(st.integers(-5, 50).map(float), st.booleans()),
    ),
    max_size=60,
)


@settings(max_examples=300)
@given(st.integers(1, 4), events)
def test_valve_is_monotone_consistent_and_live(
    channels: int, script: list[tuple[int, float | bool]]
) -> None:
    """Monotone output, each value some channel's watermark, status idle exactly when
    every channel is idle; and once every channel sends 100, the output is 100."""
    valve = WatermarkValve(channels)
    marks = [MIN_WATERMARK] * channels
    idle = [False] * channels
    emitted = MIN_WATERMARK
    status_idle = False

    def feed(channel: int, event: float | bool) -> None:
        nonlocal emitted, status_idle
        if isinstance(event, bool):
            outputs = valve.on_status(channel, WatermarkStatus(event))
            idle[channel] = event
        else:
            outputs = valve.on_watermark(channel, event)
            idle[channel] = False
            marks[channel] = max(marks[channel], event)
        for output in outputs:
            if isinstance(output, WatermarkStatus):
                assert output.idle != status_idle
                status_idle = output.idle
            else:
                assert output > emitted
                assert output in marks
                emitted = output
        assert status_idle == all(idle)
        assert valve.watermark == emitted

    for channel, event in script:
        feed(channel % channels, event)
    for channel in range(channels):
        feed(channel, 100.0)
    assert emitted == 100.0


@settings(max_examples=300)
@given(st.integers(1, 4), st.lists(st.tuples(st.integers(0, 3), st.integers(-5, 50)), max_size=60))
def test_valve_without_idleness_emits_the_minimum_over_all_channels(
    channels: int, script: list[tuple[int, int]]
) -> None:
    """Reference model: the output is min over channels of their highest watermark."""
    valve = WatermarkValve(channels)
    marks = [MIN_WATERMARK] * channels
    for channel, value in script:
        channel %= channels
        outputs = valve.on_watermark(channel, float(value))
        before = valve.watermark if not outputs else None
        marks[channel] = max(marks[channel], float(value))
        assert valve.watermark == min(marks)
        if before is not None:
            assert outputs == []
        else:
            assert outputs == [min(marks)]


def test_valve_waits_for_the_slowest_channel_and_skips_idle_ones() -> None:
    valve = WatermarkValve(2)
    assert valve.on_watermark(0, 10) == []
    assert valve.on_watermark(1, 5) == [5]
    assert valve.on_watermark(1, 20) == [10]
    assert valve.on_watermark(0, 15) == [15]
    assert valve.on_status(0, IDLE) == [20]  # channel 1 alone holds it now
    assert valve.on_status(1, IDLE) == [IDLE]
    assert valve.on_status(1, ACTIVE) == [ACTIVE]
    # Channel 0 becomes active behind the output: ignored until it catches up.
    assert valve.on_watermark(0, 16) == []
    assert valve.on_watermark(1, 30) == [30]
    assert valve.on_watermark(0, 40) == []  # channel 1 (30) now holds it
    assert valve.on_watermark(1, 50) == [40]


@settings(max_examples=200)
@given(
    st.lists(st.lists(st.integers(0, 1000), max_size=20), max_size=20),
    st.integers(0, 50),
)
def test_bounded_out_of_orderness_is_max_minus_delay(batches: list[list[int]], delay: int) -> None:
    strategy = WatermarkStrategy.for_bounded_out_of_orderness(delay).with_timestamp_assigner(
        lambda r: r
    )
    generator = strategy.create_generator(lambda: 0.0)
    seen: list[int] = []
    for batch in batches:
        generator.on_batch([float(t) for t in batch])
        seen.extend(batch)
        watermark = generator.on_periodic_emit(0.0)
        assert watermark == (max(seen) - delay if seen else -math.inf)
        # No record already seen within the bound is late.
        assert all(t >= watermark for t in seen if t >= max(seen) - delay)


def test_idleness_marks_a_quiet_subtask_idle_and_active_again() -> None:
    now = [0.0]
    generator = (
        WatermarkStrategy.for_monotonous_timestamps()
        .with_idleness(1.0)
        .create_generator(lambda: now[0])
    )
    generator.on_batch([5.0])
    assert generator.on_periodic_emit(0.1) == 5.0
    assert generator.on_periodic_emit(0.5) == 5.0
    assert generator.on_periodic_emit(1.2) == IDLE
    assert generator.on_periodic_emit(5.0) is None
    generator.on_batch([7.0])
    assert generator.on_periodic_emit(5.1) == ACTIVE
    assert generator.on_periodic_emit(5.2) == 7.0


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: WatermarkStrategy.for_bounded_out_of_orderness(-1), "must be >= 0"),
        (lambda: WatermarkStrategy.for_bounded_out_of_orderness("5"), "must be a number"),
        (lambda: WatermarkStrategy.for_monotonous_timestamps().with_idleness(0), "must be > 0"),
        (
            lambda: WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(3),
            "expected a function",
        ),
        (
            lambda: WatermarkStrategy.no_watermarks().with_emit_interval(math.nan),
            "must be a number",
        ),
    ],
)
def test_bad_strategies_are_config_errors(build: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build()  # type: ignore[operator]


@pytest.mark.parametrize("value", ["12", None, True, math.nan, [1]])
def test_timestamps_that_are_not_numbers_are_refused(value: object) -> None:
    with pytest.raises((TypeError, ValueError), match="timestamp assigner returned"):
        check_timestamp(value)
