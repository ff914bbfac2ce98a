"""``GatedSource``: readers hold back when the gate says so, and go on when it opens."""

from __future__ import annotations

import asyncio
import copy

import pytest

from runtime import ConfigError, JobStatus, StreamEnvironment
from runtime.connectors.sequence import GeneratorSource
from runtime.testing.gates import GatedSource, SourceGate


def reader(gate: SourceGate, count: int = 10, subtask: int = 0) -> object:
    source = GatedSource(GeneratorSource(lambda i: i, count), gate)
    [splits] = source.create_enumerator().assign_splits(1)
    made = source.create_reader(subtask)
    made.add_splits(splits)
    return made


async def test_a_reader_holds_after_its_allowance_and_reads_on_when_opened() -> None:
    gate = SourceGate(hold_after=5)
    gated = reader(gate)

    assert await gated.read(4) == [0, 1, 2, 3]
    assert await gated.read(4) == [4]  # cut to the allowance
    assert await gated.read(4) == []
    assert gate.held and gate.holds == {0: 1} and gate.emitted == 5
    gate.open()
    assert await gated.read(8) == [5, 6, 7, 8, 9]
    assert await gated.read(8) is None


async def test_hold_at_end_keeps_a_bounded_source_open_until_the_gate_opens() -> None:
    gate = SourceGate(hold_at_end=True)
    gated = reader(gate, count=2)

    assert await gated.read(4) == [0, 1]
    assert await gated.read(4) == []
    assert await gated.read(4) == []
    await gate.wait_flushed()  # held twice
    gate.open()
    assert await gated.read(4) is None


async def test_a_blocking_gate_waits_then_returns_nothing_once() -> None:
    gate = SourceGate(hold_after=1, blocking=True)
    gated = reader(gate)
    assert await gated.read(4) == [0]

    blocked = asyncio.ensure_future(gated.read(4))
    await gate.wait_held()
    assert not blocked.done()
    gate.open()
    assert await blocked == []
    assert await gated.read(2) == [1, 2]


async def test_snapshots_are_noted_per_reader() -> None:
    gate = SourceGate()
    first, second = reader(gate, subtask=0), reader(gate, subtask=1)
    first.snapshot_state()
    second.snapshot_state()
    await gate.wait_snapshots(readers=2)
    assert gate.snapshots == {0: 1, 1: 1}


async def test_a_job_cannot_end_before_the_gate_opens() -> None:
    gate = SourceGate(hold_after=50, hold_at_end=True)
    env = StreamEnvironment(parallelism=2)
    env.from_source(GatedSource(GeneratorSource(lambda i: i, 100), gate), uid="n").collect(
        name="out"
    )
    client = await env.start("gated")
    await gate.wait_flushed(readers=2)
    assert client.status is JobStatus.RUNNING and gate.emitted == 50
    gate.open()
    result = await client.wait()
    assert sorted(result.collected["out"]) == list(range(100))


def test_the_gate_is_shared_by_copies() -> None:
    gate = SourceGate()
    source = GatedSource(GeneratorSource(lambda i: i, 1), gate)
    assert copy.deepcopy(source).gate is gate


def test_bad_arguments_are_errors() -> None:
    with pytest.raises(ConfigError, match="hold_after must be None or an int >= 0, got -1"):
        SourceGate(hold_after=-1)
    with pytest.raises(ConfigError, match="GatedSource: int is not a Source"):
        GatedSource(3, SourceGate())
    with pytest.raises(ConfigError, match="gate must be a SourceGate"):
        GatedSource(GeneratorSource(lambda i: i, 1), None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="a blocking gate holds a reader once"):
        asyncio.run(SourceGate(blocking=True).wait_flushed())
