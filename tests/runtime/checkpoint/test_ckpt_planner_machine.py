"""``CheckpointPlanner`` as a Hypothesis state machine: no event loop, no storage.

The machine plays the actor: it feeds the planner clock ticks, client requests, task
acknowledgements (each says whether the task had ended its input), declines, the
end of tasks' input, and the outcomes of the storage operations the planner asked for
(``WriteMetadata`` is answered at once, as the actor does, succeeding or failing as
the last ``storage`` rule said). It checks, after every step:

* at most ``max_concurrent`` checkpoints are pending; ids only grow;
* a checkpoint is triggered at every running source; its metadata is written once,
  only when every task acknowledged it; completed ids grow, at most ``retained`` kept;
* every client request is settled exactly once (resolved or failed), never twice;
* a completion is notified ``final`` only if every task acknowledged it after the end of
  its input; at most one is final; nothing is triggered after it;
* with ``tolerable_failures`` failures in a row the job is failed, never earlier.
"""

from __future__ import annotations

from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from runtime.checkpoint import CheckpointConfig
from runtime.checkpoint.actions import (
    Discard,
    FailJob,
    FailRequest,
    OperatorInfo,
    PrepareSavepointFolder,
    RecordNotified,
    Request,
    ResolveRequest,
    SendToTasks,
    WriteMetadata,
)
from runtime.checkpoint.events import (
    CheckpointAcknowledged,
    CheckpointDeclined,
    CheckpointOptions,
    InputEnded,
    NotifyCheckpointComplete,
    SubtaskCheckpointMetrics,
    SubtaskStateReport,
    TriggerCheckpoint,
)
from runtime.checkpoint.ids import CheckpointId, TaskId
from runtime.checkpoint.planner import CheckpointPlanner
from storage.checkpoint import SubtaskStateHandle

SOURCES = [TaskId("src:0"), TaskId("src:1")]
TASKS = [*SOURCES, TaskId("map:0")]
INTERVAL = 10.0
TOLERABLE = 2
RETAINED = 2


class PlannerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        config = CheckpointConfig(
            interval=INTERVAL,
            timeout=35.0,
            tolerable_failures=TOLERABLE,
            retained=RETAINED,
            max_concurrent=2,
        )
        config.validate()
        self.planner = CheckpointPlanner(
            config,
            "job",
            TASKS,
            SOURCES,
            [OperatorInfo("src", "src", 2, 128), OperatorInfo("map", "map", 1, 128)],
            wall_clock=lambda: 0.0,
        )
        self.now = 100.0
        self.planner.start(self.now)
        self.ended: set[TaskId] = set()
        self.storage_ok = True
        self.written: set[int] = set()
        self.triggered: list[int] = []
        self.completed: list[int] = []
        self.finals: list[int] = []
        self.acks: dict[int, dict[TaskId, bool]] = {}
        self.requests: list[Request] = []
        self.settled: dict[int, str] = {}
        self.failed_job = False
        self.failures_at_restart = 0

    # -- performing the actions like the actor ---------------------------------------------

    def perform(self, actions: list[Any]) -> None:
        for action in actions:
            assert not self.failed_job, f"an action after the job failed: {action}"
            match action:
                case SendToTasks(tasks=tasks, message=TriggerCheckpoint(barrier=barrier)):
                    assert set(tasks) == set(SOURCES), tasks
                    checkpoint_id = barrier.checkpoint_id
                    assert not self.triggered or checkpoint_id > self.triggered[-1]
                    assert not self.finals, f"checkpoint {checkpoint_id} after the final one"
                    self.triggered.append(checkpoint_id)
                case SendToTasks(message=NotifyCheckpointComplete() as message):
                    if message.final:
                        flags = self.acks[message.checkpoint_id]
                        assert set(flags) == set(TASKS) and all(flags.values()), flags
                        self.finals.append(message.checkpoint_id)
                case SendToTasks():
                    pass
                case WriteMetadata():
                    self.answer(action)
                case PrepareSavepointFolder():
                    raise AssertionError("no savepoint was asked for")
                case Discard() | RecordNotified():
                    pass
                case ResolveRequest(request=request) | FailRequest(request=request):
                    key = id(request)
                    assert key not in self.settled, "a request settled twice"
                    self.settled[key] = type(action).__name__
                case FailJob():
                    assert self.planner.failures.consecutive > TOLERABLE, "failed too early"
                    self.failed_job = True

    # -- rules ----------------------------------------------------------------------------

    @precondition(lambda self: not self.failed_job)
    @rule(seconds=st.sampled_from([0.0, 1.0, INTERVAL, 40.0]))
    def tick(self, seconds: float) -> None:
        self.now += seconds
        self.perform(self.planner.tick(self.now))

    @precondition(lambda self: not self.failed_job)
    @rule()
    def request_checkpoint(self) -> None:
        request = Request(CheckpointOptions())
        self.requests.append(request)
        self.planner.request(request)

    @precondition(lambda self: not self.failed_job and bool(self.planner.pending))
    @rule(data=st.data())
    def acknowledge(self, data: st.DataObject) -> None:
        checkpoint_id = data.draw(st.sampled_from(sorted(self.planner.pending)))
        task = data.draw(st.sampled_from(TASKS))
        self.ack(checkpoint_id, task)

    @precondition(lambda self: not self.failed_job and bool(self.planner.pending))
    @rule()
    def everyone_acknowledges_the_oldest(self) -> None:
        checkpoint_id = min(self.planner.pending)
        for task in TASKS:
            if checkpoint_id in self.planner.pending:
                self.ack(checkpoint_id, task)

    def ack(self, checkpoint_id: CheckpointId, task: TaskId) -> None:
        after_end = task in self.ended
        self.acks.setdefault(checkpoint_id, {})[task] = after_end
        report = SubtaskStateReport(
            task.split(":")[0],
            SubtaskStateHandle(
                subtask_index=int(task.split(":")[1]), handle=None, state_size=0, in_flight_bytes=0
            ),
        )
        ack = CheckpointAcknowledged(
            checkpoint_id, task, SubtaskCheckpointMetrics(), [report], after_end_of_input=after_end
        )
        self.perform(self.planner.handle(ack, self.now))

    @precondition(lambda self: not self.failed_job and bool(self.planner.pending))
    @rule(data=st.data())
    def decline(self, data: st.DataObject) -> None:
        checkpoint_id = data.draw(st.sampled_from(sorted(self.planner.pending)))
        message = CheckpointDeclined(checkpoint_id, TASKS[-1], "declined")
        self.perform(self.planner.handle(message, self.now))

    @precondition(lambda self: not self.failed_job)
    @rule(task=st.sampled_from(TASKS))
    def end_input(self, task: TaskId) -> None:
        self.ended.add(task)
        self.perform(self.planner.handle(InputEnded(task), self.now))

    @rule(ok=st.booleans())
    def storage(self, ok: bool) -> None:
        self.storage_ok = ok

    def answer(self, write: WriteMetadata) -> None:
        checkpoint_id = CheckpointId(write.metadata.checkpoint_id)
        assert set(self.acks[checkpoint_id]) == set(TASKS), "complete before every ack"
        assert checkpoint_id not in self.written, "metadata written twice"
        self.written.add(checkpoint_id)
        if self.storage_ok:
            assert not self.completed or checkpoint_id > self.completed[-1]
            self.completed.append(checkpoint_id)
            actions = self.planner.metadata_written(checkpoint_id, f"chk-{checkpoint_id}", self.now)
        else:
            actions = self.planner.metadata_failed(checkpoint_id, "disk full", self.now)
        self.perform(actions)

    @precondition(lambda self: self.failed_job)
    @rule()
    def restart(self) -> None:
        # The job master restarts the job: a new attempt with new tasks.
        self.failed_job = False
        self.failures_at_restart = self.planner.failures.consecutive
        self.ended = set()
        self.perform(self.planner.prepare_attempt(TASKS, SOURCES, self.now))
        assert self.planner.pending == {}

    # -- invariants -----------------------------------------------------------------------

    @invariant()
    def bounded(self) -> None:
        assert len(self.planner.pending) <= 2
        assert len(self.planner.store) <= RETAINED
        assert len(self.finals) <= 1

    @invariant()
    def fails_the_job_past_the_tolerable_failures(self) -> None:
        consecutive = self.planner.failures.consecutive
        if consecutive > TOLERABLE and consecutive != self.failures_at_restart:
            assert self.failed_job, f"{consecutive} failures in a row, the job goes on"

    @invariant()
    def every_settled_request_was_asked(self) -> None:
        assert set(self.settled) <= {id(r) for r in self.requests}


PlannerMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_checkpoint_planner = PlannerMachine.TestCase
