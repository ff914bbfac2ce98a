"""Sinks: collect, print, write_text, and sink_to with functions and SinkFunctions."""

from __future__ import annotations

import asyncio
import io
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import pytest

from runtime import PrintSink, RuntimeContext, SinkFunction, StreamEnvironment

each_parallelism = pytest.mark.parametrize("p", [1, 2, 4], ids=lambda p: f"p{p}")

N = 100


def ranges_of(start: int, end: int, p: int) -> list[range]:
    """The numbers each subtask of ``from_sequence(start, end)`` reads."""
    total = end + 1 - start
    return [range(start + total * i // p, start + total * (i + 1) // p) for i in range(p)]


def lines_of(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


# -- collect ----------------------------------------------------------------------------


@each_parallelism
async def test_two_collect_sinks_each_get_every_record(p: int) -> None:
    env = StreamEnvironment(parallelism=p)
    numbers = env.from_sequence(1, N)
    numbers.collect(name="all")
    numbers.map(lambda x: -x).collect(name="negated")

    result = await env.execute()

    assert sorted(result.collected["all"]) == list(range(1, N + 1))
    assert sorted(result.collected["negated"]) == sorted(-x for x in range(1, N + 1))
    assert result.records_in("all") == N


# -- print ------------------------------------------------------------------------------


async def test_print_without_parallelism_has_no_subtask_prefix(
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = StreamEnvironment()
    env.from_collection(["a", ("b", 1), 3]).print()

    await env.execute()

    assert capsys.readouterr().out == "a\n('b', 1)\n3\n"


@pytest.mark.parametrize("p", [2, 4], ids=lambda p: f"p{p}")
async def test_parallel_print_prefixes_each_line_with_its_subtask(
    p: int, capsys: pytest.CaptureFixture[str]
) -> None:
    env = StreamEnvironment(parallelism=p)
    env.from_sequence(1, 20).print("n=")

    await env.execute()

    lines = capsys.readouterr().out.splitlines()
    expected = [f"{i + 1}> n={x}" for i, r in enumerate(ranges_of(1, 20, p)) for x in r]
    assert Counter(lines) == Counter(expected)
    # Within a subtask, lines keep the order of its records.
    for i in range(p):
        mine = [line for line in lines if line.startswith(f"{i + 1}> ")]
        assert mine == [f"{i + 1}> n={x}" for x in ranges_of(1, 20, p)[i]]


@pytest.fixture
def text_file(tmp_path: Path) -> Iterator[TextIO]:
    """A file open for writing: a stream that cannot be deep-copied."""
    with open(tmp_path / "out.txt", "w", encoding="utf-8") as file:
        yield file


@pytest.mark.parametrize("p", [1, 2], ids=lambda p: f"p{p}")
async def test_print_sink_writes_to_the_stream_it_is_given(p: int, text_file: TextIO) -> None:
    """Every subtask writes to the one stream, be it copyable (StringIO) or not (a file)."""
    buffer = io.StringIO()
    env = StreamEnvironment(parallelism=p)
    numbers = env.from_sequence(1, 4)
    numbers.sink_to(PrintSink("> ", stream=buffer), name="to-buffer")
    numbers.sink_to(PrintSink("> ", stream=text_file), name="to-file")

    await env.execute()

    prefixes = [f"{i + 1}> " if p > 1 else "" for i in range(p)]
    expected = [f"{prefixes[i]}> {x}" for i, r in enumerate(ranges_of(1, 4, p)) for x in r]
    assert sorted(buffer.getvalue().splitlines()) == sorted(expected)
    text_file.flush()
    assert sorted(lines_of(Path(text_file.name))) == sorted(expected)


# -- write_text -------------------------------------------------------------------------


async def test_write_text_without_parallelism_writes_one_file(tmp_path: Path) -> None:
    target = tmp_path / "out" / "numbers.txt"
    env = StreamEnvironment()
    env.from_collection(range(N)).write_text(target, lambda x: f"#{x}")

    await env.execute()

    assert target.read_text(encoding="utf-8") == "".join(f"#{x}\n" for x in range(N))


@pytest.mark.parametrize("p", [2, 4], ids=lambda p: f"p{p}")
async def test_parallel_write_text_writes_a_part_file_per_subtask(p: int, tmp_path: Path) -> None:
    target = tmp_path / "out"
    env = StreamEnvironment(parallelism=p)
    env.from_sequence(1, N).write_text(target)

    await env.execute()

    assert sorted(f.name for f in target.iterdir()) == [f"part-{i}" for i in range(p)]
    for i, numbers in enumerate(ranges_of(1, N, p)):
        content = (target / f"part-{i}").read_text(encoding="utf-8")
        assert content == "".join(f"{x}\n" for x in numbers)


# -- sink_to ----------------------------------------------------------------------------


@each_parallelism
async def test_sink_to_a_plain_function(p: int) -> None:
    seen: list[int] = []
    env = StreamEnvironment(parallelism=p)
    env.from_sequence(1, N).sink_to(seen.append)

    await env.execute()

    assert sorted(seen) == list(range(1, N + 1))


@each_parallelism
async def test_sink_to_an_async_function(p: int) -> None:
    seen: list[int] = []

    async def write(value: int) -> None:
        await asyncio.sleep(0)
        seen.append(value)

    env = StreamEnvironment(parallelism=p)
    env.from_sequence(1, N).sink_to(write)

    await env.execute()

    assert sorted(seen) == list(range(1, N + 1))


class RecordingSink(SinkFunction[int]):
    """Logs lifecycle and records per subtask: ``invoke`` one by one."""

    def __init__(self, log: Any) -> None:
        self.log = log
        self.subtask: int | None = None

    def open(self, ctx: RuntimeContext) -> None:
        self.subtask = ctx.subtask_index
        self.log.append(("open", self.subtask))

    def invoke(self, value: int) -> None:
        assert self.subtask is not None
        self.log.append(("record", self.subtask, value))

    def close(self) -> None:
        self.log.append(("close", self.subtask))


class BatchRecordingSink(RecordingSink):
    """The same with ``write_batch`` (async): the runtime hands it whole buffers."""

    async def write_batch(self, values: list[int]) -> None:  # type: ignore[override]
        await asyncio.sleep(0)
        assert self.subtask is not None
        self.log.append(("batch", self.subtask, len(values)))
        for value in values:
            self.log.append(("record", self.subtask, value))


@each_parallelism
@pytest.mark.parametrize("sink_class", [RecordingSink, BatchRecordingSink])
async def test_sink_function(p: int, sink_class: type[RecordingSink], log: Any) -> None:
    env = StreamEnvironment(parallelism=p, buffer_size=8)
    env.from_sequence(1, N).sink_to(sink_class(log), name="out")

    result = await env.execute()

    assert result.records_in("out") == N
    for i, numbers in enumerate(ranges_of(1, N, p)):
        mine = [e for e in log.items if e[1] == i]
        assert mine[0] == ("open", i)
        assert mine[-1] == ("close", i)
        assert [e[2] for e in mine if e[0] == "record"] == list(numbers)
        batches = [e[2] for e in mine if e[0] == "batch"]
        if sink_class is BatchRecordingSink:
            assert sum(batches) == len(numbers)
            assert all(1 <= size <= 8 for size in batches)
        else:
            assert batches == []
