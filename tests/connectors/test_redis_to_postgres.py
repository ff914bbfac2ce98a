"""End to end: Redis Streams -> keyed state -> PostgreSQL, failures injected, every mode.

The job reads three streams of entries ``{"i": i, "key": k}``, counts each key's
records in keyed state and writes ``(key, i, count)`` through ``PostgresSink``. The
testing kit's failures fire at the keyed operator (while records flow), and at the
sink before the prepare (records), right after it (``SNAPSHOT``: prepared, not yet
acknowledged), after the acknowledgement, before the commit (``BEFORE_NOTIFY``) and
after it (``AFTER_NOTIFY``), and when a subtask is restored.

Exactly-once modes: the table holds every ``i`` once and, for each key, the counts
``1..n_k`` once each (state and output exactly once). At-least-once: every ``i`` is
there (a record may be written twice, with a count that went on). In every mode no
prepared transaction is left on the server.
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from typing import Any

import pytest

from runtime import (
    FixedDelayRestart,
    KeyedProcessFunction,
    RuntimeContext,
    StreamEnvironment,
    ValueStateDescriptor,
)
from runtime.connectors.postgres import PostgresSink
from runtime.connectors.redis_streams import RedisStreamEntry, RedisStreamSource
from runtime.testing import (
    CheckpointSetup,
    FailingSink,
    FailureSchedule,
    InjectedFailure,
    Phase,
    failure_point,
)
from runtime.testing.servers import PostgresServer, RedisServer
from tests.connectors.conftest import prepared_transactions

N = 3000
KEYS = 10


class CountPerKey(KeyedProcessFunction):
    def open(self, ctx: RuntimeContext) -> None:
        self.count = ctx.get_state(ValueStateDescriptor("count", default=0, type=int))

    def process_element(self, entry: RedisStreamEntry, ctx: RuntimeContext) -> list[Any]:
        n = self.count.value() + 1
        self.count.update(n)
        return [(entry.fields["key"], int(entry.fields["i"]), n)]


def fill_streams(redis_url: str) -> list[str]:
    import redis

    names = [f"events-{uuid.uuid4().hex[:8]}-{j}" for j in range(3)]
    with redis.Redis.from_url(redis_url) as client:
        pipe = client.pipeline(transaction=False)
        for i in range(N):
            pipe.xadd(names[i % 3], {"i": i, "key": f"k{i % KEYS}"})
        pipe.execute()
    return names


def schedule_for(setup: CheckpointSetup) -> FailureSchedule:
    # Checkpoint phases from checkpoint 1 on: every attempt ends with at least one
    # checkpoint (the job's final one), so each of them fires whatever the machine's
    # speed (a threshold like "checkpoint >= 5" depends on how many periodic checkpoints
    # a run happens to take before its input ends).
    return FailureSchedule(
        [
            InjectedFailure("count", subtask=1, after_records=100),
            InjectedFailure("sink", subtask=0, after_records=150),
            InjectedFailure("sink", subtask=1, phase=Phase.SNAPSHOT, checkpoint=1),
            InjectedFailure("sink", subtask=0, phase=Phase.AFTER_ACK, checkpoint=1),
            InjectedFailure("sink", subtask=1, phase=Phase.BEFORE_NOTIFY, checkpoint=1),
            InjectedFailure("sink", subtask=0, phase=Phase.AFTER_NOTIFY, checkpoint=1),
            InjectedFailure("sink", phase=Phase.RESTORE),
        ]
    )


@pytest.mark.parametrize("setup", list(CheckpointSetup), ids=lambda s: s.value)
async def test_redis_to_postgres_with_failures(
    redis_server: RedisServer,
    postgres_server: PostgresServer,
    pg: Any,
    setup: CheckpointSetup,
) -> None:
    table = f"counts_{uuid.uuid4().hex[:8]}"
    pg.execute(f"CREATE TABLE {table} (k text NOT NULL, i bigint NOT NULL, n bigint NOT NULL)")
    names = fill_streams(redis_server.url)
    schedule = schedule_for(setup)

    env = StreamEnvironment(parallelism=2)
    env.enable_checkpointing(0.02, **setup.options())
    env.set_restart_strategy(FixedDelayRestart(attempts=len(schedule) + 2, delay=0))
    source = RedisStreamSource(redis_server.url, names, until="now")
    source.records_per_second = 15_000  # type: ignore[attr-defined]
    sink = PostgresSink(postgres_server.dsn, table, ["k", "i", "n"], batch_size=200)
    (
        env.from_source(source, uid="events")
        .key_by(lambda entry: entry.fields["key"])
        .process(CountPerKey(), name="count", uid="count")
        .map(failure_point(schedule, "count"), uid="count-failures")
        .sink_to(FailingSink(sink, schedule), name="pg", uid="pg")
    )
    result = await env.execute(f"redis to postgres {setup.value}")

    # Every failure fired: before, during and after the prepare and the commit.
    assert len(schedule.fired) == len(schedule), schedule.fired
    assert result.restarts == len(schedule.fired)
    written = pg.execute(f"SELECT k, i, n FROM {table}").fetchall()
    by_i = Counter(i for _, i, _ in written)
    assert set(by_i) == set(range(N)), "records lost"
    if setup.exactly_once:
        assert len(written) == N, f"{len(written) - N} rows written twice"
        counts: dict[str, list[int]] = defaultdict(list)
        for k, _, n in written:
            counts[k].append(n)
        assert {k: sorted(ns) for k, ns in counts.items()} == {
            f"k{k}": list(range(1, N // KEYS + 1)) for k in range(KEYS)
        }
    assert prepared_transactions(pg) == []
