"""Per-split watermarks: the multiplexer against a reference model, the per-split
generator with a manual clock (idleness, finished splits), and the readers' split
reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.connectors.collection import CollectionReader, CollectionSplit
from runtime.connectors.file_formats import JsonLines
from runtime.connectors.file_reader import FileReader
from runtime.connectors.files import FileSource
from runtime.connectors.sequence import NumberSequenceSource, RangeSplit
from runtime.tasks.time_operators import TimestampsAndWatermarksOperator
from runtime.time.split_watermarks import SplitWatermarkGenerator, WatermarkOutputMultiplexer
from runtime.time.watermarks import (
    ACTIVE,
    IDLE,
    MIN_WATERMARK,
    WatermarkStatus,
    WatermarkStrategy,
)

SPLITS = ["a", "b", "c"]

# One step: register, unregister, a watermark or a status of a split.
steps = st.lists(
    st.one_of(
        st.tuples(st.just("register"), st.sampled_from(SPLITS)),
        st.tuples(st.just("unregister"), st.sampled_from(SPLITS)),
        st.tuples(st.just("watermark"), st.sampled_from(SPLITS), st.integers(-5, 60)),
        st.tuples(st.just("status"), st.sampled_from(SPLITS), st.booleans()),
    ),
    max_size=80,
)


@settings(max_examples=400)
@given(steps)
def test_multiplexer_matches_the_reference_model(script: list[tuple[Any, ...]]) -> None:
    """Output = the running maximum of the minimum over the active splits; idle exactly
    when every registered split is idle; events only on change, watermarks ascending."""
    mux = WatermarkOutputMultiplexer()
    model: dict[str, list[Any]] = {}  # split -> [watermark, idle]
    want_watermark = MIN_WATERMARK
    want_idle = False
    emitted: list[float] = []
    for step in script:
        kind, split = step[0], step[1]
        if kind == "register":
            out = mux.register(split)
            model.setdefault(split, [MIN_WATERMARK, False])
        elif kind == "unregister":
            out = mux.unregister(split)
            model.pop(split, None)
        elif kind == "watermark":
            out = mux.on_watermark(split, float(step[2]))
            if split in model:
                model[split][0] = max(model[split][0], float(step[2]))
        else:
            out = mux.on_status(split, step[2])
            if split in model:
                model[split][1] = step[2]
        if model:
            active = [w for w, idle in model.values() if not idle]
            was_idle = want_idle
            want_idle = not active
            if active:
                want_watermark = max(want_watermark, min(active))
            statuses = [e for e in out if e.__class__ is WatermarkStatus]
            if was_idle != want_idle:
                assert statuses == [IDLE if want_idle else ACTIVE]
            else:
                assert statuses == []
        else:
            assert out == []  # no split: nothing changes
        marks = [e for e in out if e.__class__ is not WatermarkStatus]
        assert len(marks) <= 1
        emitted.extend(marks)  # type: ignore[arg-type]
        assert mux.watermark == want_watermark
        assert mux.idle == want_idle
    assert emitted == sorted(set(emitted))  # strictly ascending: never back
    if emitted:
        assert emitted[-1] == want_watermark


class Clock:
    """A manual processing clock."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def generator(strategy: WatermarkStrategy, clock: Clock) -> SplitWatermarkGenerator:
    return SplitWatermarkGenerator.for_strategy(strategy, clock)


def feed(gen: SplitWatermarkGenerator, split: str, *timestamps: float) -> None:
    gen.select(split)
    gen.on_batch(list(timestamps))


def test_the_slow_split_holds_the_watermark() -> None:
    clock = Clock()
    gen = generator(WatermarkStrategy.for_bounded_out_of_orderness(2), clock)
    gen.split_added("fast")
    gen.split_added("slow")
    feed(gen, "fast", 100, 101)
    # The slow split has no record yet: it holds the subtask at MIN_WATERMARK.
    assert gen.on_periodic_emit(1.0) is None
    feed(gen, "slow", 10)
    assert gen.on_periodic_emit(2.0) == 8
    feed(gen, "fast", 300)
    feed(gen, "slow", 11)
    assert gen.on_periodic_emit(3.0) == 9
    # The slow split finished: the fast one alone sets the watermark.
    gen.split_finished("slow")
    assert gen.on_periodic_emit(4.0) == 298


