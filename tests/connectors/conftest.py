"""Real servers for the connector tests: PostgreSQL 15 and Redis 7, started once per session.

The servers run in temporary directories on 127.0.0.1 (``runtime.testing.servers``).
A missing binary fails the tests that need it, naming what to install: CI installs
both (``.ci/run``), so nothing is skipped there.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from runtime.connectors.two_phase_commit import TwoPhaseCommitSink
from runtime.testing.servers import PostgresServer, RedisServer, ServerUnavailableError


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    try:
        server = PostgresServer().start()
    except ServerUnavailableError as error:
        pytest.fail(f"these tests need a PostgreSQL server: {error}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    try:
        server = RedisServer().start()
    except ServerUnavailableError as error:
        pytest.fail(f"these tests need a Redis server: {error}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg(postgres_server: PostgresServer) -> Iterator[Any]:
    """An autocommit psycopg connection to the test server."""
    import psycopg

    with psycopg.connect(postgres_server.dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
def table(pg: Any) -> str:
    """A fresh table ``(k text, v bigint)`` with a unique name."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    pg.execute(f"CREATE TABLE {name} (k text NOT NULL, v bigint NOT NULL)")
    return name


def prepared_transactions(pg: Any) -> list[str]:
    """Ids of the server's prepared transactions (all databases)."""
    return [row[0] for row in pg.execute("SELECT gid FROM pg_prepared_xacts").fetchall()]


class CollectingSink(TwoPhaseCommitSink[Any, list[Any]]):
    """An exactly-once sink into ``committed`` (shared by every copy): ``{txn id: values}``.

    A transaction is ``[id, value, ...]``; committing it again (a restored pending
    transaction that was committed before the failure) finds its id: idempotent.
    """

    def __init__(self, committed: dict[str, list[Any]], value: Any = None) -> None:
        super().__init__()
        self.committed = committed
        self.value = value or (lambda record: record)

    def __deepcopy__(self, memo: dict[int, Any]) -> CollectingSink:
        return CollectingSink(self.committed, self.value)

    def begin_transaction(self) -> list[Any]:
        return [uuid.uuid4().hex]

    def write(self, transaction: list[Any], value: Any) -> None:
        transaction.append(self.value(value))

    def commit(self, transaction: list[Any]) -> None:
        self.committed.setdefault(transaction[0], transaction[1:])

    @staticmethod
    def values(committed: dict[str, list[Any]]) -> list[Any]:
        return [v for values in committed.values() for v in values]
