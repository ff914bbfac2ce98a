"""The RocksDB keyed state backend: state kinds, snapshot formats, restore and rescale.

Storage-level tests (no job): the backend is driven the way the runtime drives it
(``set_current_key``, handles, ``snapshot``; ``upload`` then ``encode_chunks`` for the
native format; ``restore`` with the blobs and the checkpoint's folder). A Hypothesis
state machine-lite runs the same random operations against the heap backend and the
RocksDB one and compares every read.
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage import (
    HeapKeyedStateBackend,
    KeyGroupRange,
    ListStateDescriptor,
    MapStateDescriptor,
    ReducingStateDescriptor,
    StateError,
    ValueStateDescriptor,
    assign_to_key_group,
)
from storage.backend import create_keyed_backend, prepare_keyed_backend, restore_keyed_backend
from storage.checkpoint.filesystem import FileCheckpointStorage
from storage.checkpoint.metadata import (
    METADATA_VERSION,
    CheckpointMetadata,
    OperatorStateHandle,
    SubtaskStateHandle,
)
from storage.rocksdb import RocksDBKeyedStateBackend, RocksDBSnapshot, is_native
from storage.rocksdb.restore import fetch_handle

MAXP = 16
ALL = KeyGroupRange.of(MAXP)

VALUE = ValueStateDescriptor("value", default=0)
LIST = ListStateDescriptor("list")
MAP = MapStateDescriptor("map")
REDUCING = ReducingStateDescriptor("reducing", lambda a, b: a + b)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


def rocks(state_dir: Path, kgs: KeyGroupRange = ALL, **options: Any) -> RocksDBKeyedStateBackend:
    return RocksDBKeyedStateBackend(MAXP, kgs, state_dir=state_dir, **options)


def fill(backend: Any, keys: range, bump: int = 0) -> None:
    value, lst, mp, red = (backend.get_state(d) for d in (VALUE, LIST, MAP, REDUCING))
    for key in keys:
        backend.set_current_key(f"k{key}")
        value.update(key + bump)
        lst.add(key)
        mp.put(("m", key % 3), [key, bump])
        red.add(key + bump)
    backend.set_current_key(None)


def contents(backend: Any) -> dict[str, dict[Any, Any]]:
    """Every state's entries, read through the handles."""
    value, lst, mp, red = (backend.get_state(d) for d in (VALUE, LIST, MAP, REDUCING))
    out: dict[str, dict[Any, Any]] = {"value": {}, "list": {}, "map": {}, "reducing": {}}
    for name, handle in (("value", value), ("list", lst), ("map", mp), ("reducing", red)):
        for key in sorted(backend.keys(name), key=repr):
            backend.set_current_key(key)
            if name == "value":
                out[name][key] = handle.value()
            elif name == "map":
                out[name][key] = sorted(handle.items(), key=repr)
            else:
                out[name][key] = handle.get()
    backend.set_current_key(None)
    return out


def common_blobs(snapshot: Any) -> list[tuple[int, bytes]]:
    try:
        return snapshot.encode_key_groups()
    finally:
        snapshot.release()


# -- state kinds ----------------------------------------------------------------------------


def test_every_state_kind_works(state_dir: Path) -> None:
    backend = rocks(state_dir)
    value = backend.get_state(VALUE)
    lst = backend.get_state(LIST)
    mp = backend.get_state(MAP)
    red = backend.get_state(REDUCING)
    backend.set_current_key("a")
    assert value.value() == 0
    value.update(5)
    lst.add_all([1, 2])
    lst.add(3)
    mp.put_all({"x": 1, "y": {"z": 2}})
    red.add(4)
    red.add(6)
    assert (value.value(), lst.get(), red.get()) == (5, [1, 2, 3], 10)
    assert sorted(mp.items()) == [("x", 1), ("y", {"z": 2})]
    assert mp.contains("x") and not mp.contains("w") and not mp.is_empty()
    mp.remove("x")
    assert mp.keys() == ["y"] and mp.get("x", "d") == "d"
    backend.set_current_key(("b", 1))
    assert (value.value(), lst.get(), mp.is_empty(), red.get()) == (0, [], True, None)
    backend.set_current_key("a")
    lst.update([])
    mp.clear()
    value.clear()
    assert (lst.get(), mp.is_empty(), value.value()) == ([], True, 0)
    assert value.get_for("a", 7) == 7
    value.put_for(2.0, 9)  # 2.0 == 2: the same key
    assert value.get_for(2) == 9
    assert set(backend.keys("reducing")) == {"a"}
    assert backend.num_keys("value") == 1
    backend.dispose()


