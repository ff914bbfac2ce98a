"""The kit's tagged records and ``TaggedSequenceSource``."""

from __future__ import annotations

from collections import Counter

import msgspec
import pytest

from runtime import ConfigError, StreamEnvironment
from runtime.testing import Tagged, TaggedSequenceSource, TaggedSplit, checksum
from runtime.testing.sources import TaggedSequenceReader
from runtime.testing.tagged import make_tagged


def test_a_tagged_record_checks_its_payload() -> None:
    record = make_tagged("s/0", 7, keys=4)
    assert record.intact
    assert record.payload == checksum("s/0", 7)
    assert 0 <= record.key < 4
    assert record.record_id == ("s/0", 7, 0)
    assert not msgspec.structs.replace(record, seq=8).intact
    assert not msgspec.structs.replace(record, split="s/1").intact
    # The job's own fields do not touch the identity or the checksum.
    assert record.with_value(3).intact and record.with_value(3).value == 3
    assert record.with_copy(2).record_id == ("s/0", 7, 2)


def test_tagged_records_survive_msgpack() -> None:
    record = make_tagged("a/1", 3, keys=8).with_value({"n": 1})
    decoded = msgspec.msgpack.decode(msgspec.msgpack.encode(record), type=Tagged)
    assert decoded == record and decoded.intact


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"splits": 0, "records_per_split": 1}, "splits must be an int >= 1"),
        ({"splits": 1, "records_per_split": -1}, "records_per_split must be an int >= 0"),
        ({"splits": 1, "records_per_split": 1, "keys": 0}, "keys must be an int >= 1"),
        ({"splits": 1, "records_per_split": 1, "name": ""}, "name must be a non-empty str"),
        (
            {"splits": 1, "records_per_split": 1, "records_per_second": 0},
            "records_per_second must be a number > 0",
        ),
    ],
)
def test_bad_arguments_are_config_errors(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        TaggedSequenceSource(**kwargs)  # type: ignore[arg-type]


def test_the_enumerator_deals_splits_round_robin() -> None:
    source = TaggedSequenceSource(5, 10, name="x")
    assignment = source.create_enumerator().assign_splits(2)
    assert [[s.split_id for s in splits] for splits in assignment] == [
        ["x/0", "x/2", "x/4"],
        ["x/1", "x/3"],
    ]
    # More subtasks than splits: some readers get none.
    assert [len(splits) for splits in source.create_enumerator().assign_splits(7)] == [
        1,
        1,
        1,
        1,
        1,
        0,
        0,
    ]


def read_all(reader: TaggedSequenceReader, batch: int) -> list[Tagged]:
    out: list[Tagged] = []
    while (records := reader.read(batch)) is not None:
        out.extend(records)
    return out


def test_a_reader_takes_turns_and_resumes_from_its_snapshot() -> None:
    source = TaggedSequenceSource(2, 10, keys=3)
    splits = source.create_enumerator().assign_splits(1)[0]
    reader = source.create_reader(0)
    reader.add_splits(splits)
    first = [reader.read(4), reader.read(4)]
    assert [[r.split for r in batch] for batch in first if batch] == [["s/0"] * 4, ["s/1"] * 4]
    position = reader.snapshot_state()
    assert position == [TaggedSplit("s/0", 4, 10), TaggedSplit("s/1", 4, 10)]
    rest = read_all(reader, 4)
    # A reader restored from the snapshot reads the same rest; positions may come back
    # decoded without their type (a mapping).
    restored = source.create_reader(0)
    restored.add_splits([msgspec.to_builtins(split) for split in position])
    assert read_all(restored, 4) == rest
    everything = [r for batch in first if batch for r in batch] + rest
    assert Counter(r.record_id for r in everything) == source.expected()
    assert all(r.intact for r in everything)


def test_expected_counts_every_record_per_copy() -> None:
    source = TaggedSequenceSource(2, 3, name="a")
    assert source.total_records == 6
    assert source.expected(copies=2) == Counter(
        {(f"a/{s}", q, c): 1 for s in range(2) for q in range(3) for c in range(2)}
    )


@pytest.mark.parametrize("p", [1, 2, 4])
async def test_a_job_reads_every_record_once_in_order_per_split(p: int) -> None:
    source = TaggedSequenceSource(5, 40, name="t")
    env = StreamEnvironment(parallelism=p, buffer_size=8)
    env.from_source(source, uid="t").collect(name="out")
    result = await env.execute("tagged")
    records: list[Tagged] = result.collected["out"]
    assert Counter(r.record_id for r in records) == source.expected()
    for split in source.split_ids:
        seqs = [r.seq for r in records if r.split == split]
        assert seqs == sorted(seqs)
