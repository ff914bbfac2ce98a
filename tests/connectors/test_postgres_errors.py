"""Bad input for the PostgreSQL sinks: one clear error naming the connector and subtask."""

from __future__ import annotations

from typing import Any

import pytest

from runtime import JobFailedError, NoRestart, StreamEnvironment
from runtime.connectors.postgres import PostgresSink
from runtime.connectors.postgres_batch import PostgresBatchSink, PostgresUpsertSink
from runtime.errors import ConfigError
from runtime.testing.servers import PostgresServer, free_port


def causes(error: BaseException) -> str:
    """Every message down the ``__cause__`` chain."""
    parts = []
    current: BaseException | None = error
    while current is not None:
        parts.append(str(current))
        current = current.__cause__
    return "\n".join(parts)


async def run_into(sink: Any, records: list[Any]) -> str:
    env = StreamEnvironment(parallelism=1)
    env.enable_checkpointing(0.05)
    env.set_restart_strategy(NoRestart())
    env.from_collection(records).sink_to(sink, uid="pg", name="pg")
    with pytest.raises(JobFailedError) as caught:
        await env.execute("pg errors")
    return causes(caught.value)


async def test_an_unreachable_server_is_named() -> None:
    port = free_port()
    dsn = f"host=127.0.0.1 port={port} user=weir password=weir dbname=weir connect_timeout=2"
    text = await run_into(PostgresSink(dsn, "t", ["k", "v"]), [("a", 1)])
    where = f"weir@127.0.0.1:{port}/weir"
    assert f"PostgresSink(table='t') (subtask 1/1): cannot connect to PostgreSQL at {where}" in text


async def test_wrong_credentials_are_named_without_the_password(
    postgres_server: PostgresServer,
) -> None:
    dsn = postgres_server.dsn.replace("password=weir", "password=secret-wrong")
    text = await run_into(PostgresBatchSink(dsn, "t", ["k", "v"]), [("a", 1)])
    assert "PostgresBatchSink(table='t') (subtask 1/1): cannot connect" in text
    assert "password authentication failed" in text
    assert "secret-wrong" not in text


async def test_a_missing_table_is_named(postgres_server: PostgresServer) -> None:
    text = await run_into(
        PostgresSink(postgres_server.dsn, "no_such_table", ["k", "v"]), [("a", 1)]
    )
    assert "table 'no_such_table' does not exist in 'weir'; create it first" in text


async def test_a_row_the_table_rejects_names_its_record(
    postgres_server: PostgresServer, pg: Any
) -> None:
    pg.execute("CREATE TABLE checked (k text NOT NULL, v bigint NOT NULL CHECK (v >= 0))")
    records = [(f"k{i}", i) for i in range(40)] + [("bad", -7)] + [("k", i) for i in range(10)]
    text = await run_into(PostgresSink(postgres_server.dsn, "checked", ["k", "v"]), records)
    assert (
        "PostgresSink(table='checked') (subtask 1/1): PostgreSQL rejected record ('bad', -7)"
        in text
    )
    assert "violates check constraint" in text
    # The transaction holding the record was never prepared, so nothing of it is visible.
    assert pg.execute("SELECT count(*) FROM checked WHERE k = 'bad'").fetchone()[0] == 0


async def test_a_record_of_the_wrong_shape_is_named(
    postgres_server: PostgresServer, table: str
) -> None:
    text = await run_into(PostgresBatchSink(postgres_server.dsn, table, ["k", "v"]), [("a", 1, 2)])
    assert "record ('a', 1, 2) has 3 values for 2 columns; pass row= to map records to rows" in text


async def test_no_prepared_transactions_on_the_server_is_a_clear_error() -> None:
    with PostgresServer(max_prepared_transactions=0) as server:
        import psycopg

        with psycopg.connect(server.dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE t (k text, v bigint)")
        text = await run_into(PostgresSink(server.dsn, "t", ["k", "v"]), [("a", 1)])
    assert "max_prepared_transactions = 0" in text
    assert "PostgresUpsertSink / PostgresBatchSink" in text


def test_bad_options_fail_when_the_sink_is_made() -> None:
    with pytest.raises(ConfigError, match="batch_size must be an int >= 1, got 0"):
        PostgresSink("", "t", ["k"], batch_size=0)
    with pytest.raises(ConfigError, match="columns must be a non-empty list"):
        PostgresBatchSink("", "t", [])
    with pytest.raises(
        ConfigError, match=r"key_columns must be a non-empty subset of columns \['k', 'v'\]"
    ):
        PostgresUpsertSink("", "t", ["k", "v"], ["x"])
