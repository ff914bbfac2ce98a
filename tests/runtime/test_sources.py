"""Sources: from_collection, from_sequence, generate, and from_source with a custom Source.

The custom ``ShardSource`` implements the protocol of ``runtime.tasks.source``: its
input is a set of named shards (lists of lines), each shard is a split with an offset,
the enumerator deals the splits round robin over the reader subtasks, and a reader's
``snapshot_state`` reports every split with the offset of its next line.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from typing import Any

import msgspec
import pytest

from runtime import (
    CollectionSource,
    NumberSequenceSource,
    RangeSplit,
    Source,
    SourceReader,
    SplitEnumerator,
    StreamEnvironment,
)

each_parallelism = pytest.mark.parametrize("p", [1, 2, 4], ids=lambda p: f"p{p}")


def expected_ranges(start: int, end: int, p: int) -> list[range]:
    """How ``from_sequence(start, end)`` splits its numbers: contiguous, in subtask order."""
    total = end + 1 - start
    return [range(start + total * i // p, start + total * (i + 1) // p) for i in range(p)]


# -- from_collection --------------------------------------------------------------------


async def test_from_collection_keeps_order() -> None:
    items = [f"item-{i}" for i in range(1000)] + [None, 3.5, ("a", 1)]
    env = StreamEnvironment(buffer_size=7)
    env.from_collection(items).collect()

    result = await env.execute()

    assert result.collected["collect"] == items
    assert result.records_out("collection") == len(items)


@each_parallelism
async def test_from_collection_is_one_subtask_feeding_p(p: int) -> None:
    env = StreamEnvironment(parallelism=p)
    env.from_collection(x for x in range(500)).map(lambda x: x).collect()

    result = await env.execute()

    assert result.operators["collection"].parallelism == 1
    assert result.operators["map"].parallelism == p
    assert Counter(result.collected["collect"]) == Counter(range(500))


async def test_from_collection_of_nothing() -> None:
    env = StreamEnvironment()
    env.from_collection([]).collect()

    result = await env.execute()

    assert result.collected.get("collect", []) == []


def test_collection_reader_snapshots_the_next_index() -> None:
    source = CollectionSource(["a", "b", "c", "d", "e"])
    (splits,) = source.create_enumerator().assign_splits(1)
    reader = source.create_reader(0)
    reader.add_splits(splits)

    assert reader.read(2) == ["a", "b"]
    assert [s.next_index for s in reader.snapshot_state()] == [2]
    assert reader.read(10) == ["c", "d", "e"]
    assert [s.next_index for s in reader.snapshot_state()] == [5]
    assert reader.read(10) is None


def test_collection_reader_resumes_from_a_snapshot() -> None:
    source = CollectionSource(range(10))
    (splits,) = source.create_enumerator().assign_splits(1)
    first = source.create_reader(0)
    first.add_splits(splits)
    first.read(4)

    second = source.create_reader(0)
    second.add_splits(first.snapshot_state())

    assert second.read(100) == [4, 5, 6, 7, 8, 9]
    # The snapshot was a copy: reading on does not move the first reader.
    assert first.read(100) == [4, 5, 6, 7, 8, 9]


# -- from_sequence ----------------------------------------------------------------------


@each_parallelism
@pytest.mark.parametrize(("start", "end"), [(1, 1000), (-7, 7), (5, 5), (0, 2)])
async def test_from_sequence_emits_each_number_once_split_over_subtasks(
    p: int, start: int, end: int
) -> None:
    env = StreamEnvironment(parallelism=p, buffer_size=16)
    env.from_sequence(start, end).collect()

    result = await env.execute()

    # Source and sink are chained, subtask i reads the i-th contiguous range, and
    # collected lists come subtask by subtask: the numbers come out in order.
    assert result.collected["collect"] == list(range(start, end + 1))
    ranges = expected_ranges(start, end, p)
    assert result.operators["sequence"].subtasks == [(0, len(r)) for r in ranges]


def test_sequence_splits_cover_the_range_and_report_positions() -> None:
    source = NumberSequenceSource(10, 29)
    assignment = source.create_enumerator().assign_splits(3)

    assert [[(s.next, s.end) for s in splits] for splits in assignment] == [
        [(10, 16)],
        [(16, 23)],
        [(23, 30)],
    ]
    reader = source.create_reader(1)
    reader.add_splits(assignment[1])
    assert reader.read(4) == [16, 17, 18, 19]
    assert reader.snapshot_state() == [RangeSplit("range-1", 20, 23)]
    assert reader.read(4) == [20, 21, 22]
    assert reader.read(4) is None


# -- generate ---------------------------------------------------------------------------


@each_parallelism
async def test_generate(p: int) -> None:
    env = StreamEnvironment(parallelism=p)
    env.generate(lambda i: f"record-{i}", 1234).collect()

    result = await env.execute()

    assert Counter(result.collected["collect"]) == Counter(f"record-{i}" for i in range(1234))
    assert result.records_out("generator") == 1234


@each_parallelism
async def test_generate_nothing(p: int) -> None:
    env = StreamEnvironment(parallelism=p)
    env.generate(lambda i: i, 0).collect()

    result = await env.execute()

    assert result.collected.get("collect", []) == []


@each_parallelism
async def test_generate_with_a_rate_limit_finishes_with_every_record(p: int) -> None:
    env = StreamEnvironment(parallelism=p)
    env.generate(lambda i: i, 60, records_per_second=3000).collect()

    result = await env.execute()

    assert sorted(result.collected["collect"]) == list(range(60))


# -- from_source: a custom Source -------------------------------------------------------


class Shard(msgspec.Struct):
    """A split: one shard of the input and the offset of its next line."""

    split_id: str
    offset: int = 0


class ShardEnumerator:
    def __init__(self, names: list[str]) -> None:
        self.names = names

    def assign_splits(self, parallelism: int) -> list[list[Any]]:
        assignment: list[list[Any]] = [[] for _ in range(parallelism)]
        for i, name in enumerate(self.names):
            assignment[i % parallelism].append(Shard(name))
        return assignment


class ShardReader:
    """Reads its shards one after the other; optionally async, and not ready at first."""

    def __init__(self, source: ShardSource, subtask: int) -> None:
        self.source = source
        self.subtask = subtask
        self.splits: list[Shard] = []
        self.not_ready_once = source.not_ready_once

    def add_splits(self, splits: Sequence[Any]) -> None:
        self.source.log.append(("add_splits", self.subtask, [s.split_id for s in splits]))
        self.splits.extend(msgspec.structs.replace(s) for s in splits)

    def read_now(self, max_records: int) -> list[Any] | None:
        if self.not_ready_once:
            self.not_ready_once = False
            return []
        for split in self.splits:
            lines = self.source.shards[split.split_id]
            if split.offset < len(lines):
                batch = lines[split.offset : split.offset + max_records]
                split.offset += len(batch)
                return batch
        return None

    def read(self, max_records: int) -> Any:
        if self.source.asynchronous:
            return self._read_async(max_records)
        return self.read_now(max_records)

    async def _read_async(self, max_records: int) -> list[Any] | None:
        await asyncio.sleep(0)
        return self.read_now(max_records)

    def snapshot_state(self) -> list[Any]:
        return [msgspec.structs.replace(s) for s in self.splits]

    def close(self) -> None:
        self.source.log.append(("close", self.subtask, self.snapshot_state()))


class ShardSource:
    def __init__(
        self,
        shards: dict[str, list[str]],
        log: Any,
        *,
        asynchronous: bool = False,
        not_ready_once: bool = False,
        max_source_parallelism: int | None = None,
    ) -> None:
        self.shards = shards
        self.log = log
        self.asynchronous = asynchronous
        self.not_ready_once = not_ready_once
        if max_source_parallelism is not None:
            self.max_source_parallelism = max_source_parallelism

    def create_enumerator(self) -> ShardEnumerator:
        return ShardEnumerator(sorted(self.shards))

    def create_reader(self, subtask_index: int) -> ShardReader:
        self.log.append(("create_reader", subtask_index))
        return ShardReader(self, subtask_index)


SHARDS = {f"shard-{n}": [f"shard-{n}:{i}" for i in range(n * 37)] for n in range(7)}
ALL_LINES = [line for lines in SHARDS.values() for line in lines]


def test_the_custom_source_implements_the_protocol(log: Any) -> None:
    source = ShardSource(SHARDS, log)
    assert isinstance(source, Source)
    assert isinstance(source.create_enumerator(), SplitEnumerator)
    assert isinstance(source.create_reader(0), SourceReader)


def test_shard_reader_snapshot_reports_each_split_position(log: Any) -> None:
    source = ShardSource({"a": ["a0", "a1", "a2"], "b": ["b0", "b1"]}, log)
    reader = source.create_reader(0)
    reader.add_splits([Shard("a"), Shard("b")])

    assert reader.read(2) == ["a0", "a1"]
    assert reader.snapshot_state() == [Shard("a", 2), Shard("b", 0)]
    assert reader.read(2) == ["a2"]
    assert reader.read(2) == ["b0", "b1"]
    assert reader.snapshot_state() == [Shard("a", 3), Shard("b", 2)]
    assert reader.read(2) is None


@each_parallelism
@pytest.mark.parametrize(
    ("asynchronous", "not_ready_once"),
    [(False, False), (True, False), (True, True)],
    ids=["sync", "async", "async-not-ready-at-first"],
)
async def test_from_source_with_a_custom_source(
    p: int, asynchronous: bool, not_ready_once: bool, log: Any
) -> None:
    source = ShardSource(SHARDS, log, asynchronous=asynchronous, not_ready_once=not_ready_once)
    env = StreamEnvironment(parallelism=p, buffer_size=10)
    env.from_source(source, name="shards", uid="shards").map(str.upper).collect()

    result = await env.execute()

    assert Counter(result.collected["collect"]) == Counter(line.upper() for line in ALL_LINES)
    assert result.operators["shards"].parallelism == p
    # One reader per subtask, given the enumerator's splits, closed once at its end
    # with every split read to its last line.
    names = sorted(SHARDS)
    assert [e for e in log.items if e[0] == "create_reader"] == [
        ("create_reader", i) for i in range(p)
    ]
    assert sorted(e for e in log.items if e[0] == "add_splits") == [
        ("add_splits", i, names[i::p]) for i in range(p)
    ]
    closes = sorted((e for e in log.items if e[0] == "close"), key=lambda e: e[1])
    assert closes == [
        ("close", i, [Shard(n, len(SHARDS[n])) for n in names[i::p]]) for i in range(p)
    ]


async def test_from_source_respects_max_source_parallelism(log: Any) -> None:
    env = StreamEnvironment(parallelism=4)
    env.from_source(ShardSource(SHARDS, log, max_source_parallelism=2)).collect()

    result = await env.execute()

    assert result.operators["source"].parallelism == 2
    assert result.operators["collect"].parallelism == 4
    assert Counter(result.collected["collect"]) == Counter(ALL_LINES)
