"""Validating sinks and the committed output; broken sinks are caught."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from runtime import RuntimeContext
from runtime.testing import (
    AtLeastOnceSink,
    CheckpointSetup,
    CommittedOutput,
    InjectedFailure,
    KitOptions,
    Phase,
    ValidatingSink,
    ValidatingTransaction,
    ValidationError,
    run_job,
)
from runtime.testing.topologies import PIPELINE
from storage import OperatorStateBackend

# -- the committed output ---------------------------------------------------------------


def test_commits_are_idempotent_and_in_commit_order() -> None:
    output = CommittedOutput()
    output.stage("t1", 0, ["a", "b"])
    output.stage("t2", 1, ["c"])
    assert output.records() == [] and output.pending == ["t1", "t2"]
    assert output.commit("t2") is True
    assert output.commit("t1") is True
    assert output.commit("t2") is False  # repeated: nothing added
    assert output.records() == ["c", "a", "b"]
    assert list(output.by_subtask()) == [(1, "c"), (0, "a"), (0, "b")]
    assert output.stats.repeated_commits == 1 and output.anomalies == []
    assert len(output) == 3


def test_committing_what_was_never_staged_is_an_anomaly() -> None:
    output = CommittedOutput()
    assert output.commit("ghost") is False
    output.stage("t", 0, [])
    output.stage("t", 0, [])
    assert output.anomalies == [
        "transaction ghost was committed but never staged: its records are lost",
        "transaction t was staged twice",
    ]
    assert not output.validate(Counter()).at_least_once


def test_aborted_transactions_leave_nothing() -> None:
    output = CommittedOutput()
    output.stage("t", 0, ["a"])
    output.abort("t")
    output.abort("never staged")
    assert output.pending == [] and output.stats.aborted == 1
    output.append(2, ["x"])
    assert list(output.by_subtask()) == [(2, "x")]


# -- the validating sink, driven by hand ------------------------------------------------


def context(backend: OperatorStateBackend, restored: bool, attempt: int = 0) -> RuntimeContext:
    return RuntimeContext(
        operator_name="sink",
        subtask_index=1,
        parallelism=2,
        max_parallelism=128,
        job_name="job",
        attempt=attempt,
        operator_backend=backend,
        is_restored=restored,
        checkpointing_enabled=True,
    )


def restored_backend(backend: OperatorStateBackend) -> OperatorStateBackend:
    fresh = OperatorStateBackend()
    fresh.restore(backend.snapshot())
    return fresh


def test_the_validating_sink_commits_on_completion_and_recovers_on_restore() -> None:
    output = CommittedOutput()
    backend = OperatorStateBackend()
    sink = ValidatingSink(output)
    sink.initialize_state(context(backend, restored=False))
    sink.write_batch(["a", "b"])
    sink.snapshot_state(1)
    sink.write_batch(["c"])
    sink.snapshot_state(2)
    checkpoint_2 = restored_backend(backend)  # the state checkpoint 2 holds
    sink.write_batch(["d"])  # after the barrier: belongs to the next transaction
    sink.notify_checkpoint_complete(1)
    assert output.records() == ["a", "b"]
    # The job fails before checkpoint 2's notification; the restore commits it, and
    # the records after the barrier come again from the sources.
    sink.close()
    restored = ValidatingSink(output)
    restored.initialize_state(context(checkpoint_2, restored=True, attempt=1))
    assert output.records() == ["a", "b", "c"]
    assert output.pending == []
    # Repeating the notification commits nothing twice.
    restored.notify_checkpoint_complete(2)
    assert output.records() == ["a", "b", "c"]
    current = restored.current_transaction
    assert isinstance(current, ValidatingTransaction)
    assert current.subtask == 1 and "-a1-" in current.txn_id


def test_transaction_ids_are_unique() -> None:
    sink = ValidatingSink(CommittedOutput())
    sink.initialize_state(context(OperatorStateBackend(), restored=False))
    ids = {sink.begin_transaction().txn_id for _ in range(100)}
    assert len(ids) == 100


# -- broken sinks, caught ---------------------------------------------------------------


class CommitsAtTheBarrier(ValidatingSink):
    """Commits when the barrier passes, before the checkpoint completed (wrong)."""

    def pre_commit(self, transaction: ValidatingTransaction) -> None:
        super().pre_commit(transaction)
        self.output.commit(transaction.txn_id)

    def __deepcopy__(self, memo: dict[int, Any]) -> CommitsAtTheBarrier:
        return CommitsAtTheBarrier(self.output)


class ForgetsPendingCommits(ValidatingSink):
    """Throws away pre-committed transactions on restore instead of committing (wrong)."""

    def recover_and_commit(self, transaction: ValidatingTransaction) -> None:
        self.abort(transaction)

    def __deepcopy__(self, memo: dict[int, Any]) -> ForgetsPendingCommits:
        return ForgetsPendingCommits(self.output)


class CommitsTwice(ValidatingSink):
    """Appends a transaction's records on every commit: not idempotent (wrong)."""

    staged: dict[str, list[Any]] = {}  # shared by every copy; transaction ids are unique

    def pre_commit(self, transaction: ValidatingTransaction) -> None:
        self.staged[transaction.txn_id] = self._buffers.pop(transaction.txn_id, [])

    def commit(self, transaction: ValidatingTransaction) -> None:
        self.output.append(transaction.subtask, self.staged[transaction.txn_id])

    def __deepcopy__(self, memo: dict[int, Any]) -> CommitsTwice:
        return CommitsTwice(self.output)


