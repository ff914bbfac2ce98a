"""The changelog state backend in whole jobs: checkpoints, rescaled restores, savepoints, bad input.

A keyed job keeps four kinds of state (value, reducing, list, map) with ``changelog``
options that make every checkpoint upload changelog files and materialize often; its
checkpoints are retained, and a new job restores the latest one, at another parallelism
too, on the heap and on the RocksDB backend. The checkpoints' metadata names changelog
and materialized files of ``shared/``; a savepoint is a full snapshot (no ``shared/``
file, restorable without the changelog); a damaged changelog file is named by the
error; invalid options are ``ConfigError`` s naming the option.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runtime import (
    JobStatus,
    KeyedProcessFunction,
    ListStateDescriptor,
    MapStateDescriptor,
    ReducingStateDescriptor,
    RestoreWarning,
    RuntimeContext,
    StreamEnvironment,
    ValueStateDescriptor,
)
from runtime.api.client import JobClient
from runtime.checkpoint.config import ExternalizedCheckpointRetention
from runtime.connectors.sequence import NumberSequenceSource
from runtime.errors import ConfigError
from runtime.scheduler.result import SavepointFormat
from runtime.testing.gates import GatedSource, SourceGate
from storage.changelog import ChangelogOptions
from storage.checkpoint.recovery import load_metadata_file
from storage.checkpoint.shared_files import shared_names

RECORDS = 4_000
KEYS = 12
OPTIONS = ChangelogOptions(upload_interval=0.01, file_size=2048, materialization_size=8192)


class AllKinds(KeyedProcessFunction[int, tuple[int, int, int, int, int]]):
    """Count and sum per key, kept four ways (value, reducing, list, map)."""

    def open(self, ctx: RuntimeContext) -> None:
        self.count = ctx.get_state(ValueStateDescriptor("count", default=0))
        self.total = ctx.get_state(ReducingStateDescriptor("total", lambda a, b: a + b))
        self.recent = ctx.get_state(ListStateDescriptor("recent"))
        self.parity = ctx.get_state(MapStateDescriptor("parity"))

    def process_element(
        self, value: int, ctx: RuntimeContext
    ) -> list[tuple[int, int, int, int, int]]:
        count = self.count.value() + 1
        self.count.update(count)
        self.total.add(value)
        recent = [*self.recent.get(), value][-3:]
        self.recent.update(recent)
        self.parity.put(value % 2, self.parity.get(value % 2, 0) + 1)
        return [(value % KEYS, count, self.total.get(), len(recent), sum(self.parity.values()))]


def expected() -> dict[int, tuple[int, int, int, int, int]]:
    out = {}
    for key in range(KEYS):
        values = [v for v in range(RECORDS) if v % KEYS == key]
        out[key] = (key, len(values), sum(values), 3, len(values))
    return out


def make_env(
    checkpoints: Path, backend: str, parallelism: int = 2, rate: float | None = None, **kw: Any
) -> StreamEnvironment:
    env = StreamEnvironment(
        parallelism=parallelism, max_parallelism=32, state_backend=backend, **kw
    )
    env.enable_checkpointing(
        3600.0,  # triggered by hand
        storage=f"file://{checkpoints}",
        retention=ExternalizedCheckpointRetention.RETAIN_ON_CANCELLATION,
        retained=2,
    )
    (
        env.generate(lambda i: i, RECORDS, records_per_second=rate, name="numbers", uid="numbers")
        .key_by(lambda v: v % KEYS)
        .process(AllKinds(), name="kinds", uid="kinds")
        .collect(name="out")
    )
    return env


async def run_to_end(
    checkpoints: Path, restore: str, backend: str, parallelism: int, changelog: Any = OPTIONS
) -> None:
    env = make_env(checkpoints, backend, parallelism, changelog=changelog)
    result = await env.execute("to the end", restore_from=restore)
    got: dict[int, Any] = {}
    for record in result.collected["out"]:
        got[record[0]] = record
    assert got, "the restored job processed nothing"
    want = expected()
    for key, record in got.items():
        assert record == want[key], f"key {key} restored from {restore}"


async def checkpointed_run(folder: Path, backend: str, count: int = 3) -> str:
    client = await make_env(folder, backend, rate=1_500, changelog=OPTIONS).start("changelog")
    for _ in range(count):
        completed = await client.trigger_checkpoint()
    client.cancel()
    await client.wait()
    return completed.pointer


@pytest.mark.parametrize("backend", ["heap", "rocksdb"])
@pytest.mark.parametrize("parallelism", [2, 3])
async def test_changelog_checkpoints_restore_rescaled(
    tmp_path: Path, backend: str, parallelism: int
) -> None:
    pointer = await checkpointed_run(tmp_path / "a", backend)
    names = shared_names(load_metadata_file(Path(pointer)))
    assert any(name.startswith("changelog-") for name in names), names
    await run_to_end(tmp_path / "b", pointer, backend, parallelism)


async def test_a_savepoint_of_a_changelog_job_is_a_full_snapshot(tmp_path: Path) -> None:
    client = await make_env(tmp_path / "a", "heap", rate=1_500, changelog=OPTIONS).start("sp")
    await client.trigger_checkpoint()
    savepoint = await client.trigger_savepoint(tmp_path / "sp", format=SavepointFormat.CANONICAL)
    client.cancel()
    await client.wait()
    assert shared_names(load_metadata_file(Path(savepoint))) == set()
    await run_to_end(tmp_path / "b", savepoint, "heap", 2, changelog=False)


async def test_a_damaged_changelog_file_is_named(tmp_path: Path) -> None:
    pointer = await checkpointed_run(tmp_path / "a", "heap", count=2)
    names = sorted(
        name
        for name in shared_names(load_metadata_file(Path(pointer)))
        if name.startswith("changelog-")
    )
    victim = Path(pointer).parent / "shared" / names[-1]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(Exception, match=names[-1]):
        await run_to_end(tmp_path / "b", pointer, "heap", 2)


@pytest.mark.parametrize(
    ("changelog", "match"),
    [
        (ChangelogOptions(upload_interval=0), "changelog.upload_interval"),
        (ChangelogOptions(file_size=0), "changelog.file_size"),
        (ChangelogOptions(materialization_interval=-1.0), "changelog.materialization_interval"),
        (ChangelogOptions(materialization_size=True), "changelog.materialization_size"),
        ("yes", "changelog must be True, False or a ChangelogOptions"),
    ],
)
def test_changelog_options_are_validated(changelog: Any, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        StreamEnvironment(changelog=changelog)


def test_the_changelog_needs_a_file_storage() -> None:
    env = StreamEnvironment(changelog=True)
    env.enable_checkpointing(1.0)
    env.from_collection([1]).key_by(lambda v: v).map(lambda v: v).collect()
    with pytest.raises(ConfigError, match="changelog=True needs a file-system checkpoint"):
        env.get_job_graph()


def reduce_env(checkpoints: Path, rate: float | None, parallelism: int = 2) -> StreamEnvironment:
    env = StreamEnvironment(parallelism=parallelism, max_parallelism=32, changelog=OPTIONS)
    env.enable_checkpointing(
        3600.0,
        storage=f"file://{checkpoints}",
        retention=ExternalizedCheckpointRetention.RETAIN_ON_CANCELLATION,
        retained=2,
    )
    (
        env.generate(
            lambda i: (i % KEYS, i), RECORDS, records_per_second=rate, name="numbers", uid="numbers"
        )
        .key_by(lambda pair: pair[0])
        .reduce(lambda a, b: (a[0], a[1] + b[1]), uid="sums")
        .collect(name="out")
    )
    return env


async def test_a_keyed_reduce_registered_before_the_restore_replays_its_changelog(
    tmp_path: Path,
) -> None:
    """A runtime operator registers its state in setup, before the restore: its restored
    changes are replayed all the same."""
    client = await reduce_env(tmp_path / "a", rate=1_500).start("reduce")
    for _ in range(2):
        completed = await client.trigger_checkpoint()
    client.cancel()
    await client.wait()
    names = shared_names(load_metadata_file(Path(completed.pointer)))
    assert any(name.startswith("changelog-") for name in names), names
    result = await reduce_env(tmp_path / "b", rate=None, parallelism=3).execute(
        "reduce", restore_from=completed.pointer
    )
    finals = dict(result.collected["out"])  # the last running sum of each key wins
    assert finals == {key: sum(v for v in range(RECORDS) if v % KEYS == key) for key in range(KEYS)}


class Count(KeyedProcessFunction[int, Any]):
    def open(self, ctx: RuntimeContext) -> None:
        self.count = ctx.get_state(ValueStateDescriptor("count", default=0))

    def process_element(self, value: int, ctx: RuntimeContext) -> list[Any]:
        self.count.update(self.count.value() + 1)
        return []


async def test_a_damaged_changelog_file_is_not_chosen_by_the_recovery_planner(
    tmp_path: Path,
) -> None:
    """The planner verifies changelog files (crc32 included) like any shared/ file: the
    newest checkpoint, whose changelog file is damaged, is skipped with a warning naming
    the file, and the one before is restored."""
    checkpoints = tmp_path / "checkpoints"
    env = StreamEnvironment(parallelism=1, max_parallelism=8, changelog=OPTIONS)
    env.enable_checkpointing(
        3600.0,
        storage=checkpoints.absolute().as_uri(),
        retention=ExternalizedCheckpointRetention.RETAIN_ON_CANCELLATION,
        retained=2,
    )
    gate = SourceGate(hold_after=200)
    (
        env.from_source(GatedSource(NumberSequenceSource(0, 399), gate), uid="numbers")
        .key_by(lambda v: v % 5)
        .process(Count(), uid="count")
        .sink_to(lambda v: None, uid="none")
    )
    client: JobClient = await env.start("changelog")
    await gate.wait_held()
    await client.trigger_checkpoint()
    gate.open()
    result = await client.wait()
    assert result.status is JobStatus.FINISHED
    folder = checkpoints / result.job_id
    kept = sorted(folder.glob("chk-*/_metadata"))
    assert len(kept) == 2
    uses = {path.parent: shared_names(load_metadata_file(path.parent)) for path in kept}
    oldest, newest = sorted(uses, key=lambda p: int(p.name[4:]))
    only_newest = sorted(name for name in uses[newest] - uses[oldest])
    assert only_newest, uses
    damaged = folder / "shared" / only_newest[-1]
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only the crc32 tells
    damaged.write_bytes(bytes(data))

    again = StreamEnvironment(parallelism=1, max_parallelism=8, changelog=True)
    again.enable_checkpointing(3600.0, storage=(tmp_path / "again").absolute().as_uri())
    again.from_collection([1]).key_by(lambda v: v % 5).process(Count(), uid="count").sink_to(
        lambda v: None, uid="none"
    )
    with pytest.warns(RestoreWarning) as warned:  # the first job finished, too
        restored = await again.execute("again", restore_from=folder, allow_non_restored_state=True)
    assert any(str(damaged) in str(w.message) for w in warned)
    assert restored.checkpoints is not None
    assert restored.checkpoints.restored_from == str(oldest)