def test_state_access_without_a_key_and_kind_clashes_are_errors(state_dir: Path) -> None:
    backend = rocks(state_dir)
    value = backend.get_state(VALUE)
    with pytest.raises(StateError, match="no current key"):
        value.value()
    with pytest.raises(StateError, match="registered as value state"):
        backend.get_state(ListStateDescriptor("value"))
    backend.dispose()


OPS = st.lists(
    st.tuples(
        st.sampled_from(["update", "add", "put", "remove", "clear", "reduce"]),
        st.sampled_from(["a", "b", 1, 2.5, ("t", 1)]),
        st.integers(-3, 3),
    ),
    max_size=40,
)


@settings(max_examples=10, deadline=None)
@given(ops=OPS)
def test_rocksdb_reads_what_the_heap_backend_reads(ops: list[tuple[str, Any, int]]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        heap = HeapKeyedStateBackend(MAXP, ALL)
        rdb = rocks(Path(folder))
        for backend in (heap, rdb):
            handles = [backend.get_state(d) for d in (VALUE, LIST, MAP, REDUCING)]
            for op, key, number in ops:
                backend.set_current_key(key)
                value, lst, mp, red = handles
                if op == "update":
                    value.update(number)
                elif op == "add":
                    lst.add(number)
                elif op == "put":
                    mp.put(number, key)
                elif op == "remove":
                    mp.remove(number)
                elif op == "reduce":
                    red.add(number)
                else:
                    handles[number % 4].clear()
        assert contents(rdb) == contents(heap)
        rdb.dispose()


# -- the common (canonical) format: heap <-> RocksDB ----------------------------------------


@pytest.mark.parametrize("canonical", [False, True])
def test_common_format_round_trips_between_heap_and_rocksdb(
    state_dir: Path, canonical: bool
) -> None:
    heap = HeapKeyedStateBackend(MAXP, ALL)
    fill(heap, range(40))
    expected = contents(heap)
    rdb = rocks(state_dir)
    rdb.restore(common_blobs(heap.snapshot(canonical=canonical)))
    assert contents(rdb) == expected
    fill(rdb, range(40, 50), bump=1)
    expected = contents(rdb)
    snapshot = rdb.snapshot(canonical=canonical)
    assert isinstance(snapshot, RocksDBSnapshot)
    back = HeapKeyedStateBackend(MAXP, ALL)
    back.restore(common_blobs(snapshot))
    assert contents(back) == expected
    rdb.dispose()


def test_state_restored_before_registration_is_stashed_and_carried(state_dir: Path) -> None:
    heap = HeapKeyedStateBackend(MAXP, ALL)
    fill(heap, range(10))
    expected = contents(heap)
    rdb = rocks(state_dir)
    rdb.restore(common_blobs(heap.snapshot()))
    assert set(rdb.state_names) == {"value", "list", "map", "reducing"}
    assert rdb.num_keys("list") == 10
    again = rocks(state_dir)  # nothing registered: the stash is carried over
    again.restore(common_blobs(rdb.snapshot()))
    assert contents(again) == expected
    other = rocks(state_dir)
    other.restore(common_blobs(heap.snapshot()))
    with pytest.raises(StateError, match="was restored as value state"):
        other.get_state(ListStateDescriptor("value"))
    other.dispose()
    rdb.dispose()
    again.dispose()


# -- the native format ------------------------------------------------------------------------


def checkpoint(storage: FileCheckpointStorage, checkpoint_id: int, backends: list[Any]) -> str:
    """Take a native checkpoint of ``backends`` (one per subtask) and commit it."""

    async def run() -> str:
        subtasks = []
        for index, backend in enumerate(backends):
            snapshot = backend.snapshot()
            await snapshot.take()  # a no-op unless the backend defers its checkpoints
            shared = await snapshot.upload(storage, checkpoint_id)
            blobs = snapshot.encode_key_groups()
            snapshot.release()
            assert all(is_native(blob) for _, blob in blobs)
            frames = b"".join(
                len(blob).to_bytes(4, "big") + kg.to_bytes(2, "big") + blob for kg, blob in blobs
            )
            handle = await storage.write_state(checkpoint_id, f"task-{index}", [frames])
            kgs = backend.key_group_range
            subtasks.append(
                SubtaskStateHandle(index, handle, 0, 0, kgs.start, kgs.end, shared=shared)
            )
        meta = CheckpointMetadata(
            METADATA_VERSION,
            storage.job_id,
            checkpoint_id,
            0.0,
            False,
            [OperatorStateHandle("op", "op", len(backends), MAXP, subtasks)],
        )
        return await storage.commit(meta)

    return asyncio.run(run())


def read_blobs(pointer: str) -> list[tuple[int, bytes]]:
    """The blobs of every task file of a checkpoint written by :func:`checkpoint`."""
    blobs = []
    for path in sorted(Path(pointer).glob("task-*")):
        data = path.read_bytes()
        at = 0
        while at < len(data):
            size = int.from_bytes(data[at : at + 4], "big")
            kg = int.from_bytes(data[at + 4 : at + 6], "big")
            blobs.append((kg, data[at + 6 : at + 6 + size]))
            at += 6 + size
    return blobs


def new_storage(tmp_path: Path) -> FileCheckpointStorage:
    storage = FileCheckpointStorage(tmp_path / "checkpoints", "a" * 32)
    asyncio.run(storage.initialize())
    return storage


@pytest.mark.parametrize("incremental", [True, False])
def test_full_and_incremental_checkpoints_restore_the_same_state(
    tmp_path: Path, state_dir: Path, incremental: bool
) -> None:
    storage = new_storage(tmp_path)
    backend = rocks(state_dir, incremental=incremental)
    pointers, expected = [], []
    for round_ in range(4):
        fill(backend, range(round_ * 10, round_ * 10 + 30), bump=round_)
        expected.append(contents(backend))
        pointers.append(checkpoint(storage, round_ + 1, [backend]))
    for pointer, state in zip(pointers, expected, strict=True):
        restored = rocks(state_dir)
        restored.restore(read_blobs(pointer), pointer)
        assert contents(restored) == state
        restored.dispose()
    registry = storage.shared_files.registry
    reused = any(len(registry.users(name)) > 1 for name in registry.files())
    assert reused == incremental  # incremental checkpoints share files, full ones do not
    backend.dispose()


def test_rescaling_keeps_each_subtasks_key_groups(tmp_path: Path, state_dir: Path) -> None:
    storage = new_storage(tmp_path)
    old = [rocks(state_dir, KeyGroupRange.for_operator(MAXP, 2, i)) for i in range(2)]
    heap = HeapKeyedStateBackend(MAXP, ALL)
    for i in range(60):
        key = f"k{i}"
        owner = old[0] if assign_to_key_group(key, MAXP) in old[0].key_group_range else old[1]
        for backend in (owner, heap):
            backend.set_current_key(key)
            backend.get_state(VALUE).update(i)
            backend.get_state(MAP).put(i, "x")
    pointer = checkpoint(storage, 1, old)
    for p in (1, 3):
        merged: dict[Any, Any] = {}
        for index in range(p):
            new = rocks(state_dir, KeyGroupRange.for_operator(MAXP, p, index))
            new.restore(read_blobs(pointer), pointer)
            part = contents(new)
            assert all(
                assign_to_key_group(key, MAXP) in new.key_group_range for key in part["value"]
            )
            for name, entries in part.items():
                merged.setdefault(name, {}).update(entries)
            new.dispose()
        assert merged == contents(heap)


def test_local_recovery_uses_a_valid_local_copy_and_falls_back_otherwise(
    tmp_path: Path, state_dir: Path
) -> None:
    storage = new_storage(tmp_path)
    backend = rocks(state_dir, local_recovery=True)
    fill(backend, range(30))
    expected = contents(backend)
    pointer = checkpoint(storage, 1, [backend])
    (local,) = backend.local_copies
    assert local.is_dir()
    from storage.rocksdb.handle import decode_handle

    handle = decode_handle(read_blobs(pointer)[0][1], pointer)
    assert fetch_handle(handle, Path(pointer), tmp_path / "a", state_dir)  # local copy used
    restored = rocks(state_dir)
    restored.restore(read_blobs(pointer), pointer)
    assert contents(restored) == expected
    sst = next(local.glob("*.sst"))
    sst.write_bytes(b"torn")  # invalid: the size differs, so storage is used instead
    assert not fetch_handle(handle, Path(pointer), tmp_path / "b", state_dir)
    again = rocks(state_dir)
    again.restore(read_blobs(pointer), pointer)
    assert contents(again) == expected
    for b in (backend, restored, again):
        b.dispose()
    assert not local.exists()


def test_backend_factory_names_the_allowed_values(state_dir: Path) -> None:
    assert isinstance(create_keyed_backend("heap", MAXP, ALL), HeapKeyedStateBackend)
    rdb = create_keyed_backend("rocksdb", MAXP, ALL, state_dir=state_dir)
    assert isinstance(rdb, RocksDBKeyedStateBackend)
    rdb.dispose()
    with pytest.raises(ValueError, match="state_backend must be one of 'heap', 'rocksdb'"):
        create_keyed_backend("leveldb", MAXP, ALL)


# -- blocking work off the event loop -------------------------------------------------------


def test_a_deferred_snapshot_is_taken_in_a_worker_thread(
    tmp_path: Path, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[int] = []
    original = RocksDBKeyedStateBackend.create_checkpoint

    def recording(self: RocksDBKeyedStateBackend, folder: Path) -> None:
        threads.append(threading.get_ident())
        original(self, folder)

    monkeypatch.setattr(RocksDBKeyedStateBackend, "create_checkpoint", recording)
    storage = new_storage(tmp_path)
    backend = rocks(state_dir)
    backend.defer_snapshots = True
    fill(backend, range(20))
    expected = contents(backend)
    snapshot = backend.snapshot()
    assert not snapshot.taken and not snapshot.folder.exists() and not threads
    with pytest.raises(RuntimeError, match="await take"):
        asyncio.run(snapshot.upload(storage, 1))
    snapshot.release()
    pointer = checkpoint(storage, 1, [backend])  # snapshot(), take(), upload()
    assert threads and threading.get_ident() not in threads
    restored = rocks(state_dir)
    restored.restore(read_blobs(pointer), pointer)
    assert contents(restored) == expected
    restored.dispose()
    backend.dispose()


def test_a_snapshot_released_before_it_is_taken_never_touches_the_instance(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = rocks(state_dir)
    backend.defer_snapshots = True
    fill(backend, range(5))
    snapshot = backend.snapshot()
    snapshot.release()  # an aborted checkpoint
    monkeypatch.setattr(backend, "create_checkpoint", lambda folder: pytest.fail("taken"))
    asyncio.run(snapshot.take())
    assert not snapshot.taken and not snapshot.folder.exists()
    backend.dispose()


def test_a_deferred_restore_runs_in_a_worker_thread_or_on_first_use(
    tmp_path: Path, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import storage.rocksdb.restore as restore_module

    threads: list[int] = []
    original = restore_module.restore_backend

    def recording(*args: Any) -> None:
        threads.append(threading.get_ident())
        original(*args)

    monkeypatch.setattr(restore_module, "restore_backend", recording)
    storage = new_storage(tmp_path)
    backend = rocks(state_dir)
    fill(backend, range(30))
    expected = contents(backend)
    pointer = checkpoint(storage, 1, [backend])
    restored = rocks(state_dir)
    restore_keyed_backend(restored, read_blobs(pointer), pointer, deferred=True)
    assert not threads  # deferred: nothing read yet
    asyncio.run(prepare_keyed_backend(restored))
    assert threads and threading.get_ident() not in threads
    assert contents(restored) == expected
    # Used before prepare(), a deferred restore happens on the spot (the same state).
    threads.clear()
    eager = rocks(state_dir)
    restore_keyed_backend(eager, read_blobs(pointer), pointer, deferred=True)
    assert contents(eager) == expected and threads == [threading.get_ident()]
    asyncio.run(prepare_keyed_backend(eager))  # nothing left to do
    assert len(threads) == 1
    for each in (backend, restored, eager):
        each.dispose()


def test_an_upload_writes_its_files_in_one_hop_and_syncs_them_and_the_shared_folder(
    tmp_path: Path, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import storage.checkpoint.shared_files as shared_files

    batches: list[list[Path]] = []
    synced: list[str] = []
    write_batch, fsync = shared_files.write_batch, os.fsync

    def recording_batch(copies: Any, bundle: Any, folder: Path) -> Any:
        batches.append([target for _, target in copies])
        return write_batch(copies, bundle, folder)

    def recording_fsync(descriptor: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{descriptor}"))
        fsync(descriptor)

    monkeypatch.setattr(shared_files, "write_batch", recording_batch)
    monkeypatch.setattr(os, "fsync", recording_fsync)
    storage = new_storage(tmp_path)
    backend = rocks(state_dir)
    fill(backend, range(50))
    pointer = checkpoint(storage, 1, [backend])
    (copies,) = batches
    assert copies, "the first checkpoint uploads its SST files"
    shared = storage.shared_files.folder
    bundle = next(Path(pointer).glob("rocksdb-*-files"))
    for path in [*copies, bundle, shared]:
        assert str(path.resolve()) in synced, f"{path} was not synced"
    # Every file is synced before the checkpoint's _metadata is written.
    metadata = [i for i, name in enumerate(synced) if name.endswith("_metadata.tmp")]
    assert metadata and max(synced.index(str(p.resolve())) for p in copies) < metadata[0]
    backend.dispose()
