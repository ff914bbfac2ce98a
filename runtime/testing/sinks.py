"""Validating sinks: they write into a ``CommittedOutput`` that a test reads afterwards.

``CommittedOutput`` stands for the outside system a job writes to, seen by a reader who
only sees what was committed. It outlives every subtask copy and every attempt of a job
(``__deepcopy__`` returns it), so it holds the output of the whole run, failures and
restarts included. It is transactional, like a database or Flink's ``FileSink``:

* ``stage(txn, subtask, records)``: durable but invisible (a two-phase-commit sink's
  ``pre_commit``);
* ``commit(txn)``: visible; idempotent, so a transaction committed again (a repeated
  notification, a recovery after a commit) adds nothing. Committing a transaction that
  was never staged is an anomaly (its records are lost) and is recorded as one;
* ``abort(txn)``: thrown away;
* ``append(subtask, records)``: visible at once (a sink without transactions).

Two sinks write to it:

* ``ValidatingSink(output)``: exactly-once, a ``TwoPhaseCommitSink`` whose transactions
  are in-memory lists with unique ids, staged at the checkpoint's barrier and committed
  when the checkpoint completed (or when a restore recovers them);
* ``AtLeastOnceSink(output)``: appends every buffer as it arrives; after a failure the
  replayed records come again, so it shows what an at-least-once sink would.

``output.validate(expected)`` checks what was committed (``runtime.testing.validation``).
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from runtime.connectors.two_phase_commit import TwoPhaseCommitSink
from runtime.tasks.context import RuntimeContext
from runtime.tasks.functions import SinkFunction
from runtime.testing.tagged import RecordId
from runtime.testing.validation import Validation, validate


@dataclass(slots=True)
class CommittedTransaction:
    """A transaction as committed: who wrote it and its records, in order."""

    txn_id: str
    subtask: int
    records: list[Any]


@dataclass(slots=True)
class _Staged:
    subtask: int
    records: list[Any]


@dataclass(slots=True)
class OutputStatistics:
    """What happened to the transactions of a ``CommittedOutput``.

    Attributes:
        staged: transactions staged (pre-committed).
        committed: transactions committed (first commits only).
        repeated_commits: commits of a transaction already committed (ignored).
        aborted: staged transactions aborted.
        appended: buffers appended without a transaction.
    """

    staged: int = 0
    committed: int = 0
    repeated_commits: int = 0
    aborted: int = 0
    appended: int = 0


class CommittedOutput:
    """The committed output of a job's validating sinks, over all subtasks and attempts.

    Used from the job's tasks, all on one event loop; no method blocks.
    """

    def __init__(self) -> None:
        self.transactions: list[CommittedTransaction] = []
        self.anomalies: list[str] = []
        self.stats = OutputStatistics()
        self._staged: dict[str, _Staged] = {}
        self._committed: set[str] = set()

    def __deepcopy__(self, memo: dict[int, Any]) -> CommittedOutput:
        # Shared by every per-subtask copy of the sinks that write to it.
        return self

    def __repr__(self) -> str:
        return (
            f"CommittedOutput({len(self.transactions)} transactions, "
            f"{sum(len(t.records) for t in self.transactions)} records)"
        )

    # -- writing --------------------------------------------------------------------------

    def stage(self, txn_id: str, subtask: int, records: list[Any]) -> None:
        """Make ``records`` durable under ``txn_id``, not yet visible."""
        if txn_id in self._staged or txn_id in self._committed:
            self.anomalies.append(f"transaction {txn_id} was staged twice")
            return
        self._staged[txn_id] = _Staged(subtask, list(records))
        self.stats.staged += 1

    def commit(self, txn_id: str) -> bool:
        """Make ``txn_id`` visible; True if it was committed now, False if before."""
        if txn_id in self._committed:
            self.stats.repeated_commits += 1
            return False
        staged = self._staged.pop(txn_id, None)
        if staged is None:
            self.anomalies.append(
                f"transaction {txn_id} was committed but never staged: its records are lost"
            )
            return False
        self._committed.add(txn_id)
        self.transactions.append(CommittedTransaction(txn_id, staged.subtask, staged.records))
        self.stats.committed += 1
        return True

    def abort(self, txn_id: str) -> None:
        """Throw away ``txn_id`` if it was staged (nothing if not, or if committed)."""
        if self._staged.pop(txn_id, None) is not None:
            self.stats.aborted += 1

    def append(self, subtask: int, records: list[Any]) -> None:
        """Make ``records`` visible at once (no transaction)."""
        self.stats.appended += 1
        self.transactions.append(
            CommittedTransaction(f"append-{self.stats.appended}", subtask, list(records))
        )

    # -- reading --------------------------------------------------------------------------

    @property
    def pending(self) -> list[str]:
        """Ids of staged transactions never committed nor aborted."""
        return list(self._staged)

    def records(self) -> list[Any]:
        """Every committed record, transaction by transaction in commit order."""
        return [record for txn in self.transactions for record in txn.records]

    def by_subtask(self) -> Iterator[tuple[int, Any]]:
        """``(subtask, record)`` for every committed record, in commit order."""
        for txn in self.transactions:
            for record in txn.records:
                yield txn.subtask, record

    def __len__(self) -> int:
        return sum(len(txn.records) for txn in self.transactions)

    def validate(
        self,
        expected: Counter[RecordId],
        *,
        order: Literal["split", "key", "none"] = "split",
    ) -> Validation:
        """Check the committed records against ``expected`` (see ``validate``)."""
        return validate(self.by_subtask(), expected, order=order, anomalies=self.anomalies)


class ValidatingTransaction(msgspec.Struct, frozen=True):
    """One transaction of a ``ValidatingSink``: its unique id and its subtask."""

    txn_id: str
    subtask: int


class ValidatingSink(TwoPhaseCommitSink[Any, ValidatingTransaction]):
    """An exactly-once sink into a ``CommittedOutput``, on ``TwoPhaseCommitSink``.

    Each transaction buffers its records in memory, is staged in ``output`` when the
    checkpoint's barrier passes (``pre_commit``) and committed when the checkpoint
    completes, or when a restored subtask recovers it. Transaction ids are unique over
    subtasks, attempts and runs.

    Args:
        output: where committed records go (shared by every copy).
    """

    def __init__(self, output: CommittedOutput) -> None:
        super().__init__()
        self.output = output
        self._subtask = 0
        self._attempt = 0
        self._counter = 0
        self._buffers: dict[str, list[Any]] = {}

    def __deepcopy__(self, memo: dict[int, Any]) -> ValidatingSink:
        return ValidatingSink(self.output)

    def initialize_state(self, ctx: RuntimeContext) -> None:
        """Learn the subtask; recover pending transactions (commit them); open one."""
        self._subtask = ctx.subtask_index
        self._attempt = ctx.attempt
        super().initialize_state(ctx)

    def begin_transaction(self) -> ValidatingTransaction:
        """A new, empty transaction with a fresh id."""
        self._counter += 1
        txn_id = f"s{self._subtask}-a{self._attempt}-{self._counter}-{uuid.uuid4().hex[:8]}"
        self._buffers[txn_id] = []
        return ValidatingTransaction(txn_id, self._subtask)

    def write(self, transaction: ValidatingTransaction, value: Any) -> None:
        """Add one record to the transaction."""
        self._buffers.setdefault(transaction.txn_id, []).append(value)

    def write_batch(self, values: list[Any]) -> None:
        """Add a buffer of records to the open transaction."""
        transaction = self.current_transaction
        assert transaction is not None, "ValidatingSink used before initialize_state"
        self._buffers.setdefault(transaction.txn_id, []).extend(values)

    def pre_commit(self, transaction: ValidatingTransaction) -> None:
        """Stage the transaction's records in the output."""
        records = self._buffers.pop(transaction.txn_id, [])
        self.output.stage(transaction.txn_id, transaction.subtask, records)

    def commit(self, transaction: ValidatingTransaction) -> None:
        """Commit the transaction in the output (idempotent)."""
        self.output.commit(transaction.txn_id)

    def abort(self, transaction: ValidatingTransaction) -> None:
        """Drop the transaction's records, staged or not."""
        self._buffers.pop(transaction.txn_id, None)
        self.output.abort(transaction.txn_id)


class AtLeastOnceSink(SinkFunction[Any]):
    """Appends every buffer to ``output`` as it arrives: at-least-once after a failure.

    Args:
        output: where records go (shared by every copy).
    """

    def __init__(self, output: CommittedOutput) -> None:
        self.output = output
        self._subtask = 0

    def __deepcopy__(self, memo: dict[int, Any]) -> AtLeastOnceSink:
        return AtLeastOnceSink(self.output)

    def open(self, ctx: RuntimeContext) -> None:
        """Learn the subtask."""
        self._subtask = ctx.subtask_index

    def write_batch(self, values: list[Any]) -> None:
        """Append the buffer."""
        if values:
            self.output.append(self._subtask, values)
