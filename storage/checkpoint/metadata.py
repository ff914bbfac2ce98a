"""Checkpoint metadata: the ``_metadata`` file that makes a checkpoint complete.

When every subtask has acknowledged checkpoint ``n`` with handles to its persisted state,
the checkpoint coordinator builds one :class:`CheckpointMetadata` (one
:class:`OperatorStateHandle` per operator ``uid``, one :class:`SubtaskStateHandle` per
subtask) and hands it to :meth:`CheckpointStorage.commit
<storage.checkpoint.storage.CheckpointStorage.commit>`, which writes it last and
atomically. Restore reads it back (:func:`decode_metadata`) to find each subtask's
:class:`StateHandle`.

On disk the file is a small envelope around a msgpack body::

    b"WEIRMETA"   8 bytes   magic
    version       4 bytes   big-endian format version (METADATA_VERSION)
    crc32         4 bytes   big-endian zlib crc32 of the body
    body          rest      msgpack of CheckpointMetadata

Decoding checks each part and turns any failure (truncation, garbage, an unknown version,
a checksum mismatch, a body that does not match the schema) into a
:class:`~storage.checkpoint.errors.CorruptCheckpointError` naming the file. Only msgspec
decodes it, never pickle: a checkpoint can be inspected without running any code. The
format of the state files that the handles point to
(:mod:`storage.checkpoint.state_file`) is versioned together with this one.
"""

from __future__ import annotations

import struct
import zlib
from typing import Annotated, Final

import msgspec

from storage.checkpoint.errors import CorruptCheckpointError

__all__ = [
    "CANONICAL_FORMAT",
    "FORMAT_PROPERTY",
    "METADATA_MAGIC",
    "METADATA_VERSION",
    "NATIVE_FORMAT",
    "SUPPORTED_METADATA_VERSIONS",
    "CheckpointMetadata",
    "OperatorStateHandle",
    "SharedFileHandle",
    "StateHandle",
    "SubtaskStateHandle",
    "crc32_hex",
    "declares_canonical",
    "decode_metadata",
    "encode_metadata",
    "verify_state",
]

METADATA_VERSION: Final = 1
"""The format version this code writes, in the envelope and in the body."""

SUPPORTED_METADATA_VERSIONS: Final = (1,)
"""The format versions this code reads."""

METADATA_MAGIC: Final = b"WEIRMETA"

FORMAT_PROPERTY: Final = "format"
"""The property in which a savepoint declares its format: canonical or native."""

CANONICAL_FORMAT: Final = "canonical"
"""msgspec only: restoring it never unpickles (a value written with pickle is refused)."""

NATIVE_FORMAT: Final = "native"
"""The runtime's own format: may hold pickle, read only where the job allows pickle."""

_HEADER: Final = struct.Struct(">8sII")

NonNegative = Annotated[int, msgspec.Meta(ge=0)]
Crc32Hex = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{8}$")]


class StateHandle(msgspec.Struct, frozen=True, tag="file"):
    """One persisted state file of a checkpoint.

    Tagged (``"type": "file"``) so that other kinds of handle (state inlined in the
    metadata, shared incremental files) can join it in a union later.

    Attributes:
        path: The file's path relative to the checkpoint's folder, so that a savepoint
            folder can be moved; a plain name today (``op-uid-0``).
        size: The file's size in bytes.
        checksum: The zlib crc32 of the file's bytes, 8 lowercase hex digits.
    """

    path: str
    size: NonNegative
    checksum: Crc32Hex


class SharedFileHandle(msgspec.Struct, frozen=True):
    """A file in the job's ``shared/`` folder that a checkpoint uses (incremental state).

    Listed in :attr:`SubtaskStateHandle.shared`, so that the shared-state registry can
    be rebuilt from the metadata of the retained checkpoints alone.

    Attributes:
        name: The file's name inside ``<job dir>/shared/``.
        size: The file's size in bytes.
        checksum: The zlib crc32 of the file's bytes, 8 lowercase hex digits.
    """

    name: str
    size: NonNegative
    checksum: Crc32Hex


class SubtaskStateHandle(msgspec.Struct, frozen=True):
    """The state one subtask persisted for a checkpoint.

    Attributes:
        subtask_index: The subtask's index within its operator.
        handle: Its state file, or None when the subtask had no state to write.
        state_size: Bytes of operator and keyed state in the file.
        in_flight_bytes: Bytes of channel state (unaligned checkpoints) in the file.
        key_group_start: First key group of the subtask's range (keyed operators only).
        key_group_end: Last key group of the range, inclusive (keyed operators only).
        shared: The files of the job's ``shared/`` folder that its state uses (RocksDB
            incremental checkpoints); empty otherwise, and in metadata written before
            the field existed (it decodes as empty: the format version is unchanged).
    """

    subtask_index: NonNegative
    handle: StateHandle | None
    state_size: NonNegative
    in_flight_bytes: NonNegative
    key_group_start: NonNegative | None = None
    key_group_end: NonNegative | None = None
    shared: list[SharedFileHandle] = []


class OperatorStateHandle(msgspec.Struct, frozen=True):
    """The state of every subtask of one operator, found on restore by its ``uid``.

    Attributes:
        uid: The operator's stable id; restore matches state to operators by it.
        name: The operator's name, for messages.
        parallelism: The operator's parallelism when the checkpoint was taken.
        max_parallelism: Its max parallelism (the number of key groups).
        subtasks: One entry per subtask, in subtask order.
    """

    uid: str
    name: str
    parallelism: Annotated[int, msgspec.Meta(ge=1)]
    max_parallelism: Annotated[int, msgspec.Meta(ge=1)]
    subtasks: list[SubtaskStateHandle]


