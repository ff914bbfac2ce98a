"""The offline checkpoint reader: a completed checkpoint's state, decoded, without a job.

A person inspecting a checkpoint (or a test checking what one holds) calls
:func:`read_checkpoint` with a ``chk-<n>`` folder, a savepoint folder or its
``_metadata`` file. Nothing runs: no job, no actor, no event loop. The reader loads and
verifies the metadata (:func:`~storage.checkpoint.recovery.load_metadata_file`), reads
each state file once and verifies its size and crc32 against its handle, walks its frames
(:func:`~storage.checkpoint.state_file.iter_frames`) and decodes them into a
:class:`CheckpointContents`: per operator ``uid`` an :class:`OperatorContents`, per
subtask a :class:`SubtaskContents` with its keyed state, operator state, source splits
and channel state.

**One file per subtask chain.** The operators of one chain (joined by forward edges) run
in one task, which writes one state file; every operator's
:class:`~storage.checkpoint.metadata.SubtaskStateHandle` points to it. Frames of kind
``keyed``, ``operator`` and ``splits`` name the operator that owns them and go to it.
Channel-state frames (``input``: records from producing operator ``uid``, subtask ``i``
that the subtask had not processed when it took its snapshot; ``output``: records for
consuming operator ``uid``, subtask ``i`` that it had produced before its snapshot and
not yet handed over) belong to the chain as a whole. The reader puts them on the chain's
head operator, the one whose handle carries the file's ``in_flight_bytes`` (the runtime
reports the channel state's size there); the other operators of the chain get none, so
that summing :attr:`~SubtaskContents.in_flight_records` over a checkpoint counts every
record once. If the metadata names no single such operator (the runtime never writes
that), they go to the first operator of the file in metadata order.

**Decoding without the job's code.** Keys, records and source splits are written by the
untyped serializer (:class:`~storage.format.serializers.UntypedSerializer`). Keyed state is
written in columns that record their codec (:mod:`storage.format.entry_columns`), and read with
:func:`~storage.keyed_snapshot.decode_entries` without a descriptor: values of a declared
msgspec type come back as plain msgpack values (a ``msgspec.Struct`` as a dict, or a list
if ``array_like``; a tuple as a list); give them their type again with
``msgspec.convert(value, type)``. An element of operator list state is written by its
state's serializer, which nothing records; its bytes tell which one, without ambiguity:

* an untyped envelope: ``b"M"`` or ``b"P"`` and at least one byte more (a msgpack value
  of a declared type that starts with either byte is that one-byte integer);
* a pickle of a declared type that msgspec cannot encode: byte ``0x80`` and a protocol
  byte (in msgpack, ``0x80`` alone is the empty map);
* else plain msgpack of a declared type, read as above.

Pickle runs code named in the file, so the reader unpickles nothing unless called with
``allow_pickle=True``; a value that needs it is a
:class:`~storage.errors.PickleForbiddenError` naming the state, the operator, the subtask
and the file. A frame that fails to decode is a
:class:`~storage.checkpoint.errors.CorruptCheckpointError` naming the file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import msgspec

from storage.checkpoint.errors import (
    CheckpointNotFoundError,
    CorruptCheckpointError,
    StorageError,
)
from storage.checkpoint.layout import (
    METADATA_FILE,
    checkpoint_folder,
    parse_checkpoint_dir_name,
    state_file_path,
)
from storage.checkpoint.metadata import (
    CheckpointMetadata,
    OperatorStateHandle,
    StateHandle,
    SubtaskStateHandle,
    crc32_hex,
    verify_state,
)
from storage.checkpoint.recovery import load_metadata_file
from storage.checkpoint.splits import decode_splits_raw, is_struct_splits
from storage.checkpoint.state_file import StateFrame, iter_frames
from storage.descriptors import StateKind
from storage.errors import PickleForbiddenError, SerializationError
from storage.format.serializers import PickleSerializer, UntypedSerializer
from storage.keyed_snapshot import decode_entries, decode_key_group
from storage.operator_state import OPERATOR_STATE_FORMAT_VERSION, OperatorStateSnapshot

__all__ = [
    "ChannelKey",
    "CheckpointContents",
    "OperatorContents",
    "SubtaskContents",
    "read_checkpoint",
]

ChannelKey = tuple[str, int]
"""A channel of channel state: the operator ``uid`` and subtask index at its other end."""

_ENVELOPE_TAGS: Final = frozenset(b"MP")
_PICKLE_PROTOCOL_OPCODE: Final = 0x80
_CHANNEL_KINDS: Final = frozenset({"input", "output"})
_OPERATOR_KINDS: Final = frozenset({"keyed", "operator", "splits"})

_operator_state_decoder: Final = msgspec.msgpack.Decoder(OperatorStateSnapshot)
_plain_decoder: Final = msgspec.msgpack.Decoder()


@dataclass(frozen=True, slots=True)
class SubtaskContents:
    """What one subtask of one operator holds in a checkpoint, decoded.

    Attributes:
        subtask_index: The subtask's index within its operator.
        handle: Its entry in the checkpoint metadata.
        file_operators: The ``uid`` of every operator whose state is in the same state
            file (the subtask's operator chain), in metadata order; empty without a file.
        keyed: Keyed state: state name to ``{key: stored value}`` (a list state stores
            the list, a map state the dict).
        state_kinds: The kind of each keyed state, by name.
        operator: Operator (non-keyed) list state: state name to its elements.
        splits: A source's reader splits with their positions, or None if this operator
            stored none (not a source, or no checkpoint of it).
        input_channels: Input channel state, if this operator is the head of its chain:
            per (producing uid, producing subtask), the records received before the
            barrier and not processed when the snapshot was taken, in order.
        output_channels: Output channel state, if this operator is the head of its chain:
            per (consuming uid, consuming subtask), the records produced before the
            snapshot and overtaken by the barrier, in order.
        other_frames: Frames of kinds this reader does not know, undecoded.
    """

    subtask_index: int
    handle: SubtaskStateHandle
    file_operators: tuple[str, ...] = ()
    keyed: dict[str, dict[Any, Any]] = field(default_factory=dict)
    state_kinds: dict[str, StateKind] = field(default_factory=dict)
    operator: dict[str, list[Any]] = field(default_factory=dict)
    splits: list[Any] | None = None
    input_channels: dict[ChannelKey, list[Any]] = field(default_factory=dict)
    output_channels: dict[ChannelKey, list[Any]] = field(default_factory=dict)
    other_frames: list[StateFrame] = field(default_factory=list)

    @property
    def state_file(self) -> str | None:
        """The state file's path relative to the checkpoint's folder, or None."""
        return None if self.handle.handle is None else self.handle.handle.path

    @property
    def key_group_range(self) -> tuple[int, int] | None:
        """``(first, last)`` key group of a keyed operator's subtask, else None."""
        start, end = self.handle.key_group_start, self.handle.key_group_end
        return None if start is None or end is None else (start, end)

    @property
    def in_flight_records(self) -> int:
        """The number of records in this subtask's input and output channel state."""
        return sum(map(len, self.input_channels.values())) + sum(
            map(len, self.output_channels.values())
        )


@dataclass(frozen=True, slots=True)
class OperatorContents:
    """What every subtask of one operator holds in a checkpoint.

    Attributes:
        uid: The operator's stable id.
        name: Its name.
        parallelism: Its parallelism when the checkpoint was taken.
        max_parallelism: Its max parallelism (the number of key groups).
        subtasks: Per subtask index, what it holds.
    """

    uid: str
    name: str
    parallelism: int
    max_parallelism: int
    subtasks: dict[int, SubtaskContents]

    @property
    def in_flight_records(self) -> int:
        """Records of channel state attributed to this operator, over its subtasks."""
        return sum(s.in_flight_records for s in self.subtasks.values())

    def keyed_state(self, name: str) -> dict[Any, Any]:
        """Return keyed state ``name`` over all subtasks: ``{key: stored value}``.

        Args:
            name: The state's name.

        Returns:
            The union of the subtasks' entries (each key lives in one subtask); empty
            if no subtask has the state.
        """
        merged: dict[Any, Any] = {}
        for subtask in self.subtasks.values():
            merged.update(subtask.keyed.get(name, {}))
        return merged


@dataclass(frozen=True, slots=True)
class CheckpointContents:
    """A completed checkpoint or savepoint, verified and decoded.

    Attributes:
        path: The checkpoint's folder.
        metadata: Its verified metadata.
        operators: Per operator ``uid``, what its subtasks hold, in metadata order.
    """

    path: Path
    metadata: CheckpointMetadata
    operators: dict[str, OperatorContents]

    @property
    def checkpoint_id(self) -> int:
        """The checkpoint's id."""
        return self.metadata.checkpoint_id

    @property
    def in_flight_records(self) -> int:
        """The number of records in the checkpoint's channel state (each counted once)."""
        return sum(op.in_flight_records for op in self.operators.values())

    def iter_subtasks(self) -> Iterator[tuple[str, SubtaskContents]]:
        """Yield ``(operator uid, subtask contents)`` for every subtask of every operator."""
        for uid, operator in self.operators.items():
            for subtask in operator.subtasks.values():
                yield uid, subtask


def _pickle_forbidden(what: str) -> PickleForbiddenError:
    return PickleForbiddenError(
        f"{what} was written with pickle, and the reader does not unpickle unless asked: "
        f"pass allow_pickle=True to read_checkpoint (unpickling runs code the file names; "
        f"do it only for checkpoints you trust)"
    )


class _ValueDecoder:
    """Decodes keys, records, splits and stored values, with or without pickle."""

    __slots__ = ("_pickle", "_untyped", "allow_pickle")

    def __init__(self, allow_pickle: bool) -> None:
        self.allow_pickle = allow_pickle
        self._untyped = UntypedSerializer(allow_pickle=True)
        self._pickle = PickleSerializer()

    def check_pickle(self, what: str) -> None:
        """Raise a PickleForbiddenError for ``what`` unless pickle is allowed."""
        if not self.allow_pickle:
            raise _pickle_forbidden(what)

    def untyped(self, data: bytes, what: str) -> Any:
        """Decode an untyped envelope (keys, records, splits)."""
        if data[:1] == b"P":
            self.check_pickle(what)
        try:
            return self._untyped.decode(data)
        except SerializationError as error:
            raise SerializationError(f"cannot decode {what}: {error}") from error

    def stored(self, data: bytes, what: str) -> Any:
        """Decode a stored value, choosing its serializer by its bytes (module docstring)."""
        if len(data) >= 2 and data[0] in _ENVELOPE_TAGS:
            return self.untyped(data, what)
        if len(data) >= 2 and data[0] == _PICKLE_PROTOCOL_OPCODE:
            self.check_pickle(what)
            try:
                return self._pickle.decode(data)
            except SerializationError as error:
                raise SerializationError(f"cannot decode {what}: {error}") from error
        try:
            return _plain_decoder.decode(data)
        except msgspec.DecodeError as error:
            raise SerializationError(f"cannot decode {what}: {error}") from error


@dataclass(slots=True)
class _Builder:
    """The mutable contents of one operator subtask while its file is read."""

    handle: SubtaskStateHandle
    file_operators: tuple[str, ...] = ()
    keyed: dict[str, dict[Any, Any]] = field(default_factory=dict)
    state_kinds: dict[str, StateKind] = field(default_factory=dict)
    operator: dict[str, list[Any]] = field(default_factory=dict)
    splits: list[Any] | None = None
    input_channels: dict[ChannelKey, list[Any]] = field(default_factory=dict)
    output_channels: dict[ChannelKey, list[Any]] = field(default_factory=dict)
    other_frames: list[StateFrame] = field(default_factory=list)

    def build(self) -> SubtaskContents:
        return SubtaskContents(
            subtask_index=self.handle.subtask_index,
            handle=self.handle,
            file_operators=self.file_operators,
            keyed=self.keyed,
            state_kinds=self.state_kinds,
            operator=self.operator,
            splits=self.splits,
            input_channels=self.input_channels,
            output_channels=self.output_channels,
            other_frames=self.other_frames,
        )


def read_checkpoint(
    path: str | os.PathLike[str], *, allow_pickle: bool = False
) -> CheckpointContents:
    """Read, verify and decode a completed checkpoint or savepoint. Blocks on file I/O.

    Call it from a worker thread (``anyio.to_thread.run_sync``) when an event loop is
    running. Reads each state file once, however many operators of a chain point to it.

    Args:
        path: The checkpoint's folder (``chk-<n>``) or a savepoint's folder, its
            ``_metadata`` file, or either as a ``file://`` URI.
        allow_pickle: Whether values written with pickle may be unpickled. Unpickling
            runs code the file names: allow it only for checkpoints you trust.

    Returns:
        The checkpoint's contents.

    Raises:
        CheckpointNotFoundError: If the metadata or a state file does not exist; names it.
        CorruptCheckpointError: If the metadata fails to decode or verify, names another
            checkpoint than its ``chk-<n>`` folder or a state file outside the folder;
            or a state file's size or crc32 differs from its handle, or one of its
            frames fails to decode or belongs to no operator of the file; names the file.
        PickleForbiddenError: If a value needs pickle and ``allow_pickle`` is False;
            names the state, the operator, the subtask and the file.
        StorageError: If a file cannot be read (e.g. permissions).
        ValueError: If ``path`` is a URI that is not a local ``file://`` one.
    """
    folder = checkpoint_folder(path)
    metadata = load_metadata_file(folder)
    metadata_path = str(folder / METADATA_FILE)
    folder_id = parse_checkpoint_dir_name(folder.name)
    if folder_id is not None and folder_id != metadata.checkpoint_id:
        raise CorruptCheckpointError(
            metadata_path,
            f"it describes checkpoint {metadata.checkpoint_id}, but its folder is {folder.name}",
        )
    decoder = _ValueDecoder(allow_pickle)
    builders: dict[str, dict[int, _Builder]] = {}
    files: dict[str, list[tuple[OperatorStateHandle, _Builder]]] = {}
    for op in metadata.operators:
        if op.uid in builders:
            raise CorruptCheckpointError(metadata_path, f"it names operator {op.uid!r} twice")
        by_index = builders[op.uid] = {}
        for subtask in op.subtasks:
            if subtask.subtask_index in by_index:
                raise CorruptCheckpointError(
                    metadata_path,
                    f"it names subtask {subtask.subtask_index} of operator {op.uid!r} twice",
                )
            builder = by_index[subtask.subtask_index] = _Builder(subtask)
            if subtask.handle is not None:
                files.setdefault(subtask.handle.path, []).append((op, builder))
    for relative, owners in files.items():
        _read_file(folder, metadata_path, relative, owners, decoder)
    operators = {
        op.uid: OperatorContents(
            uid=op.uid,
            name=op.name,
            parallelism=op.parallelism,
            max_parallelism=op.max_parallelism,
            subtasks={index: b.build() for index, b in builders[op.uid].items()},
        )
        for op in metadata.operators
    }
    return CheckpointContents(folder, metadata, operators)


def _read_file(
    folder: Path,
    metadata_path: str,
    relative: str,
    owners: list[tuple[OperatorStateHandle, _Builder]],
    decoder: _ValueDecoder,
) -> None:
    """Read one state file, verify it and hand its frames to the operators it holds."""
    path = state_file_path(folder, relative)
    handle = _agreed_handle(metadata_path, relative, owners)
    data = read_verified_state_file(path, handle, "checkpoint")

    by_uid: dict[str, tuple[OperatorStateHandle, _Builder]] = {}
    for op, builder in owners:
        if op.uid in by_uid:
            raise CorruptCheckpointError(
                metadata_path, f"two subtasks of operator {op.uid!r} share state file {relative}"
            )
        by_uid[op.uid] = (op, builder)
    uids = tuple(by_uid)
    for _, builder in owners:
        builder.file_operators = uids
    # Channel state belongs to the chain; the runtime reports its size on the head.
    carriers = [entry for entry in owners if entry[1].handle.in_flight_bytes > 0]
    head = carriers[0] if len(carriers) == 1 else owners[0]

    for frame in iter_frames(data, str(path)):
        if frame.kind in _CHANNEL_KINDS:
            owner_op, builder = head
        else:
            found = by_uid.get(frame.operator_uid)
            if found is None:
                if frame.kind in _OPERATOR_KINDS:
                    raise CorruptCheckpointError(
                        str(path),
                        f"it holds a {frame.kind!r} frame of operator {frame.operator_uid!r}, "
                        f"but the metadata points only operators {list(uids)} to it",
                        "checkpoint state file",
                    )
                found = head
            owner_op, builder = found
        where = (
            f"operator {owner_op.uid!r} subtask {builder.handle.subtask_index} (state file {path})"
        )
        try:
            _dispatch(frame, builder, decoder, where)
        except PickleForbiddenError:
            raise
        except SerializationError as error:
            raise CorruptCheckpointError(
                str(path),
                f"{frame.kind!r} frame of operator {frame.operator_uid!r} "
                f"(key group or subtask {frame.key_group}) does not decode: {error}",
                "checkpoint state file",
            ) from error


def _agreed_handle(
    metadata_path: str, relative: str, owners: list[tuple[OperatorStateHandle, _Builder]]
) -> StateHandle:
    """The one handle every operator pointing to ``relative`` agrees on."""
    handles = {b.handle.handle for _, b in owners}
    if len(handles) != 1:
        raise CorruptCheckpointError(
            metadata_path,
            f"its operators give state file {relative} different sizes or checksums: "
            f"{sorted((h.size, h.checksum) for h in handles if h is not None)}",
        )
    (handle,) = handles
    assert handle is not None  # only subtasks with a handle are grouped by file
    return handle


def _dispatch(frame: StateFrame, builder: _Builder, decoder: _ValueDecoder, where: str) -> None:
    """Decode one frame into ``builder``; ``where`` names it in errors."""
    match frame.kind:
        case "keyed":
            _add_key_group(frame, builder, decoder, where)
        case "operator":
            snapshot = _decode_operator_state(frame.data)
            for name, entry in snapshot.states.items():
                what = f"operator list state {name!r} of {where}"
                elements = [decoder.stored(value, what) for value in entry.values]
                builder.operator.setdefault(name, []).extend(elements)
        case "splits":
            if is_struct_splits(frame.data):
                # msgspec splits: shown as {"type": name, **fields}, no type imported.
                builder.splits = [
                    *(builder.splits or []),
                    *(
                        {"type": name, **fields}
                        if isinstance(fields, dict)
                        else {"type": name, "fields": fields}
                        for name, fields in decode_splits_raw(frame.data)
                    ),
                ]
                return
            splits = decoder.untyped(frame.data, f"source splits of {where}")
            if not isinstance(splits, list):
                raise SerializationError(f"source splits are a {type(splits).__name__}, not a list")
            builder.splits = [*(builder.splits or []), *splits]
        case "input" | "output":
            direction = "from" if frame.kind == "input" else "to"
            what = (
                f"{frame.kind} channel state {direction} {frame.operator_uid!r} subtask "
                f"{frame.key_group} of {where}"
            )
            records = decoder.untyped(frame.data, what)
            if not isinstance(records, list):
                raise SerializationError(
                    f"channel state is a {type(records).__name__}, not a list of records"
                )
            channels = builder.input_channels if frame.kind == "input" else builder.output_channels
            channels.setdefault((frame.operator_uid, frame.key_group), []).extend(records)
        case _:
            builder.other_frames.append(frame)


def _decode_operator_state(data: bytes) -> OperatorStateSnapshot:
    try:
        snapshot = _operator_state_decoder.decode(data)
    except msgspec.DecodeError as error:
        raise SerializationError(f"not an operator state snapshot: {error}") from error
    if snapshot.version != OPERATOR_STATE_FORMAT_VERSION:
        raise SerializationError(
            f"operator state has format version {snapshot.version}, this weir reads version "
            f"{OPERATOR_STATE_FORMAT_VERSION}"
        )
    return snapshot


def _add_key_group(
    frame: StateFrame, builder: _Builder, decoder: _ValueDecoder, where: str
) -> None:
    key_group = frame.key_group
    start, end = builder.handle.key_group_start, builder.handle.key_group_end
    if start is not None and end is not None and not start <= key_group <= end:
        raise SerializationError(
            f"key group {key_group} is outside the subtask's key groups {start}-{end}"
        )
    # One frame per part of a key group; the parts of a large key group add up.
    data = decode_key_group(key_group, frame.data)
    for batch in data.states:
        what = f"{batch.kind} state {batch.name!r} of {where}"
        kind = builder.state_kinds.setdefault(batch.name, batch.kind)
        if kind != batch.kind:
            raise SerializationError(f"{what} is also stored as {kind} state")
        try:
            pairs = decode_entries(batch, None, allow_pickle=decoder.allow_pickle)
        except PickleForbiddenError as error:
            raise _pickle_forbidden(what) from error
        entries = builder.keyed.setdefault(batch.name, {})
        for key, value in pairs:
            try:
                seen = key in entries
            except TypeError as error:
                raise SerializationError(f"{what} has an unhashable key {key!r}") from error
            if seen:
                raise SerializationError(f"{what} holds key {key!r} twice")
            entries[key] = value


def read_verified_state_file(path: Path, handle: StateHandle, what: str) -> bytes:
    """Read a state file whole and check it against its handle (size and crc32). Blocking.

    Args:
        path: The file.
        handle: Its handle in the metadata.
        what: ``"checkpoint"`` or ``"savepoint"``: what to read instead, in the message.

    Raises:
        CheckpointNotFoundError: The file is missing.
        StorageError: It cannot be read.
        CorruptCheckpointError: Its size or checksum differ from the handle's.
    """
    try:
        data = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError) as error:
        raise CheckpointNotFoundError(str(path), "checkpoint state file") from error
    except OSError as error:
        raise StorageError(
            f"cannot read checkpoint state file {path}: {error.strerror or error}; "
            f"fix its permissions or read another {what}"
        ) from error
    verify_state(handle, len(data), crc32_hex(data), str(path))
    return data
