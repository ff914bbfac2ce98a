"""Key groups: the unit in which keyed state is partitioned, snapshotted and rescaled.

Every key belongs to one of ``max_parallelism`` key groups (``stable_hash(key) %
max_parallelism``), and every parallel subtask of a keyed operator owns one contiguous
:class:`KeyGroupRange` of them. The record writer of an upstream subtask uses a
:class:`KeyGroupAssigner` to pick the channel of each record; the keyed state backend of
the downstream subtask groups its state by key group when it snapshots, and a restored
subtask loads only the key groups of its range. Rescaling never splits a key group, so
``max_parallelism`` bounds the parallelism a job can ever be rescaled to. The formulas are
Flink's (``KeyGroupRangeAssignment``), so a Flink user can predict where a key goes.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import Final

from storage.key_hash import stable_hash

__all__ = [
    "DEFAULT_MAX_PARALLELISM",
    "UPPER_BOUND_MAX_PARALLELISM",
    "KeyGroupAssigner",
    "KeyGroupRange",
    "assign_to_key_group",
    "compute_operator_index_for_key_group",
    "stable_hash",
    "validate_max_parallelism",
    "validate_parallelism",
]

DEFAULT_MAX_PARALLELISM: Final = 128
UPPER_BOUND_MAX_PARALLELISM: Final = 32768


def validate_max_parallelism(max_parallelism: int) -> int:
    """Check that ``max_parallelism`` is an int in ``[1, UPPER_BOUND_MAX_PARALLELISM]``.

    Args:
        max_parallelism: The number of key groups.

    Returns:
        ``max_parallelism`` unchanged.

    Raises:
        ValueError: If it is not an int in the allowed range.
    """
    if type(max_parallelism) is not int or not 1 <= max_parallelism <= UPPER_BOUND_MAX_PARALLELISM:
        raise ValueError(
            f"max_parallelism must be an int between 1 and {UPPER_BOUND_MAX_PARALLELISM}, "
            f"got {max_parallelism!r}; pass e.g. max_parallelism={DEFAULT_MAX_PARALLELISM}"
        )
    return max_parallelism


def validate_parallelism(parallelism: int, max_parallelism: int) -> int:
    """Check that ``parallelism`` is an int in ``[1, max_parallelism]``.

    Args:
        parallelism: The number of parallel subtasks.
        max_parallelism: The number of key groups (validated too).

    Returns:
        ``parallelism`` unchanged.

    Raises:
        ValueError: If either is out of range.
    """
    validate_max_parallelism(max_parallelism)
    if type(parallelism) is not int or not 1 <= parallelism <= max_parallelism:
        raise ValueError(
            f"parallelism must be an int between 1 and max_parallelism={max_parallelism}, "
            f"got {parallelism!r}; lower the parallelism or raise max_parallelism"
        )
    return parallelism


def assign_to_key_group(key: object, max_parallelism: int) -> int:
    """Return the key group of ``key``: ``stable_hash(key) % max_parallelism``.

    Raises:
        KeyEncodingError: If the key has a type the stable hash cannot encode.
    """
    return stable_hash(key) % max_parallelism


def compute_operator_index_for_key_group(
    max_parallelism: int, parallelism: int, key_group: int
) -> int:
    """Return the index of the subtask that owns ``key_group`` (Flink's formula)."""
    return key_group * parallelism // max_parallelism


@dataclass(frozen=True, slots=True)
class KeyGroupRange:
    """A contiguous, inclusive range of key groups ``[start, end]``.

    The empty range has ``end == start - 1``; :meth:`empty` returns the canonical one.
    """

    start: int
    end: int

    def __post_init__(self) -> None:
        if self.start < 0 or self.end < self.start - 1:
            raise ValueError(
                f"invalid key group range [{self.start}, {self.end}]: need 0 <= start and "
                "end >= start - 1 (end == start - 1 is the empty range)"
            )

    @classmethod
    def empty(cls) -> KeyGroupRange:
        """Return the canonical empty range ``[0, -1]``."""
        return cls(0, -1)

    @classmethod
    def of(cls, max_parallelism: int) -> KeyGroupRange:
        """Return the range of all key groups, ``[0, max_parallelism - 1]``."""
        return cls(0, validate_max_parallelism(max_parallelism) - 1)

    @classmethod
    def for_operator(
        cls, max_parallelism: int, parallelism: int, operator_index: int
    ) -> KeyGroupRange:
        """Return the key groups owned by subtask ``operator_index`` (Flink's formula).

        Args:
            max_parallelism: The number of key groups.
            parallelism: The number of subtasks.
            operator_index: The subtask, in ``[0, parallelism)``.

        Raises:
            ValueError: If an argument is out of range.
        """
        validate_parallelism(parallelism, max_parallelism)
        if not 0 <= operator_index < parallelism:
            raise ValueError(
                f"operator_index must be in [0, {parallelism}), got {operator_index!r}"
            )
        start = (operator_index * max_parallelism + parallelism - 1) // parallelism
        end = ((operator_index + 1) * max_parallelism + parallelism - 1) // parallelism - 1
        return cls(start, end)

    @property
    def is_empty(self) -> bool:
        """Whether the range holds no key group."""
        return self.end < self.start

    def __contains__(self, key_group: object) -> bool:
        return isinstance(key_group, int) and self.start <= key_group <= self.end

    def __len__(self) -> int:
        return self.end - self.start + 1

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.end + 1))

    def intersection(self, other: KeyGroupRange) -> KeyGroupRange:
        """Return the key groups in both ranges (the empty range if there are none)."""
        start = max(self.start, other.start)
        end = min(self.end, other.end)
        if end < start:
            return KeyGroupRange.empty()
        return KeyGroupRange(start, end)


