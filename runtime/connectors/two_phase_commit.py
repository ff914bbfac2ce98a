"""``TwoPhaseCommitSink``: exactly-once output through transactions tied to checkpoints.

After Flink's ``TwoPhaseCommitSinkFunction``. A subclass implements five steps on its
own transaction type ``TXN``:

* ``begin_transaction()`` opens one;
* ``write(txn, value)`` (or ``write_batch(txn, values)``) adds records to it;
* ``pre_commit(txn)`` makes it durable but invisible (flush, fsync, stage): called in the
  synchronous part of the checkpoint, when the barrier passes the sink. It may be
  ``async def``: then its I/O runs while records go on flowing (into the next
  transaction), and the checkpoint is acknowledged only once it finished. Pre-commits
  run one at a time, in checkpoint order; one that failed (or never ran) fails the
  subtask at its next record and lets no later checkpoint complete, since that
  checkpoint's state would name a transaction that is not durable. (A subclass that
  overrides ``snapshot_state`` must return what ``super().snapshot_state`` returned);
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

import inspect
from collections.abc import Awaitable
from typing import Any, Generic, TypeVar

import anyio
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
        # Asynchronous pre-commits: the checkpoints whose pre-commit has not finished
        # yet, the lock that runs them in order, and the error of one that failed.
        self._unfinished: set[int] = set()
        self._works: dict[int, Awaitable[None]] = {}  # pre-commits not started yet
        self._pre_commit_lock: anyio.Lock | None = None
        self._pre_commit_error: BaseException | None = None

    # -- what subclasses implement --------------------------------------------------------

    def begin_transaction(self) -> TXN:
        """Open a new transaction."""
        raise NotImplementedError

    def write(self, transaction: TXN, value: IN) -> None:
        """Add one record to ``transaction``."""
        raise NotImplementedError

    def pre_commit(self, transaction: TXN) -> Awaitable[None] | None:
        """Make ``transaction`` durable but not visible (on the checkpoint's barrier).

        May return an awaitable (``async def``): see the module docstring.
        """
        return None

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

    def check_pre_commits(self) -> None:
        """Raise if an asynchronous pre-commit failed (the subtask must restart)."""
        if self._pre_commit_error is not None:
            raise RuntimeError(
                f"{type(self).__name__}: the pre-commit of checkpoint(s) "
                f"{sorted(self._unfinished)} failed: "
                f"{type(self._pre_commit_error).__name__}: {self._pre_commit_error}; the "
                f"subtask restarts from the latest completed checkpoint (its records "
                f"come again)"
            ) from self._pre_commit_error

    def write_batch(self, values: list[IN]) -> Awaitable[None] | None:
        """Write a buffer into the open transaction."""
        self.check_pre_commits()
        transaction = self._current
        assert transaction is not None, "two-phase-commit sink used before initialize_state"
        for value in values:
            self.write(transaction, value)
        return None

    def snapshot_state(self, checkpoint_id: int) -> Awaitable[None] | None:
        """Pre-commit the open transaction under ``checkpoint_id`` and open the next.

        Returns the rest of an asynchronous pre-commit: the runtime awaits it before
        the checkpoint is acknowledged.
        """
        self.check_pre_commits()
        transaction = self._current
        assert transaction is not None
        work = self.pre_commit(transaction)
        self._pending[checkpoint_id] = transaction
        self._current = self.begin_transaction()
        self._store()
        if work is None or not inspect.isawaitable(work):
            return None
        self._unfinished.add(checkpoint_id)
        self._works[checkpoint_id] = work
        if self._pre_commit_lock is None:
            self._pre_commit_lock = anyio.Lock()
        return self._pre_committed(checkpoint_id, work, self._pre_commit_lock)

    async def _pre_committed(
        self, checkpoint_id: int, work: Awaitable[None], lock: anyio.Lock
    ) -> None:
        async with lock:  # first come, first served: in checkpoint order
            self._works.pop(checkpoint_id, None)
            try:
                await work
            except BaseException as error:
                self._pre_commit_error = error
                raise
            # An older one that failed or never ran leaves its transaction in this
            # checkpoint's state, not durable: this checkpoint must not complete.
            older = sorted(n for n in self._unfinished if n < checkpoint_id)
            if older:
                raise RuntimeError(
                    f"{type(self).__name__}: the pre-commit of checkpoint(s) {older} did "
                    f"not finish, so checkpoint {checkpoint_id} cannot complete"
                )
            self._unfinished.discard(checkpoint_id)

    def _check_durable(self, checkpoint_id: int) -> None:
        """Refuse to commit past an asynchronous pre-commit that has not finished.

        The runtime awaits it before the acknowledgement, so this only fires when the
        awaitable ``snapshot_state`` returned was dropped (a wrapper that did not hand
        it on) or the pre-commit failed: committing would publish missing data.
        """
        unfinished = sorted(n for n in self._unfinished if n <= checkpoint_id)
        if unfinished:
            raise RuntimeError(
                f"{type(self).__name__}: checkpoint {checkpoint_id} completed, but the "
                f"pre-commit of checkpoint(s) {unfinished} did not finish (failed, or "
                f"the awaitable snapshot_state returned was not awaited: a wrapper or "
                f"subclass must return it); nothing is committed, the subtask restarts"
            )

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """Commit every transaction pre-committed at or before ``checkpoint_id``."""
        self._check_durable(checkpoint_id)
        for pending_id in sorted(self._pending):
            if pending_id > checkpoint_id:
                break
            self.commit(self._pending.pop(pending_id))
        self._store()

    def notify_checkpoint_aborted(self, checkpoint_id: int) -> None:
        """Nothing: its transaction stays pending; a later completion commits it."""

    def finish(self) -> Awaitable[None] | None:
        """End of input. Without checkpoints, commit the open transaction now."""
        if not self._checkpointing and self._current is not None:
            transaction = self._current
            work = self.pre_commit(transaction)
            if work is not None and inspect.isawaitable(work):
                return self._finish_after(transaction, work)
            self._commit_at_end(transaction)
        return None

    async def _finish_after(self, transaction: TXN, work: Awaitable[None]) -> None:
        await work
        self._commit_at_end(transaction)

    def _commit_at_end(self, transaction: TXN) -> None:
        self.commit(transaction)
        self._current = self.begin_transaction()
        self._store()

    def close(self) -> None:
        """Abort the open transaction (after a failure its records come again).

        Pre-commits that never started (the task stopped first, or their awaitable was
        dropped) are closed: their transactions are never committed by this run.
        """
        for work in self._works.values():
            if inspect.iscoroutine(work) and inspect.getcoroutinestate(work) == "CORO_CREATED":
                work.close()
        self._works.clear()
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
