"""Rescaling through savepoints, after Flink's ``RescalingITCase``; stop, move, resume.

Every test runs a job in two parts. The first part reads from a *pausing* source: a
number generator whose readers stop at the middle of each split and then idle (the
positions are stored in ``RangeSplit`` s, as ``env.generate`` stores them), so the first
part processes a known set of records. Once it has, the job is stopped with a savepoint.
The second part restores that savepoint, usually at another parallelism, with the plain
generator (same uid), which reads each split on from its stored position to the end.

* **Keyed state** (running sums per key, max parallelism 13 and 128, parallelism
  1 -> 2, 3 -> 7, 7 -> 3, 4 -> 4): a placement oracle checks that every record was
  processed, and every key's state stored, by the subtask that its key group assigns
  (``compute_operator_index_for_key_group(max_p, p, assign_to_key_group(key, max_p))``)
  in both parts; each record is processed once over both parts, and each key's sums
  form one running sum across the rescale (nothing lost, nothing counted twice).
* **Operator state**: a map function counts its records in list state and names itself
  in union list state; after a rescale the restored counts add up to the records of the
  first part, and every subtask sees the whole union.
* **Stop with savepoint, then resume** (drain and no drain, canonical and native, at
  another parallelism, from a moved folder, with pickle forbidden): the committed
  ``FileSink`` output of the two parts is exactly-once. A canonical savepoint of state
  that needs pickle fails alone: the job goes on running.
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import shutil
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from runtime import (
    CheckpointError,
    FileSink,
    JobClient,
    JobFailedError,
    JobResult,
    JobStatus,
    KeyedProcessFunction,
    ListStateDescriptor,
    MapFunction,
    NoRestart,
    RangeSplit,
    RuntimeContext,
    SavepointFormat,
    StreamEnvironment,
    ValueStateDescriptor,
    read_committed,
)
from storage import (
    OperatorStateBackend,
    assign_to_key_group,
    compute_operator_index_for_key_group,
)
from storage.checkpoint import read_checkpoint
from storage.processor import load_savepoint

COUNT = 2_000
UIDS = {"source": "numbers", "sum": "sum", "tag": "tag"}


def key_of(i: int) -> Any:
    """40 keys of two types: str and (str, int) tuples."""
    return f"k{i % 17}" if i % 2 else ("user", i % 23)


def owner(key: Any, max_parallelism: int, parallelism: int) -> int:
    """The placement oracle: the subtask whose key-group range holds the key's group."""
    group = assign_to_key_group(key, max_parallelism)
    return compute_operator_index_for_key_group(max_parallelism, parallelism, group)


# -- a source that pauses half way -------------------------------------------------------


class PausingReader:
    """Reads ``RangeSplit`` s up to the middle of each, then idles (never ends)."""

    def __init__(self, fn: Callable[[int], Any]) -> None:
        self.fn = fn
        self.splits: list[RangeSplit] = []
        self.stops: dict[str, int] = {}

    def add_splits(self, splits: list[RangeSplit]) -> None:
        for split in splits:
            split = msgspec.structs.replace(split)
            self.splits.append(split)
            self.stops[split.split_id] = split.next + (split.end - split.next) // 2

    def read(self, max_records: int) -> list[Any]:
        for split in self.splits:
            stop = self.stops[split.split_id]
            if split.next < stop:
                lo, hi = split.next, min(split.next + max_records, stop)
                split.next = hi
                return [self.fn(i) for i in range(lo, hi)]
        return []  # paused: nothing now, and never the end

    def snapshot_state(self) -> list[RangeSplit]:
        return [msgspec.structs.replace(split) for split in self.splits]

    def close(self) -> None:
        pass


class PausingSource:
    """``fn(i)`` for ``i`` in ``0..count-1``, split as ``env.generate`` splits it."""

    def __init__(self, fn: Callable[[int], Any], count: int) -> None:
        self.fn = fn
        self.count = count

    def create_enumerator(self) -> PausingSource:
        return self

    def assign_splits(self, parallelism: int) -> list[list[RangeSplit]]:
        return [
            [RangeSplit(f"range-{i}", lo, hi)]
            for i, (lo, hi) in enumerate(ranges(self.count, parallelism))
        ]

    def create_reader(self, subtask_index: int) -> PausingReader:
        return PausingReader(self.fn)