def test_an_idle_split_is_excluded_after_the_timeout_and_counts_again() -> None:
    clock = Clock()
    strategy = WatermarkStrategy.for_monotonous_timestamps().with_idleness(5.0)
    gen = generator(strategy, clock)
    gen.split_added("a")
    gen.split_added("b")
    feed(gen, "a", 10)
    feed(gen, "b", 3)
    assert gen.on_periodic_emit(1.0) == 3
    # Only a has records from now on; b last had one at 1.0.
    feed(gen, "a", 20)
    assert gen.on_periodic_emit(5.9) is None  # b not idle yet (4.9 s)
    feed(gen, "a", 30)
    assert gen.on_periodic_emit(6.0) == 30  # b idle (5 s): a alone
    feed(gen, "a", 40)
    assert gen.on_periodic_emit(7.0) == 40
    # b has a record again: it counts again, holding the output (which never goes back).
    feed(gen, "b", 35)
    feed(gen, "a", 50)
    assert gen.on_periodic_emit(8.0) is None
    assert gen.multiplexer.watermark == 40
    feed(gen, "b", 45)
    feed(gen, "a", 60)
    assert gen.on_periodic_emit(9.0) == 45
    # Neither has records: both idle after the timeout, so the subtask is idle.
    assert gen.on_periodic_emit(13.9) is None
    assert gen.on_periodic_emit(14.0) == IDLE
    assert gen.on_periodic_emit(15.0) is None
    # A record makes it active again: the new watermark now (ChainTime sends ACTIVE
    # ahead of a watermark while idle), the status itself at the next poll.
    feed(gen, "a", 70)
    assert gen.on_periodic_emit(16.0) == 70
    assert gen.on_periodic_emit(17.0) == ACTIVE
    assert gen.on_periodic_emit(18.0) is None


def test_through_the_timestamps_operator() -> None:
    """The operator chained after a source feeds and polls the per-split generator."""
    clock = Clock()
    strategy = (
        WatermarkStrategy.for_bounded_out_of_orderness(0)
        .with_timestamp_assigner(lambda r: r)
        .with_emit_interval(0)
        .with_idleness(1.0)
    )
    op = TimestampsAndWatermarksOperator("t", "t", strategy)
    gen = generator(strategy, clock)
    op.generator = gen
    gen.split_added("x")
    gen.split_added("y")
    gen.select("x")
    op.process_batch([5, 6])
    gen.select("y")
    op.process_batch([1])
    assert op.poll_watermark(0.5) == 1
    gen.select("x")
    op.process_batch([9])
    assert op.poll_watermark(1.0) is None
    gen.select("x")
    op.process_batch([10])
    assert op.poll_watermark(1.6) == 10  # y idle since 0.5 + 1.0


def test_a_split_added_later_holds_the_watermark_from_then_on() -> None:
    clock = Clock()
    gen = generator(WatermarkStrategy.for_monotonous_timestamps(), clock)
    gen.split_added("a")
    feed(gen, "a", 50)
    assert gen.on_periodic_emit(1.0) == 50
    gen.split_added("b")  # a file discovered in continuous mode
    feed(gen, "a", 60)
    assert gen.on_periodic_emit(2.0) is None
    feed(gen, "b", 55)
    assert gen.on_periodic_emit(3.0) == 55


class Recorder:
    """A split listener that records what it is told."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def split_added(self, split_id: str) -> None:
        self.events.append(("added", split_id))

    def split_finished(self, split_id: str) -> None:
        self.events.append(("finished", split_id))


async def test_file_reader_tags_batches_and_reports_its_splits(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text("".join(f"{i}\n" for i in range(5)))
    (tmp_path / "b.jsonl").write_text("".join(f"{i}\n" for i in range(100, 103)))
    source = FileSource([tmp_path / "a.jsonl", tmp_path / "b.jsonl"], format=JsonLines())
    (splits,) = source.create_enumerator().assign_splits(1)
    reader = FileReader(source, 0)
    reader.add_splits(splits)
    recorder = Recorder()
    reader.set_split_listener(recorder)
    ids = [s.split_id for s in splits]
    assert recorder.events == []  # queued splits do not count until they are started
    tagged: list[tuple[str | None, list[Any]]] = []
    while (batch := await reader.read(2)) is not None:
        tagged.append((reader.current_split, batch))
    assert tagged == [(ids[0], [0, 1]), (ids[0], [2, 3]), (ids[0], [4]), (ids[1], [100, 101]),
                      (ids[1], [102])]  # fmt: skip
    assert recorder.events == [
        ("added", ids[0]),
        ("finished", ids[0]),
        ("added", ids[1]),
        ("finished", ids[1]),
    ]


def test_sequence_and_collection_readers_report_their_splits() -> None:
    reader = NumberSequenceSource(0, 9).create_reader(0)
    reader.add_splits([RangeSplit("r0", 0, 3), RangeSplit("r1", 10, 12)])
    recorder = Recorder()
    reader.set_split_listener(recorder)
    seen = []
    while (batch := reader.read(2)) is not None:
        seen.append((reader.current_split, batch))
    assert seen == [("r0", [0, 1]), ("r0", [2]), ("r1", [10, 11])]
    assert recorder.events == [
        ("added", "r0"),
        ("finished", "r0"),
        ("added", "r1"),
        ("finished", "r1"),
    ]
    collection = CollectionReader([1, 2, 3])
    collection.add_splits([CollectionSplit("collection-0")])
    recorder = Recorder()
    collection.set_split_listener(recorder)
    assert collection.read(5) == [1, 2, 3]
    assert collection.current_split == "collection-0"
    assert recorder.events == [("added", "collection-0")]
