"""The changelog state handle: what a checkpoint of the changelog backend stores per key group.

A checkpoint of a :class:`~storage.changelog.backend.ChangelogKeyedStateBackend` writes,
as the blob of the ``keyed`` frame of each key group of its range (the frames restore
picks by key group, so a key group moves with its changelog when a job is rescaled), a
:class:`KeyGroupHandle`: the parts of files of the job's ``shared/`` folder that hold
the key group's materialized snapshot (key-group blobs of the wrapped backend's format)
and then its changelog, in the order they are applied. Every file a handle names is
also listed in the subtask's ``SubtaskStateHandle.shared`` (name, size, crc32), so the
recovery planner verifies it and the shared-state registry counts its users.

The blob starts with :data:`CHANGELOG_MAGIC`, which a key-group blob never does (those
are msgpack arrays), nor a native RocksDB handle.
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec

from storage.checkpoint.errors import CorruptCheckpointError

__all__ = [
    "CHANGELOG_MAGIC",
    "FilePart",
    "KeyGroupHandle",
    "decode_handle",
    "encode_handle",
    "is_changelog",
]

CHANGELOG_MAGIC: Final = b"WEIRCLG1"
"""The first bytes of a changelog handle blob (format version 1)."""

NonNegative = Annotated[int, msgspec.Meta(ge=0)]


class FilePart(msgspec.Struct, frozen=True, array_like=True):
    """A byte range of one file of ``shared/``.

    Attributes:
        name: The file's name in ``<job dir>/shared/``.
        size: The whole file's size in bytes.
        checksum: The whole file's zlib crc32, 8 lowercase hex digits.
        offset: Where the part starts.
        length: The part's length in bytes.
    """

    name: str
    size: NonNegative
    checksum: str
    offset: NonNegative
    length: NonNegative


class KeyGroupHandle(msgspec.Struct, frozen=True, tag="changelog"):
    """One key group's state in a checkpoint of the changelog backend.

    Attributes:
        materialized: Parts holding the key group's materialized snapshot (key-group
            blobs of the wrapped backend), restored first; empty before the first
            materialization.
        changelog: Parts holding its changelog batches since, replayed in order.
    """

    materialized: list[FilePart] = []
    changelog: list[FilePart] = []


_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder(KeyGroupHandle)


def is_changelog(blob: bytes | memoryview) -> bool:
    """Whether ``blob`` is a changelog handle rather than a key-group blob."""
    return bytes(blob[: len(CHANGELOG_MAGIC)]) == CHANGELOG_MAGIC


def encode_handle(handle: KeyGroupHandle) -> bytes:
    """Return the blob of ``handle``."""
    return CHANGELOG_MAGIC + _encoder.encode(handle)


def decode_handle(blob: bytes | memoryview, where: str) -> KeyGroupHandle:
    """Decode a changelog handle blob.

    Raises:
        CorruptCheckpointError: If it does not decode; names ``where``.
    """
    try:
        return _decoder.decode(memoryview(blob)[len(CHANGELOG_MAGIC) :])
    except msgspec.DecodeError as error:
        raise CorruptCheckpointError(
            where, f"changelog state handle does not decode: {error}", "keyed state"
        ) from error
