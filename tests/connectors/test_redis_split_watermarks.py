"""Per-split watermarks of ``RedisStreamSource`` (one split per stream) against a real Redis.

One ``XREAD`` fetches both streams; the reader hands out the "fast" stream's entries
(timestamps 1000..1199) before the "slow" one's (0..199). With per-split watermarks no
slow entry is late in an event-time window; with one generator for the subtask every
slow entry is (deterministic: a watermark after every buffer, in order with the
records).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import pytest

from runtime import StreamEnvironment
from runtime.connectors.redis_stream_reader import RedisStreamReader
from runtime.connectors.redis_streams import RedisStreamSource
from runtime.testing.servers import RedisServer
from runtime.time import OutputTag, WatermarkStrategy
from runtime.windows import ProcessWindowFunction, TumblingEventTimeWindows, WindowContext


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Any:
    import redis

    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


def fill(client: Any) -> list[str]:
    """Two streams: fast (ts 1000..1199) and slow (ts 0..199), in that order."""
    tag = uuid.uuid4().hex[:8]
    names = [f"fast-{tag}", f"slow-{tag}"]
    pipe = client.pipeline(transaction=False)
    for name, first in zip(names, (1000, 0), strict=True):
        for ts in range(first, first + 200):
            pipe.xadd(name, {"ts": str(ts)})
    pipe.execute()
    return names


class CountWindow(ProcessWindowFunction):
    def process(self, key: Any, context: WindowContext, elements: list[Any]) -> list[Any]:
        start, _ = context.window
        return [(int(start), len(elements))]


class WholeSubtaskSource:
    """``source`` with readers that do not report their streams: one generator."""

    def __init__(self, source: RedisStreamSource) -> None:
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


async def run(source: Any) -> tuple[list[Any], list[Any]]:
    env = StreamEnvironment(parallelism=1, buffer_size=16)
    strategy = (
        WatermarkStrategy.for_bounded_out_of_orderness(10)
        .with_timestamp_assigner(lambda e: int(e.fields["ts"]))
        .with_emit_interval(0)
        .with_idleness(60.0)
    )
    late = OutputTag("late")
    windows = (
        env.from_source(source, watermark_strategy=strategy, uid="redis")
        .key_by(lambda e: "all")
        .window(TumblingEventTimeWindows.of(100))
        .side_output_late_data(late)
        .process(CountWindow())
    )
    windows.collect(name="windows")
    windows.get_side_output(late).collect(name="late")
    result = await env.execute("redis split watermarks")
    return sorted(result.collected["windows"]), result.collected["late"]


async def test_no_entry_of_the_slow_stream_is_late(
    redis_server: RedisServer, redis_client: Any
) -> None:
    names = fill(redis_client)
    windows, late = await run(RedisStreamSource(redis_server.url, names, until="now"))
    assert late == []
    assert windows == [(0, 100), (100, 100), (1000, 100), (1100, 100)]

    plain = WholeSubtaskSource(RedisStreamSource(redis_server.url, names, until="now"))
    windows, late = await run(plain)
    assert sorted(int(e.fields["ts"]) for e in late) == list(range(200))
    assert windows == [(1000, 100), (1100, 100)]


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def split_added(self, split_id: str) -> None:
        self.events.append(("added", split_id))

    def split_finished(self, split_id: str) -> None:
        self.events.append(("finished", split_id))


async def test_reader_reports_a_stream_finished_after_its_last_entry_was_handed_out(
    redis_server: RedisServer, redis_client: Any
) -> None:
    fast, slow = fill(redis_client)
    source = RedisStreamSource(redis_server.url, [fast, slow], until="now")
    (splits,) = source.create_enumerator().assign_splits(1)
    reader = RedisStreamReader(source, 0)
    reader.add_splits(splits)
    recorder = Recorder()
    reader.set_split_listener(recorder)
    assert recorder.events == [("added", fast), ("added", slow)]
    seen: list[tuple[str | None, int, list[tuple[str, str]]]] = []
    try:
        while (batch := await reader.read(150)) is not None:
            seen.append((reader.current_split, len(batch), list(recorder.events[2:])))
    finally:
        reader.close()
    # Both streams came in one fetch; each is reported finished only once its last
    # entry was handed out (at the read after it).
    assert [(split, n) for split, n, _ in seen] == [
        (fast, 150),
        (fast, 50),
        (slow, 150),
        (slow, 50),
    ]
    assert seen[1][2] == []
    assert seen[2][2] == [("finished", fast)]
    assert recorder.events[2:] == [("finished", fast), ("finished", slow)]
