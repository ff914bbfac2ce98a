"""The shared-state registry, pure and inside the file storage.

The pure object is checked with a Hypothesis state machine against a model (the set of
checkpoints that use each file): a file is never returned for deletion while a
checkpoint uses it, and every file is returned once its last user is released. The file
storage tests check the same on disk: ``discard`` deletes a shared file only when no
retained checkpoint uses it, nothing is left once every checkpoint is discarded, and a
new storage object rebuilds the counts from the metadata it finds.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from storage.checkpoint.filesystem import FileCheckpointStorage
from storage.checkpoint.metadata import (
    METADATA_VERSION,
    CheckpointMetadata,
    OperatorStateHandle,
    SharedFileHandle,
    SubtaskStateHandle,
    decode_metadata,
    encode_metadata,
)
from storage.checkpoint.shared_registry import SharedStateRegistry

FILES = st.sampled_from([f"f{i}" for i in range(6)])
CHECKPOINTS = st.integers(1, 5)


class RegistryMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.registry = SharedStateRegistry()
        self.model: dict[str, set[int]] = {}
        self.deleted: set[str] = set()

    @rule(checkpoint=CHECKPOINTS, name=FILES)
    def upload(self, checkpoint: int, name: str) -> None:
        assert self.registry.reference(checkpoint, name, new=True)
        self.model.setdefault(name, set()).add(checkpoint)
        self.deleted.discard(name)

    @rule(checkpoint=CHECKPOINTS, name=FILES)
    def reuse(self, checkpoint: int, name: str) -> None:
        accepted = self.registry.reference(checkpoint, name)
        assert accepted == bool(self.model.get(name))
        if accepted:
            self.model[name].add(checkpoint)

    @rule(checkpoint=CHECKPOINTS, names=st.sets(FILES, max_size=3))
    def register(self, checkpoint: int, names: set[str]) -> None:
        self.registry.register(checkpoint, names)
        for name in names:
            self.model.setdefault(name, set()).add(checkpoint)
            self.deleted.discard(name)  # a completed checkpoint's metadata names it

    @rule(checkpoint=CHECKPOINTS)
    def release(self, checkpoint: int) -> None:
        unused = self.registry.release(checkpoint)
        for users in self.model.values():
            users.discard(checkpoint)
        expected = sorted(name for name, users in self.model.items() if not users)
        assert unused == expected
        for name in unused:
            del self.model[name]
            assert name not in self.deleted
            self.deleted.add(name)

    @invariant()
    def matches_the_model(self) -> None:
        assert self.registry.files() == set(self.model)
        for name, users in self.model.items():
            assert self.registry.users(name) == users


TestRegistryMachine = RegistryMachine.TestCase
TestRegistryMachine.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)


def _metadata(
    job_id: str, checkpoint_id: int, shared: list[SharedFileHandle]
) -> CheckpointMetadata:
    subtask = SubtaskStateHandle(0, None, 0, 0, 0, 127, shared=shared)
    return CheckpointMetadata(
        METADATA_VERSION,
        job_id,
        checkpoint_id,
        0.0,
        False,
        [OperatorStateHandle("op", "op", 1, 128, [subtask])],
    )


def test_metadata_without_shared_files_decodes_and_with_them_round_trips() -> None:
    meta = _metadata("j", 3, [SharedFileHandle("x-000012.sst", 10, "0000000a")])
    assert decode_metadata(encode_metadata(meta), "m") == meta
    plain = _metadata("j", 4, [])
    assert decode_metadata(encode_metadata(plain), "m").operators[0].subtasks[0].shared == []


async def test_shared_files_are_deleted_when_no_retained_checkpoint_uses_them(
    tmp_path: Path,
) -> None:
    storage = FileCheckpointStorage(tmp_path, "b" * 32)
    await storage.initialize()
    shared = storage.shared_files
    source = tmp_path / "000001.sst"
    source.write_bytes(b"sst")
    names: dict[int, list[SharedFileHandle]] = {}
    # Checkpoint n uploads file n and reuses file n - 1: a chain of incremental ones.
    for n in range(1, 6):
        files = [await shared.upload(n, source, f"f{n}")]
        if n > 1:
            assert shared.reuse(n, names[n - 1][0])
        names[n] = files + ([names[n - 1][0]] if n > 1 else [])
        await storage.commit(_metadata(storage.job_id, n, names[n]))
        if n > 2:  # retain two: discard n - 2
            await storage.discard(n - 2)
            present = {path.name for path in (storage.job_dir / "shared").iterdir()}
            retained = {h.name for h in names[n - 1] + names[n]}
            assert present == retained  # what n - 1 and n use, nothing else
    # An aborted checkpoint's own uploads go, the files it reused stay.
    await shared.upload(6, source, "f6")
    assert shared.reuse(6, names[5][0])
    await storage.discard(6)
    assert {p.name for p in (storage.job_dir / "shared").iterdir()} == {"f3", "f4", "f5"}
    # A new storage object (a restarted process) rebuilds the counts from the metadata
    # and deletes a file left behind by a crash.
    (storage.job_dir / "shared" / "orphan").write_bytes(b"x")
    again = FileCheckpointStorage(tmp_path, "b" * 32)
    await again.initialize()
    assert again.shared_files.registry.users("f4") == {4, 5}
    assert not (storage.job_dir / "shared" / "orphan").exists()
    for n in (4, 5):
        await again.discard(n)
    assert list((storage.job_dir / "shared").iterdir()) == []


def test_registry_runs_without_an_event_loop() -> None:
    registry = SharedStateRegistry()
    assert not registry.reference(1, "gone")
    registry.register(1, ["a"])
    assert registry.committed() == {1}
    assert registry.release(1) == ["a"]
    assert asyncio.iscoroutinefunction(FileCheckpointStorage.discard)
