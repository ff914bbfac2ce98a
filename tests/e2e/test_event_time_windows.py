"""Event-time windows under failures and rescaling (Flink's EventTimeWindowCheckpointingITCase).

A generated source emits, per key, the values ``0..T-1`` with timestamps equal to the
values (each source split owns its keys, so timestamps ascend per split and a bounded
out-of-orderness of 0 makes no record late). Tumbling or sliding windows sum each key's
values; a keyed validator after the windows checks every window result against the
oracle (``sum(range(start, min(end, T)))``) and that no window fires twice (its
record of fired windows is keyed state, checkpointed with the rest, so a window fired
again after a restore is a real duplicate), and at the end of input (an event-time
timer that only ``MAX_WATERMARK`` reaches) reports the windows missing per key.
Failures are injected after checkpoints completed; every checkpoint mode, both state
backends and parallelism 1 to 4 are covered, and a 3 -> 7 rescale through a savepoint.
The default runs are small (a few seconds in all); the ``stress`` marker adds 8 runs
(every mode on both backends), and ``WEIR_WINDOW_STRESS=full`` makes them all 64 of
modes x backends x parallelism 1-4 x tumbling/sliding.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import pytest

from runtime import (
    FixedDelayRestart,
    KeyedProcessFunction,
    SavepointFormat,
    StreamEnvironment,
    ValueStateDescriptor,
)
from runtime.connectors.sequence import GeneratorSource
from runtime.testing import CheckpointSetup, FailureSchedule, InjectedFailure, SourceGate
from runtime.testing.gates import GatedSource
from runtime.testing.injection import failure_point
from runtime.time import WatermarkStrategy
from runtime.windows import (
    ProcessWindowFunction,
    SlidingEventTimeWindows,
    TumblingEventTimeWindows,
    WindowContext,
)

SPLITS = 3
KEYS_PER_SPLIT = 4
T = 300  # timestamps (and values) per key
PER_SPLIT = KEYS_PER_SPLIT * T
END = 10 * T  # the validator's end-of-input timer: only MAX_WATERMARK reaches it


def record(i: int) -> tuple[str, int]:
    """Split ``j`` holds keys ``k{j*KPS}..``; each key's values ascend with time."""
    split, local = divmod(i, PER_SPLIT)
    return f"k{split * KEYS_PER_SPLIT + local % KEYS_PER_SPLIT}", local // KEYS_PER_SPLIT


def expected_windows(size: int, slide: int) -> dict[int, int]:
    """Window start -> the oracle's sum, for one key."""
    out = {}
    start = -(size - slide)
    while start < T:
        total = sum(range(max(start, 0), min(start + size, T)))
        out[start] = total
        start += slide
    return out


class WithWindow(ProcessWindowFunction):
    """(key, start, end, sum) from the pre-reduced value."""

    def process(self, key: Any, context: WindowContext, elements: list[Any]) -> list[Any]:
        (value,) = elements
        start, end = context.window
        return [(key, int(start), int(end), value[1])]


class Validator(KeyedProcessFunction):
    """Checks each window result, and at the end of input reports missing windows."""

    def __init__(self, size: int, slide: int, exact: bool) -> None:
        self.expected = expected_windows(size, slide)
        self.exact = exact

    def open(self, ctx: Any) -> None:
        self.fired = ctx.get_state(ValueStateDescriptor("fired"))

    def process_element(self, result: Any, ctx: Any) -> list[Any]:
        key, start, _end, total = result
        fired = dict(self.fired.value() or {})
        out = []
        if start in fired and self.exact:
            out.append(("error", key, start, "fired twice"))
        want = self.expected.get(start)
        if want is None or (self.exact and total != want):
            out.append(("error", key, start, f"sum {total}, expected {want}"))
        # At least once, a window may fire again after a restore with part of its
        # records (the restored state may already hold its first firing's purge, and
        # only the replayed records refill it): a partial duplicate, as in Flink. What
        # must hold is that one of its firings had every record (checked at the end).
        fired[start] = total if self.exact else max(total, fired.get(start, total))
        self.fired.update(fired)
        ctx.timer_service.register_event_time_timer(END)
        return out

    def on_timer(self, timestamp: float, ctx: Any) -> list[Any]:
        fired = self.fired.value() or {}
        missing = sorted(set(self.expected) - set(fired))
        out: list[Any] = [
            ("error", ctx.current_key, start, f"largest sum {total}, expected {want}")
            for start, total in sorted(fired.items())
            if (want := self.expected.get(start)) is not None and total < want
        ]
        out.append(("done", ctx.current_key, len(fired), tuple(missing)))
        return out


