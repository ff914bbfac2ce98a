"""The copy-on-write overlay of a :class:`~storage.heap.state_table.StateTable`: a :class:`Layer`.

While a snapshot of a state table is in flight, writes go to an overlay instead of the
frozen ``base`` dict. An overlay is one :class:`Layer`: :data:`SHARDS` dicts chosen by
the key's hash (``hash(key) & BUCKET_MASK`` names a bucket; buckets map to shards in
contiguous runs), so no single dict holds, and rehashes, everything written during a
snapshot. A key removed during a snapshot is marked with :data:`TOMBSTONE`. See
:mod:`storage.heap.state_table` for how tables, views and overlays fit together.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator, Mapping
from itertools import chain
from typing import Any, Final

__all__ = ["BUCKET_MASK", "SHARDS", "TOMBSTONE", "Layer"]


class _Tombstone:
    __slots__ = ()

    def __repr__(self) -> str:
        return "TOMBSTONE"


TOMBSTONE: Final = _Tombstone()
"""Marks a key removed in an overlay."""

SHARDS: Final = 64
"""Dicts an overlay's entries are spread over (see :class:`Layer`)."""

_BUCKETS: Final = 4096
BUCKET_MASK: Final = _BUCKETS - 1


def _shard_of_bucket() -> tuple[int, ...]:
    """Map each of the ``_BUCKETS`` hash buckets to a shard, in contiguous runs.

    Shard ``i`` gets a share of the buckets proportional to ``2 ** (i / SHARDS)``: the
    shares span one doubling, so that, as the overlay fills, the shards reach the sizes
    at which a dict grows its table (each at about 2/3 of a power of two) one after the
    other, evenly spread over each doubling of the overlay, never all at once. Runs of
    contiguous buckets keep keys with nearby hashes (consecutive ints) in one shard.
    """
    weights = [2 ** (i / SHARDS) for i in range(SHARDS)]
    total = sum(weights)
    counts = [round(_BUCKETS * weight / total) for weight in weights]
    counts[-1] += _BUCKETS - sum(counts)
    return tuple(shard for shard, count in enumerate(counts) for _ in range(count))


_SHARD_OF_BUCKET: Final = _shard_of_bucket()


class _Shard(dict[Hashable, Any]):
    """A dict of a :class:`Layer`, tracked by the garbage collector from birth.

    CPython tracks a plain dict only once it holds an object that may be tracked, and
    a full collection untracks a plain dict whose contents all are untracked; the next
    write of a fresh tuple tracks it again as a young object, which the next young
    collections walk. A dict subclass is tracked when it is created and never
    untracked: a shard made in the synchronous part of a snapshot is among the objects
    the runtime's state freezer freezes then (:mod:`runtime.tasks.gc_freezer`), however
    large it grows. (``base`` stays a plain dict: the record path stores into it, and a
    store into a subclass costs ~30 ns more.)
    """

    __slots__ = ()


class Layer:
    """An overlay: each key's entry, or the ``TOMBSTONE`` of a key removed.

    The entries are spread over :data:`SHARDS` dicts by key hash, so that no single dict
    holds them all. A dict rehashes all its entries when it outgrows its table (at about
    2/3 of each power of two), in one step: one overlay dict of the keys written during a
    1M-key snapshot stalled the loop 10 to 20 ms at 175 k entries and twice that at
    350 k. The shards have unequal shares (see :func:`_shard_of_bucket`), so their
    rehashes come one at a time, each of at most ~2% of the entries. The bucket of a key
    is ``hash(key) & 4095`` (Python's ``hash``: the layer never leaves the process);
    :attr:`by_hash` maps a bucket to its shard's dict, so a lookup is
    ``layer.by_hash[hash(key) & 4095].get(key)``, as the table's methods do inline.

    Attributes:
        shards: The dicts, one per shard.
        by_hash: For each of the 4096 hash buckets, the dict of its shard.
    """

    __slots__ = ("by_hash", "shards")

    def __init__(self, shards: Iterable[dict[Hashable, Any]] | None = None) -> None:
        """Create an empty layer, or one over the given :data:`SHARDS` dicts."""
        self.shards: tuple[dict[Hashable, Any], ...] = (
            tuple(_Shard() for _ in range(SHARDS)) if shards is None else tuple(shards)
        )
        assert len(self.shards) == SHARDS
        self.by_hash: list[dict[Hashable, Any]] = list(
            map(self.shards.__getitem__, _SHARD_OF_BUCKET)
        )

    @classmethod
    def of(cls, entries: Mapping[Hashable, Any]) -> Layer:
        """Return a layer holding ``entries`` (for tests and tools)."""
        layer = cls()
        layer.update(entries.items())
        return layer

    def shard(self, key: Hashable) -> dict[Hashable, Any]:
        """Return the dict that holds ``key`` if any layer does."""
        return self.by_hash[hash(key) & BUCKET_MASK]

    def get(self, key: Hashable, default: Any = None) -> Any:
        """Return the entry of ``key`` (a value or the ``TOMBSTONE``), or ``default``."""
        return self.by_hash[hash(key) & BUCKET_MASK].get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self.by_hash[hash(key) & BUCKET_MASK]

    def __setitem__(self, key: Hashable, entry: Any) -> None:
        self.by_hash[hash(key) & BUCKET_MASK][key] = entry

    def update(self, entries: Iterable[tuple[Hashable, Any]]) -> None:
        """Set the entry of each ``(key, entry)`` pair; later pairs win."""
        by_hash = self.by_hash
        for key, entry in entries:
            by_hash[hash(key) & BUCKET_MASK][key] = entry

    def items(self) -> Iterator[tuple[Hashable, Any]]:
        """Yield the ``(key, entry)`` pairs, shard by shard."""
        return chain.from_iterable(shard.items() for shard in self.shards)

    def as_dict(self) -> dict[Hashable, Any]:
        """Return the entries as one dict (O(entries); for tests and tools)."""
        return dict(self.items())

    def copy(self) -> Layer:
        """Return a copy of the layer (the entries themselves are shared)."""
        return Layer(_Shard(shard) for shard in self.shards)

    def __len__(self) -> int:
        """Return the number of entries, tombstones included (O(:data:`SHARDS`))."""
        return sum(map(len, self.shards))

    def __bool__(self) -> bool:
        return any(self.shards)

    def __repr__(self) -> str:
        return f"Layer({self.as_dict()!r})"

    def without(self, keys: list[Hashable]) -> list[Hashable]:
        """Return the keys of ``keys`` that the layer does not hold, in order."""
        by_hash = self.by_hash
        return [key for key in keys if key not in by_hash[hash(key) & BUCKET_MASK]]

    def fold_into(self, base: dict[Hashable, Any], limit: int) -> int:
        """Move up to ``limit`` entries into ``base`` (a tombstone removes); return how many.

        Takes from every shard a share proportional to its size, newest entries first, so
        that one call moves the entries written in one stretch of time: their objects
        and the slots of ``base`` they land in (for keys with nearby hashes) are close in
        memory. Emptying the shards one after the other visits ``base`` at random and
        was 4 to 5 times slower per entry (2-core VM, consecutive int keys).
        """
        total = len(self)
        left = limit
        pop = base.pop
        for shard in self.shards:
            size = len(shard)
            if not size:
                continue
            # popitem takes the last entry and leaves no hole, so each call is O(1).
            popitem = shard.popitem
            count = min(left, size, -(-size * limit // total))
            for _ in range(count):
                key, value = popitem()
                if value is TOMBSTONE:
                    pop(key, None)
                else:
                    base[key] = value
            left -= count
            if not left:
                break
        return limit - left
