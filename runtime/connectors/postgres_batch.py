"""``PostgresUpsertSink`` and ``PostgresBatchSink``: batched writes flushed on checkpoints.

After Flink's JDBC sink (``JdbcSink.sink``): records are buffered and written in
batches of ``batch_size`` (in a worker thread, one write in flight), and every buffered
record is written and committed when a checkpoint's barrier passes the sink, before it
acknowledges: a completed checkpoint never covers a record that is not in the table.
After a failure the records since the restored checkpoint are written again.

* ``PostgresBatchSink`` appends rows with ``COPY``: **at-least-once** (rows written
  after the restored checkpoint are in the table twice). The cheapest mode; the
  benchmark's baseline for the exactly-once sink.
* ``PostgresUpsertSink`` writes ``INSERT ... ON CONFLICT (key) DO UPDATE`` keyed by the
  table's primary key (or a unique index) on ``key_columns``: records written again
  overwrite themselves, so a deterministic job's table ends up as if each record were
  written once (**exactly-once in effect**), and it may be restored from any
  checkpoint. Within a batch the last record of each key wins. Rows go through a
  temporary table with ``COPY``, then one ``INSERT ... SELECT``.

Neither uses prepared transactions (``max_prepared_transactions`` may be 0).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import Any

from runtime.connectors.background import BackgroundWriter
from runtime.connectors.errors import ConnectorError
from runtime.connectors.postgres_connection import (
    RowMaker,
    check_table,
    connect,
    copy_rows,
    default_row,
    import_psycopg,
    make_rows,
    rejected,
    table_identifier,
    validate_names,
)
from runtime.errors import ConfigError
from runtime.tasks.context import RuntimeContext
from runtime.tasks.functions import SinkFunction

__all__ = ["PostgresBatchSink", "PostgresUpsertSink"]

logger = logging.getLogger("weir.sink")


class PostgresBatchSink(SinkFunction[Any]):
    """Appends rows to ``table`` in batches; at-least-once.

    Args:
        dsn: a libpq connection string or URI.
        table: the target table; must exist.
        columns: the columns each record fills, in order.
        row: turns a record into its values (see ``PostgresSink``).
        batch_size: rows per write.

    Raises:
        ConfigError: an option is invalid (when the sink is made).
    """

    kind = "PostgresBatchSink"

    def __init__(
        self,
        dsn: str,
        table: str,
        columns: Sequence[str],
        *,
        row: RowMaker | None = None,
        batch_size: int = 5000,
    ) -> None:
        self.connector = f"{self.kind}(table={table!r})"
        validate_names(self.connector, table, columns)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(
                f"{self.connector}: batch_size must be an int >= 1, got {batch_size!r}"
            )
        self.dsn = dsn
        self.table = table
        self.columns = tuple(columns)
        self.row = row or default_row(self.columns)
        self.batch_size = batch_size
        self._conn: Any = None
        self._subtask = 0
        self._label = self.connector
        self._records: list[Any] = []
        self._writer = BackgroundWriter()

    def __deepcopy__(self, memo: dict[int, Any]) -> PostgresBatchSink:
        """A copy for one subtask, without a connection (each opens its own)."""
        clone = type(self).__new__(type(self))
        memo[id(self)] = clone
        for name, value in self.__dict__.items():
            if name == "_conn":
                setattr(clone, name, None)
            elif name == "_writer":
                setattr(clone, name, BackgroundWriter())
            elif name == "row":
                setattr(clone, name, value)
            else:
                setattr(clone, name, copy.deepcopy(value, memo))
        return clone

    def open(self, ctx: RuntimeContext) -> None:
        """Connect and check the table (blocks, once per subtask start).

        Raises:
            ConnectorError: the server cannot be reached, refuses the credentials, or
                has no such table.
        """
        self._subtask = ctx.subtask_index
        self._label = f"{self.connector} (subtask {ctx.subtask_index + 1}/{ctx.parallelism})"
        self._conn = connect(self.dsn, self._label, None)
        check_table(self._conn, self.table, self._label, None)
        self._prepare()

    def _prepare(self) -> None:
        """Set up what the writes need (the upsert sink's temporary table)."""

    def write_batch(self, values: list[Any]) -> None:
        """Buffer; once ``batch_size`` records wait, write them in the worker."""
        self._records.extend(values)
        if len(self._records) >= self.batch_size:
            records, self._records = self._records, []
            self._writer.submit(lambda: self._write_committed(records))

    def _write_committed(self, records: list[Any]) -> None:
        psycopg = import_psycopg()
        self._write(records)
        try:
            self._conn.commit()
        except psycopg.Error as error:
            raise rejected(error, [], self._label, None) from error

    def _write(self, records: list[Any]) -> None:
        rows = make_rows(records, self.row, len(self.columns), self._label, None)
        copy_rows(
            self._conn,
            table_identifier(self.table),
            self.columns,
            rows,
            records,
            self._label,
            None,
        )

    def flush(self) -> None:
        """Write and commit everything buffered (blocks)."""
        self._writer.wait()
        records, self._records = self._records, []
        if records:
            self._write_committed(records)

    def snapshot_state(self, checkpoint_id: int) -> None:
        """Flush before the checkpoint is acknowledged."""
        self.flush()

    def finish(self) -> None:
        """End of input: flush."""
        self.flush()

    def close(self) -> None:
        """Drop what is unflushed (it comes again after a failure) and disconnect."""
        self._records = []
        self._writer.close()
        if self._conn is not None and not self._conn.closed:
            self._conn.close()
        self._conn = None


class PostgresUpsertSink(PostgresBatchSink):
    """Upserts rows keyed by ``key_columns``; exactly-once in effect (see the module).

    Args:
        dsn: a libpq connection string or URI.
        table: the target table; must exist, with a primary key or unique index on
            ``key_columns``.
        columns: the columns each record fills, in order.
        key_columns: the columns of the key (a subset of ``columns``).
        row: turns a record into its values (see ``PostgresSink``).
        batch_size: rows per write.

    Raises:
        ConfigError: an option is invalid (when the sink is made).
    """

    kind = "PostgresUpsertSink"

    def __init__(
        self,
        dsn: str,
        table: str,
        columns: Sequence[str],
        key_columns: Sequence[str],
        *,
        row: RowMaker | None = None,
        batch_size: int = 5000,
    ) -> None:
        super().__init__(dsn, table, columns, row=row, batch_size=batch_size)
        if not key_columns or any(c not in self.columns for c in key_columns):
            raise ConfigError(
                f"{self.connector}: key_columns must be a non-empty subset of columns "
                f"{list(self.columns)}, got {key_columns!r}"
            )
        self.key_columns = tuple(key_columns)
        self._key_index = [self.columns.index(c) for c in self.key_columns]
        self._staging = "weir_upsert_staging"

    def _prepare(self) -> None:
        from psycopg import sql

        psycopg = import_psycopg()
        try:
            self._conn.execute(
                sql.SQL(
                    "CREATE TEMPORARY TABLE {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
                ).format(sql.Identifier(self._staging), table_identifier(self.table))
            )
            self._conn.commit()
        except psycopg.Error as error:
            raise ConnectorError(
                self._label, None, f"cannot prepare the upsert: {error}"
            ) from error

    def _write(self, records: list[Any]) -> None:
        from psycopg import sql

        psycopg = import_psycopg()
        rows = make_rows(records, self.row, len(self.columns), self._label, None)
        # The last record of each key wins (ON CONFLICT cannot touch a row twice).
        latest: dict[tuple[Any, ...], int] = {}
        for index, values in enumerate(rows):
            latest[tuple(values[i] for i in self._key_index)] = index
        chosen = sorted(latest.values())
        copy_rows(
            self._conn,
            sql.Identifier(self._staging),
            self.columns,
            [rows[i] for i in chosen],
            [records[i] for i in chosen],
            self._label,
            None,
        )
        names = sql.SQL(", ").join(sql.Identifier(c) for c in self.columns)
        updates = [c for c in self.columns if c not in self.key_columns]
        action = (
            sql.SQL("DO UPDATE SET ")
            + sql.SQL(", ").join(
                sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c))
                for c in updates
            )
            if updates
            else sql.SQL("DO NOTHING")
        )
        statement = (
            sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT ({}) ").format(
                table_identifier(self.table),
                names,
                names,
                sql.Identifier(self._staging),
                sql.SQL(", ").join(sql.Identifier(c) for c in self.key_columns),
            )
            + action
        )
        try:
            self._conn.execute(statement)
        except psycopg.Error as error:
            raise rejected(error, [], self._label, None) from error
