"""Window assigners and session merging against brute-force reference models."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.errors import ConfigError
from runtime.windows import (
    EventTimeSessionWindows,
    SlidingEventTimeWindows,
    TumblingEventTimeWindows,
    TumblingProcessingTimeWindows,
)
from runtime.windows.assigners import TimeWindow, merge_windows

sizes = st.integers(1, 50)


@settings(max_examples=300)
@given(sizes, st.data(), st.integers(-1000, 1000))
def test_tumbling_assigns_the_one_window_holding_the_timestamp(
    size: int, data: st.DataObject, timestamp: int
) -> None:
    offset = data.draw(st.integers(-size + 1, size - 1))
    (window,) = TumblingEventTimeWindows.of(size, offset).assign(timestamp)
    # Reference: windows are [offset + k*size, offset + (k+1)*size) for integer k.
    assert window.start <= timestamp < window.end
    assert window.end - window.start == size
    assert (window.start - offset) % size == 0


@settings(max_examples=300)
@given(st.integers(1, 12), st.integers(1, 12), st.data(), st.integers(-500, 500))
def test_sliding_assigns_exactly_the_windows_holding_the_timestamp(
    slides: int, slide: int, data: st.DataObject, timestamp: int
) -> None:
    size = slide * slides + data.draw(st.integers(0, slide - 1))
    offset = data.draw(st.integers(-slide + 1, slide - 1))
    windows = SlidingEventTimeWindows.of(size, slide, offset).assign(timestamp)
    # Reference: every start s = offset + k*slide with s <= t < s + size.
    reference = {
        (s, s + size)
        for s in range(timestamp - size - 2 * slide, timestamp + 1)
        if (s - offset) % slide == 0 and s <= timestamp < s + size
    }
    assert {(w.start, w.end) for w in windows} == reference
    assert len(windows) == len(reference)


@settings(max_examples=300)
@given(st.lists(st.integers(0, 200), min_size=1, max_size=40), st.integers(1, 20))
def test_session_merging_matches_interval_union(timestamps: list[int], gap: int) -> None:
    """Merging one record at a time gives the union of ``[t, t+gap)`` (touching merge)."""
    assigner = EventTimeSessionWindows.with_gap(gap)
    sessions: list[TimeWindow] = []
    for t in timestamps:
        (new,) = assigner.assign(t)
        merged, absorbed = merge_windows(sessions, new)
        sessions = [w for w in sessions if w not in absorbed] + [merged]
    # Reference: sort the intervals and sweep.
    reference: list[list[int]] = []
    for t in sorted(timestamps):
        if reference and t <= reference[-1][1]:
            reference[-1][1] = max(reference[-1][1], t + gap)
        else:
            reference.append([t, t + gap])
    assert sorted((w.start, w.end) for w in sessions) == [tuple(r) for r in reference]


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: TumblingEventTimeWindows.of(0), "size must be > 0"),
        (lambda: TumblingEventTimeWindows.of(-5), "size must be > 0"),
        (lambda: TumblingEventTimeWindows.of(10, 10), "offset 10 must be smaller"),
        (lambda: TumblingProcessingTimeWindows.of(10, -12), "must be smaller"),
        (lambda: SlidingEventTimeWindows.of(10, 0), "slide must be > 0"),
        (lambda: SlidingEventTimeWindows.of(10, 5, 5), "must be smaller"),
        (lambda: EventTimeSessionWindows.with_gap(-1), "gap must be > 0"),
        (lambda: EventTimeSessionWindows.with_gap("1"), "gap must be a number"),
    ],
)
def test_bad_windows_are_config_errors(build: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build()  # type: ignore[operator]