ONE = KitOptions(splits=2, records_per_split=200, records_per_second=10_000)


async def broken(sink: type[ValidatingSink], failure: InjectedFailure) -> ValidationError:
    outcome = await run_job(
        PIPELINE,
        setup=CheckpointSetup.ALIGNED,
        parallelism=1,
        schedule=[failure],
        sink=sink,
        options=ONE,
    )
    assert outcome.result.restarts == len(outcome.fired) == 1
    with pytest.raises(ValidationError) as caught:
        outcome.output.validate(PIPELINE.expected(outcome.kit)).assert_exactly_once()
    return caught.value


async def test_a_sink_that_commits_at_the_barrier_duplicates() -> None:
    error = await broken(
        CommitsAtTheBarrier, InjectedFailure("sink", phase=Phase.SNAPSHOT, checkpoint=2)
    )
    assert "0 lost" in str(error) and "first duplicated" in str(error)


async def test_a_sink_that_forgets_pending_commits_loses_records() -> None:
    error = await broken(
        ForgetsPendingCommits, InjectedFailure("sink", phase=Phase.BEFORE_NOTIFY, checkpoint=2)
    )
    assert "first lost" in str(error) and "0 duplicated" in str(error)


async def test_a_sink_whose_commit_is_not_idempotent_duplicates_after_a_restore() -> None:
    # The commit of checkpoint 2 happened; the restore from checkpoint 2 commits it again.
    outcome = await run_job(
        PIPELINE,
        parallelism=1,
        schedule=[InjectedFailure("sink", phase=Phase.AFTER_NOTIFY, checkpoint=2)],
        sink=ValidatingSink,
        options=ONE,
    )
    # The right sink survives it ...
    outcome.output.validate(PIPELINE.expected(outcome.kit)).assert_exactly_once()
    assert outcome.output.stats.repeated_commits >= 1
    # ... the one whose commit is not idempotent does not.
    error = await broken(
        CommitsTwice, InjectedFailure("sink", phase=Phase.AFTER_NOTIFY, checkpoint=2)
    )
    assert "first duplicated" in str(error)


async def test_the_at_least_once_sink_repeats_replayed_records() -> None:
    outcome = await run_job(
        PIPELINE,
        parallelism=1,
        schedule=[InjectedFailure("sink", after_records=250)],
        transactional=False,
        options=ONE,
    )
    found = outcome.output.validate(PIPELINE.expected(outcome.kit), order="none")
    found.assert_at_least_once()
    # What the sink wrote after the last completed checkpoint came again.
    assert found.duplicated and not found.exactly_once


async def test_the_at_least_once_sink_without_failures_is_exact() -> None:
    outcome = await run_job(PIPELINE, parallelism=2, transactional=False, options=ONE)
    outcome.output.validate(PIPELINE.expected(outcome.kit)).assert_exactly_once()
    assert isinstance(AtLeastOnceSink(outcome.output), AtLeastOnceSink)
