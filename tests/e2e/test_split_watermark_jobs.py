"""Per-split watermarks in a job over files: a FileSource subtask reads its files one
after another, and a file counts for the watermark from when it is started (Flink's
one-split-at-a-time reader). Deterministic: a watermark is emitted after every buffer
(``emit_interval=0``), in order with the records, and channels are small. (Splits read
side by side, where per-split watermarks keep a slow split's records from being late,
are covered with Redis Streams in ``tests/connectors/test_redis_split_watermarks.py``.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from runtime import StreamEnvironment
from runtime.connectors.file_formats import JsonLines
from runtime.connectors.files import FileSource
from runtime.time import OutputTag, WatermarkStrategy
from runtime.windows import ProcessWindowFunction, TumblingEventTimeWindows, WindowContext

SIZE = 100


def write(path: Path, timestamps: range) -> None:
    path.write_text("".join(json.dumps({"ts": t}) + "\n" for t in timestamps))


async def test_a_queued_file_does_not_hold_the_watermark(tmp_path: Path) -> None:
    """As in Flink (a file reader is handed one split at a time): a file the subtask has
    not started does not hold its watermark back, so a backfill over many files fires
    its windows as it reads instead of holding every window until its last file.

    The window function notes the newest timestamp the source had read when the first
    window fired: with bounded channels (2 buffers of 16) the source runs at most a few
    dozen records ahead of the window, so that is still the early file (0..1999), not
    the late one (5000..5199), which a queued split holding the watermark would need.
    """
    early, late_file = tmp_path / "early.jsonl", tmp_path / "late.jsonl"
    write(early, range(0, 2000))
    write(late_file, range(5000, 5200))
    read: list[int] = []
    fired_at: list[int] = []

    class NoteProgress(ProcessWindowFunction):
        def process(self, key: Any, context: WindowContext, elements: list[Any]) -> list[Any]:
            fired_at.append(max(read))
            return [(int(context.window[0]), len(elements))]

    def note(event: Any) -> Any:
        read.append(event["ts"])
        return event

    env = StreamEnvironment(parallelism=1, buffer_size=16, channel_capacity=2)
    strategy = (
        WatermarkStrategy.for_bounded_out_of_orderness(10)
        .with_timestamp_assigner(lambda e: e["ts"])
        .with_emit_interval(0)
    )
    late = OutputTag("late")
    windows = (
        env.from_source(
            FileSource([early, late_file], format=JsonLines()),
            watermark_strategy=strategy,
            uid="events",
        )
        .map(note, name="note")
        .key_by(lambda e: "all")
        .window(TumblingEventTimeWindows.of(SIZE), timestamp=lambda e: e["ts"])
        .side_output_late_data(late)
        .process(NoteProgress())
    )
    windows.collect(name="windows")
    windows.get_side_output(late).collect(name="late")
    result = await env.execute("split watermarks")
    assert result.collected["late"] == []
    assert len(result.collected["windows"]) == 22  # 20 early windows, 2 late ones
    assert fired_at[0] < 2000, f"the first window waited for the late file ({fired_at[0]})"
