"""A Hypothesis state machine of the changelog backend against a dict model.

Rules: writes (value updates, clears, list appends), uploads (a flush of the open
segment), materializations (forced, awaited: the changelog before it is truncated and
its files unpinned), checkpoints (synchronous part, then the asynchronous upload into a
real ``shared/`` folder), and restores of any earlier checkpoint into fresh backends:
one that owns every key group, and two that split them (a rescale). A restored backend
must hold exactly the model's state at that checkpoint. Every checkpoint kept by the
machine is "retained", so the files it names must still be there.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from storage import KeyGroupRange, ListStateDescriptor, ValueStateDescriptor
from storage.changelog import ChangelogKeyedStateBackend, ChangelogOptions
from storage.checkpoint.filesystem import FileCheckpointStorage
from storage.errors import StateError
from storage.heap.backend import HeapKeyedStateBackend

MAX_PARALLELISM = 8
KEYS = st.integers(0, 11)
VALUE = ValueStateDescriptor("value", type=int)
LIST = ListStateDescriptor("list", type=str)
OPTIONS = ChangelogOptions(
    upload_interval=3600.0,
    file_size=10_000,
    materialization_interval=3600.0,
    materialization_size=1 << 30,
)


def _backend(key_groups: KeyGroupRange) -> ChangelogKeyedStateBackend:
    return ChangelogKeyedStateBackend(
        HeapKeyedStateBackend(MAX_PARALLELISM, key_groups), OPTIONS, allow_pickle=False
    )


def _contents(backend: ChangelogKeyedStateBackend) -> tuple[dict[int, int], dict[int, list[str]]]:
    values, lists = backend.get_state(VALUE), backend.get_state(LIST)
    value_of: dict[int, int] = {}
    list_of: dict[int, list[str]] = {}
    for key in list(backend.inner.keys("value")):
        backend.current_key = key
        value_of[key] = values.value()
    for key in list(backend.inner.keys("list")):
        backend.current_key = key
        if items := list(lists.get()):
            list_of[key] = items
    return value_of, list_of


class ChangelogMachine(RuleBasedStateMachine):
    """The backend and its dict model, step by step on one event loop."""

    @initialize()
    def start(self) -> None:
        self.folder = tempfile.TemporaryDirectory()
        self.loop = asyncio.new_event_loop()
        self.storage = FileCheckpointStorage(self.folder.name, "job")
        self.backend = _backend(KeyGroupRange.of(MAX_PARALLELISM))
        self.values = self.backend.get_state(VALUE)
        self.lists = self.backend.get_state(LIST)
        self.model_values: dict[int, int] = {}
        self.model_lists: dict[int, list[str]] = {}
        # checkpoint id -> (blobs by key group, model values, model lists)
        self.checkpoints: dict[
            int, tuple[list[tuple[int, bytes]], dict[int, int], dict[int, list[str]]]
        ] = {}
        self.next_id = 1

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def call(self, fn: Any) -> Any:
        """Call ``fn`` on the running loop (as a task does), without yielding."""

        async def inside() -> Any:
            return fn()

        return self.run(inside())

    def teardown(self) -> None:
        if hasattr(self, "loop"):
            self.run(self.backend.close())
            self.loop.close()
            self.folder.cleanup()

    @rule(key=KEYS, value=st.integers(-5, 5))
    def update(self, key: int, value: int) -> None:
        self.backend.current_key = key
        self.values.update(value)
        self.model_values[key] = value

    @rule(key=KEYS)
    def clear(self, key: int) -> None:
        self.backend.current_key = key
        self.values.clear()
        self.model_values.pop(key, None)

    @rule(key=KEYS, item=st.text(max_size=3))
    def append(self, key: int, item: str) -> None:
        self.backend.current_key = key
        self.lists.add(item)
        self.model_lists.setdefault(key, []).append(item)

    @rule()
    def upload(self) -> None:
        self.call(self.backend.flush)

    @rule()
    def materialize(self) -> None:
        if self.call(lambda: self.backend.maybe_materialize(force=True)):
            self.run(self.backend.wait_materialized())

    @rule()
    def checkpoint(self) -> None:
        snapshot = self.call(self.backend.snapshot)
        checkpoint_id = self.next_id
        self.next_id += 1
        self.run(snapshot.upload(self.storage, checkpoint_id))
        blobs = [pair for chunk in snapshot.encode_chunks(3) for pair in chunk]
        snapshot.release()
        self.checkpoints[checkpoint_id] = (
            blobs,
            dict(self.model_values),
            {k: list(v) for k, v in self.model_lists.items()},
        )

    @rule(data=st.data(), rescale=st.booleans())
    def restore(self, data: st.DataObject, rescale: bool) -> None:
        if not self.checkpoints:
            return
        checkpoint_id = data.draw(st.sampled_from(sorted(self.checkpoints)))
        blobs, values, lists = self.checkpoints[checkpoint_id]
        pointer = str(self.storage.checkpoint_dir(checkpoint_id))
        ranges = (
            [KeyGroupRange(0, 2), KeyGroupRange(3, MAX_PARALLELISM - 1)]
            if rescale
            else [KeyGroupRange.of(MAX_PARALLELISM)]
        )
        got_values: dict[int, int] = {}
        got_lists: dict[int, list[str]] = {}
        for key_groups in ranges:
            restored = _backend(key_groups)
            restored.defer_restore(blobs, pointer)
            self.run(restored.prepare())
            part_values, part_lists = _contents(restored)
            got_values.update(part_values)
            got_lists.update(part_lists)
            self.run(restored.close())
        assert got_values == values
        assert got_lists == lists

    @invariant()
    def live_state_matches_the_model(self) -> None:
        if hasattr(self, "backend"):
            assert _contents(self.backend) == (
                self.model_values,
                {k: v for k, v in self.model_lists.items() if v},
            )


ChangelogMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("WEIR_CHANGELOG_EXAMPLES", "30")),
    stateful_step_count=30,
    deadline=None,
)
TestChangelogMachine = ChangelogMachine.TestCase


def test_files_of_shared_are_named_in_a_checkpoint_or_pinned(tmp_path: Path) -> None:
    """A materialization unpins the changelog before it: once no checkpoint uses a
    truncated file, it is deleted from shared/."""
    loop = asyncio.new_event_loop()
    storage = FileCheckpointStorage(tmp_path, "job")
    backend = _backend(KeyGroupRange.of(MAX_PARALLELISM))
    values = backend.get_state(VALUE)
    try:
        for key in range(10):
            backend.current_key = key
            values.update(key)
        snapshot = backend.snapshot()
        loop.run_until_complete(snapshot.upload(storage, 1))
        snapshot.release()
        first = {p.name for p in (tmp_path / "job" / "shared").iterdir()}
        assert len(first) == 1 and next(iter(first)).startswith("changelog-")
        assert backend.maybe_materialize() is False  # not due: no storage loop timer
        backend.current_key = 3
        values.update(33)

        async def force() -> bool:
            return backend.maybe_materialize(force=True)

        assert loop.run_until_complete(force())
        loop.run_until_complete(backend.wait_materialized())
        # checkpoint 1 still uses the old changelog file: kept; its pin is gone.
        names = {p.name for p in (tmp_path / "job" / "shared").iterdir()}
        assert first < names
        released = loop.run_until_complete(storage.shared_files.release(1))
        assert released == sorted(first)
        names = {p.name for p in (tmp_path / "job" / "shared").iterdir()}
        assert not names & first
        assert any(name.startswith("materialized-") for name in names)
    finally:
        loop.run_until_complete(backend.close())
        loop.close()


def test_a_state_never_registered_after_a_restore_is_carried_and_refuses_a_savepoint(
    tmp_path: Path,
) -> None:
    """Restored changes of a state the operator does not register stay in the changelog:
    later checkpoints carry them (no materialization meanwhile), and a savepoint, which
    would lose them, is refused with the state's name."""
    loop = asyncio.new_event_loop()
    storage = FileCheckpointStorage(tmp_path, "job")
    other = ValueStateDescriptor("other", type=int)
    first = _backend(KeyGroupRange.of(MAX_PARALLELISM))
    values, others = first.get_state(VALUE), first.get_state(other)
    restored = carried = None

    def checkpoint(backend: ChangelogKeyedStateBackend, checkpoint_id: int) -> list:
        async def run() -> list:
            snapshot = backend.snapshot()
            await snapshot.upload(storage, checkpoint_id)
            blobs = [pair for chunk in snapshot.encode_chunks() for pair in chunk]
            snapshot.release()
            return blobs

        return loop.run_until_complete(run())

    try:
        for key in range(6):
            first.current_key = key
            values.update(key)
            others.update(10 * key)
        blobs = checkpoint(first, 1)
        restored = _backend(KeyGroupRange.of(MAX_PARALLELISM))
        restored.defer_restore(blobs, str(storage.checkpoint_dir(1)))
        loop.run_until_complete(restored.prepare())
        restored.get_state(VALUE)  # "other" is never registered
        restored.full_snapshots = True
        with pytest.raises(StateError, match=r"savepoint.*\['other'\]"):
            restored.snapshot()
        restored.full_snapshots = False
        second = checkpoint(restored, 2)  # binds the storage: materializations could run
        assert restored.pins is not None
        assert not loop.run_until_complete(_force(restored))  # but not with changes pending
        carried = _backend(KeyGroupRange.of(MAX_PARALLELISM))
        carried.defer_restore(second, str(storage.checkpoint_dir(2)))
        loop.run_until_complete(carried.prepare())
        state = carried.get_state(other)
        carried.current_key = 5
        assert state.value() == 50
    finally:
        for backend in (first, restored, carried):
            if backend is not None:
                loop.run_until_complete(backend.close())
        loop.close()


async def _force(backend: ChangelogKeyedStateBackend) -> bool:
    return backend.maybe_materialize(force=True)
