"""The raw state of a savepoint: its verified frames, grouped by operator and subtask.

The savepoint writer (:mod:`storage.processor.writer`) starts from an existing savepoint
by taking its state as it was written, undecoded: every operator's keyed state as the
blobs of each key group, and its other frames (operator state, source splits) per
subtask. An operator that the writer does not touch is written again byte for byte, so
its state keeps its encoding (typed columns, or pickle in a native savepoint) and needs
no decoding, and no pickle, to be carried over. :func:`read_frames` reads each state file
once, verifies its size and crc32 against its handle, and walks its frames
(:func:`~storage.checkpoint.iter_frames`); the reader (:mod:`storage.processor.reader`)
asks it only for the distribution modes of operator list state.

A state file holds the frames of one operator chain. Frames of kind ``keyed``,
``operator`` and ``splits`` name their operator; channel state (``input``, ``output``)
belongs to the chain and exists only in unaligned checkpoints. Savepoints are aligned
and have none; a checkpoint with channel state is counted here
(:attr:`SavepointFrames.in_flight_frames`) and refused by the writer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from storage.checkpoint.errors import CorruptCheckpointError
from storage.checkpoint.layout import METADATA_FILE, checkpoint_folder, state_file_path
from storage.checkpoint.metadata import (
    CheckpointMetadata,
    OperatorStateHandle,
    StateHandle,
)
from storage.checkpoint.reader import read_verified_state_file
from storage.checkpoint.recovery import load_metadata_file
from storage.checkpoint.state_file import StateFrame, iter_frames

__all__ = ["OperatorFrames", "SavepointFrames", "read_frames"]

_CHANNEL_KINDS: Final = frozenset({"input", "output"})


@dataclass(slots=True)
class OperatorFrames:
    """The raw state of one operator.

    Attributes:
        handle: The operator's entry in the metadata.
        keyed: Per key group, its blobs (one per part), in the order they were written.
        frames: Per subtask index, its other frames (operator state, splits, kinds this
            version does not know), in the order they were written.
    """

    handle: OperatorStateHandle
    keyed: dict[int, list[bytes]] = field(default_factory=dict)
    frames: dict[int, list[StateFrame]] = field(default_factory=dict)

    @property
    def is_keyed(self) -> bool:
        """Whether the operator's subtasks had key-group ranges (a keyed operator)."""
        return any(s.key_group_start is not None for s in self.handle.subtasks)


@dataclass(slots=True)
class SavepointFrames:
    """A completed savepoint (or checkpoint), verified, its frames by operator.

    Attributes:
        folder: Its folder.
        metadata: Its verified metadata.
        operators: Per operator ``uid``, its raw state, in metadata order.
        in_flight_frames: The number of channel-state frames (unaligned checkpoints).
    """

    folder: Path
    metadata: CheckpointMetadata
    operators: dict[str, OperatorFrames]
    in_flight_frames: int = 0


def read_frames(path: str | os.PathLike[str]) -> SavepointFrames:
    """Read and verify every state file of a savepoint; group its frames. Blocks on I/O.

    Args:
        path: The savepoint's folder (or a ``chk-<n>`` folder), its ``_metadata`` file,
            or either as a ``file://`` URI.

    Returns:
        The savepoint's frames.

    Raises:
        CheckpointNotFoundError: If the metadata or a state file does not exist.
        CorruptCheckpointError: If the metadata or a state file fails to verify or
            decode, or a frame names an operator its file does not hold; names the file.
        StorageError: If a file cannot be read.
        ValueError: If ``path`` is a URI that is not a local ``file://`` one.
    """
    folder = checkpoint_folder(path)
    metadata = load_metadata_file(folder)
    metadata_path = str(folder / METADATA_FILE)
    operators: dict[str, OperatorFrames] = {}
    owners: dict[str, dict[str, int]] = {}  # state file -> uid -> subtask index
    handles: dict[str, StateHandle] = {}
    for op in metadata.operators:
        if op.uid in operators:
            raise CorruptCheckpointError(metadata_path, f"it names operator {op.uid!r} twice")
        operators[op.uid] = OperatorFrames(op)
        for subtask in op.subtasks:
            if subtask.handle is None:
                continue
            path_owners = owners.setdefault(subtask.handle.path, {})
            if op.uid in path_owners:
                raise CorruptCheckpointError(
                    metadata_path,
                    f"two subtasks of operator {op.uid!r} share state file {subtask.handle.path}",
                )
            path_owners[op.uid] = subtask.subtask_index
            known = handles.setdefault(subtask.handle.path, subtask.handle)
            if known != subtask.handle:
                raise CorruptCheckpointError(
                    metadata_path,
                    f"its operators give state file {subtask.handle.path} different sizes "
                    f"or checksums",
                )
    in_flight = 0
    for relative, handle in handles.items():
        file = state_file_path(folder, relative)
        data = read_verified_state_file(file, handle, "savepoint")
        for frame in iter_frames(data, str(file)):
            if frame.kind in _CHANNEL_KINDS:
                in_flight += 1
                continue
            subtask_index = owners[relative].get(frame.operator_uid)
            if subtask_index is None:
                raise CorruptCheckpointError(
                    str(file),
                    f"it holds a {frame.kind!r} frame of operator {frame.operator_uid!r}, but "
                    f"the metadata points only operators {sorted(owners[relative])} to it",
                    "checkpoint state file",
                )
            operator = operators[frame.operator_uid]
            if frame.kind == "keyed":
                operator.keyed.setdefault(frame.key_group, []).append(frame.data)
            else:
                operator.frames.setdefault(subtask_index, []).append(frame)
    return SavepointFrames(folder, metadata, operators, in_flight)
