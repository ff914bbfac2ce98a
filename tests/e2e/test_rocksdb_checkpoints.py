"""Whole jobs on the RocksDB backend: resumed checkpoints, savepoints, shared files.

After Flink's ``ResumeCheckpointManuallyITCase``: a job on ``state_backend="rocksdb"``
with incremental checkpoints is started, checkpointed a few times, cancelled (its
checkpoints retained), and a new job is restored from its latest checkpoint: three
times over. Then every retained checkpoint of every run is restored once more and run
to the end of its input: each must give exactly the state of a run without failures
(every key's count and sum, in all four state kinds). The shared folder of each run then
holds exactly the files its retained checkpoints use. Savepoints: a native one restores
into a RocksDB job, a canonical one of a RocksDB job into a heap job and back.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import anyio
import pytest

from runtime import (
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
from runtime.errors import ConfigError
from runtime.scheduler.result import SavepointFormat
from storage.checkpoint.recovery import load_metadata_file
from storage.checkpoint.shared_files import shared_names

RECORDS = 8_000
KEYS = 12


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


@functools.cache
def expected() -> dict[int, tuple[int, int, int, int, int]]:
    out = {}
    for key in range(KEYS):
        values = [v for v in range(RECORDS) if v % KEYS == key]
        out[key] = (key, len(values), sum(values), 3, len(values))
    return out


def make_env(
    checkpoints: Path,
    backend: str = "rocksdb",
    rate: float | None = None,
    parallelism: int = 2,
    function: KeyedProcessFunction[int, Any] | None = None,
    numbers: Callable[[int], int] = lambda i: i,
    **options: Any,
) -> StreamEnvironment:
    env = StreamEnvironment(
        parallelism=parallelism, max_parallelism=32, state_backend=backend, **options
    )
    env.enable_checkpointing(
        3600.0,  # triggered by hand
        storage=f"file://{checkpoints}",
        retention=ExternalizedCheckpointRetention.RETAIN_ON_CANCELLATION,
        retained=2,
    )
    (
        env.generate(numbers, RECORDS, records_per_second=rate, name="numbers", uid="numbers")
        .key_by(lambda v: v % KEYS)
        .process(function or AllKinds(), name="kinds", uid="kinds")
        .collect(name="out")
    )
    return env


def last_per_key(records: list[tuple[int, int, int, int, int]]) -> dict[int, Any]:
    out: dict[int, Any] = {}
    for record in records:
        out[record[0]] = record
    return out


def checkpoint_folders(root: Path) -> Iterator[Path]:
    return (path.parent for path in sorted(root.glob("*/chk-*/_metadata")))


async def run_to_end(
    checkpoints: Path, restore: str | None, backend: str = "rocksdb", parallelism: int = 2
) -> None:
    env = make_env(checkpoints, backend, parallelism=parallelism)
    result = await env.execute("to the end", restore_from=restore)
    got = last_per_key(result.collected["out"])
    want = expected()
    assert got, "the restored job processed nothing"
    for key, record in got.items():
        assert record == want[key], f"key {key} restored from {restore}"


async def test_resume_checkpoint_manually_three_times(tmp_path: Path) -> None:
    checkpoints = tmp_path / "checkpoints"
    restore: str | None = None
    continued: set[Path] = set()
    for _ in range(3):
        env = make_env(checkpoints, rate=2_000, incremental_checkpoints=True)
        client: JobClient = await env.start("resumed", restore_from=restore)
        if restore is not None:
            continued.add(Path(restore))
        for _ in range(3):
            completed = await client.trigger_checkpoint()
        client.cancel()
        await client.wait()
        restore = completed.pointer
    folders = list(checkpoint_folders(checkpoints))
    assert len(folders) == 6  # two retained per run
    for folder in folders:
        if folder in continued:
            # A later run already continued from it: restoring it again forks the job.
            with pytest.warns(RestoreWarning, match="already continued from checkpoint"):
                await run_to_end(tmp_path / "verify", str(folder))
        else:
            await run_to_end(tmp_path / "verify", str(folder))
    shared_by_both = 0
    for job_dir in {folder.parent for folder in folders}:
        names = [shared_names(load_metadata_file(folder)) for folder in job_dir.glob("chk-*")]
        used = set().union(*names)
        assert used, "incremental checkpoints use shared files"
        assert {path.name for path in (job_dir / "shared").iterdir()} == used
        shared_by_both += len(names[0] & names[1])
    assert shared_by_both, "later checkpoints refer to files that earlier ones uploaded"


@pytest.mark.parametrize(
    ("first", "then", "format"),
    [
        ("rocksdb", "rocksdb", SavepointFormat.NATIVE),
        ("rocksdb", "heap", SavepointFormat.CANONICAL),
        ("heap", "rocksdb", SavepointFormat.CANONICAL),
    ],
)
async def test_savepoints_restore_across_backends(
    tmp_path: Path, first: str, then: str, format: SavepointFormat
) -> None:
    client = await make_env(tmp_path / "a", first, rate=2_000).start("savepoint")
    await client.trigger_checkpoint()
    savepoint = await client.trigger_savepoint(tmp_path / "savepoints", format=format)
    client.cancel()
    await client.wait()
    moved = tmp_path / "moved"
    await anyio.Path(savepoint).rename(moved)  # a savepoint is self-contained
    await run_to_end(tmp_path / "b", str(moved), then)


@pytest.mark.parametrize("parallelism", [1, 3])
async def test_incremental_checkpoints_restore_rescaled(tmp_path: Path, parallelism: int) -> None:
    client = await make_env(tmp_path / "a", rate=2_000).start("rescale")
    for _ in range(2):
        completed = await client.trigger_checkpoint()
    client.cancel()
    await client.wait()
    await run_to_end(tmp_path / "b", completed.pointer, parallelism=parallelism)


def test_state_backend_option_is_validated_when_the_job_is_built() -> None:
    with pytest.raises(ConfigError, match="state_backend must be one of 'heap', 'rocksdb'"):
        StreamEnvironment(state_backend="leveldb")
    env = StreamEnvironment()
    env.config.state_backend = "memory"
    with pytest.raises(ConfigError, match="state_backend"):
        env.get_job_graph()
    with pytest.raises(ConfigError, match="local_recovery must be True or False"):
        StreamEnvironment(state_backend="rocksdb", local_recovery="yes")  # type: ignore[arg-type]


async def test_local_recovery_restores_a_restarted_job(tmp_path: Path) -> None:
    env = make_env(tmp_path / "c", rate=2_000, local_recovery=True, state_dir=tmp_path / "s")
    client = await env.start("local")
    completed = await client.trigger_checkpoint()
    client.cancel()
    await client.wait()
    assert list((tmp_path / "s").glob("local-*")), "local copies are kept"
    await run_to_end(tmp_path / "d", completed.pointer)


# -- blocking RocksDB work off the event loop ---------------------------------------------


class Watched(AllKinds):
    """AllKinds, counting the records each subtask's backend saw (by backend)."""

    processed: ClassVar[Counter[int]] = Counter()

    def open(self, ctx: RuntimeContext) -> None:
        super().open(ctx)
        self.backend = id(ctx.keyed_backend)

    def process_element(
        self, value: int, ctx: RuntimeContext
    ) -> list[tuple[int, int, int, int, int]]:
        Watched.processed[self.backend] += 1
        return super().process_element(value, ctx)


