"""A worker process SIGKILLed at named points of a checkpoint; the output stays exactly-once.

The kill points are ``tests/e2e/crash_job.py``'s (its ``KillSwitch`` and hooks, installed
in one worker process of the first attempt only): the K-th checkpoint's first state file
half written (``state-write:K``), the exactly-once ``FileSink``'s snapshot of the K-th
checkpoint before it pre-commits (``pre-commit:K``), the first commit of a pre-committed
part file (``commit``), and the N-th record at the counter (``record:N``). Never a time.
The master sees the worker die, restarts the job from its latest checkpoint with new
processes, and the committed output must hold, for every key, the counts ``1..n`` once
each and every record once.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from e2e_modules import load

from runtime import (
    FileSink,
    FixedDelayRestart,
    KeyedProcessFunction,
    RuntimeContext,
    StreamEnvironment,
    ValueStateDescriptor,
)
from runtime.cluster.worker import ATTEMPT_VARIABLE, WORKER_INDEX_VARIABLE
from runtime.connectors.file_sink import read_committed
from runtime.connectors.sequence import GeneratorSource
from runtime.testing.gates import GatedReader, SourceGate

crash_job = load("crash_job")

COUNT = 1_200
KEYS = 6
RATE = 3_000  # records/s over both sources: ~0.4 s, some 20 checkpoints at 20 ms
# The first attempt never ends its input (see HoldOpenInFirstAttempt): no kill point
# depends on how many checkpoints fit in the run.

_SWITCH: Any = None  # one per worker process


def _record(i: int) -> tuple[int, int]:
    return (i % KEYS, i)


class KillingCount(KeyedProcessFunction):
    """Counts per key; in the first attempt, arms ``spec`` in the process of ``worker``.

    The switch is armed when the function is unpickled in a worker, before any operator
    is made (the hooks replace storage and sink functions, which operators may bind).
    """

    def __init__(self, spec: str, worker: int) -> None:
        self.spec = spec
        self.worker = worker
        self.switch: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"spec": self.spec, "worker": self.worker}

    def __setstate__(self, state: dict[str, Any]) -> None:
        global _SWITCH
        self.spec, self.worker = state["spec"], state["worker"]
        self.switch = None
        if (
            os.environ.get(WORKER_INDEX_VARIABLE) == str(self.worker)
            and os.environ.get(ATTEMPT_VARIABLE) == "0"
        ):
            if _SWITCH is None:
                _SWITCH = crash_job.KillSwitch(self.spec)
                crash_job.install_kill_switch(_SWITCH)
            self.switch = _SWITCH

    def open(self, ctx: RuntimeContext) -> None:
        self.count = ctx.get_state(ValueStateDescriptor("count", default=0))

    def process_element(self, value: tuple[int, int], ctx: RuntimeContext) -> list[str]:
        if self.switch is not None and self.switch.at_count("record"):
            self.switch.kill(record=value[1])
        n = self.count.value() + 1
        self.count.update(n)
        return [f"{value[0]} {value[1]} {n}"]


class HoldOpenInFirstAttempt:
    """``source``, whose readers never end in attempt 0 (a shut ``SourceGate``).

    So the first attempt goes on taking checkpoints until its kill point comes, however
    slow the machine; later attempts read to the end.
    """

    def __init__(self, source: GeneratorSource) -> None:
        self.source = source
        self.records_per_second = source.records_per_second

    def create_enumerator(self) -> Any:
        return self.source.create_enumerator()

    def create_reader(self, subtask_index: int) -> Any:
        reader = self.source.create_reader(subtask_index)
        if os.environ.get(ATTEMPT_VARIABLE) == "0":
            return GatedReader(reader, SourceGate(hold_at_end=True), subtask_index)
        return reader


def check_output(lines: list[str]) -> None:
    """Every record once; per key the counts 1..n once each."""
    seen = sorted(int(line.split()[1]) for line in lines)
    assert seen == list(range(COUNT)), "the committed output is not exactly-once"
    counts: dict[int, list[int]] = defaultdict(list)
    for line in lines:
        key, _, n = map(int, line.split())
        counts[key].append(n)
    for key, ns in counts.items():
        assert sorted(ns) == list(range(1, len(ns) + 1)), f"key {key}: counts {sorted(ns)}"


SCHEDULES = [
    *(f"state-write:{k}" for k in (1, 2, 3)),
    *(f"pre-commit:{k}" for k in (1, 2, 3)),
    "commit",
    *(f"record:{n}" for n in (1, 150, 400)),
]
"""10 kill points x 2 workers = 20 schedules."""


@pytest.mark.parametrize("worker", [0, 1])
@pytest.mark.parametrize("spec", SCHEDULES)
async def test_a_worker_killed_during_checkpoints_leaves_exactly_once_output(
    tmp_path: Path, spec: str, worker: int
) -> None:
    out = tmp_path / "out"
    env = StreamEnvironment(parallelism=2, workers=2, buffer_size=16, channel_capacity=4)
    env.enable_checkpointing(0.02, storage=(tmp_path / "chk").as_uri())
    env.set_restart_strategy(FixedDelayRestart(2, 0.0))
    (
        env.from_source(
            HoldOpenInFirstAttempt(GeneratorSource(_record, COUNT, RATE)), uid="numbers"
        )
        .key_by(lambda pair: pair[0])
        .process(KillingCount(spec, worker), name="count", uid="count")
        .sink_to(FileSink(out), name="files", uid="files")
    )
    result = await env.execute(f"crash-{spec}-{worker}")
    assert result.restarts == 1, f"the kill point {spec} was not reached: {result.failures}"
    assert "died" in result.failures[0] or "closed" in result.failures[0], result.failures
    check_output(read_committed(out))
