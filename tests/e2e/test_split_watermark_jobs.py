"""Per-split watermarks in a job: one source subtask reads two files of very different
event times into an event-time tumbling window.

The reader reads its splits one after another: the whole "fast" file (timestamps
1000..1199) first, then the "slow" one (0..199). With one watermark generator for the
subtask, the watermark passes 1000 before the slow file's first record, so every slow
record is late; with per-split watermarks the slow file's split holds the watermark
until it is read, and no record is late. Both runs are deterministic: a watermark is
emitted after every buffer (``emit_interval=0``), in order with the records.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from runtime import StreamEnvironment
from runtime.connectors.file_formats import JsonLines
from runtime.connectors.files import FileSource
from runtime.time import OutputTag, WatermarkStrategy
from runtime.windows import ProcessWindowFunction, TumblingEventTimeWindows, WindowContext

SIZE = 100


class CountWindow(ProcessWindowFunction):
    def process(self, key: Any, context: WindowContext, elements: list[Any]) -> list[Any]:
        start, _ = context.window
        return [(int(start), len(elements))]


class WholeSubtaskSource:
    """``source`` with readers that do not report their splits: one generator."""

    def __init__(self, source: FileSource) -> None:
        self.source = source

    def create_enumerator(self) -> Any:
        return self.source.create_enumerator()

    def create_reader(self, subtask_index: int) -> Any:
        return _PlainReader(self.source.create_reader(subtask_index))


class _PlainReader:
    def __init__(self, reader: Any) -> None:
        self.reader = reader

    def add_splits(self, splits: Sequence[Any]) -> None:
        self.reader.add_splits(splits)

    async def read(self, max_records: int) -> list[Any] | None:
        batch: list[Any] | None = await self.reader.read(max_records)
        return batch

    def snapshot_state(self) -> list[Any]:
        return list(self.reader.snapshot_state())

    def close(self) -> None:
        self.reader.close()


def write(path: Path, timestamps: range) -> None:
    path.write_text("".join(json.dumps({"ts": t}) + "\n" for t in timestamps))


async def run(source: Any) -> tuple[list[Any], list[Any]]:
    env = StreamEnvironment(parallelism=1, buffer_size=16)
    strategy = (
        WatermarkStrategy.for_bounded_out_of_orderness(10)
        .with_timestamp_assigner(lambda e: e["ts"])
        .with_emit_interval(0)
    )
    late = OutputTag("late")
    windows = (
        env.from_source(source, watermark_strategy=strategy, uid="events")
        .key_by(lambda e: "all")
        .window(TumblingEventTimeWindows.of(SIZE))
        .side_output_late_data(late)
        .process(CountWindow())
    )
    windows.collect(name="windows")
    windows.get_side_output(late).collect(name="late")
    result = await env.execute("split watermarks")
    return sorted(result.collected["windows"]), result.collected["late"]


async def test_no_record_of_the_slow_split_is_late(tmp_path: Path) -> None:
    fast, slow = tmp_path / "fast.jsonl", tmp_path / "slow.jsonl"
    write(fast, range(1000, 1200))
    write(slow, range(0, 200))
    # One subtask reads both files (one split each), the fast one first.
    source = FileSource([fast, slow], format=JsonLines())
    windows, late = await run(source)
    assert late == []
    assert windows == [(0, 100), (100, 100), (1000, 100), (1100, 100)]

    # The same job with one generator for the subtask drops the whole slow file.
    windows, late = await run(WholeSubtaskSource(FileSource([fast, slow], format=JsonLines())))
    assert sorted(e["ts"] for e in late) == list(range(0, 200))
    assert windows == [(1000, 100), (1100, 100)]