async def test_checkpoints_and_restore_run_off_the_loop_and_keep_a_consistent_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import storage.rocksdb.restore as restore_module
    from storage.rocksdb import RocksDBKeyedStateBackend

    loop_thread = threading.get_ident()
    generated = [0]

    def numbers(i: int) -> int:
        generated[0] += 1
        return i

    # Per RocksDB checkpoint: its thread, the records its subtask processed before and
    # after it, and the records the sources generated before and after it.
    takes: list[tuple[int, int, int, int, int]] = []
    create_checkpoint = RocksDBKeyedStateBackend.create_checkpoint

    def watched_checkpoint(backend: RocksDBKeyedStateBackend, folder: Path) -> None:
        mine, sourced = Watched.processed[id(backend)], generated[0]
        # Hold the checkpoint until the sources made more records (bounded): the event
        # loop runs meanwhile; only this backend's subtask waits.
        for _ in range(300):
            if generated[0] > sourced + 10:
                break
            time.sleep(0.001)
        create_checkpoint(backend, folder)
        takes.append(
            (threading.get_ident(), mine, Watched.processed[id(backend)], sourced, generated[0])
        )

    monkeypatch.setattr(RocksDBKeyedStateBackend, "create_checkpoint", watched_checkpoint)
    Watched.processed.clear()
    env = make_env(tmp_path / "a", rate=2_000, function=Watched(), numbers=numbers)
    client = await env.start("off the loop")
    for _ in range(3):
        completed = await client.trigger_checkpoint()
    client.cancel()
    await client.wait()
    assert takes, "the job took RocksDB checkpoints"
    assert all(thread != loop_thread for thread, *_ in takes)
    # The subtask whose checkpoint was being created processed nothing meanwhile ...
    assert all(before == after for _, before, after, _, _ in takes)
    # ... while the sources went on (the event loop was free).
    assert any(after > before for *_, before, after in takes)

    restores: list[int] = []
    restore_backend = restore_module.restore_backend

    def watched_restore(*args: Any) -> None:
        restores.append(threading.get_ident())
        restore_backend(*args)

    monkeypatch.setattr(restore_module, "restore_backend", watched_restore)
    # The cut is consistent: the job restored from the last checkpoint ends with
    # exactly the state of a run without failures.
    await run_to_end(tmp_path / "b", completed.pointer)
    assert len(restores) == 2 and loop_thread not in restores  # one per subtask


async def test_a_finished_subtask_closes_its_instance_and_deletes_its_folder(
    tmp_path: Path,
) -> None:
    # Closed by the task as it ends (in a worker thread), not by a later garbage
    # collection in whatever code runs it: with the collector off, nothing is left.
    import gc

    state_dir = tmp_path / "state"
    enabled = gc.isenabled()
    gc.disable()
    try:
        env = make_env(tmp_path / "checkpoints", state_dir=str(state_dir))
        result = await env.execute("closes")
        assert last_per_key(result.collected["out"]) == expected()
        assert not list(state_dir.glob("rocksdb-*")), "an instance folder was left behind"
    finally:
        if enabled:
            gc.enable()
