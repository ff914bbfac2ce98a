"""Every completed checkpoint is a consistent cut, in every checkpointing mode.

The contract (DESIGN, "Exactly-once state"): the state of every subtask, plus the
channel state the checkpoint captured, equals the effect of exactly the records that
preceded the barrier. The job makes that checkable record by record:

* a source of ``SPLITS`` splits, each the sequence numbers ``[start, end)``, spread over
  ``P`` source subtasks; a reader takes turns between its splits and stores, per split,
  the next sequence number to read (its offset) as plain msgpack (no pickle);
* records ``(split, seq)``, through a ``map`` chained to the source, then ``key_by(split)``
  to a keyed counter at parallelism ``Q != P`` (a real shuffle: every counter subtask has
  ``P`` input channels), which keeps per split the number of records it processed and
  the last sequence number it saw;
* a slow ``async def`` sink, chained to the counter or behind a rebalance (see
  :class:`Topology`), so the counter's inputs are backpressured and barriers meet data
  in flight: small buffers and channels, a checkpoint every 10 ms.

A split goes through one source subtask and one channel to one counter subtask, in
order. So in checkpoint ``n``, with ``offset`` the split's stored offset and ``count``
its count, exactly-once means: the counter processed ``[start, start + count)``, and the
records of the split in channel state (the counter's input channel state from that
source subtask, then the source's output channel state towards that counter subtask)
are exactly ``[start + count, offset)``, in order. Aligned checkpoints have no channel
state (``count == offset - start``); at-least-once checkpoints may count records after
the barrier, never fewer (``count >= offset - start``).

The splits never end: the test cancels the job once enough checkpoints completed (and,
for the modes that must show it, one persisted in-flight data or timed out), so a run
lasts as long as the machine needs for that and not a fixed time. Every checkpoint is
kept (``RETAIN_ON_CANCELLATION``, ``retained`` above their number) and read back offline
with :func:`storage.checkpoint.read_checkpoint`. The checker also pins the contract
down: dropping or doubling one record of channel state makes it fail, naming the
checkpoint, the split and the records.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from runtime import (
    CheckpointingMode,
    CheckpointStatistics,
    ExternalizedCheckpointRetention,
    JobResult,
    JobStatus,
    KeyedProcessFunction,
    RuntimeContext,
    StreamEnvironment,
    ValueStateDescriptor,
)
from storage.checkpoint import CheckpointContents, read_checkpoint

SPLITS = 6
RECORDS_PER_SPLIT = 10**9  # more than any run reads: the test cancels the job
BUFFER_SIZE = 8
CHANNEL_CAPACITY = 2
INTERVAL = 0.01
SINK_YIELDS_PER_RECORD = 2
MIN_CHECKPOINTS = 12
RETAINED = 10_000
RUN_AT_MOST = 20.0  # seconds; a run normally takes a fraction of one

SOURCE, TAG, COUNT, SINK = "splits", "tag", "count", "sink"


# -- the job --------------------------------------------------------------------------------


def split_range(split: int) -> tuple[int, int]:
    """``[start, end)`` of a split: disjoint, contiguous ranges of different starts."""
    start = 1_000_000 * (split + 1)
    return start, start + RECORDS_PER_SPLIT


class _SplitEnumerator:
    def assign_splits(self, parallelism: int) -> list[list[Any]]:
        assignment: list[list[Any]] = [[] for _ in range(parallelism)]
        for split in range(SPLITS):
            start, end = split_range(split)
            assignment[split % parallelism].append({"split": split, "next": start, "end": end})
        return assignment


class _SplitReader:
    """Reads its splits in turns, one batch of one split per ``read``."""

    def __init__(self) -> None:
        self._splits: list[dict[str, int]] = []
        self._turn = 0

    def add_splits(self, splits: Sequence[Any]) -> None:
        self._splits.extend(dict(s) for s in splits)

    def read(self, max_records: int) -> list[Any] | None:
        live = [s for s in self._splits if s["next"] < s["end"]]
        if not live:
            return None
        split = live[self._turn % len(live)]
        self._turn += 1
        lo = split["next"]
        hi = min(lo + max_records, split["end"])
        split["next"] = hi
        return [(split["split"], seq) for seq in range(lo, hi)]

    def snapshot_state(self) -> list[Any]:
        # Exhausted splits stay: the checkpoint then says the split was read to its end.
        return [dict(s) for s in self._splits]

    def close(self) -> None:
        pass


class SplitSource:
    """``SPLITS`` splits of sequence numbers; records are ``(split, seq)``."""

    def create_enumerator(self) -> _SplitEnumerator:
        return _SplitEnumerator()

    def create_reader(self, subtask_index: int) -> _SplitReader:
        return _SplitReader()


class CountPerSplit(KeyedProcessFunction[tuple[int, int], tuple[int, int]]):
    """Per split (the key): how many records, and the last sequence number seen.

    Args:
        on_complete: called with the id of every completed checkpoint (a plain function:
            each subtask's deep copy of this object shares it).
    """

    def __init__(self, on_complete: Callable[[int], None]) -> None:
        self.on_complete = on_complete

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        self.on_complete(checkpoint_id)

    def open(self, ctx: RuntimeContext) -> None:
        self.count = ctx.get_state(ValueStateDescriptor("count", default=0, type=int))
        self.last = ctx.get_state(ValueStateDescriptor("last", default=-1, type=int))

    def process_element(self, value: tuple[int, int], ctx: RuntimeContext) -> list[Any]:
        self.count.update(self.count.value() + 1)
        self.last.update(value[1])
        return [value]


async def slow_sink(value: Any) -> None:
    for _ in range(SINK_YIELDS_PER_RECORD):
        await asyncio.sleep(0)


@dataclass(frozen=True)
class Mode:
    name: str
    options: dict[str, Any]
    exactly_once: bool = True


MODES = [
    Mode("aligned", {"unaligned": False}),
    Mode("unaligned", {"unaligned": True, "aligned_timeout": 0.0}),
    Mode("aligned_timeout", {"unaligned": True, "aligned_timeout": 0.001}),
    Mode("at_least_once", {"mode": CheckpointingMode.AT_LEAST_ONCE}, exactly_once=False),
]


@dataclass(frozen=True)
class Topology:
    """Where the slow sink is, which decides how the counter meets backpressure.

    ``chained``: the sink is chained to the counter, so the counter's chain is async and
    runs its input buffers record by record, looking for priority events in between.
    ``rebalanced``: the sink is behind a rebalance, so the counter's chain is sync and
    its task waits on full output channels, where it must still react to barriers.
    """

    name: str
    sink_chained: bool


TOPOLOGIES = [Topology("chained", True), Topology("rebalanced", False)]


def enough(mode: Mode, stats: CheckpointStatistics | None) -> bool:
    """Whether the checkpoints so far show what the mode must show (then cancel)."""
    if stats is None:
        return False
    completed = stats.completed()
    if len(completed) < MIN_CHECKPOINTS:
        return False
    if mode.name == "unaligned":
        return any(s.in_flight_bytes for s in completed)
    if mode.name == "aligned_timeout":
        return any(s.unaligned for s in completed) and any(s.in_flight_bytes for s in completed)
    return True


async def run_job(mode: Mode, topology: Topology, p: int, q: int, directory: Path) -> JobResult:
    """Run the job until its checkpoints show what ``mode`` must show, then cancel it."""
    completed = asyncio.Event()
    env = StreamEnvironment(
        parallelism=p,
        buffer_size=BUFFER_SIZE,
        channel_capacity=CHANNEL_CAPACITY,
        allow_pickle=False,
    )
    env.enable_checkpointing(
        INTERVAL,
        storage=f"file://{directory}",
        retention=ExternalizedCheckpointRetention.RETAIN_ON_CANCELLATION,
        retained=RETAINED,
        **mode.options,
    )
    counted = (
        env.from_source(SplitSource(), name=SOURCE, uid=SOURCE)
        .map(lambda record: record, name=TAG, uid=TAG)
        .key_by(lambda record: record[0])
        .process(CountPerSplit(lambda _: completed.set()), name=COUNT, uid=COUNT, parallelism=q)
    )
    if not topology.sink_chained:
        counted = counted.rebalance()
    counted.sink_to(slow_sink, name=SINK, uid=SINK, parallelism=q)
    client = await env.start(f"consistent-cut-{mode.name}")
    loop = asyncio.get_running_loop()
    waiting = loop.create_task(client.wait())
    with anyio.move_on_after(RUN_AT_MOST):
        while not waiting.done() and not enough(mode, client.checkpoint_stats()):
            completed.clear()
            signal = loop.create_task(completed.wait())
            try:
                await asyncio.wait({waiting, signal}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                signal.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await signal
    client.cancel()
    return await waiting


# -- reading a checkpoint -------------------------------------------------------------------


@dataclass
class SplitCut:
    """What checkpoint ``n`` says about one split."""

    start: int
    offset: int  # the next sequence number the source would read
    count: int  # records the counter had processed
    last: int  # the last sequence number the counter had processed (-1: none)
    in_flight: list[int]  # sequence numbers in channel state: input state, then output

    def describe(self) -> str:
        expected = list(range(self.start + self.count, self.offset))
        lost = sorted(set(expected) - set(self.in_flight))
        doubled = sorted({s for s in self.in_flight if self.in_flight.count(s) > 1})
        extra = sorted(set(self.in_flight) - set(expected))
        return (
            f"offset {self.offset - self.start}, count {self.count}, last "
            f"{self.last - self.start if self.last >= 0 else None}, in flight "
            f"{len(self.in_flight)} (lost {_short(lost, self.start)}, doubled "
            f"{_short(doubled, self.start)}, outside the cut {_short(extra, self.start)})"
        )


def _short(seqs: list[int], start: int) -> str:
    rel = [s - start for s in seqs]
    return str(rel) if len(rel) <= 6 else f"{len(rel)} records from {rel[0]} to {rel[-1]}"


def cut_of(contents: CheckpointContents) -> dict[int, SplitCut]:
    """Per split: its offset, its count, and its records in channel state."""
    offsets: dict[int, int] = {}
    for subtask in contents.operators[SOURCE].subtasks.values():
        assert subtask.splits is not None, f"source {subtask.subtask_index} stored no splits"
        for split in subtask.splits:
            offsets[split["split"]] = split["next"]
    assert sorted(offsets) == list(range(SPLITS))
    counter = contents.operators[COUNT]
    counts = counter.keyed_state("count")
    lasts = counter.keyed_state("last")
    # Input state (received, not processed) precedes output state (produced, not sent).
    in_flight: dict[int, list[int]] = {split: [] for split in range(SPLITS)}
    # The reader puts channel state on the head of its chain: the source (its output
    # towards the counter) and the counter (its input from the map, the source chain's
    # tail). Channel state between the counter and an unchained sink is downstream of
    # the count: not part of a split's cut.
    upstream = {"input": (COUNT, TAG), "output": (SOURCE, COUNT)}
    downstream = {"input": (SINK, COUNT), "output": (COUNT, SINK)}
    for kind in ("input", "output"):
        for uid, subtask in contents.iter_subtasks():
            channels = subtask.input_channels if kind == "input" else subtask.output_channels
            for (peer, _index), records in channels.items():
                if (uid, peer) == downstream[kind]:
                    continue
                assert (uid, peer) == upstream[kind], f"{kind} channel state {uid}/{peer}"
                for split, seq in records:
                    in_flight[split].append(seq)
    return {
        split: SplitCut(
            start=split_range(split)[0],
            offset=offsets[split],
            count=counts.get(split, 0),
            last=lasts.get(split, -1),
            in_flight=in_flight[split],
        )
        for split in range(SPLITS)
    }


def checkpoint_folders(directory: Path, result: JobResult) -> list[Path]:
    """Every completed checkpoint on disk (all were retained), oldest first.

    A folder with ``_metadata`` is a completed checkpoint. The statistics know each of
    them, except those older than their history and perhaps one that completed as the
    job was cancelled.
    """
    assert result.checkpoints is not None
    job_dir = directory / result.job_id
    on_disk = sorted(
        (job_dir / name for name in os.listdir(job_dir) if name.startswith("chk-")),
        key=lambda path: int(path.name.removeprefix("chk-")),
    )
    folders = [path for path in on_disk if (path / "_metadata").exists()]
    known = {Path(s.external_pointer or "") for s in result.checkpoints.completed()}
    assert known <= set(folders)
    oldest_known = min((s.checkpoint_id for s in result.checkpoints.history), default=0)
    unknown = [
        path
        for path in folders[:-1]
        if path not in known and int(path.name.removeprefix("chk-")) >= oldest_known
    ]
    assert not unknown, f"checkpoints on disk that never completed: {unknown}"
    return folders


# -- the test -------------------------------------------------------------------------------


@pytest.fixture
def checkpoint_dir(tmp_path: Path) -> Iterator[Path]:
    """Where the checkpoints go: tmpfs if the machine has one, else ``tmp_path``.

    Every checkpoint fsyncs its files, which on a busy disk can take a second; on tmpfs
    fsync is free, so the run takes its checkpoints at the runtime's pace.
    """
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(dir=shm, prefix="weir-consistent-cut-") as directory:
        yield Path(directory)


@pytest.mark.parametrize(("p", "q"), [(1, 2), (2, 3)], ids=["p1-q2", "p2-q3"])
@pytest.mark.parametrize("topology", TOPOLOGIES, ids=lambda t: t.name)
@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.name)
async def test_every_checkpoint_is_a_consistent_cut(
    mode: Mode, topology: Topology, p: int, q: int, checkpoint_dir: Path
) -> None:
    result = await run_job(mode, topology, p, q, checkpoint_dir)
    assert result.status is JobStatus.CANCELED
    assert_consistent_cuts(mode, result, checkpoint_dir)


def assert_consistent_cuts(mode: Mode, result: JobResult, directory: Path) -> None:
    """Read every checkpoint the run left and check it against the contract of ``mode``."""
    assert result.checkpoints is not None
    stats = {s.checkpoint_id: s for s in result.checkpoints.completed()}
    folders = checkpoint_folders(directory, result)

    read_so_far: list[int] = []  # records the sources had read, per checkpoint
    records_in_flight = 0
    violations: list[str] = []
    for folder in folders:
        contents = read_checkpoint(folder)
        cut = cut_of(contents)
        checkpoint = contents.checkpoint_id
        if checkpoint in stats:
            assert stats[checkpoint].in_flight_bytes == sum(
                s.handle.in_flight_bytes for _, s in contents.iter_subtasks()
            )
        read_so_far.append(sum(c.offset - c.start for c in cut.values()))
        records_in_flight += contents.in_flight_records
        for split, c in cut.items():
            if mode.exactly_once:
                last = c.start + c.count - 1 if c.count else -1
                ok = c.in_flight == list(range(c.start + c.count, c.offset)) and c.last == last
            else:
                ok = c.count >= c.offset - c.start and not c.in_flight
            if not ok:
                violations.append(f"checkpoint {checkpoint}, split {split}: {c.describe()}")
    assert not violations, f"{mode.name}: checkpoints that are not a cut:\n" + "\n".join(violations)
    # The sources never end: every checkpoint was taken mid-stream, each one further on.
    assert len(folders) >= 3, f"only {len(folders)} checkpoints completed"
    assert read_so_far == sorted(read_so_far) and read_so_far[0] < read_so_far[-1]

    in_flight = [s.in_flight_bytes for s in stats.values()]
    unaligned = [s.unaligned for s in stats.values()]
    match mode.name:
        case "aligned" | "at_least_once":
            assert not any(unaligned) and not any(in_flight) and not records_in_flight
        case "unaligned":
            assert all(unaligned)
            assert any(in_flight) and records_in_flight, "no checkpoint persisted in-flight data"
        case "aligned_timeout":
            assert any(unaligned), "no alignment timed out"
            assert any(in_flight) and records_in_flight, "no checkpoint persisted in-flight data"
