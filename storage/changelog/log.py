"""The in-memory state changelog of one keyed state backend, and its file format.

Every write to keyed state through a :class:`~storage.changelog.backend.ChangelogKeyedStateBackend`
appends one :data:`Entry` to its :class:`StateChangelog`: the state's name, an
:class:`Op`, the key (as it is: keys are immutable), and the map key and value already
encoded (values may be mutated by the user after the write). Entries are numbered by a
sequence number; the changelog is a list of closed :class:`Segment` s and the open one.
Writes to value and reducing state only mark their key dirty (in their state handle,
see :mod:`storage.changelog.states`): when the segment closes, each dirty key's current
value is read and encoded once, so a
key written many times between two cuts costs one entry (the state at the cut is what
a checkpoint or a materialization at that position needs). A segment is closed ("cut")
when it reaches the file size, when its upload interval
passes, at each checkpoint's synchronous part and at each materialization's start, so
that a checkpoint's and a materialization's position always fall between segments.
Each closed segment becomes one file of ``shared/`` (:mod:`storage.changelog.uploader`).

A changelog file is the concatenation of one :class:`ChangeBatch` per key group, msgpack
encoded; the uploader returns the index ``key group -> (offset, length)`` that the
checkpoint handles (:mod:`storage.changelog.handle`) refer to. Grouping by key group and
encoding keys happens when the file is written, in the uploader's worker thread, not on
a write.

Owned by the backend's subtask and used from its task only (not thread safe), except
that a closed segment's entries are read by the uploader's thread (never changed after
the cut).
"""

from __future__ import annotations

import enum
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from storage.changelog.handle import FilePart
from storage.format.serializers import Serializer
from storage.keygroups import assign_to_key_group

__all__ = [
    "ChangeBatch",
    "Entry",
    "Op",
    "Segment",
    "StateChangelog",
    "UploadedFile",
    "decode_batch",
    "encode_entries",
]


class Op(enum.IntEnum):
    """What a changelog entry does to its key's entry of its state."""

    SET = 0
    """Value/reducing: set the value; list: set the whole list (value: encoded list)."""
    CLEAR = 1
    """Remove the key's entry."""
    APPEND = 2
    """List: append one element."""
    PUT = 3
    """Map: put one mapping (map key and value)."""
    REMOVE = 4
    """Map: remove one mapping (map key)."""


Entry = tuple[str, int, Hashable, bytes | None, bytes | None]
"""``(state name, op, key, encoded map key or None, encoded value or None)``."""

ENTRY_OVERHEAD: Final = 24
"""Bytes counted per entry on top of its encoded map key and value (an estimate)."""


class ChangeBatch(msgspec.Struct, frozen=True, array_like=True):
    """The changes of one key group in one changelog file, in order.

    Attributes:
        key_group: The key group.
        seq_from: The sequence number of the file's first entry.
        entries: ``[state name, op, encoded key, encoded map key, encoded value]``.
    """

    key_group: int
    seq_from: int
    entries: list[tuple[str, int, bytes, bytes | None, bytes | None]]


_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder(ChangeBatch)


def encode_entries(
    entries: list[Entry],
    seq_from: int,
    max_parallelism: int,
    keys: Serializer[Any],
) -> tuple[bytes, dict[int, list[tuple[int, int]]]]:
    """Encode entries as one changelog file: a :class:`ChangeBatch` per key group.

    Pure CPU; safe in a worker thread while the entries are not changed.

    Returns:
        The file's bytes and the index ``key group -> [(offset, length)]``.
    """
    groups: dict[int, list[tuple[str, int, bytes, bytes | None, bytes | None]]] = {}
    encode_key = keys.encode
    cache: dict[Hashable, tuple[int, bytes]] = {}
    for name, op, key, map_key, value in entries:
        known = cache.get(key)
        if known is None:
            known = cache[key] = (assign_to_key_group(key, max_parallelism), encode_key(key))
        key_group, key_bytes = known
        groups.setdefault(key_group, []).append((name, op, key_bytes, map_key, value))
    parts: list[bytes] = []
    index: dict[int, list[tuple[int, int]]] = {}
    offset = 0
    for key_group in sorted(groups):
        data = _encoder.encode(ChangeBatch(key_group, seq_from, groups[key_group]))
        index[key_group] = [(offset, len(data))]
        parts.append(data)
        offset += len(data)
    return b"".join(parts), index


