"""``PostgresSink`` commits: idempotent by the commit table, a lost transaction is an error,
and the recovery planner knows it cannot skip output committed after a checkpoint."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from runtime import RuntimeContext, StreamEnvironment
from runtime.connectors.errors import ConnectorError
from runtime.connectors.postgres import PostgresSink
from runtime.connectors.postgres_batch import PostgresBatchSink, PostgresUpsertSink
from runtime.connectors.redis_sink import RedisSetSink, RedisStreamSink
from runtime.scheduler.recovery import sinks_skip_committed
from runtime.testing.servers import PostgresServer
from tests.connectors.conftest import prepared_transactions


def context() -> RuntimeContext:
    return RuntimeContext(
        operator_name="pg",
        subtask_index=0,
        parallelism=1,
        max_parallelism=128,
        job_name="unit",
        checkpointing_enabled=True,
    )


def test_commit_again_is_skipped_and_a_lost_transaction_is_an_error(
    postgres_server: PostgresServer, pg: Any, table: str
) -> None:
    sink = PostgresSink(postgres_server.dsn, table, ["k", "v"], sink_id=f"unit-{uuid.uuid4().hex}")
    sink.initialize_state(context())
    try:
        sink.write_batch([("a", 1), ("b", 2)])
        sink.snapshot_state(1)
        first = sink.pending_transactions[1]
        assert first.gid in prepared_transactions(pg)
        assert pg.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0  # invisible
        sink.notify_checkpoint_complete(1)
        assert pg.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 2
        # A restored job commits it again (its checkpoint listed it as pending): the
        # server no longer knows it, the commit table does: nothing happens.
        sink.commit(first)
        assert pg.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 2

        sink.write_batch([("c", 3)])
        sink.snapshot_state(2)
        second = sink.pending_transactions[2]
        pg.execute(f"ROLLBACK PREPARED '{second.gid}'")  # someone else threw it away
        with pytest.raises(ConnectorError, match="neither prepared nor recorded as committed"):
            sink.notify_checkpoint_complete(2)
        # An empty checkpoint interval prepares nothing.
        sink.snapshot_state(3)
        assert sink.pending_transactions[3].gid == ""
    finally:
        sink.close()
    assert prepared_transactions(pg) == []


@pytest.mark.parametrize(
    ("make_sink", "skips"),
    [
        (lambda: PostgresSink("", "t", ["k"]), False),
        (lambda: PostgresUpsertSink("", "t", ["k"], ["k"]), True),
        (lambda: PostgresBatchSink("", "t", ["k"]), True),
        (lambda: RedisStreamSink("redis://x", "s"), True),
        (lambda: RedisSetSink("redis://x", key=str), True),
    ],
    ids=["exactly-once", "upsert", "batch", "redis-stream", "redis-set"],
)
def test_the_planner_knows_which_sinks_skip_committed_output(
    tmp_path: Path, make_sink: Any, skips: bool
) -> None:
    # PostgresSink cannot take back rows committed after the restored checkpoint: the
    # planner must refuse to fall back past them unless forced. The others are not
    # two-phase-commit sinks (idempotent or at-least-once): nothing to refuse.
    env = StreamEnvironment(parallelism=1)
    env.from_collection([1]).sink_to(make_sink(), uid="s")
    assert sinks_skip_committed(env.get_job_graph()) is skips
