"""Jobs restored from savepoints that the state processor wrote.

* Bootstrap: running sums folded from historical data with ``bootstrap_keyed`` and
  written with ``SavepointWriter.new``; a keyed-sum job started from that savepoint (at
  another parallelism, with pickle forbidden) ends with the bootstrapped sums plus the
  new records.
* Source splits and operator state written from Python objects: the source reads only
  from the written positions; the map function restores the written list and union state.
* Transform: a savepoint a job took, with every key's sum shifted by ``transform_keyed``,
  resumes the job: the shift shows in every later sum, and no record is lost or repeated.
* ``remove_operator``: a savepoint with state of an operator the job no longer has is
  refused (naming the uid) until the operator is removed from it.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from runtime import (
    ConfigError,
    JobStatus,
    KeyedProcessFunction,
    ListStateDescriptor,
    MapFunction,
    RangeSplit,
    RuntimeContext,
    StreamEnvironment,
    ValueStateDescriptor,
)
from runtime.connectors.sequence import GeneratorSource
from runtime.testing.gates import GatedSource, SourceGate
from storage.processor import SavepointWriter, bootstrap_keyed, load_savepoint

MAX_P = 128


def key_of(i: int) -> Any:
    return ("user", i % 5) if i % 2 else f"k{i % 3}"


class RunningSum(KeyedProcessFunction):
    """``(key, i, running sum)`` for each record ``(key, i)``; the sum in keyed state."""

    def open(self, ctx: RuntimeContext) -> None:
        self.total = ctx.get_state(ValueStateDescriptor("total", default=0))

    def process_element(self, value: tuple[Any, int], ctx: RuntimeContext) -> list[Any]:
        key, i = value
        total = self.total.value() + i
        self.total.update(total)
        return [(key, i, total)]


def sums_job(parallelism: int, count: int, *, gate: SourceGate | None = None) -> StreamEnvironment:
    """Running sums per key; with ``gate``, the numbers come through a ``GatedSource``."""
    env = StreamEnvironment(parallelism=parallelism, max_parallelism=MAX_P, allow_pickle=False)
    numbers = GeneratorSource(lambda i: (key_of(i), i), count)
    (
        env.from_source(numbers if gate is None else GatedSource(numbers, gate), uid="numbers")
        .key_by(lambda pair: pair[0])
        .process(RunningSum(), name="sum", uid="sum")
        .collect(name="out")
    )
    return env


def final_sums(records: list[tuple[Any, int, int]]) -> dict[Any, int]:
    """Per key, its largest running sum (sums only grow: the indices are >= 0)."""
    finals: dict[Any, int] = defaultdict(int)
    for key, _, total in records:
        finals[key] = max(finals[key], total)
    return dict(finals)


async def test_a_job_starts_from_running_sums_bootstrapped_from_data(tmp_path: Path) -> None:
    history = [(key_of(i), i * 1000) for i in range(50)]
    totals = bootstrap_keyed(history, lambda r: r[0], lambda total, r: total + r[1], 0)
    writer = SavepointWriter.new(MAX_P).with_operator_state(
        "sum", parallelism=2, keyed={"total": totals}
    )
    path = await writer.write_async(tmp_path)
    assert load_savepoint(path)["sum"].keyed_state("total") == totals

    count = 300
    result = await sums_job(3, count).execute("bootstrapped", restore_from=path)

    assert result.status is JobStatus.FINISHED
    new = defaultdict(int)
    for i in range(count):
        new[key_of(i)] += i
    assert final_sums(result.collected["out"]) == {k: totals[k] + new[k] for k in totals}


class Probe:
    def __init__(self) -> None:
        self.restored: dict[int, tuple[list[Any], list[Any]]] = {}

    def __deepcopy__(self, memo: dict[int, Any]) -> Probe:
        return self


class Restores(MapFunction):
    def __init__(self, probe: Probe) -> None:
        self.probe = probe

    def initialize_state(self, ctx: RuntimeContext) -> None:
        split = ctx.get_list_state(ListStateDescriptor("offsets", type=int)).get()
        union = ctx.get_union_list_state(ListStateDescriptor("peers")).get()
        self.probe.restored[ctx.subtask_index] = (split, union)

    def map(self, value: int) -> int:
        return value


async def test_written_splits_and_operator_state_are_restored(tmp_path: Path) -> None:
    splits: list[Any] = [
        RangeSplit("range-0", 5, 10),
        # As the reader shows a split: written back without importing its type.
        {
            "type": "runtime.connectors.sequence:RangeSplit",
            "split_id": "range-1",
            "next": 15,
            "end": 20,
        },
    ]
    writer = (
        SavepointWriter.new(MAX_P)
        .with_operator_state("numbers", parallelism=2, splits=splits)
        .with_operator_state(
            "tag",
            parallelism=2,
            operator={"offsets": [1, 2, 3]},
            union={"peers": ["a", ("b", 2)]},
            # The job declares "offsets" with a type: write it with that type.
            operator_descriptors=[ListStateDescriptor("offsets", type=int)],
        )
    )
    path = await writer.write_async(tmp_path)
    probe = Probe()
    env = StreamEnvironment(parallelism=3, allow_pickle=False)
    (
        env.generate(lambda i: i, 20, uid="numbers")
        .map(Restores(probe), name="tag", uid="tag")
        .collect(name="out")
    )
    result = await env.execute("splits", restore_from=path)

    assert sorted(result.collected["out"]) == [*range(5, 10), *range(15, 20)]
    assert sorted(x for split, _ in probe.restored.values() for x in split) == [1, 2, 3]
    assert all(union == ["a", ("b", 2)] for _, union in probe.restored.values())


async def test_a_transformed_savepoint_resumes_the_job(tmp_path: Path) -> None:
    count = 4_000
    # The source holds after 1,000 records and cannot end: the job is stopped half way
    # however fast it runs.
    gate = SourceGate(hold_after=1_000, hold_at_end=True)
    client = await sums_job(2, count, gate=gate).start("first part")
    await gate.wait_held()
    taken = await client.stop_with_savepoint(tmp_path / "taken")
    first = await client.wait()

    shift = 1_000_000
    shifted = await (
        SavepointWriter.from_savepoint(taken)
        .transform_keyed("sum", "total", lambda key, total: total + shift)
        .write_async(tmp_path / "shifted")
    )
    second = await sums_job(3, count).execute("second part", restore_from=shifted)

    one, two = first.collected["out"], second.collected["out"]
    assert sorted(i for _, i, _ in one + two) == list(range(count)), "lost or repeated"
    expected = defaultdict(int)
    for i in range(count):
        expected[key_of(i)] += i
    seen_first = {key for key, _, _ in one}
    assert final_sums(two) == {
        key: total + (shift if key in seen_first else 0) for key, total in expected.items()
    }


async def test_state_of_a_removed_operator_is_refused_until_removed(tmp_path: Path) -> None:
    writer = (
        SavepointWriter.new(MAX_P)
        .with_operator_state("sum", keyed={"total": {"k0": 5}})
        .with_operator_state("old-dedup", keyed={"seen": {"k0": True}})
    )
    stale = await writer.write_async(tmp_path)
    with pytest.raises(ConfigError, match=r"uid 'old-dedup'.*allow_non_restored_state"):
        await sums_job(1, 3).start("refused", restore_from=stale)

    fixed = (
        await SavepointWriter.from_savepoint(stale)
        .remove_operator("old-dedup")
        .write_async(tmp_path)
    )
    result = await sums_job(1, 3).execute("fixed", restore_from=fixed)
    assert final_sums(result.collected["out"])["k0"] == 5
