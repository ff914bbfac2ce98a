"""``TwoPhaseCommitSink``: exactly-once output through transactions tied to checkpoints.

After Flink's ``TwoPhaseCommitSinkFunction``. A subclass implements five steps on its
own transaction type ``TXN``:

* ``begin_transaction()`` opens one;
* ``write(txn, value)`` (or ``write_batch(txn, values)``) adds records to it;
* ``pre_commit(txn)`` makes it durable but invisible (flush, fsync, stage): called in the
  synchronous part of the checkpoint, when the barrier passes the sink;
* ``commit(txn)`` makes it visible; called once checkpoint ``n`` completed, for every
  transaction pre-committed at or before ``n``. It must be **idempotent**: after a
  restore, transactions already committed may be committed again;
* ``abort(txn)`` throws it away.

The base class keeps the transactions pre-committed but not yet committed in operator
state (``TXN`` must therefore be msgspec-encodable, or picklable when pickle is allowed),
so a restored job commits them (``recover_and_commit``) and throws away the transaction
that was open at the snapshot (``recover_and_abort``): its records come again from the
sources. The subsuming contract holds: checkpoint ids increase, completing ``n``
commits everything up to ``n``, and a notification may be lost (a later one covers it)
or repeated (nothing is left to commit).

At the end of the input, with checkpointing on, the final checkpoint pre-commits and
commits the last transaction; with checkpointing off, ``finish`` commits it directly.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Generic, TypeVar

import msgspec

from runtime.tasks.context import RuntimeContext
from runtime.tasks.functions import SinkFunction
from storage import ListStateDescriptor, serializer_for

IN = TypeVar("IN")
TXN = TypeVar("TXN")

STATE_NAME = "two-phase-commit-transactions"


class TwoPhaseCommitSink(SinkFunction[IN], Generic[IN, TXN]):
    """Base of exactly-once sinks; see the module docstring.

    A ``CheckpointedFunction`` (its pending transactions are operator state) and a
    ``CheckpointListener`` (it commits on ``notify_checkpoint_complete``): both
    protocols of ``runtime.tasks.functions``.

    Attributes:
        transaction_type: the ``TXN`` class, if msgspec can encode it (a Struct): then
            pending transactions are stored without pickle (canonical savepoints, jobs
            with ``allow_pickle=False``). Left None, they are stored untyped.
        skips_committed_on_restore: see below; False unless the sink implements it.
    """

    transaction_type: type | None = None
    skips_committed_on_restore: bool = False
    """Whether, restored from a checkpoint, the sink finds the output it committed after
    that checkpoint (by a run that went on past it) and does not write it again. When
    every two-phase-commit sink of a job does, recovery may fall back past a checkpoint
    whose completion was notified (a broken newest one) without duplicating output;
    otherwise it refuses unless forced (``allow_older_than_committed``)."""

    def __init__(self) -> None:
        self._current: TXN | None = None
        self._pending: dict[int, TXN] = {}
        self._state: Any = None
        self._checkpointing = True

    # -- what subclasses implement --------------------------------------------------------

    def begin_transaction(self) -> TXN:
        """Open a new transaction."""
        raise NotImplementedError

    def write(self, transaction: TXN, value: IN) -> None:
        """Add one record to ``transaction``."""
        raise NotImplementedError

    def pre_commit(self, transaction: TXN) -> None:
        """Make ``transaction`` durable but not visible (on the checkpoint's barrier)."""

    def commit(self, transaction: TXN) -> None:
        """Make ``transaction`` visible. Must be idempotent."""
        raise NotImplementedError

    def abort(self, transaction: TXN) -> None:
        """Throw ``transaction`` away."""

    def recover_and_commit(self, transaction: TXN) -> None:
        """Commit a transaction restored from a checkpoint (default: ``commit``)."""
        self.commit(transaction)

    def recover_and_abort(self, transaction: TXN) -> None:
        """Throw away the transaction open at the restored snapshot (default: ``abort``)."""
        self.abort(transaction)

    # -- the protocol, driven by the runtime ----------------------------------------------

    @property
    def current_transaction(self) -> TXN | None:
        """The open transaction."""
        return self._current

    @property
    def pending_transactions(self) -> dict[int, TXN]:
        """Pre-committed transactions waiting for their checkpoint, by checkpoint id."""
        return dict(self._pending)

    def initialize_state(self, ctx: RuntimeContext) -> None:
        """Recover pending transactions (commit them) and open a transaction."""
        self._state = ctx.get_list_state(
            ListStateDescriptor(STATE_NAME, type=tuple[str, int, bytes])
        )
        self._checkpointing = ctx.checkpointing_enabled
        if ctx.is_restored:
            # Untyped transactions are unpickled only where the restore allows pickle
            # (never from a savepoint that declares the canonical format).
            backend = ctx.operator_backend
            allow_pickle = True if backend is None else backend.restored_pickle
            for entry in self._state.get():
                kind, _checkpoint_id, encoded = entry
                transaction = self._decode(encoded, allow_pickle)
                if kind == "pending":
                    self.recover_and_commit(transaction)
                else:
                    self.recover_and_abort(transaction)
        self._pending.clear()
        self._current = self.begin_transaction()
        self._store()

    def write_batch(self, values: list[IN]) -> Awaitable[None] | None:
        """Write a buffer into the open transaction."""
        transaction = self._current
        assert transaction is not None, "two-phase-commit sink used before initialize_state"
        for value in values:
            self.write(transaction, value)
        return None

    def snapshot_state(self, checkpoint_id: int) -> None:
        """Pre-commit the open transaction under ``checkpoint_id`` and open the next."""
        transaction = self._current
        assert transaction is not None
        self.pre_commit(transaction)
        self._pending[checkpoint_id] = transaction
        self._current = self.begin_transaction()
        self._store()

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """Commit every transaction pre-committed at or before ``checkpoint_id``."""
        for pending_id in sorted(self._pending):
            if pending_id > checkpoint_id:
                break
            self.commit(self._pending.pop(pending_id))
        self._store()

    def notify_checkpoint_aborted(self, checkpoint_id: int) -> None:
        """Nothing: its transaction stays pending; a later completion commits it."""

    def finish(self) -> None:
        """End of input. Without checkpoints, commit the open transaction now."""
        if not self._checkpointing and self._current is not None:
            transaction = self._current
            self.pre_commit(transaction)
            self.commit(transaction)
            self._current = self.begin_transaction()
            self._store()

    def close(self) -> None:
        """Abort the open transaction (after a failure its records come again)."""
        if self._current is not None:
            self.abort(self._current)
            self._current = None

    def _encode(self, transaction: TXN) -> bytes:
        if self.transaction_type is not None:
            return msgspec.msgpack.encode(transaction)
        return bytes(
            serializer_for(None, allow_pickle=True, what="transaction").encode(transaction)
        )

    def _decode(self, data: bytes, allow_pickle: bool = True) -> TXN:
        if self.transaction_type is not None:
            decoded: TXN = msgspec.msgpack.decode(data, type=self.transaction_type)
            return decoded
        untyped: TXN = serializer_for(None, allow_pickle=allow_pickle, what="transaction").decode(
            data
        )
        return untyped

    def _store(self) -> None:
        if self._state is None:
            return
        entries: list[Any] = [
            ("pending", n, self._encode(t)) for n, t in sorted(self._pending.items())
        ]
        if self._current is not None:
            entries.append(("current", -1, self._encode(self._current)))
        self._state.update(entries)
