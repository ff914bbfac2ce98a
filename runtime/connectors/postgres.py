"""``PostgresSink``: exactly-once rows into a PostgreSQL table by two-phase commit.

After Flink's JDBC exactly-once sink (XA). Each subtask writes the rows of one
checkpoint interval in one transaction on its own connection (``COPY`` in batches of
``batch_size``, in a worker thread so the loop does not block), and the checkpoint's
barrier ends it with ``PREPARE TRANSACTION '<gid>'``: durable in the server, invisible to
readers. When the checkpoint completes, ``COMMIT PREPARED`` makes it visible (on a
second, autocommit connection, since the first may already hold the next
transaction's rows); a transaction whose checkpoint failed stays prepared and a later
completion commits it, as :class:`~runtime.connectors.two_phase_commit.TwoPhaseCommitSink`
does for every sink.

**Transaction ids** are ``weir:<sink>:<subtask>:<checkpoint>:<run>``: ``<sink>`` comes
from ``sink_id`` (by default the job's name and the sink operator's name), ``<run>`` is
drawn each time a subtask starts, so a restored run never reuses the id of a run that
went on past the checkpoint it restores. The prepared ids are operator state: a
restored job commits those its checkpoint lists as pending, and rolls back every other
transaction of its sink that is still prepared (prepared after the restored checkpoint,
by a run that failed or was killed: their records come again from the sources). A job
started without restored state rolls back what an earlier job with the same
``sink_id`` left prepared (as Flink's Kafka sink aborts lingering transactions). So
no prepared transaction is left behind by a job that recovered.

**Committed checkpoints are recorded in the same transaction**: a row
``(sink_id, subtask, checkpoint_id, transaction_id)`` in ``commit_table`` (created if
missing; ``weir_sink_commits`` by default). ``COMMIT PREPARED`` of an id the server no
longer knows is then decided without guessing: the row is there, so it was committed
before (a notification repeated, or lost after the commit, before a failure): skip it;
the row is not there, so the transaction was rolled back by someone else and its rows
are lost: an error says so.

**Falling back past committed output** (a restore from a checkpoint older than one
whose completion was notified): the commit table tells which checkpoints' rows the run
that went on committed, but they are rows of the user's table and the restored run
writes their records again. The sink cannot take them back, so it does not claim to
(``skips_committed_on_restore`` is false) and the recovery planner refuses such a
restore unless forced; :class:`~runtime.connectors.postgres_batch.PostgresUpsertSink`
(keyed, idempotent writes) can be restored from any checkpoint.

Needs ``max_prepared_transactions`` > 0 on the server (an error at start says so), and
one connection per subtask plus one for commits.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import re
import uuid
from collections.abc import Sequence
from typing import Any

import msgspec

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
from runtime.connectors.two_phase_commit import TwoPhaseCommitSink
from runtime.errors import ConfigError
from runtime.tasks.context import RuntimeContext
from storage import ListStateDescriptor

__all__ = ["PostgresSink", "PostgresTransaction", "transaction_id"]

logger = logging.getLogger("weir.sink")

PREPARED_STATE = "postgres-sink-prepared"
"""Union list state: every prepared transaction id pending at the checkpoint, so that a
rescaled subtask does not roll back one that another subtask is about to commit."""

DEFAULT_COMMIT_TABLE = "weir_sink_commits"


class PostgresTransaction(msgspec.Struct):
    """One subtask's transaction: its place in the run, and its id once prepared.

    Attributes:
        index: counts the run's transactions.
        gid: the prepared transaction's id; empty while open, and for a transaction that
            wrote no row (nothing is prepared, nothing to commit).
        checkpoint_id: the checkpoint that prepared it.
    """

    index: int
    gid: str = ""
    checkpoint_id: int = -1


def sink_key(sink_id: str) -> str:
    """The ``<sink>`` part of transaction ids: readable, short, without ``:``."""
    readable = re.sub(r"[^A-Za-z0-9_./-]", "_", sink_id)[:48]
    digest = hashlib.sha1(sink_id.encode()).hexdigest()[:10]
    return f"{readable}~{digest}"


def transaction_id(sink_id: str, subtask: int, checkpoint_id: int, run: str) -> str:
    """``weir:<sink>:<subtask>:<checkpoint>:<run>`` (at most 200 bytes, as PostgreSQL asks)."""
    return f"weir:{sink_key(sink_id)}:{subtask}:{checkpoint_id}:{run}"


def _parse_gid(gid: str) -> tuple[str, int, int, str] | None:
    parts = gid.split(":")
    if len(parts) != 5 or parts[0] != "weir":
        return None
    try:
        return parts[1], int(parts[2]), int(parts[3]), parts[4]
    except ValueError:
        return None


class PostgresSink(TwoPhaseCommitSink[Any, PostgresTransaction]):
    """Exactly-once rows into ``table``; see the module docstring.

    Args:
        dsn: a libpq connection string or URI (``"host=... user=... password=..."``).
        table: the target table (``"name"`` or ``"schema.name"``); must exist.
        columns: the columns each record fills, in order.
        row: turns a record into its values, in ``columns`` order. By default tuples
            and lists are taken as they are, dicts by column name, other objects by
            attribute.
        sink_id: names this sink in transaction ids and in ``commit_table``; stable
            across restores. Defaults to ``"<job name>/<operator name>"``; set it when
            two jobs with the same names write to one database.
        commit_table: where committed checkpoints are recorded (created if missing).
        batch_size: rows per ``COPY`` while a transaction is open.

    Raises:
        ConfigError: an option is invalid (when the sink is made).
    """

    transaction_type = PostgresTransaction
    skips_committed_on_restore = False

    def __init__(
        self,
        dsn: str,
        table: str,
        columns: Sequence[str],
        *,
        row: RowMaker | None = None,
        sink_id: str | None = None,
        commit_table: str = DEFAULT_COMMIT_TABLE,
        batch_size: int = 5000,
    ) -> None:
        super().__init__()
        self.connector = f"PostgresSink(table={table!r})"
        validate_names(self.connector, table, columns)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(
                f"{self.connector}: batch_size must be an int >= 1, got {batch_size!r}"
            )
        if sink_id is not None and (not isinstance(sink_id, str) or not sink_id):
            raise ConfigError(f"{self.connector}: sink_id must be a non-empty string or None")
        self.dsn = dsn
        self.table = table
        self.columns = tuple(columns)
        self.row = row or default_row(self.columns)
        self.sink_id = sink_id
        self.commit_table = commit_table
        self.batch_size = batch_size
        self._conn: Any = None
        self._commit_conn: Any = None
        self._prepared_state: Any = None
        self._restored_prepared: set[str] = set()
        self._subtask = 0
        self._label = self.connector
        self._parallelism = 1
        self._run = ""
        self._key = ""
        self._index = 0
        self._checkpoint_id = 0
        self._rows: list[Sequence[Any]] = []
        self._records: list[Any] = []
        self._writer = BackgroundWriter()

    def __deepcopy__(self, memo: dict[int, Any]) -> PostgresSink:
        """A copy for one subtask, without connections (each opens its own)."""
        clone = type(self).__new__(type(self))
        memo[id(self)] = clone
        for name, value in self.__dict__.items():
            if name in ("_conn", "_commit_conn"):
                setattr(clone, name, None)
            elif name == "_writer":
                setattr(clone, name, BackgroundWriter())
            elif name == "row":
                setattr(clone, name, value)
            else:
                setattr(clone, name, copy.deepcopy(value, memo))
        return clone

    # -- start ----------------------------------------------------------------------------

    def initialize_state(self, ctx: RuntimeContext) -> None:
        """Connect, check the server and table, commit restored transactions, clean up.

        Blocks while it talks to the server (once per subtask start).

        Raises:
            ConnectorError: the server cannot be reached or refuses the credentials,
                ``max_prepared_transactions`` is 0, the table is missing, or a restored
                transaction is neither prepared nor recorded as committed.
        """
        self._subtask = ctx.subtask_index
        self._label = f"{self.connector} (subtask {ctx.subtask_index + 1}/{ctx.parallelism})"
        self._parallelism = ctx.parallelism
        self._run = uuid.uuid4().hex[:8]
        self.sink_id = self.sink_id or f"{ctx.job_name}/{ctx.operator_name}"
        self._key = sink_key(self.sink_id)
        self._conn = connect(self.dsn, self._label, None)
        self._commit_conn = connect(self.dsn, self._label, None, autocommit=True)
        self._check_server()
        check_table(self._conn, self.table, self._label, None)
        self._prepared_state = ctx.get_union_list_state(
            ListStateDescriptor(PREPARED_STATE, type=str)
        )
        self._restored_prepared = set(self._prepared_state.get()) if ctx.is_restored else set()
        super().initialize_state(ctx)
        self._roll_back_strays()

    def _check_server(self) -> None:
        setting = self._commit_conn.execute("SHOW max_prepared_transactions").fetchone()[0]
        if int(setting) == 0:
            raise ConnectorError(
                self._label,
                None,
                "the server has max_prepared_transactions = 0, so it cannot prepare "
                "transactions; set it (postgresql.conf, restart) to at least twice the "
                "sink's parallelism, or use PostgresUpsertSink / PostgresBatchSink",
            )
        from psycopg import sql

        with self._commit_conn.transaction():
            self._commit_conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))", (self.commit_table,)
            )
            self._commit_conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (transaction_id text PRIMARY KEY, "
                    "sink_id text NOT NULL, subtask integer NOT NULL, "
                    "checkpoint_id bigint NOT NULL, committed_at timestamptz NOT NULL "
                    "DEFAULT now())"
                ).format(table_identifier(self.commit_table))
            )

    def _roll_back_strays(self) -> None:
        """Roll back this sink's prepared transactions that no checkpoint lists as pending.

        Each subtask takes those of its own index; subtask 0 also those of indices the
        job no longer has (it was scaled down).
        """
        rows = self._commit_conn.execute(
            "SELECT gid FROM pg_prepared_xacts WHERE database = current_database()"
        ).fetchall()
        keep = self._restored_prepared | {t.gid for t in self.pending_transactions.values()}
        stray = []
        for (gid,) in rows:
            parsed = _parse_gid(gid)
            if parsed is None or parsed[0] != self._key or gid in keep or parsed[3] == self._run:
                continue
            subtask = parsed[1]
            if subtask == self._subtask or (self._subtask == 0 and subtask >= self._parallelism):
                stray.append(gid)
        for gid in stray:
            self._rollback_prepared(gid)
        if stray:
            logger.warning(
                "%s: rolled back %d prepared transaction(s) of sink %r that the "
                "restored checkpoint does not list (prepared after it, by a run that "
                "failed; their records are written again): %s",
                self._label,
                len(stray),
                self.sink_id,
                ", ".join(stray),
            )

    # -- transactions ---------------------------------------------------------------------

    def begin_transaction(self) -> PostgresTransaction:
        """A new transaction (the server's begins with its first row)."""
        self._index += 1
        return PostgresTransaction(self._index)

    def write(self, transaction: PostgresTransaction, value: Any) -> None:
        """Buffer one record (written by the next ``COPY``)."""
        self._records.append(value)

    def write_batch(self, values: list[Any]) -> None:
        """Buffer a batch; once ``batch_size`` records wait, ``COPY`` them in the worker.

        Does not block, unless the previous ``COPY`` is still running (backpressure).
        """
        self._records.extend(values)
        if len(self._records) >= self.batch_size:
            records, self._records = self._records, []
            self._writer.submit(lambda: self._copy(records))

    def _flush(self) -> None:
        """Wait for the worker, then ``COPY`` what is left here (blocks)."""
        self._writer.wait()
        records, self._records = self._records, []
        if records:
            self._copy(records)

    def _copy(self, records: list[Any]) -> None:
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

    def snapshot_state(self, checkpoint_id: int) -> None:
        """Prepare the open transaction under ``checkpoint_id``; record what is pending."""
        self._checkpoint_id = checkpoint_id
        super().snapshot_state(checkpoint_id)
        if self._prepared_state is not None:
            self._prepared_state.update(
                [t.gid for t in self.pending_transactions.values() if t.gid]
            )

    def pre_commit(self, transaction: PostgresTransaction) -> None:
        """Write the last rows and the commit record, then ``PREPARE TRANSACTION``.

        Blocks for the last ``COPY`` and the prepare (part of the checkpoint's
        synchronous step, as in Flink). A transaction without rows prepares nothing.
        """
        self._flush()
        if self._conn.info.transaction_status == 0:  # idle: no row was written
            return
        from psycopg import sql

        psycopg = import_psycopg()
        gid = transaction_id(self.sink_id or "", self._subtask, self._checkpoint_id, self._run)
        try:
            self._conn.execute(
                sql.SQL(
                    "INSERT INTO {} (transaction_id, sink_id, subtask, checkpoint_id) "
                    "VALUES (%s, %s, %s, %s)"
                ).format(table_identifier(self.commit_table)),
                (gid, self.sink_id, self._subtask, self._checkpoint_id),
            )
            self._conn.execute(sql.SQL("PREPARE TRANSACTION {}").format(sql.Literal(gid)))
        except psycopg.Error as error:
            raise rejected(error, [], self._label, None) from error
        transaction.gid = gid
        transaction.checkpoint_id = self._checkpoint_id

    def commit(self, transaction: PostgresTransaction) -> None:
        """``COMMIT PREPARED``; idempotent (the commit table tells a done commit).

        Raises:
            ConnectorError: the transaction is neither prepared nor recorded as
                committed (someone rolled it back: its rows are lost).
        """
        if not transaction.gid:
            return
        psycopg = import_psycopg()
        from psycopg import sql

        try:
            self._commit_conn.execute(
                sql.SQL("COMMIT PREPARED {}").format(sql.Literal(transaction.gid))
            )
        except psycopg.errors.UndefinedObject:
            if self._committed(transaction.gid):
                logger.debug("%s: %s was committed before", self.connector, transaction.gid)
                return
            raise ConnectorError(
                self._label,
                None,
                f"prepared transaction {transaction.gid!r} (checkpoint "
                f"{transaction.checkpoint_id}) is neither prepared nor recorded as committed "
                f"in {self.commit_table!r}: it was rolled back outside the job and its rows "
                f"are lost; restore from an older checkpoint or savepoint to write them again",
            ) from None

    def _committed(self, gid: str) -> bool:
        from psycopg import sql

        row = self._commit_conn.execute(
            sql.SQL("SELECT 1 FROM {} WHERE transaction_id = %s").format(
                table_identifier(self.commit_table)
            ),
            (gid,),
        ).fetchone()
        return row is not None

    def _rollback_prepared(self, gid: str) -> None:
        psycopg = import_psycopg()
        from psycopg import sql

        # Gone already (committed or rolled back): nothing to do.
        with contextlib.suppress(psycopg.errors.UndefinedObject):
            self._commit_conn.execute(sql.SQL("ROLLBACK PREPARED {}").format(sql.Literal(gid)))

    def abort(self, transaction: PostgresTransaction) -> None:
        """Throw the transaction away: roll back the open one, or the prepared one."""
        self._records = []
        self._writer.close()
        if transaction.gid:
            if self._commit_conn is not None and not self._commit_conn.closed:
                self._rollback_prepared(transaction.gid)
        elif self._conn is not None and not self._conn.closed:
            # A broken connection lost the transaction already.
            with contextlib.suppress(import_psycopg().Error):
                self._conn.rollback()

    def recover_and_abort(self, transaction: PostgresTransaction) -> None:
        """Nothing: the transaction open at the snapshot died with its connection."""

    def close(self) -> None:
        """Roll back the open transaction and close both connections.

        Prepared transactions stay prepared: a restored job commits or rolls them back.
        """
        try:
            super().close()
        finally:
            for conn in (self._conn, self._commit_conn):
                if conn is not None and not conn.closed:
                    conn.close()
            self._conn = None
            self._commit_conn = None