class CheckpointMetadata(msgspec.Struct, frozen=True):
    """Everything needed to restore a job from one completed checkpoint or savepoint.

    Attributes:
        version: The format version, :data:`METADATA_VERSION`.
        job_id: The job that took the checkpoint.
        checkpoint_id: The checkpoint's id.
        timestamp: When the checkpoint was triggered, seconds since the epoch.
        is_savepoint: Whether this is a savepoint (self-contained, owned by the user).
        operators: The state of each operator that has state.
        properties: Free-form string properties (e.g. the checkpointing mode).
    """

    version: int
    job_id: str
    checkpoint_id: NonNegative
    timestamp: float
    is_savepoint: bool
    operators: list[OperatorStateHandle]
    properties: dict[str, str] = {}


_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder(CheckpointMetadata)


def crc32_hex(data: bytes | bytearray | memoryview, previous: str | None = None) -> str:
    """Return the zlib crc32 of ``data`` as 8 lowercase hex digits.

    Args:
        data: The bytes to checksum.
        previous: The checksum of the bytes before ``data``, to continue a running one.

    Returns:
        The checksum, as stored in :attr:`StateHandle.checksum`.
    """
    start = int(previous, 16) if previous is not None else 0
    return f"{zlib.crc32(data, start):08x}"


def verify_state(handle: StateHandle, size: int, checksum: str, path: str) -> None:
    """Check a state file's size and checksum against its handle.

    Args:
        handle: The handle from the checkpoint's metadata.
        size: The size of the bytes that were read.
        checksum: Their crc32 (:func:`crc32_hex`).
        path: The file (or pointer) read, for the message.

    Raises:
        CorruptCheckpointError: If the size or the checksum differs; names ``path``.
    """
    if size != handle.size:
        raise CorruptCheckpointError(
            path,
            f"size mismatch: it has {size} bytes, the metadata says {handle.size}",
            "checkpoint state file",
        )
    if checksum != handle.checksum:
        raise CorruptCheckpointError(
            path,
            f"checksum mismatch: crc32 is {checksum}, the metadata says {handle.checksum}",
            "checkpoint state file",
        )


def encode_metadata(meta: CheckpointMetadata) -> bytes:
    """Return the bytes of the ``_metadata`` file for ``meta``: envelope and body.

    Args:
        meta: The metadata; its ``version`` must be :data:`METADATA_VERSION`.

    Returns:
        The file's bytes.

    Raises:
        ValueError: If ``meta.version`` is not the version this code writes.
    """
    if meta.version != METADATA_VERSION:
        raise ValueError(
            f"cannot write checkpoint {meta.checkpoint_id} of job {meta.job_id!r}: metadata "
            f"version is {meta.version}, this code writes version {METADATA_VERSION}; build "
            f"it with version=METADATA_VERSION"
        )
    body = _encoder.encode(meta)
    return _HEADER.pack(METADATA_MAGIC, METADATA_VERSION, zlib.crc32(body)) + body


def decode_metadata(data: bytes | bytearray | memoryview, path: str) -> CheckpointMetadata:
    """Verify and decode the bytes of a ``_metadata`` file.

    Args:
        data: The file's bytes.
        path: Where they were read from, for error messages.

    Returns:
        The metadata.

    Raises:
        CorruptCheckpointError: If the file is empty or truncated, has the wrong magic
            bytes, an unsupported format version, a checksum that does not match, or a
            body that does not decode to :class:`CheckpointMetadata`; names ``path``.
    """
    view = memoryview(data)
    if len(view) < _HEADER.size:
        found = "it is empty" if not view else f"it has {len(view)} bytes"
        raise CorruptCheckpointError(
            path, f"truncated: {found}, the header alone is {_HEADER.size}"
        )
    magic, version, checksum = _HEADER.unpack_from(view)
    if magic != METADATA_MAGIC:
        raise CorruptCheckpointError(
            path, f"wrong magic bytes {bytes(magic)!r}, expected {METADATA_MAGIC!r}"
        )
    if version not in SUPPORTED_METADATA_VERSIONS:
        supported = ", ".join(str(v) for v in SUPPORTED_METADATA_VERSIONS)
        raise CorruptCheckpointError(
            path,
            f"unsupported format version {version}; this version of weir reads format "
            f"versions {supported}",
        )
    body = view[_HEADER.size :]
    actual = zlib.crc32(body)
    if actual != checksum:
        raise CorruptCheckpointError(
            path, f"checksum mismatch: body crc32 is {actual:08x}, header says {checksum:08x}"
        )
    try:
        meta = _decoder.decode(body)
    except msgspec.DecodeError as error:  # ValidationError is a DecodeError
        raise CorruptCheckpointError(path, f"body does not decode: {error}") from error
    if meta.version != version:
        raise CorruptCheckpointError(
            path, f"body says format version {meta.version}, header says {version}"
        )
    return meta


def declares_canonical(metadata: CheckpointMetadata) -> bool:
    """Whether ``metadata`` declares the canonical (msgspec only, no pickle) format.

    Checkpoints and savepoints that declare nothing (written before the declaration
    existed) are native: their pickled values are read only where the job allows pickle.
    """
    return metadata.properties.get(FORMAT_PROPERTY) == CANONICAL_FORMAT
