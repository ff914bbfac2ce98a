"""``RedisStreamSink`` and ``RedisSetSink`` against a real Redis, with failures."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import pytest

from runtime import FixedDelayRestart, JobFailedError, NoRestart, StreamEnvironment
from runtime.connectors.redis_sink import RedisSetSink, RedisStreamSink
from runtime.testing import FailingSink, FailureSchedule, InjectedFailure
from runtime.testing.servers import RedisServer, free_port

N = 2000


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Any:
    import redis

    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    client.close()


def job(sink: Any, p: int = 1) -> tuple[StreamEnvironment, FailureSchedule]:
    schedule = FailureSchedule([InjectedFailure("sink", subtask=0, after_records=700)])
    env = StreamEnvironment(parallelism=p)
    env.enable_checkpointing(0.02)
    env.set_restart_strategy(FixedDelayRestart(attempts=2, delay=0))
    env.generate(lambda i: i, N, records_per_second=40_000).sink_to(
        FailingSink(sink, schedule), uid="redis"
    )
    return env, schedule


async def test_stream_sink_with_ids_is_idempotent(
    redis_server: RedisServer, redis_client: Any
) -> None:
    stream = f"out-{uuid.uuid4().hex[:8]}"
    sink = RedisStreamSink(
        redis_server.url,
        stream,
        fields=lambda i: {"i": i},
        entry_id=lambda i: f"1-{i + 1}",
        batch_size=100,
    )
    env, schedule = job(sink)
    result = await env.execute("redis idempotent")
    assert result.restarts == len(schedule.fired) == 1
    entries = redis_client.xrange(stream)
    assert [int(fields["i"]) for _, fields in entries] == list(range(N))


async def test_stream_sink_without_ids_loses_nothing(
    redis_server: RedisServer, redis_client: Any
) -> None:
    stream = f"out-{uuid.uuid4().hex[:8]}"
    env, _ = job(RedisStreamSink(redis_server.url, stream, batch_size=100), p=2)
    result = await env.execute("redis at least once")
    assert result.restarts == 1
    counts = Counter(int(fields["value"]) for _, fields in redis_client.xrange(stream))
    assert set(counts) == set(range(N))  # duplicates allowed: at-least-once


async def test_set_sink_is_idempotent(redis_server: RedisServer, redis_client: Any) -> None:
    prefix = uuid.uuid4().hex[:8]
    sink = RedisSetSink(redis_server.url, key=lambda i: f"{prefix}:{i % 100}", value=str)
    env, _ = job(sink)
    result = await env.execute("redis set")
    assert result.restarts == 1
    values = redis_client.mget([f"{prefix}:{k}" for k in range(100)])
    assert values == [str(N - 100 + k) for k in range(100)]


async def test_an_unreachable_server_is_named() -> None:
    port = free_port()
    env = StreamEnvironment(parallelism=1)
    env.set_restart_strategy(NoRestart())
    env.from_collection([1]).sink_to(RedisStreamSink(f"redis://127.0.0.1:{port}/0", "s"))
    with pytest.raises(JobFailedError) as caught:
        await env.execute("redis sink down")
    text = str(caught.value.__cause__)
    assert (
        f"RedisStreamSink(stream='s') (subtask 1/1): cannot reach Redis at 127.0.0.1:{port}/0"
        in text
    )
