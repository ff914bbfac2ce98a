"""Restore: load a completed checkpoint and hand each new subtask its part.

``load_checkpoint`` reads a checkpoint's metadata and every state file it names (each
verified by size and checksum), once, and indexes the frames. ``RestoredCheckpoint.
for_task`` then gives a subtask of the new run (same job graph) its ``TaskRestoreState``:

* keyed state: the key-group blobs of each of its operators that fall in its key-group
  range, from whichever old subtask wrote them;
* operator state: what the same subtask index wrote for each operator;
* source splits: what the same source subtask wrote (the enumerator is not run again);
* channel state: input channel state it recorded (by producing operator uid and
  subtask) and output channel state (by consuming operator uid and subtask).

Operators are matched by ``uid``. A checkpoint that names an operator the job does not
have, or whose max parallelism differs, is an error naming the operator.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import msgspec

from runtime.errors import ConfigError
from storage import KeyGroupRange, OperatorStateSnapshot, serializer_for
from storage.checkpoint import CheckpointMetadata, CheckpointStorage, StateFrame, iter_frames

_operator_state_decoder = msgspec.msgpack.Decoder(OperatorStateSnapshot)


@dataclass(slots=True)
class TaskRestoreState:
    """What one subtask restores."""

    keyed: dict[str, list[tuple[int, bytes]]] = field(default_factory=dict)
    operator: dict[str, OperatorStateSnapshot] = field(default_factory=dict)
    splits: dict[str, list[Any]] = field(default_factory=dict)
    input_channels: dict[tuple[str, int], list[Any]] = field(default_factory=dict)
    output_channels: dict[tuple[str, int], list[Any]] = field(default_factory=dict)


@dataclass(slots=True)
class _FileFrames:
    """The frames of one state file, with the (uid, subtask) of its operators."""

    owners: set[tuple[str, int]]
    frames: list[StateFrame]


@dataclass(slots=True)
class RestoredCheckpoint:
    """A loaded checkpoint, indexed for assignment to subtasks.

    Attributes:
        pointer: where it was loaded from.
        metadata: its metadata.
    """

    pointer: str
    metadata: CheckpointMetadata
    files: list[_FileFrames]
    allow_pickle: bool = True

    @property
    def checkpoint_id(self) -> int:
        """The restored checkpoint's id."""
        return self.metadata.checkpoint_id

    def check_operators(
        self, uids: dict[str, str], max_parallelism: int, allow_non_restored_state: bool
    ) -> None:
        """Check that the job can take this checkpoint's state.

        Args:
            uids: the job's operator uids, mapped to their names.
            max_parallelism: the job's max parallelism.
            allow_non_restored_state: skip state of operators the job no longer has.

        Raises:
            ConfigError: state of an operator the job lacks (unless allowed), or another
                max parallelism; the message names the operator and what to do.
        """
        for operator in self.metadata.operators:
            if operator.uid not in uids:
                if allow_non_restored_state:
                    continue
                raise ConfigError(
                    f"cannot restore {self.pointer}: it has state for uid {operator.uid!r} "
                    f"(operator {operator.name!r}) which the job does not have; give that "
                    f"operator its uid back, or pass allow_non_restored_state=True to skip it"
                )
            if operator.max_parallelism != max_parallelism:
                raise ConfigError(
                    f"cannot restore operator {uids[operator.uid]!r} (uid {operator.uid!r}) "
                    f"from {self.pointer}: its max parallelism was {operator.max_parallelism}, "
                    f"the job's is {max_parallelism}; the max parallelism of a job's state "
                    f"cannot change"
                )

    def for_task(
        self,
        uids: list[str],
        subtask: int,
        key_group_range: KeyGroupRange | None,
        head_uid: str,
    ) -> TaskRestoreState:
        """The part of the checkpoint that subtask ``subtask`` of a chain restores.

        Args:
            uids: the uids of the chain's operators.
            subtask: the subtask's index.
            key_group_range: its key groups (keyed chains), or None.
            head_uid: the uid of the chain's head (owner of its channel state).
        """
        state = TaskRestoreState()
        wanted = set(uids)
        records = serializer_for(None, allow_pickle=self.allow_pickle, what="record")
        for file in self.files:
            mine = (head_uid, subtask) in file.owners
            for frame in file.frames:
                uid = frame.operator_uid
                kind = frame.kind
                if kind == "keyed":
                    if (
                        uid in wanted
                        and key_group_range is not None
                        and frame.key_group in key_group_range
                    ):
                        state.keyed.setdefault(uid, []).append((frame.key_group, frame.data))
                elif kind == "operator":
                    if uid in wanted and (uid, subtask) in file.owners:
                        state.operator[uid] = _operator_state_decoder.decode(frame.data)
                elif kind == "splits":
                    if uid in wanted and (uid, subtask) in file.owners:
                        splits = serializer_for(
                            None, allow_pickle=self.allow_pickle, what="source split"
                        ).decode(frame.data)
                        state.splits[uid] = list(splits)
                elif kind == "input" and mine:
                    state.input_channels.setdefault((uid, frame.key_group), []).extend(
                        records.decode(frame.data)
                    )
                elif kind == "output" and mine:
                    state.output_channels.setdefault((uid, frame.key_group), []).extend(
                        records.decode(frame.data)
                    )
        return state


async def load_checkpoint(
    storage: CheckpointStorage, pointer: str, *, allow_pickle: bool = True
) -> RestoredCheckpoint:
    """Read a completed checkpoint (metadata and every state file), verified.

    Raises:
        CheckpointNotFoundError: no metadata or a missing state file (names it).
        CorruptCheckpointError: a file that fails to verify or decode (names it).
    """
    metadata = await storage.load(pointer)
    owners: dict[str, set[tuple[str, int]]] = defaultdict(set)
    handles: dict[str, Any] = {}
    for operator in metadata.operators:
        for subtask in operator.subtasks:
            if subtask.handle is None:
                continue
            owners[subtask.handle.path].add((operator.uid, subtask.subtask_index))
            handles[subtask.handle.path] = subtask.handle
    files = []
    for path, handle in handles.items():
        data = await storage.read_state(pointer, handle)
        files.append(_FileFrames(owners[path], list(iter_frames(data, f"{pointer}/{path}"))))
    return RestoredCheckpoint(pointer, metadata, files, allow_pickle)