class KeyGroupAssigner:
    """Map keys to key groups and subtask indices, memoised for the record hot path.

    A cache hit costs one dict lookup. The cache is cleared when it passes
    ``cache_size`` entries, which bounds memory without any per-call bookkeeping; equal
    keys share an entry, which is correct because equal keys hash equally. Not thread
    safe; each record writer owns one.

    Args:
        max_parallelism: The number of key groups.
        parallelism: The number of downstream subtasks.
        cache_size: Entries kept before the cache is cleared.

    Raises:
        ValueError: If ``max_parallelism`` or ``parallelism`` is out of range.
    """

    __slots__ = ("_cache_size", "_channels", "_key_groups", "max_parallelism", "parallelism")

    def __init__(self, max_parallelism: int, parallelism: int, cache_size: int = 100_000) -> None:
        validate_parallelism(parallelism, max_parallelism)
        self.max_parallelism = max_parallelism
        self.parallelism = parallelism
        self._cache_size = cache_size
        self._key_groups: dict[Hashable, int] = {}
        self._channels: dict[Hashable, int] = {}

    def key_group(self, key: object) -> int:
        """Return the key group of ``key``.

        Raises:
            KeyEncodingError: If the key has a type the stable hash cannot encode.
        """
        try:
            return self._key_groups[key]
        except KeyError:
            pass
        except TypeError:  # unhashable: let the stable hash name the type
            stable_hash(key)
            raise
        key_group = stable_hash(key) % self.max_parallelism
        cache = self._key_groups
        if len(cache) >= self._cache_size:
            cache.clear()
        cache[key] = key_group
        return key_group

    def channel(self, key: object) -> int:
        """Return the index of the subtask (output channel) that owns ``key``.

        Raises:
            KeyEncodingError: If the key has a type the stable hash cannot encode.
        """
        try:
            return self._channels[key]
        except KeyError:
            pass
        except TypeError:
            stable_hash(key)
            raise
        channel = stable_hash(key) % self.max_parallelism * self.parallelism // self.max_parallelism
        cache = self._channels
        if len(cache) >= self._cache_size:
            cache.clear()
        cache[key] = channel
        return channel
