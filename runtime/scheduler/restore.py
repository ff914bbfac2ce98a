"""Restore: load a completed checkpoint and hand each new subtask its part.

``load_checkpoint`` reads a checkpoint's metadata and every state file it names (each
verified by size and checksum; the files concurrently), once, and indexes the frames.
A frame's data is a view into its file's bytes, not a copy: the keyed state of a subtask
is most of its file, and the key group blobs go to the keyed backends as such views (the
heap backend keeps what it has not decoded yet as views too, so the file's bytes live
until the last of it is decoded). ``RestoredCheckpoint.for_task`` then gives a subtask
of the new run (same job graph) its ``TaskRestoreState``:

* keyed state: the key-group blobs of each of its operators that fall in its key-group
  range, from whichever old subtask wrote them (this is what makes rescaling work);
* operator state: what the same subtask index wrote, or, after a change of
  parallelism, its share (list state split evenly, union list state to all);
* source splits: what the same source subtask wrote, or a round-robin share of every
  split after a change of parallelism (the enumerator is not run again);
* channel state: the input channel state to process first (after a rescale, split by
  key group on keyed edges, else by old subtask) and output channel state to send
  first (after a rescale of either side, through the partitioner again).

Operators are matched by ``uid``. A checkpoint that names an operator the job does not
have, or whose max parallelism differs, is an error naming the operator.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from runtime.errors import ConfigError
from runtime.tasks.snapshot import ChannelStateKey
from storage import (
    DistributionMode,
    KeyGroupRange,
    OperatorStateSnapshot,
    assign_to_key_group,
    redistribute,
    serializer_for,
)
from storage.checkpoint import CheckpointMetadata, CheckpointStorage
from storage.checkpoint.metadata import declares_canonical
from storage.checkpoint.splits import decode_splits
from storage.checkpoint.state_file import decode_frames

_operator_state_decoder = msgspec.msgpack.Decoder(OperatorStateSnapshot)


class StateFrameView(msgspec.Struct, frozen=True, array_like=True):
    """A ``storage.checkpoint.StateFrame`` whose data is a view into its file's bytes.

    Decoded from the same msgpack as ``StateFrame`` (see ``storage.checkpoint.
    state_file``), without copying the data: restore hands most of a file's bytes to the
    keyed backends, and a copy of them costs about as much as reading them again.
    """

    kind: str
    operator_uid: str
    key_group: int
    data: memoryview


_frame_decoder: Final = msgspec.msgpack.Decoder(StateFrameView)


def iter_frame_views(data: bytes | memoryview, path: str) -> Iterator[StateFrameView]:
    """Yield the frames of a state file as views; ``storage.checkpoint.iter_frames``'s twin.

    Raises:
        CorruptCheckpointError: If a length or a body is truncated, or a body does not
            decode to a frame; names ``path`` and the frame's offset.
    """
    return decode_frames(data, path, _frame_decoder)


@dataclass(slots=True)
class TaskRestoreState:
    """What one subtask restores.

    Attributes:
        keyed: per operator uid, the key-group blobs in the subtask's range (views into
            the state files' bytes).
        operator: per operator uid, its operator state (redistributed on rescale).
        splits: per source uid, its splits with their positions.
        input_records: input channel state to process before any input, in order per
            original channel.
        output_channels: per ``ChannelStateKey.output(consuming uid, consuming subtask)``,
            output channel state to queue on that channel before any new output (same
            parallelism on both sides).
        output_records: per consuming uid, output channel state to send through the
            partitioner again (after a rescale of either side).
    """

    keyed: dict[str, list[tuple[int, memoryview]]] = field(default_factory=dict)
    operator: dict[str, OperatorStateSnapshot] = field(default_factory=dict)
    splits: dict[str, list[Any]] = field(default_factory=dict)
    input_records: list[list[Any]] = field(default_factory=list)
    output_channels: dict[ChannelStateKey, list[Any]] = field(default_factory=dict)
    output_records: dict[str, list[Any]] = field(default_factory=dict)


@dataclass(slots=True)
class _FileFrames:
    """The frames of one state file, with the (uid, subtask) of its operators."""

    owners: set[tuple[str, int]]
    frames: list[StateFrameView]


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

    def old_parallelism(self, uid: str) -> int | None:
        """The parallelism operator ``uid`` had when the checkpoint was taken."""
        for operator in self.metadata.operators:
            if operator.uid == uid:
                return operator.parallelism
        return None

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
        parallelism: int,
        key_group_range: KeyGroupRange | None,
        input_key_selectors: dict[str, Callable[[Any], Any] | None],
        output_rescaled: dict[str, bool],
        max_parallelism: int,
    ) -> TaskRestoreState:
        """The part of the checkpoint that subtask ``subtask`` of a chain restores.

        Args:
            uids: the uids of the chain's operators, head first.
            subtask: the subtask's index.
            parallelism: the chain's (new) parallelism.
            key_group_range: its key groups (keyed chains), or None.
            input_key_selectors: per producing uid of an input edge, the edge's key
                selector (None if not keyed): input channel state is split by key group
                when the job was rescaled.
            output_rescaled: per consuming uid of an output edge, whether either side's
                parallelism changed (then output channel state is partitioned again).
            max_parallelism: the job's number of key groups.
        """
        state = TaskRestoreState()
        head = uids[0]
        rescaled = self.old_parallelism(head) not in (None, parallelism)
        records = serializer_for(None, allow_pickle=self.allow_pickle, what="record")
        for uid in uids:
            self._assign_operator_state(uid, subtask, parallelism, state)
        for file in self.files:
            old_subtask = next((k for (owner, k) in file.owners if owner == head), None)
            for frame in file.frames:
                kind = frame.kind
                if kind == "keyed":
                    _assign_keyed(frame, uids, key_group_range, state)
                elif old_subtask is None:
                    continue
                elif kind == "input":
                    self._assign_input(
                        frame,
                        records.decode(bytes(frame.data)),
                        old_subtask,
                        subtask,
                        parallelism,
                        rescaled,
                        input_key_selectors,
                        key_group_range,
                        max_parallelism,
                        state,
                    )
                elif kind == "output":
                    consumer = frame.operator_uid
                    rescaled_edge = output_rescaled.get(consumer, False) or rescaled
                    if old_subtask == subtask or (
                        rescaled_edge and old_subtask % parallelism == subtask
                    ):
                        decoded = records.decode(bytes(frame.data))
                        _assign_output(frame, decoded, rescaled_edge, state)
        return state

    def _assign_input(
        self,
        frame: StateFrameView,
        decoded: list[Any],
        old_subtask: int,
        subtask: int,
        parallelism: int,
        rescaled: bool,
        input_key_selectors: dict[str, Callable[[Any], Any] | None],
        key_group_range: KeyGroupRange | None,
        max_parallelism: int,
        state: TaskRestoreState,
    ) -> None:
        if not rescaled:
            if old_subtask == subtask:
                state.input_records.append(list(decoded))
            return
        selector = input_key_selectors.get(frame.operator_uid)
        if selector is not None and key_group_range is not None:
            mine = [
                r
                for r in decoded
                if assign_to_key_group(selector(r), max_parallelism) in key_group_range
            ]
            if mine:
                state.input_records.append(mine)
        elif old_subtask % parallelism == subtask:
            state.input_records.append(list(decoded))

    def _assign_operator_state(
        self, uid: str, subtask: int, parallelism: int, state: TaskRestoreState
    ) -> None:
        """Operator state and source splits of ``uid``, redistributed on rescale."""
        snapshots: dict[int, OperatorStateSnapshot] = {}
        splits: dict[int, list[Any]] = {}
        for file in self.files:
            for owner, old_subtask in file.owners:
                if owner != uid:
                    continue
                for frame in file.frames:
                    if frame.operator_uid != uid:
                        continue
                    if frame.kind == "operator":
                        snapshots[old_subtask] = _operator_state_decoder.decode(frame.data)
                    elif frame.kind == "splits":
                        splits[old_subtask] = decode_splits(bytes(frame.data), self.allow_pickle)
        old_p = self.old_parallelism(uid)
        has_union = any(
            entry.mode == DistributionMode.UNION
            for snapshot in snapshots.values()
            for entry in snapshot.states.values()
        )
        if snapshots:
            if old_p == parallelism and not has_union:
                if subtask in snapshots:
                    state.operator[uid] = snapshots[subtask]
            elif old_p == parallelism:
                # Union list state goes whole to every subtask even at the same
                # parallelism (Flink's round-robin repartitioner); split state stays.
                merged = redistribute([snapshots[k] for k in sorted(snapshots)], parallelism)
                own = snapshots.get(subtask)
                states = dict(merged[subtask].states)
                if own is not None:
                    for name, entry in own.states.items():
                        if entry.mode != DistributionMode.UNION:
                            states[name] = entry
                state.operator[uid] = msgspec.structs.replace(merged[subtask], states=states)
            else:
                ordered = [snapshots[k] for k in sorted(snapshots)]
                state.operator[uid] = redistribute(ordered, parallelism)[subtask]
        if splits:
            if old_p == parallelism:
                state.splits[uid] = splits.get(subtask, [])
            else:
                every = [split for k in sorted(splits) for split in splits[k]]
                state.splits[uid] = every[subtask::parallelism]


async def load_checkpoint(
    storage: CheckpointStorage, pointer: str, *, allow_pickle: bool = True
) -> RestoredCheckpoint:
    """Read a completed checkpoint (metadata and every state file), verified.

    The state files are read concurrently (each is one read in a worker thread with the
    file-system storage); if several fail, the error of the first in metadata order is
    raised.

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
    reads = [
        asyncio.ensure_future(storage.read_state(pointer, handle)) for handle in handles.values()
    ]
    try:
        if reads:  # a checkpoint of a job without state has no files
            await asyncio.wait(reads)
    finally:
        for read in reads:
            read.cancel()  # cancelled: do not leave reads running
    for read in reads:
        read.exception()  # every failure is retrieved; the first in order is raised below
    files = []
    for path, read in zip(handles, reads, strict=True):
        data = read.result()
        files.append(_FileFrames(owners[path], list(iter_frame_views(data, f"{pointer}/{path}"))))
    # A savepoint that declares the canonical format is data only: never unpickled.
    allow_pickle = allow_pickle and not declares_canonical(metadata)
    return RestoredCheckpoint(pointer, metadata, files, allow_pickle)


def _assign_output(
    frame: StateFrameView,
    decoded: list[Any],
    rescaled_edge: bool,
    state: TaskRestoreState,
) -> None:
    """Output channel state of an old subtask towards ``frame``'s consumer subtask.

    Queued again on the same channel when neither side was rescaled, else sent through
    the partitioner again.
    """
    consumer = frame.operator_uid
    if rescaled_edge:
        state.output_records.setdefault(consumer, []).extend(decoded)
    else:
        key = ChannelStateKey.output(consumer, frame.key_group)
        state.output_channels.setdefault(key, []).extend(decoded)


def _assign_keyed(
    frame: StateFrameView,
    uids: list[str],
    key_group_range: KeyGroupRange | None,
    state: TaskRestoreState,
) -> None:
    """Keep a keyed-state frame if it is of one of the chain's operators and key groups."""
    if (
        frame.operator_uid in uids
        and key_group_range is not None
        and frame.key_group in key_group_range
    ):
        state.keyed.setdefault(frame.operator_uid, []).append((frame.key_group, frame.data))
