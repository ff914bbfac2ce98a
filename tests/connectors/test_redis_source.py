"""``RedisStreamSource`` against a real Redis: splits per stream, positions in checkpoints."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import pytest

from runtime import FixedDelayRestart, JobFailedError, NoRestart, StreamEnvironment
from runtime.connectors.redis_streams import RedisStreamEntry, RedisStreamSource
from runtime.errors import ConfigError
from runtime.testing import FailingSink, FailureSchedule, InjectedFailure, Phase, failure_point
from runtime.testing.servers import RedisServer
from tests.connectors.conftest import CollectingSink


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Any:
    import redis

    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


def fill(client: Any, n: int, streams: int = 3) -> list[str]:
    names = [f"s-{uuid.uuid4().hex[:8]}-{j}" for j in range(streams)]
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        pipe.xadd(names[i % streams], {"i": str(i), "key": f"k{i % 5}"})
    pipe.execute()
    return names


async def test_reads_every_entry_to_the_end_now(
    redis_server: RedisServer, redis_client: Any
) -> None:
    names = fill(redis_client, 900)
    env = StreamEnvironment(parallelism=2)
    env.from_source(RedisStreamSource(redis_server.url, names, until="now"), uid="redis").collect(
        name="out"
    )
    result = await env.execute("redis bounded")
    out = result.collected["out"]
    assert all(isinstance(e, RedisStreamEntry) for e in out)
    assert sorted(int(e.fields["i"]) for e in out) == list(range(900))
    # Per stream, in id order.
    for name in names:
        ids = [e.id for e in out if e.stream == name]
        assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))


async def test_restores_from_entry_ids_exactly_once(
    redis_server: RedisServer, redis_client: Any
) -> None:
    names = fill(redis_client, 3000)
    schedule = FailureSchedule(
        [
            InjectedFailure("after-source", subtask=0, after_records=400),
            InjectedFailure("sink", subtask=1, phase=Phase.SNAPSHOT, checkpoint=2),
        ]
    )
    env = StreamEnvironment(parallelism=2)
    env.enable_checkpointing(0.02)
    env.set_restart_strategy(FixedDelayRestart(attempts=3, delay=0))
    committed: dict[str, list[Any]] = {}

    (
        env.from_source(RedisStreamSource(redis_server.url, names, until="now"), uid="redis")
        .map(failure_point(schedule, "after-source"), uid="fail")
        .sink_to(
            FailingSink(CollectingSink(committed, lambda e: int(e.fields["i"])), schedule),
            uid="sink",
        )
    )
    result = await env.execute("redis restore")
    assert result.restarts == len(schedule.fired) >= 1
    assert Counter(CollectingSink.values(committed)) == Counter(range(3000))


async def test_a_consumer_group_follows_completed_checkpoints(
    redis_server: RedisServer, redis_client: Any
) -> None:
    names = fill(redis_client, 300, streams=1)
    env = StreamEnvironment(parallelism=1)
    env.enable_checkpointing(0.02)
    env.from_source(
        RedisStreamSource(redis_server.url, names, until="now", group="monitor"), uid="redis"
    ).collect(name="out")
    result = await env.execute("redis group")
    assert len(result.collected["out"]) == 300
    groups = redis_client.xinfo_groups(names[0])
    last = redis_client.xinfo_stream(names[0])["last-generated-id"]
    assert [g["name"] for g in groups] == [b"monitor"]
    # The final checkpoint holds the reader at its end: the group is there too.
    assert groups[0]["last-delivered-id"] == last


async def test_a_missing_stream_is_named(redis_server: RedisServer) -> None:
    env = StreamEnvironment(parallelism=1)
    env.set_restart_strategy(NoRestart())
    env.from_source(RedisStreamSource(redis_server.url, ["nope"], until="now")).collect()
    with pytest.raises(JobFailedError) as caught:
        await env.execute("redis missing")
    text = "\n".join(str(e) for e in _chain(caught.value))
    assert "RedisStreamSource(streams=['nope']): stream 'nope' does not exist at 127.0.0.1:" in text


async def test_an_unreachable_server_is_named() -> None:
    from runtime.testing.servers import free_port

    port = free_port()
    env = StreamEnvironment(parallelism=1)
    env.set_restart_strategy(NoRestart())
    env.from_source(RedisStreamSource(f"redis://127.0.0.1:{port}/0", "s", until="now")).collect()
    with pytest.raises(JobFailedError) as caught:
        await env.execute("redis down")
    text = "\n".join(str(e) for e in _chain(caught.value))
    assert f"Redis at 127.0.0.1:{port}/0 failed" in text


def test_bad_options_fail_when_the_source_is_made() -> None:
    with pytest.raises(ConfigError, match="until='soon' is not a stream id"):
        RedisStreamSource("redis://x", "s", until="soon")
    with pytest.raises(ConfigError, match="streams must be non-empty stream names"):
        RedisStreamSource("redis://x", [])
    with pytest.raises(ConfigError, match="a stream is named twice"):
        RedisStreamSource("redis://x", ["a", "a"])


def _chain(error: BaseException | None) -> list[BaseException]:
    out = []
    while error is not None:
        out.append(error)
        error = error.__cause__
    return out