def decode_batch(data: bytes | memoryview) -> ChangeBatch:
    """Decode one key group's batch of a changelog file.

    Raises:
        msgspec.DecodeError: If it does not decode (the caller names the file).
    """
    return _decoder.decode(data)


@dataclass(slots=True)
class UploadedFile:
    """A file of ``shared/`` written by this backend (a changelog segment or a materialization).

    Attributes:
        name: Its name in ``shared/``.
        size: Its size in bytes.
        checksum: Its crc32.
        index: ``key group -> [(offset, length), ...]`` of its parts.
    """

    name: str
    size: int
    checksum: str
    index: dict[int, list[tuple[int, int]]]

    def parts(self, key_group: int) -> list[FilePart]:
        """The file's parts of ``key_group`` (none if it has no change there)."""
        return [
            FilePart(self.name, self.size, self.checksum, offset, length)
            for offset, length in self.index.get(key_group, ())
        ]


@dataclass(slots=True, eq=False)
class Segment:
    """A run of entries ``[seq_from, seq_to)`` that becomes one changelog file.

    Attributes:
        seq_from: The sequence number of its first entry.
        seq_to: One past its last entry's (grows while it is open).
        entries: Its entries.
        size: Its estimated encoded size.
        file: Its uploaded file, once written.
        upload: The running upload, if one was started (an ``asyncio`` task).
        error: Why its upload failed, if it did.
    """

    seq_from: int
    seq_to: int
    entries: list[Entry] = field(default_factory=list)
    size: int = 0
    file: UploadedFile | None = None
    upload: Any = None
    error: BaseException | None = None


class StateChangelog:
    """The sequence of changes of one backend since its last materialization.

    Args:
        seq: The sequence number of the first entry to come.
    """

    __slots__ = ("closed", "current", "seq")

    def __init__(self, seq: int = 0) -> None:
        self.seq = seq
        self.closed: list[Segment] = []
        self.current = Segment(seq, seq)

    def append(self, entry: Entry, size: int) -> Segment:
        """Append ``entry`` (of ``size`` estimated bytes); return the open segment."""
        current = self.current
        current.entries.append(entry)
        current.size += size
        self.seq += 1
        current.seq_to = self.seq
        return current

    def grow(self, size: int) -> Segment:
        """Count a value or reducing state's key written for the first time in the segment.

        ``size`` is its estimated bytes; its entry is made at the cut.

        Returns:
            The open segment.
        """
        current = self.current
        current.size += size
        self.seq += 1
        current.seq_to = self.seq
        return current

    def cut(self) -> Segment | None:
        """Close the open segment if it has entries; return it (else None).

        The caller turns the dirty keys of value and reducing states into entries first.
        """
        current = self.current
        if not current.entries:
            return None
        self.closed.append(current)
        self.current = Segment(self.seq, self.seq)
        return current

    def since(self, seq: int) -> list[Segment]:
        """The closed segments from position ``seq`` on (a position between segments)."""
        return [segment for segment in self.closed if segment.seq_from >= seq]

    def truncate(self, seq: int) -> list[Segment]:
        """Drop the closed segments before position ``seq``; return them."""
        dropped = [segment for segment in self.closed if segment.seq_to <= seq]
        if dropped:
            self.closed = [segment for segment in self.closed if segment.seq_to > seq]
        return dropped

    def bytes_since(self, seq: int) -> int:
        """Estimated bytes of the entries from position ``seq`` on, the open ones too."""
        return sum(s.size for s in self.closed if s.seq_from >= seq) + self.current.size

    def has_changes(self) -> bool:
        """Whether the open segment has entries or dirty keys."""
        return self.current.seq_to > self.current.seq_from
