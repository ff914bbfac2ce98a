"""``FileSource``: lines, JSON Lines and CSV; byte-range splits; restarts mid-file."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest

from runtime import FixedDelayRestart, JobFailedError, NoRestart, StreamEnvironment
from runtime.connectors.file_formats import Csv, JsonLines, TextLines
from runtime.connectors.file_reader import FileReader
from runtime.connectors.files import FileSource
from runtime.errors import ConfigError
from runtime.testing import FailureSchedule, InjectedFailure, failure_point
from tests.connectors.conftest import CollectingSink


class Event(msgspec.Struct):
    i: int
    key: str


def write_jsonl(path: Path, start: int, n: int) -> None:
    path.write_text(
        "".join(json.dumps({"i": i, "key": f"k{i % 3}"}) + "\n" for i in range(start, start + n))
    )


async def read_all(source: FileSource, parallelism: int = 1, max_records: int = 7) -> list[Any]:
    """Every reader to its end, directly (no job)."""
    assignment = source.create_enumerator().assign_splits(parallelism)
    out: list[Any] = []
    for index, splits in enumerate(assignment):
        reader = FileReader(source, index)
        reader.add_splits(splits)
        while (batch := await reader.read(max_records)) is not None:
            out.extend(batch)
    return out


@pytest.mark.parametrize("split_size", [None, 9, 37, 4096])
@pytest.mark.parametrize("chunk_size", [3, 64, 1 << 20])
async def test_every_line_once_whatever_the_splits_and_chunks(
    tmp_path: Path, split_size: int | None, chunk_size: int
) -> None:
    lines = [f"line {i}" + "x" * (i % 13) for i in range(300)]
    (tmp_path / "a.txt").write_text("\n".join(lines[:150]) + "\n")
    (tmp_path / "b.txt").write_text("\n".join(lines[150:]))  # no newline at the end
    source = FileSource(tmp_path, split_size=split_size, chunk_size=chunk_size)
    got = await read_all(source, parallelism=3)
    assert Counter(got) == Counter(lines)


async def test_json_lines_into_a_type(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "e.jsonl", 0, 50)
    got = await read_all(FileSource(tmp_path / "e.jsonl", format=JsonLines(Event)))
    assert got == [Event(i, f"k{i % 3}") for i in range(50)]


async def test_csv_with_a_header(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text('name,n\r\nada,1\r\n"b, c",2\r\n')
    got = await read_all(FileSource(tmp_path / "x.csv", format=Csv()))
    assert got == [{"name": "ada", "n": "1"}, {"name": "b, c", "n": "2"}]


async def test_a_malformed_line_names_file_line_and_offset(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"i": 1}\n{"i": 2}\n{"i": \n{"i": 4}\n')
    env = StreamEnvironment(parallelism=1)
    env.set_restart_strategy(NoRestart())
    env.from_source(FileSource(path, format=JsonLines())).collect()
    with pytest.raises(JobFailedError) as caught:
        await env.execute("bad file")
    cause = caught.value.__cause__
    assert cause is not None
    assert f"{path}: line 3, byte offset 18: not valid JSON" in str(cause)
    assert "(subtask 1)" in str(cause)


async def test_restarts_mid_file_exactly_once(tmp_path: Path) -> None:
    for j in range(3):
        write_jsonl(tmp_path / f"part-{j}.jsonl", j * 1000, 1000)
    schedule = FailureSchedule(
        [
            InjectedFailure("read", subtask=0, after_records=300),
            InjectedFailure("read", subtask=1, after_records=200),
        ]
    )
    env = StreamEnvironment(parallelism=2)
    env.enable_checkpointing(0.01)
    env.set_restart_strategy(FixedDelayRestart(attempts=3, delay=0))
    source = FileSource(tmp_path, format=JsonLines(Event), split_size=20_000, chunk_size=4096)
    source.records_per_second = 20_000  # type: ignore[attr-defined]
    committed: dict[str, list[Any]] = {}
    env.from_source(source, uid="files").map(failure_point(schedule, "read"), uid="read").sink_to(
        CollectingSink(committed, lambda e: e.i), uid="out"
    )
    result = await env.execute("files restart")
    assert result.restarts == len(schedule.fired) == 2
    assert Counter(CollectingSink.values(committed)) == Counter(range(3000))


async def test_continuous_mode_reads_new_files_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A clock that moves a minute per look: every read may list the directory.
    ticks = iter(range(0, 10**9, 60))
    monkeypatch.setattr("runtime.connectors.file_reader.monotonic", lambda: next(ticks))
    write_jsonl(tmp_path / "0.jsonl", 0, 10)
    source = FileSource(tmp_path, format=JsonLines(Event), monitor_interval=1.0)
    assignment = source.create_enumerator().assign_splits(2)
    readers = [FileReader(source, i) for i in range(2)]
    for reader, splits in zip(readers, assignment, strict=True):
        reader.add_splits(splits)

    async def drain() -> list[int]:
        out: list[int] = []
        for reader in readers:
            for _ in range(50):
                batch = await reader.read(100)
                assert batch is not None  # continuous: never ends
                out.extend(e.i for e in batch)
        return out

    first = await drain()
    write_jsonl(tmp_path / "1.jsonl", 10, 10)
    write_jsonl(tmp_path / "2.jsonl", 20, 10)
    second = await drain()
    # A restored reader (from the snapshot) does not read the files again.
    restored = FileReader(source, 0)
    restored.add_splits([s for r in readers for s in r.snapshot_state()])
    again = [await restored.read(100) for _ in range(5)]
    assert sorted(first) == list(range(10))
    assert sorted(second) == list(range(10, 30))
    assert again == [[]] * 5


def test_bad_options() -> None:
    with pytest.raises(ConfigError, match="split_size must be an int >= 1, got 0"):
        FileSource("x", split_size=0)
    with pytest.raises(ConfigError, match="read a file at a time; drop split_size"):
        FileSource("x", format=Csv(), split_size=10)
    with pytest.raises(ConfigError, match="format must be TextLines"):
        FileSource("x", format="csv")  # type: ignore[arg-type]
    assert isinstance(FileSource("x").format, TextLines)


async def test_a_missing_path_is_named(tmp_path: Path) -> None:
    env = StreamEnvironment(parallelism=1)
    env.set_restart_strategy(NoRestart())
    env.from_source(FileSource(tmp_path / "nope")).collect()
    with pytest.raises(JobFailedError) as caught:
        await env.execute("missing file")
    assert f"{tmp_path / 'nope'} does not exist" in str(caught.value.__cause__) + str(caught.value)
