"""How a stream's records are spread over the consumer's subtasks (Flink's partitioners).

A ``Partitioning`` is the logical choice made in the API (``key_by``, ``rebalance``,
``broadcast``, ``shuffle``, or the default). ``RecordWriter`` (``runtime.tasks``) turns it
into channel choices at run time.

* ``FORWARD``: subtask ``i`` sends to subtask ``i``; needs equal parallelism. The default
  between operators of equal parallelism, and what lets operators chain.
* ``REBALANCE``: round robin, one buffer at a time. The default between operators of
  different parallelism.
* ``SHUFFLE``: a uniformly random channel per buffer (seeded per subtask, so reproducible).
* ``BROADCAST``: every record to every consumer subtask.
* ``KEY_GROUP`` (``key_by``): the record's key is hashed with the stable hash of
  ``storage.keygroups`` to a key group, and the key group to the subtask that owns it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class PartitionKind(enum.Enum):
    """The partitioner of an edge."""

    FORWARD = "forward"
    REBALANCE = "rebalance"
    SHUFFLE = "shuffle"
    BROADCAST = "broadcast"
    KEY_GROUP = "hash"


@dataclass(frozen=True, slots=True)
class Partitioning:
    """A partitioner and, for ``KEY_GROUP``, the key selector."""

    kind: PartitionKind
    key_selector: Callable[[Any], Any] | None = None

    def __str__(self) -> str:
        return self.kind.value


FORWARD = Partitioning(PartitionKind.FORWARD)
REBALANCE = Partitioning(PartitionKind.REBALANCE)
SHUFFLE = Partitioning(PartitionKind.SHUFFLE)
BROADCAST = Partitioning(PartitionKind.BROADCAST)