def build(
    env: StreamEnvironment,
    schedule: FailureSchedule,
    *,
    size: int,
    slide: int,
    exact: bool,
    source: Any = None,
) -> None:
    strategy = (
        WatermarkStrategy.for_bounded_out_of_orderness(0)
        .with_timestamp_assigner(lambda r: r[1])
        .with_emit_interval(0)
    )
    assigner = (
        TumblingEventTimeWindows.of(size)
        if size == slide
        else SlidingEventTimeWindows.of(size, slide)
    )
    source = source or GeneratorSource(record, SPLITS * PER_SPLIT, records_per_second=10_000)
    (
        env.from_source(source, uid="numbers", parallelism=SPLITS)
        .map(failure_point(schedule, "source"), name="fail", uid="fail", parallelism=SPLITS)
        .assign_timestamps_and_watermarks(strategy, uid="timestamps", parallelism=SPLITS)
        .key_by(lambda r: r[0])
        .window(assigner)
        .reduce(lambda a, b: (a[0], a[1] + b[1]), WithWindow(), name="sum", uid="sum")
        .key_by(lambda r: r[0])
        .process(Validator(size, slide, exact), name="validate", uid="validate")
        .collect(name="out")
    )


def check(collected: list[Any], size: int, slide: int) -> None:
    errors = [r for r in collected if r[0] == "error"]
    assert errors == []
    done = {r[1]: r for r in collected if r[0] == "done"}
    keys = {f"k{i}" for i in range(SPLITS * KEYS_PER_SPLIT)}
    assert set(done) == keys
    windows = len(expected_windows(size, slide))
    for key, (_, _, count, missing) in done.items():
        assert missing == (), f"{key}: windows missing {missing}"
        assert count == windows


async def run_case(
    setup: CheckpointSetup,
    backend: str,
    parallelism: int,
    size: int,
    slide: int,
    failures: list[InjectedFailure],
    tmp_path: Path,
) -> None:
    schedule = FailureSchedule(failures)
    changelog = backend.endswith("+changelog")
    backend = backend.removesuffix("+changelog")
    env = StreamEnvironment(
        changelog=changelog,
        parallelism=parallelism,
        max_parallelism=32,
        state_backend=backend,
        state_dir=str(tmp_path / "state") if backend == "rocksdb" else None,
    )
    storage = f"file://{tmp_path / 'chk'}" if changelog else None
    env.enable_checkpointing(
        0.02 if backend == "heap" else 0.05, **setup.options(), storage=storage
    )
    env.set_restart_strategy(FixedDelayRestart(attempts=5, delay=0.0))
    build(env, schedule, size=size, slide=slide, exact=setup.exactly_once)
    result = await env.execute(f"windows {setup.value} {backend} p={parallelism}")
    # The first failure has no checkpoint condition: it always fires. The second waits
    # for a completed checkpoint, which a loaded machine may not reach before its record
    # count: then it does not fire, and the run checks one failure less.
    fired = [f.failure for f in schedule.fired]
    assert failures[0] in fired
    assert set(fired) <= set(failures)
    check(result.collected["out"], size, slide)


# The first fails attempt 0 after 300 records of subtask 0, whatever the checkpoints did;
# the second fails a later attempt after 600 records of subtask 1 if checkpoint 1 has
# completed by then (nearly always; not on a heavily loaded machine).
FAILURES = [
    InjectedFailure("source", subtask=0, after_records=300),
    InjectedFailure("source", subtask=1, after_records=600, checkpoint=1),
]

