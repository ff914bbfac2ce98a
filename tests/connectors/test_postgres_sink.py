"""``PostgresSink`` against a real PostgreSQL: two-phase commit per checkpoint."""

from __future__ import annotations

from typing import Any

import pytest

from runtime import FixedDelayRestart, StreamEnvironment
from runtime.connectors.postgres import PostgresSink
from runtime.testing import FailingSink, FailureSchedule, InjectedFailure, Phase
from runtime.testing.servers import PostgresServer
from tests.connectors.conftest import prepared_transactions

N = 2000


def rows(pg: Any, table: str) -> list[tuple[str, int]]:
    return sorted(pg.execute(f"SELECT k, v FROM {table}").fetchall())


EXPECTED = sorted((f"k{i % 7}", i) for i in range(N))


def job(
    dsn: str, table: str, *, p: int = 2, sink: Any = None, restarts: int = 0, n: int = N
) -> StreamEnvironment:
    env = StreamEnvironment(parallelism=p)
    env.enable_checkpointing(0.02)
    if restarts:
        env.set_restart_strategy(FixedDelayRestart(attempts=restarts, delay=0))
    sink = sink or PostgresSink(dsn, table, ["k", "v"], batch_size=100)
    env.generate(lambda i: (f"k{i % 7}", i), n, records_per_second=20_000).sink_to(
        sink, uid="pg", name="pg"
    )
    return env


async def test_rows_are_committed_once(
    postgres_server: PostgresServer, pg: Any, table: str
) -> None:
    result = await job(postgres_server.dsn, table).execute("pg once")
    assert rows(pg, table) == EXPECTED
    assert len(result.checkpoints.completed()) >= 1
    assert prepared_transactions(pg) == []


# Checkpoint phases from checkpoint 1 on: every run ends with at least one checkpoint (its
# final one), so each fires however few periodic checkpoints a loaded machine takes.
FAILURES = [
    pytest.param(InjectedFailure("sink", subtask=0, after_records=600), id="before-prepare"),
    pytest.param(
        InjectedFailure("sink", subtask=1, phase=Phase.SNAPSHOT, checkpoint=1), id="after-prepare"
    ),
    pytest.param(
        InjectedFailure("sink", subtask=0, phase=Phase.AFTER_ACK, checkpoint=1), id="after-ack"
    ),
    pytest.param(
        InjectedFailure("sink", subtask=1, phase=Phase.BEFORE_NOTIFY, checkpoint=1),
        id="before-commit",
    ),
    pytest.param(
        InjectedFailure("sink", subtask=0, phase=Phase.AFTER_NOTIFY, checkpoint=1),
        id="after-commit",
    ),
    pytest.param(InjectedFailure("sink", phase=Phase.RESTORE), id="at-restore"),
]


@pytest.mark.parametrize("failure", FAILURES)
async def test_failures_around_prepare_and_commit_write_each_row_once(
    postgres_server: PostgresServer, pg: Any, table: str, failure: InjectedFailure
) -> None:
    # Before a restore failure, one that surely leaves a completed checkpoint to restore
    # (right after the first notification; a failure after N records might come before
    # any checkpoint completed, and the restart would restore nothing).
    first = InjectedFailure("sink", subtask=1, phase=Phase.AFTER_NOTIFY, checkpoint=1)
    schedule = FailureSchedule([first, failure] if failure.phase is Phase.RESTORE else [failure])
    sink = FailingSink(
        PostgresSink(postgres_server.dsn, table, ["k", "v"], batch_size=100), schedule
    )
    result = await job(postgres_server.dsn, table, sink=sink, restarts=4).execute("pg failures")
    assert len(schedule.fired) == len(list(schedule))
    assert result.restarts == len(schedule.fired)
    assert rows(pg, table) == EXPECTED
    assert prepared_transactions(pg) == []


async def test_a_restored_job_rolls_back_what_a_failed_run_prepared_after_the_checkpoint(
    postgres_server: PostgresServer, pg: Any, table: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A failure right after the prepare of checkpoint 3, before any acknowledgement:
    # checkpoint 3 never completes, its transaction stays prepared until the restore.
    schedule = FailureSchedule(
        [InjectedFailure("sink", subtask=0, phase=Phase.SNAPSHOT, checkpoint=3)]
    )
    sink = FailingSink(
        PostgresSink(postgres_server.dsn, table, ["k", "v"], batch_size=100), schedule
    )
    # 20,000 records (a second at the source's pace): subtask 0 still writes rows when
    # checkpoint 3 comes, however slowly a loaded machine takes checkpoints (with 2,000,
    # its input could be over by then, leaving nothing to prepare at checkpoint 3).
    n = 20_000
    result = await job(postgres_server.dsn, table, sink=sink, restarts=2, n=n).execute("pg strays")
    assert result.restarts == 1
    rolled_back = [
        r.getMessage() for r in caplog.records if "rolled back 1 prepared" in r.getMessage()
    ]
    # Subtask 0's transaction of checkpoint 3 at least (subtask 1 may have prepared too).
    assert any(":0:3:" in message for message in rolled_back), rolled_back
    assert rows(pg, table) == sorted((f"k{i % 7}", i) for i in range(n))
    assert prepared_transactions(pg) == []
    committed = pg.execute(
        "SELECT count(*), count(DISTINCT transaction_id) FROM weir_sink_commits "
        "WHERE sink_id = 'pg strays/pg'"
    ).fetchone()
    assert committed[0] == committed[1] > 0
