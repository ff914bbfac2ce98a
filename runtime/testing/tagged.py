"""``Tagged``: the self-checking record of the testing kit.

A ``TaggedSequenceSource`` emits one ``Tagged`` per sequence number of each of its
splits; the validating sinks read them back. A record names where it came from (its
``split`` and its ``seq`` within the split), carries a ``key`` for keyed topologies and a
``payload`` that is a checksum of ``(split, seq)``, so that a record mangled on its way
(a wrong sequence number, a torn encoding) is caught as corrupt rather than counted as
another record.

Two fields are for the job under test to fill in:

* ``copy`` numbers the copies of a record that a job makes on purpose (a broadcast
  delivers one to each consumer subtask; a ``flat_map`` may fan out). The identity of a
  record is ``(split, seq, copy)``.
* ``value`` holds what the job computed for the record (a running count, an enriched
  field). The harness compares values between the run with failures and the run
  without, which is how it checks state: see ``runtime.testing.harness``.

Records are frozen msgspec Structs: cheap to make, to compare, and to put in channel
state and checkpoints.
"""

from __future__ import annotations

import zlib
from typing import Any

import msgspec

RecordId = tuple[str, int, int]
"""``(split, seq, copy)``: what makes a record unique in a validated stream."""


def checksum(split: str, seq: int) -> int:
    """The payload of record ``seq`` of ``split``: a CRC-32 of both, stable everywhere."""
    return zlib.crc32(f"{split}:{seq}".encode())


class Tagged(msgspec.Struct, frozen=True):
    """One record of a tagged sequence.

    Attributes:
        split: the split it was read from (unique over the job's tagged sources).
        seq: its position in the split, from 0.
        key: a key for ``key_by``, derived from ``(split, seq)``.
        payload: ``checksum(split, seq)``; anything else means the record is corrupt.
        copy: which copy of the record this is (0 unless the job fans records out).
        value: what the job computed for the record (None until it does).
    """

    split: str
    seq: int
    key: int
    payload: int
    copy: int = 0
    value: Any = None

    @property
    def record_id(self) -> RecordId:
        """``(split, seq, copy)``."""
        return (self.split, self.seq, self.copy)

    @property
    def intact(self) -> bool:
        """Whether the payload still matches ``(split, seq)``."""
        return self.payload == checksum(self.split, self.seq)

    def with_value(self, value: Any) -> Tagged:
        """The same record carrying ``value`` (the job's result for it)."""
        return msgspec.structs.replace(self, value=value)

    def with_copy(self, copy: int) -> Tagged:
        """Copy number ``copy`` of the record (for jobs that fan records out)."""
        return msgspec.structs.replace(self, copy=copy)


def make_tagged(split: str, seq: int, keys: int) -> Tagged:
    """Record ``seq`` of ``split``, with its key among ``keys`` keys and its checksum."""
    payload = checksum(split, seq)
    return Tagged(split, seq, payload % keys, payload)