QUICK = [
    (CheckpointSetup.ALIGNED, "heap", 2, 10, 10),
    (CheckpointSetup.UNALIGNED, "heap", 3, 10, 5),
    (CheckpointSetup.ALIGNED_TIMEOUT, "heap", 4, 10, 10),
    (CheckpointSetup.AT_LEAST_ONCE, "heap", 1, 10, 10),
    (CheckpointSetup.UNALIGNED, "rocksdb", 2, 10, 10),
    (CheckpointSetup.ALIGNED, "heap+changelog", 2, 10, 5),
]


@pytest.mark.parametrize(("setup", "backend", "parallelism", "size", "slide"), QUICK)
async def test_windows_survive_failures(
    setup: CheckpointSetup, backend: str, parallelism: int, size: int, slide: int, tmp_path: Path
) -> None:
    await run_case(setup, backend, parallelism, size, slide, FAILURES, tmp_path)


FULL_MATRIX = list(
    itertools.product(list(CheckpointSetup), ["heap", "rocksdb"], [1, 2, 3, 4], [(10, 10), (10, 5)])
)
# CI runs the stress marker at a bounded size: every mode on both backends, parallelism
# and window kind cycling (8 runs); WEIR_WINDOW_STRESS=full runs all 64 combinations.
BOUNDED_MATRIX = [
    (setup, backend, 1 + (i % 4), [(10, 10), (10, 5)][i % 2])
    for i, (setup, backend) in enumerate(
        itertools.product(list(CheckpointSetup), ["heap", "rocksdb"])
    )
]


@pytest.mark.stress
@pytest.mark.parametrize(
    ("setup", "backend", "parallelism", "windows"),
    FULL_MATRIX if os.environ.get("WEIR_WINDOW_STRESS") == "full" else BOUNDED_MATRIX,
)
async def test_windows_survive_failures_full_matrix(
    setup: CheckpointSetup,
    backend: str,
    parallelism: int,
    windows: tuple[int, int],
    tmp_path: Path,
) -> None:
    size, slide = windows
    await run_case(setup, backend, parallelism, size, slide, FAILURES, tmp_path)


@pytest.mark.parametrize(
    ("backend", "then", "format"),
    [
        ("heap", "heap", SavepointFormat.CANONICAL),
        ("rocksdb", "rocksdb", SavepointFormat.NATIVE),
        ("heap", "rocksdb", SavepointFormat.CANONICAL),  # a change of backend
    ],
)
async def test_windows_rescale_3_to_7_through_a_savepoint(
    backend: str, then: str, format: SavepointFormat, tmp_path: Path
) -> None:
    """Half the input at parallelism 3, a savepoint, the rest at parallelism 7."""
    gate = SourceGate(hold_after=SPLITS * PER_SPLIT // 2)
    env = StreamEnvironment(
        parallelism=3, max_parallelism=32, state_backend=backend, state_dir=str(tmp_path / "s1")
    )
    env.enable_checkpointing(
        0.05, **CheckpointSetup.ALIGNED.options(), storage=f"file://{tmp_path / 'chk'}"
    )
    source = GatedSource(GeneratorSource(record, SPLITS * PER_SPLIT), gate)
    build(env, FailureSchedule([]), size=10, slide=5, exact=True, source=source)
    client = await env.start("part one")
    await gate.wait_held(readers=SPLITS)
    path = await client.stop_with_savepoint(str(tmp_path / "savepoints"), format=format)
    first = await client.wait()
    assert [r for r in first.collected["out"] if r[0] == "error"] == []

    again = StreamEnvironment(
        parallelism=7, max_parallelism=32, state_backend=then, state_dir=str(tmp_path / "s2")
    )
    again.enable_checkpointing(0.05, **CheckpointSetup.UNALIGNED.options())
    build(
        again,
        FailureSchedule([]),
        size=10,
        slide=5,
        exact=True,
        source=GeneratorSource(record, SPLITS * PER_SPLIT),
    )
    second = await again.execute("part two", restore_from=path)
    check(second.collected["out"], 10, 5)
