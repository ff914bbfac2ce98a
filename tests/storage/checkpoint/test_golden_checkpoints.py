"""Golden checkpoints: files written by each metadata format version load forever."""

from __future__ import annotations

import shutil
from pathlib import Path

from storage.checkpoint import (
    NO_KEY_GROUP,
    CheckpointMetadata,
    FileCheckpointStorage,
    OperatorStateHandle,
    StateFrame,
    StateHandle,
    SubtaskStateHandle,
    find_latest_valid,
    iter_frames,
    load_metadata_file,
)

V1 = Path(__file__).parent / "data" / "v1"


def frames_of(subtask: int) -> list[StateFrame]:
    keyed = [
        StateFrame("keyed", "sessions", group, b"\x82\xa1k\xa1%c\xa1v%c" % (97 + group, group))
        for group in (subtask * 2, subtask * 2 + 1)
    ]
    split = StateFrame("source_split", "events", NO_KEY_GROUP, b"offset=%d" % (100 + subtask))
    return [split, *keyed]


CHECKPOINT_7 = CheckpointMetadata(
    version=1,
    job_id="golden-job",
    checkpoint_id=7,
    timestamp=1700000000.5,
    is_savepoint=False,
    operators=[
        OperatorStateHandle(
            uid="sessions",
            name="Sessions",
            parallelism=2,
            max_parallelism=4,
            subtasks=[
                SubtaskStateHandle(0, StateHandle("sessions-0", 100, "84d5e865"), 40, 0, 0, 1),
                SubtaskStateHandle(1, StateHandle("sessions-1", 100, "a2e52ed1"), 40, 0, 2, 3),
            ],
        ),
        OperatorStateHandle(
            uid="sink",
            name="Print",
            parallelism=1,
            max_parallelism=4,
            subtasks=[SubtaskStateHandle(0, None, 0, 0)],
        ),
    ],
    properties={"mode": "exactly_once", "unaligned": "false"},
)

SAVEPOINT_8 = CheckpointMetadata(
    version=1,
    job_id="golden-job",
    checkpoint_id=8,
    timestamp=1700000001.0,
    is_savepoint=True,
    operators=[
        OperatorStateHandle(
            uid="sessions",
            name="Sessions",
            parallelism=1,
            max_parallelism=4,
            subtasks=[
                SubtaskStateHandle(0, StateHandle("sessions-0", 200, "8eed5ece"), 80, 0, 0, 3)
            ],
        )
    ],
)


async def test_v1_checkpoint() -> None:
    latest, skipped = find_latest_valid(V1 / "golden-job")
    assert skipped == ()
    assert latest == (V1 / "golden-job" / "chk-7", CHECKPOINT_7)
    storage = FileCheckpointStorage(V1, "golden-job")
    assert storage.list_completed() == [7]
    pointer = str(latest[0])
    for subtask in CHECKPOINT_7.operators[0].subtasks:
        assert subtask.handle is not None
        data = await storage.read_state(pointer, subtask.handle)
        assert list(iter_frames(data, pointer)) == frames_of(subtask.subtask_index)


async def test_v1_savepoint_can_be_moved(tmp_path: Path) -> None:
    moved = tmp_path / "elsewhere" / "my-savepoint"
    shutil.copytree(V1 / "savepoint-golden-1a2b3c", moved)
    assert load_metadata_file(moved) == SAVEPOINT_8
    storage = FileCheckpointStorage(tmp_path / "unrelated", "another-job")
    meta = await storage.load(f"file://{moved}")
    handle = meta.operators[0].subtasks[0].handle
    assert handle is not None
    data = await storage.read_state(str(moved), handle)
    assert list(iter_frames(data, str(moved))) == frames_of(0) + frames_of(1)
