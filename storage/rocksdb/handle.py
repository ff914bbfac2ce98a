"""The native snapshot format of the RocksDB backend: a handle to the instance's files.

A native snapshot is the set of files of a RocksDB checkpoint: SST files (immutable, the
bulk of the state) and a few small ones (``MANIFEST``, ``CURRENT``, ``OPTIONS``, ...).
In a checkpoint the SST files go to the job's ``shared/`` folder, where later
incremental checkpoints refer to them; in a native savepoint every file goes into the
savepoint's own folder. The :class:`RocksDBStateHandle` lists every file by its path
relative to the checkpoint's (or savepoint's) folder, so a savepoint can be moved.

The handle travels as the blob of a ``keyed`` state frame, written once for every key
group of the subtask's range (restore picks frames by key group, and a rescaled subtask
needs the handle of every old subtask whose range overlaps its own); the blob starts
with :data:`NATIVE_MAGIC`, which a key-group blob never does (those are msgpack arrays).
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec

from storage.checkpoint.errors import CorruptCheckpointError

__all__ = [
    "NATIVE_MAGIC",
    "RocksDBFile",
    "RocksDBStateHandle",
    "decode_handle",
    "encode_handle",
    "is_native",
]

NATIVE_MAGIC: Final = b"WEIRRDB1"
"""The first bytes of a native blob (format version 1)."""

NonNegative = Annotated[int, msgspec.Meta(ge=0)]


class RocksDBFile(msgspec.Struct, frozen=True, array_like=True):
    """One file of a native snapshot.

    Attributes:
        name: Its name in the RocksDB folder (``000012.sst``, ``CURRENT``).
        path: Where it is, relative to the checkpoint's folder (``../shared/...`` for
            a shared file).
        size: Its size in bytes.
        checksum: Its zlib crc32, 8 lowercase hex digits.
        shared: Whether it is in the job's shared folder.
        offset: Where it starts in the file at ``path``, for the small files that are
            written together as one state file (one write, one fsync); -1 when it is
            the whole file.
    """

    name: str
    path: str
    size: NonNegative
    checksum: str
    shared: bool = False
    offset: int = -1


class RocksDBStateHandle(msgspec.Struct, frozen=True, tag="rocksdb"):
    """Everything needed to restore one subtask's RocksDB instance.

    Attributes:
        snapshot_id: Unique id of the snapshot; names its local copy.
        key_group_start: First key group of the subtask's range.
        key_group_end: Last key group of the range, inclusive.
        files: Every file of the RocksDB checkpoint.
        incremental: Whether files of earlier checkpoints were reused.
    """

    snapshot_id: str
    key_group_start: NonNegative
    key_group_end: int
    files: list[RocksDBFile]
    incremental: bool = False


_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder(RocksDBStateHandle)


def is_native(blob: bytes | memoryview) -> bool:
    """Whether ``blob`` is a native handle rather than a key-group blob."""
    return bytes(blob[: len(NATIVE_MAGIC)]) == NATIVE_MAGIC


def encode_handle(handle: RocksDBStateHandle) -> bytes:
    """Return the blob of ``handle``."""
    return NATIVE_MAGIC + _encoder.encode(handle)


def decode_handle(blob: bytes | memoryview, where: str) -> RocksDBStateHandle:
    """Decode a native blob.

    Raises:
        CorruptCheckpointError: If it does not decode; names ``where``.
    """
    try:
        return _decoder.decode(memoryview(blob)[len(NATIVE_MAGIC) :])
    except msgspec.DecodeError as error:
        raise CorruptCheckpointError(
            where, f"RocksDB state handle does not decode: {error}", "keyed state"
        ) from error