def ranges(count: int, parallelism: int) -> list[tuple[int, int]]:
    return [(count * i // parallelism, count * (i + 1) // parallelism) for i in range(parallelism)]


def first_part(count: int, parallelism: int) -> list[int]:
    """The indices a pausing source of ``parallelism`` subtasks reads before it pauses."""
    return [i for lo, hi in ranges(count, parallelism) for i in range(lo, lo + (hi - lo) // 2)]


def source(
    env: StreamEnvironment, fn: Callable[[int], Any], *, paused: bool, count: int = COUNT
) -> Any:
    if paused:
        return env.from_source(PausingSource(fn, count), name="numbers", uid=UIDS["source"])
    return env.generate(fn, count, name="numbers", uid=UIDS["source"])


async def processed(client: JobClient, operator: str, expected: int) -> None:
    """Wait until ``operator`` took in ``expected`` records (the source has paused)."""
    async with asyncio.timeout(30):
        while client.metrics()[operator].records_in < expected:
            assert not client.status.is_terminal, f"the job ended: {client.status}"
            await asyncio.sleep(0.005)
    assert client.metrics()[operator].records_in == expected


async def stop_half_way(
    env: StreamEnvironment,
    savepoints: Path,
    operator: str,
    expected: int,
    *,
    drain: bool = False,
    format: SavepointFormat = SavepointFormat.CANONICAL,
) -> tuple[str, JobResult]:
    client = await env.start("rescaling")
    await processed(client, operator, expected)
    path = await client.stop_with_savepoint(savepoints, drain=drain, format=format)
    result = await client.wait()
    assert result.status is JobStatus.FINISHED
    return path, result


# -- keyed state: RescalingITCase --------------------------------------------------------


class RunningSum(KeyedProcessFunction):
    """Emits ``(key, subtask, running sum, i)`` for each record ``(key, i)``."""

    def open(self, ctx: RuntimeContext) -> None:
        self.total = ctx.get_state(ValueStateDescriptor("total", default=0))

    def process_element(self, value: tuple[Any, int], ctx: RuntimeContext) -> list[Any]:
        key, i = value
        total = self.total.value() + i
        self.total.update(total)
        return [(key, ctx.subtask_index, total, i)]


def keyed_job(parallelism: int, max_parallelism: int, *, paused: bool) -> StreamEnvironment:
    env = StreamEnvironment(parallelism=parallelism, max_parallelism=max_parallelism)
    (
        source(env, lambda i: (key_of(i), i), paused=paused)
        .key_by(lambda pair: pair[0])
        .process(RunningSum(), name="sum", uid=UIDS["sum"])
        .collect(name="out")
    )
    return env


def check_running_sums(records: list[tuple[Any, int, int, int]]) -> dict[Any, int]:
    """Each index once; per key, every sum is the previous one plus the record's index."""
    assert sorted(i for _, _, _, i in records) == list(range(COUNT)), "lost or duplicated"
    per_key: dict[Any, list[tuple[int, int]]] = defaultdict(list)
    for key, _, total, i in records:
        assert key == key_of(i)
        per_key[key].append((total, i))
    finals = {}
    for key, sums in per_key.items():
        previous = 0
        # By sum; a record of index 0 adds nothing: it goes after the one it ties with.
        for total, i in sorted(sums, key=lambda pair: (pair[0], -pair[1])):
            assert total == previous + i, f"key {key!r}: sum {total} after {previous} + {i}"
            previous = total
        finals[key] = previous
    return finals


@pytest.mark.parametrize("max_parallelism", [13, 128])
@pytest.mark.parametrize(("before", "after"), [(1, 2), (3, 7), (7, 3), (4, 4)])
async def test_keyed_running_sums_survive_rescaling(
    tmp_path: Path, before: int, after: int, max_parallelism: int
) -> None:
    expected = first_part(COUNT, before)
    env = keyed_job(before, max_parallelism, paused=True)
    path, first = await stop_half_way(env, tmp_path, "sum", len(expected))
    second = await keyed_job(after, max_parallelism, paused=False).execute(
        "rescaled", restore_from=path
    )

    assert second.operators["sum"].parallelism == after
    one, two = first.collected["out"], second.collected["out"]
    assert sorted(i for *_, i in one) == expected  # stopped right after the pause
    for records, parallelism in ((one, before), (two, after)):
        misplaced = [
            (key, subtask)
            for key, subtask, *_ in records
            if subtask != owner(key, max_parallelism, parallelism)
        ]
        assert misplaced == [], f"keys processed off their key group's subtask (p={parallelism})"
    finals = check_running_sums(one + two)
    assert finals == {
        key: sum(i for i in range(COUNT) if key_of(i) == key)
        for key in {key_of(i) for i in range(COUNT)}
    }

    # The savepoint holds each key's sum after the first part, on the oracle's subtask.
    sums_then = {key: total for key, _, total, _ in sorted(one, key=lambda r: r[2])}
    savepoint = load_savepoint(path)
    assert savepoint["sum"].keyed_state("total") == sums_then
    for index, subtask in savepoint["sum"].contents.subtasks.items():
        for key in subtask.keyed.get("total", {}):
            assert owner(key, max_parallelism, before) == index, key


# -- operator list and union list state --------------------------------------------------


class Probe:
    """What every subtask of every run saw; shared by the copies of a function."""

    def __init__(self) -> None:
        self.restored: dict[tuple[str, int], tuple[list[int], list[str]]] = {}
        self.finished: dict[tuple[str, int], int] = {}

    def __deepcopy__(self, memo: dict[int, Any]) -> Probe:
        return self


class CountingTagger(MapFunction):
    """Counts its records (list state) and names itself (union list state)."""

    def __init__(self, run: str, probe: Probe) -> None:
        self.run = run
        self.probe = probe

    def initialize_state(self, ctx: RuntimeContext) -> None:
        self.counts = ctx.get_list_state(ListStateDescriptor("counts", type=int))
        self.members = ctx.get_union_list_state(ListStateDescriptor("members", type=str))
        self.subtask = ctx.subtask_index
        counts, members = self.counts.get(), self.members.get()
        self.probe.restored[self.run, self.subtask] = (counts, sorted(members))
        self.count = sum(counts)  # a rescale may give one subtask several counts
        self.members.update([f"{self.run}:{self.subtask}"])

    def map(self, value: int) -> int:
        self.count += 1
        return value

    def snapshot_state(self, checkpoint_id: int) -> None:
        self.counts.update([self.count])

    def finish(self) -> None:
        self.probe.finished[self.run, self.subtask] = self.count


def tagging_job(parallelism: int, run: str, probe: Probe, *, paused: bool) -> StreamEnvironment:
    env = StreamEnvironment(parallelism=parallelism)
    (
        source(env, lambda i: i, paused=paused)
        .map(CountingTagger(run, probe), name="tag", uid=UIDS["tag"])
        .collect(name="out")
    )
    return env


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (2, 3),
        (3, 2),
        (2, 2),
    ],
)
async def test_operator_list_and_union_state_survive_rescaling(
    tmp_path: Path, before: int, after: int
) -> None:
    probe = Probe()
    expected = first_part(COUNT, before)
    env = tagging_job(before, "one", probe, paused=True)
    path, _ = await stop_half_way(env, tmp_path, "tag", len(expected))

    savepoint = load_savepoint(path)
    # The map is chained to the source: subtask i counted the first half of split i.
    assert savepoint["tag"].operator_state_by_subtask("counts") == [
        [(hi - lo) // 2] for lo, hi in ranges(COUNT, before)
    ]
    assert sorted(savepoint["tag"].operator_state("members")) == [f"one:{i}" for i in range(before)]

    await tagging_job(after, "two", probe, paused=False).execute("rescaled", restore_from=path)

    restored = {i: probe.restored["two", i] for i in range(after)}
    # Split list state: the old counts, dealt out; together they are the first part.
    assert sum(sum(counts) for counts, _ in restored.values()) == len(expected)
    assert sorted(c for counts, _ in restored.values() for c in counts) == sorted(
        savepoint["tag"].operator_state("counts")
    )
    # Union list state: every subtask sees all of it.
    for index, (_, members) in restored.items():
        assert members == [f"one:{i}" for i in range(before)], f"subtask {index}"
    # Counting went on from the restored counts: every record counted once in all.
    assert sum(probe.finished["two", i] for i in range(after)) == COUNT


# -- stop with savepoint, then resume exactly-once ---------------------------------------

KEYS = 7


class SumLines(KeyedProcessFunction):
    """``"<key> <i> <sum>"`` lines; the sum is a ``(count, total)`` tuple in state."""

    def open(self, ctx: RuntimeContext) -> None:
        self.state = ctx.get_state(ValueStateDescriptor("sum", default=(0, 0)))

    def process_element(self, value: tuple[int, int], ctx: RuntimeContext) -> list[str]:
        key, i = value
        count, total = self.state.value()
        self.state.update((count + 1, total + i))
        return [f"{key} {i} {total + i}"]


def lines_job(
    parallelism: int, *, paused: bool, out: Path | None = None, allow_pickle: bool = True
) -> StreamEnvironment:
    """Numbers -> (i % KEYS, i) -> SumLines -> a FileSink into ``out`` (else collect)."""
    env = StreamEnvironment(parallelism=parallelism, allow_pickle=allow_pickle)
    lines = (
        source(env, lambda i: (i % KEYS, i), paused=paused)
        .key_by(lambda pair: pair[0])
        .process(SumLines(), name="sum", uid=UIDS["sum"])
    )
    if out is None:
        lines.collect(name="out")
    else:
        lines.sink_to(FileSink(out), name="files", uid="files")
    return env


def check_lines(lines: list[str]) -> None:
    """Each index once; per key, one running sum."""
    numbers = []
    per_key: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for line in lines:
        key, i, total = map(int, line.split())
        assert key == i % KEYS, line
        numbers.append(i)
        per_key[key].append((total, i))
    assert sorted(numbers) == list(range(COUNT)), "the output is not exactly-once"
    for key, sums in per_key.items():
        previous = 0
        # By sum; a record of index 0 adds nothing: it goes after the one it ties with.
        for total, i in sorted(sums, key=lambda pair: (pair[0], -pair[1])):
            assert total == previous + i, f"key {key}: sum {total} after {previous} + {i}"
            previous = total


@pytest.mark.parametrize("fmt", list(SavepointFormat), ids=lambda f: f.value)
@pytest.mark.parametrize("drain", [False, True], ids=["no-drain", "drain"])
async def test_stop_with_savepoint_then_resume_at_another_parallelism_is_exactly_once(
    tmp_path: Path, drain: bool, fmt: SavepointFormat
) -> None:
    out = tmp_path / "out"
    expected = first_part(COUNT, 2)
    path, _ = await stop_half_way(
        lines_job(2, paused=True, out=out),
        tmp_path / "savepoints",
        "sum",
        len(expected),
        drain=drain,
        format=fmt,
    )
    committed = read_committed(out)
    # Stopping committed the first part's output (the savepoint completed).
    assert sorted(int(line.split()[1]) for line in committed) == expected

    second = await lines_job(3, paused=False, out=out).execute("resumed", restore_from=path)

    assert second.operators["sum"].parallelism == 3
    assert second.records_in("sum") == COUNT - len(expected)
    assert set(committed) <= set(read_committed(out))
    check_lines(read_committed(out))


async def test_a_moved_savepoint_folder_still_restores(tmp_path: Path) -> None:
    out = tmp_path / "out"
    expected = first_part(COUNT, 2)
    path, _ = await stop_half_way(
        lines_job(2, paused=True, out=out), tmp_path / "savepoints", "sum", len(expected)
    )
    moved = tmp_path / "elsewhere" / "renamed-savepoint"
    moved.parent.mkdir()
    shutil.move(path, moved)

    second = await lines_job(1, paused=False, out=out).execute("resumed", restore_from=moved)

    assert second.records_in("sum") == COUNT - len(expected)  # it resumed
    check_lines(read_committed(out))


async def test_a_canonical_savepoint_is_read_and_restored_with_pickle_forbidden(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("pickle was used")

    monkeypatch.setattr(pickle, "dumps", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    out = tmp_path / "out"
    expected = first_part(COUNT, 2)
    path, _ = await stop_half_way(
        lines_job(2, paused=True, out=out, allow_pickle=False),
        tmp_path / "savepoints",
        "sum",
        len(expected),
        format=SavepointFormat.CANONICAL,
    )

    contents = read_checkpoint(path)  # allow_pickle=False
    assert contents.operators["sum"].keyed_state("sum") == {
        key: (
            len([i for i in expected if i % KEYS == key]),
            sum(i for i in expected if i % KEYS == key),
        )
        for key in range(KEYS)
    }
    savepoint = load_savepoint(path)
    assert savepoint["numbers"].splits() == [
        {
            "type": "runtime.connectors.sequence:RangeSplit",
            "split_id": f"range-{i}",
            "next": lo + (hi - lo) // 2,
            "end": hi,
        }
        for i, (lo, hi) in enumerate(ranges(COUNT, 2))
    ]
    assert savepoint["files"].operator_state_names == ["two-phase-commit-transactions"]

    second = await lines_job(3, paused=False, out=out, allow_pickle=False).execute(
        "resumed", restore_from=path
    )
    assert second.status is JobStatus.FINISHED
    check_lines(read_committed(out))


async def test_a_job_with_a_file_sink_checkpoints_with_pickle_forbidden(tmp_path: Path) -> None:
    env = StreamEnvironment(parallelism=1, allow_pickle=False)
    env.enable_checkpointing(0.02)
    env.set_restart_strategy(NoRestart())
    env.generate(lambda i: i, 200, records_per_second=2_000).sink_to(FileSink(tmp_path / "out"))
    result = await env.execute("no pickle")
    assert result.status is JobStatus.FINISHED
    assert sorted(map(int, read_committed(tmp_path / "out"))) == list(range(200))


async def test_the_file_sink_state_snapshots_without_pickle(tmp_path: Path) -> None:
    """What a canonical savepoint takes of a FileSink: its transactions, without pickle."""
    sink = FileSink(tmp_path / "out")
    backend = OperatorStateBackend(allow_pickle=True)
    ctx = RuntimeContext(
        operator_name="files",
        subtask_index=0,
        parallelism=1,
        max_parallelism=128,
        job_name="files",
        operator_backend=backend,
        checkpointing_enabled=True,
    )
    sink.initialize_state(ctx)
    await sink.write_batch(["a line"])
    pre_commit = sink.snapshot_state(1)  # asynchronous: flush, fsync, move to pending
    assert pre_commit is not None
    await pre_commit
    snapshot = backend.snapshot(canonical=True)
    assert len(snapshot.states["two-phase-commit-transactions"].values) == 2
    sink.close()


class Opaque:
    """A value msgspec cannot encode: only pickle can store it."""


class KeepsOpaque(MapFunction):
    def initialize_state(self, ctx: RuntimeContext) -> None:
        ctx.get_list_state(ListStateDescriptor("opaque")).add(Opaque())

    def map(self, value: int) -> int:
        return value


async def test_a_savepoint_that_cannot_be_canonical_fails_alone(tmp_path: Path) -> None:
    # One chain (p=1): no other subtask is writing state files when the snapshot fails.
    env = StreamEnvironment(parallelism=1)
    source(env, lambda i: i, paused=True).map(KeepsOpaque(), name="tag", uid="tag").collect(
        name="out"
    )
    client = await env.start("opaque")
    try:
        await processed(client, "tag", len(first_part(COUNT, 1)))
        with pytest.raises(CheckpointError, match=r"'opaque'.*needs pickle"):
            await client.trigger_savepoint(tmp_path, format=SavepointFormat.CANONICAL)
        # The job goes on running: it stops with a native savepoint, which can pickle.
        async with asyncio.timeout(20):  # a bound on a hang, not on time
            native = await client.stop_with_savepoint(tmp_path, format=SavepointFormat.NATIVE)
        assert (await client.wait()).status is JobStatus.FINISHED
        assert load_savepoint(native, allow_pickle=True)["tag"].operator_state("opaque")
    finally:
        if not client.status.is_terminal:
            client.cancel()
        with contextlib.suppress(JobFailedError):
            await client.wait()


class FailsAt(MapFunction):
    """Raises at one record, after telling the test (shared by its copies)."""

    def __init__(self, at: int, failing: asyncio.Event) -> None:
        self.at = at
        self.failing = failing

    def __deepcopy__(self, memo: dict[int, Any]) -> FailsAt:
        return self

    def map(self, value: int) -> int:
        if value == self.at:
            self.failing.set()
            raise RuntimeError("the test's failure")
        return value


async def test_a_savepoint_asked_for_while_the_job_fails_is_refused(tmp_path: Path) -> None:
    failing = asyncio.Event()
    env = StreamEnvironment(parallelism=1)
    env.generate(lambda i: i, None, records_per_second=5_000).map(FailsAt(500, failing)).collect(
        name="out"
    )
    client = await env.start("failing")
    try:
        await failing.wait()
        with pytest.raises(CheckpointError):
            async with asyncio.timeout(2):  # a bound on the hang
                await client.trigger_savepoint(tmp_path)
    finally:
        with contextlib.suppress(JobFailedError):
            await client.wait()
