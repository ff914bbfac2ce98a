"""Talking to PostgreSQL for the sinks of ``runtime.connectors.postgres``: psycopg 3.

Shared by the exactly-once sink and the batched sinks: opening a connection with an
error that names the server (never the password), checking that the table exists,
turning records into rows, and writing a batch of rows with ``COPY`` so that a row the
server rejects is named with its record (the server reports the ``COPY`` line).

psycopg is an optional dependency (``pip install 'weir[postgres]'``); it is imported
when a sink starts, with an error saying how to install it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from runtime.connectors.errors import ConnectorError, short_repr
from runtime.errors import ConfigError

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "RowMaker",
    "check_table",
    "connect",
    "copy_rows",
    "import_psycopg",
    "server_of",
    "table_identifier",
]

RowMaker = Callable[[Any], Sequence[Any]]
_COPY_LINE = re.compile(r"line (\d+)")


def import_psycopg() -> Any:
    """The ``psycopg`` module, or a ``ConfigError`` saying how to install it."""
    try:
        import psycopg
    except ImportError:
        raise ConfigError(
            "the PostgreSQL connectors need psycopg 3: pip install 'weir[postgres]'"
        ) from None
    return psycopg


def server_of(dsn: str) -> str:
    """``user@host:port/db`` of a connection string, for messages (no password)."""
    psycopg = import_psycopg()
    try:
        parts = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparsable dsn>"
    return (
        f"{parts.get('user', '?')}@{parts.get('host', 'localhost')}:"
        f"{parts.get('port', 5432)}/{parts.get('dbname', '?')}"
    )


def validate_names(connector: str, table: str, columns: Sequence[str]) -> None:
    """Raise ``ConfigError`` for an empty table name or column list."""
    if not isinstance(table, str) or not table:
        raise ConfigError(f"{connector}: table must be a non-empty string, got {table!r}")
    if not columns or not all(isinstance(c, str) and c for c in columns):
        raise ConfigError(
            f"{connector}: columns must be a non-empty list of column names, got {columns!r}"
        )


def table_identifier(table: str) -> Any:
    """``schema.table`` or ``table`` as a quoted SQL identifier."""
    from psycopg import sql

    return sql.Identifier(*table.split("."))


def connect(
    dsn: str, connector: str, subtask: int | None, *, autocommit: bool = False
) -> psycopg.Connection[Any]:
    """Open a connection; a ``ConnectorError`` names the server if it cannot.

    Blocks (a worker thread is not worth it once per subtask start).
    """
    psycopg = import_psycopg()
    try:
        return psycopg.connect(dsn, autocommit=autocommit, connect_timeout=10)  # type: ignore[no-any-return]
    except psycopg.Error as error:
        raise ConnectorError(
            connector,
            subtask,
            f"cannot connect to PostgreSQL at {server_of(dsn)}: "
            f"{str(error).strip()}; check that the server runs and the dsn's host, port, "
            f"user and password",
        ) from error


def check_table(
    conn: psycopg.Connection[Any], table: str, connector: str, subtask: int | None
) -> None:
    """Raise ``ConnectorError`` if ``table`` does not exist."""
    row = conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()
    if conn.info.transaction_status != 0:  # leave no transaction open
        conn.rollback()
    if row is None or row[0] is None:
        raise ConnectorError(
            connector,
            subtask,
            f"table {table!r} does not exist in {conn.info.dbname!r}; create it first",
        )


def default_row(columns: Sequence[str]) -> RowMaker:
    """Records to rows: tuples and lists as they are, mappings and objects by column."""
    names = tuple(columns)

    def row(record: Any) -> Sequence[Any]:
        if isinstance(record, tuple | list):
            return record
        if isinstance(record, dict):
            return [record[name] for name in names]
        return [getattr(record, name) for name in names]

    return row


def make_rows(
    records: Sequence[Any], row: RowMaker, ncolumns: int, connector: str, subtask: int | None
) -> list[Sequence[Any]]:
    """The rows of ``records``; a ``ConnectorError`` names a record that does not fit."""
    rows: list[Sequence[Any]] = []
    for record in records:
        try:
            values = row(record)
        except (KeyError, AttributeError, TypeError) as error:
            raise ConnectorError(
                connector, subtask, f"cannot make a row of record {short_repr(record)}: {error}"
            ) from error
        if len(values) != ncolumns:
            raise ConnectorError(
                connector,
                subtask,
                f"record {short_repr(record)} has {len(values)} values for {ncolumns} "
                f"columns; pass row= to map records to rows",
            )
        rows.append(values)
    return rows


def copy_rows(
    conn: psycopg.Connection[Any],
    target: Any,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    records: Sequence[Any],
    connector: str,
    subtask: int | None,
) -> None:
    """``COPY`` ``rows`` into ``target`` (a ``sql.Identifier``) in the open transaction.

    Blocks. A row the server rejects raises ``ConnectorError`` naming its record.
    """
    psycopg = import_psycopg()
    from psycopg import sql

    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        target, sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    )
    try:
        with conn.cursor() as cursor, cursor.copy(statement) as copy:
            for values in rows:
                copy.write_row(values)
    except psycopg.Error as error:
        raise rejected(error, records, connector, subtask) from error


def rejected(
    error: Any, records: Sequence[Any], connector: str, subtask: int | None
) -> ConnectorError:
    """A ``ConnectorError`` for a failed write, naming the record if the server says which."""
    context = getattr(getattr(error, "diag", None), "context", None) or ""
    match = _COPY_LINE.search(context)
    message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
    if match is not None and 0 < int(match.group(1)) <= len(records):
        record = records[int(match.group(1)) - 1]
        return ConnectorError(
            connector, subtask, f"PostgreSQL rejected record {short_repr(record)}: {message}"
        )
    return ConnectorError(connector, subtask, f"PostgreSQL rejected a write: {message}")
