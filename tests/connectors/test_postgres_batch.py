"""``PostgresBatchSink`` (at-least-once) and ``PostgresUpsertSink`` (idempotent) after failures."""

from __future__ import annotations

from collections import Counter
from typing import Any

from runtime import FixedDelayRestart, StreamEnvironment
from runtime.connectors.postgres_batch import PostgresBatchSink, PostgresUpsertSink
from runtime.testing import FailingSink, FailureSchedule, InjectedFailure
from runtime.testing.servers import PostgresServer

N = 3000


def run(sink: Any, restarts: int = 3) -> StreamEnvironment:
    env = StreamEnvironment(parallelism=2)
    env.enable_checkpointing(0.02)
    env.set_restart_strategy(FixedDelayRestart(attempts=restarts, delay=0))
    env.generate(lambda i: (f"k{i}", i), N, records_per_second=30_000).sink_to(
        sink, uid="pg", name="pg"
    )
    return env


async def test_batch_sink_loses_nothing_and_may_duplicate(
    postgres_server: PostgresServer, pg: Any, table: str
) -> None:
    schedule = FailureSchedule([InjectedFailure("sink", subtask=0, after_records=1000)])
    sink = FailingSink(
        PostgresBatchSink(postgres_server.dsn, table, ["k", "v"], batch_size=200), schedule
    )
    result = await run(sink).execute("pg batch")
    assert result.restarts == 1
    counts = Counter(v for (v,) in pg.execute(f"SELECT v FROM {table}").fetchall())
    assert set(counts) == set(range(N))  # nothing lost; duplicates allowed (at-least-once)


async def test_upsert_sink_ends_with_each_key_once(
    postgres_server: PostgresServer, pg: Any
) -> None:
    pg.execute("CREATE TABLE upserted (k text PRIMARY KEY, v bigint NOT NULL)")
    schedule = FailureSchedule(
        [
            InjectedFailure("sink", subtask=0, after_records=250),
            InjectedFailure("sink", subtask=1, after_records=200),
        ]
    )
    sink = FailingSink(
        PostgresUpsertSink(postgres_server.dsn, "upserted", ["k", "v"], ["k"], batch_size=200),
        schedule,
    )
    result = await run(sink).execute("pg upsert")
    # Each subtask reads 1,500 records: both failures fire, one per attempt.
    assert result.restarts == len(schedule.fired) == 2
    assert sorted(pg.execute("SELECT k, v FROM upserted").fetchall()) == sorted(
        (f"k{i}", i) for i in range(N)
    )


async def test_upsert_keeps_the_last_record_of_a_key(
    postgres_server: PostgresServer, pg: Any
) -> None:
    pg.execute("CREATE TABLE latest (k text PRIMARY KEY, v bigint NOT NULL)")
    env = StreamEnvironment(parallelism=1)
    records = [(f"k{i % 5}", i) for i in range(100)]
    env.from_collection(records).sink_to(
        PostgresUpsertSink(postgres_server.dsn, "latest", ["k", "v"], ["k"], batch_size=7)
    )
    await env.execute("pg latest")
    assert sorted(pg.execute("SELECT k, v FROM latest").fetchall()) == [
        (f"k{k}", 95 + k) for k in range(5)
    ]
