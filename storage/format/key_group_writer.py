"""The key group writer: groups one state's entries by key group and encodes them.

Used by :meth:`HeapSnapshot.encode_chunks <storage.keyed_snapshot.HeapSnapshot.encode_chunks>`,
the asynchronous part of a keyed state snapshot, one :class:`StateGrouping` per state. The
snapshot reads the state's frozen entries in chunks, in the order the table holds them,
and hands each chunk to :meth:`StateGrouping.add`, which hashes its keys in bulk
(:func:`~storage.key_hash.stable_hashes`), splits it into *runs* (the chunk's entries of
one key group) and encodes each run's keys and values right away, one encoder call per
column of a run. Encoding in table order touches each entry once, while it is in the
cache, and keeps only bytes, which the garbage collector does not walk; msgpack arrays
concatenate, so the runs of a key group are later joined into the columns of a batch
without decoding them again (:meth:`StateGrouping.pieces`, cheap, in the snapshot's later
steps).

A chunk whose entries msgpack cannot carry as they are (values of no declared type that
are not plain, keys that need extension types, ints beyond 64 bits), or whose runs
would be too short to be worth a call each (many key groups, few entries), is kept as
references instead and encoded per key group at the end, by the general column codecs of
:mod:`storage.format.entry_columns` (pickle if allowed, else msgpack with extension types).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, Final

import msgspec

from storage.descriptors import StateKind
from storage.errors import SerializationError
from storage.format.entry_columns import ColumnCodec, ValueColumns, encode_key_column, plain_shape
from storage.format.keyed_format import KeyedStateEntries, key_serializer
from storage.format.serializers import MsgspecSerializer, UntypedSerializer
from storage.key_hash import stable_hashes

__all__ = ["Piece", "StateGrouping", "array_header", "pack_parts"]

_encoder: Final = msgspec.msgpack.Encoder()
_ENCODE_ERRORS: Final = (TypeError, ValueError, OverflowError)
_MIN_RUN: Final = 4
"""Runs shorter than this on average are not encoded one by one (a call costs ~a few entries)."""
_REFS_COST: Final = 4
"""An entry kept as a reference costs about this many plain entries to encode at the end
(pickle, or msgpack with extension types, of values that are not plain), so a step
encodes ``chunk_size // _REFS_COST`` of them."""
_NO_KEY: Final = object()


def array_header(count: int) -> bytes:
    """Return the msgpack header of an array of ``count`` elements."""
    if count <= 15:
        return bytes((0x90 | count,))
    if count <= 0xFFFF:
        return b"\xdc" + count.to_bytes(2, "big")
    return b"\xdd" + count.to_bytes(4, "big")


def _elements(encoded: bytes) -> bytes:
    """Return the elements of an encoded msgpack array: the bytes after its header."""
    first = encoded[0]
    if 0x90 <= first <= 0x9F:
        return encoded[1:]
    if first == 0xDC:
        return encoded[3:]
    assert first == 0xDD, f"not a msgpack array: {encoded[:1]!r}"
    return encoded[5:]


class Piece:
    """Entries of one state in one key group, on their way to becoming a batch.

    Attributes:
        count: The number of entries.
        weight: The work left to build the batch, in plain entries (what a step of the
            writer is bounded by).
    """

    __slots__ = ("_build", "count", "weight")

    def __init__(
        self, count: int, build: Callable[[], KeyedStateEntries], weight: int | None = None
    ) -> None:
        self.count = count
        self.weight = count if weight is None else weight
        self._build = build

    def build(self) -> KeyedStateEntries:
        """Return the batch (encoding what is still to be encoded).

        Raises:
            SerializationError: If a key or value cannot be encoded; the message names
                the state, the key group and the key.
        """
        return self._build()

    @classmethod
    def ready(cls, batch: KeyedStateEntries) -> Piece:
        """Wrap a batch that is already encoded (one carried over from a restore)."""
        return cls(batch.count, lambda: batch)


# Runs of one key group with one pair of codecs: (count, key elements, value elements).
_Runs = list[tuple[int, bytes, bytes]]


class StateGrouping:
    """One state's entries of a snapshot, grouped by key group as they are added.

    Args:
        name: The state's name.
        kind: The state's kind.
        columns: The codec of the state's values.
        max_parallelism: The number of key groups.
        allow_pickle: Whether keys may be pickled.
    """

    __slots__ = (
        "_allow_pickle",
        "_columns",
        "_encoded",
        "_max_parallelism",
        "_refs",
        "_typed",
        "kind",
        "name",
    )

    def __init__(
        self,
        name: str,
        kind: StateKind,
        columns: ValueColumns,
        max_parallelism: int,
        allow_pickle: bool,
    ) -> None:
        self.name = name
        self.kind = kind
        self._columns = columns
        self._max_parallelism = max_parallelism
        self._allow_pickle = allow_pickle
        self._typed = isinstance(columns.serializer, MsgspecSerializer)
        # key group -> (key codec, value codec) -> encoded runs
        self._encoded: dict[int, dict[tuple[ColumnCodec, ColumnCodec], _Runs]] = {}
        # key group -> (keys, values) kept as references, encoded by pieces()
        self._refs: dict[int, tuple[list[Hashable], list[Any]]] = {}

    def key_groups(self) -> set[int]:
        """The key groups with entries."""
        return self._encoded.keys() | self._refs.keys()

    def add(self, keys: list[Hashable], values: list[Any]) -> None:
        """Group (and, where it pays, encode) one chunk of entries; O(len(keys)).

        Raises:
            KeyEncodingError: If a key has a type the stable hash cannot encode.
        """
        key_groups = stable_hashes(keys, self._max_parallelism)
        present = set(key_groups)
        if len(keys) >= _MIN_RUN * len(present) and self._encode_runs(
            key_groups, present, keys, values
        ):
            return
        refs = self._refs
        for key_group in present:
            if key_group not in refs:
                refs[key_group] = ([], [])
        for key_group, key, value in zip(key_groups, keys, values, strict=True):
            group = refs[key_group]
            group[0].append(key)
            group[1].append(value)

    def _encode_runs(
        self, key_groups: list[int], present: set[int], keys: list[Hashable], values: list[Any]
    ) -> bool:
        """Encode the chunk's runs if msgpack carries them as they are; False if not."""
        key_codec = plain_shape(keys, containers=False)
        if key_codec is None:
            return False
        if self._typed:
            value_codec: ColumnCodec | None = ColumnCodec.TYPED
        elif isinstance(self._columns.serializer, UntypedSerializer):
            value_codec = plain_shape(values, containers=True)
        else:
            value_codec = None  # a declared type msgspec cannot encode: pickled later
        if value_codec is None:
            return False
        run_keys: dict[int, list[Hashable]] = {kg: [] for kg in present}
        run_values: dict[int, list[Any]] = {kg: [] for kg in present}
        for key_group, key, value in zip(key_groups, keys, values, strict=True):
            run_keys[key_group].append(key)
            run_values[key_group].append(value)
        encode = _encoder.encode
        try:
            runs = [
                (kg, len(ks), _elements(encode(ks)), _elements(encode(run_values[kg])))
                for kg, ks in run_keys.items()
            ]
        except _ENCODE_ERRORS:
            return False  # e.g. an int beyond 64 bits: kept as references instead
        codecs = (key_codec, value_codec)
        encoded = self._encoded
        for key_group, count, key_bytes, value_bytes in runs:
            by_codecs = encoded.get(key_group)
            if by_codecs is None:
                by_codecs = encoded[key_group] = {}
            by_codecs.setdefault(codecs, []).append((count, key_bytes, value_bytes))
        return True

    def pieces(self, key_group: int, chunk_size: int) -> list[Piece]:
        """Return the state's entries in ``key_group`` as pieces of at most ``chunk_size``.

        Hands the key group's entries over to the pieces: call it once per key group.
        (So the grouping shrinks as the snapshot's blobs are built, and no large
        structure is left to free in one step at the end.)
        """
        pieces: list[Piece] = []
        for codecs, runs in self._encoded.pop(key_group, {}).items():
            # Cut at run boundaries into about equal pieces of at most chunk_size.
            entries = sum(count for count, _, _ in runs)
            target = -(-entries // -(-entries // chunk_size))
            start = 0
            total = 0
            for index, (count, _, _) in enumerate(runs):
                if total and (total + count > chunk_size or total >= target):
                    pieces.append(self._joined(codecs, runs[start:index], total))
                    start = index
                    total = 0
                total += count
            pieces.append(self._joined(codecs, runs[start:], total))
        refs = self._refs.pop(key_group, None)
        if refs is not None:
            keys, values = refs
            count = len(keys)
            slices = -(-count // max(1, chunk_size // _REFS_COST))
            for i in range(slices):
                lo, hi = count * i // slices, count * (i + 1) // slices
                pieces.append(self._referenced(key_group, keys[lo:hi], values[lo:hi], chunk_size))
        return pieces

    def _joined(self, codecs: tuple[ColumnCodec, ColumnCodec], runs: _Runs, count: int) -> Piece:
        def build() -> KeyedStateEntries:
            header = array_header(count)
            keys = msgspec.Raw(b"".join([header, *[k for _, k, _ in runs]]))
            values = msgspec.Raw(b"".join([header, *[v for _, _, v in runs]]))
            return KeyedStateEntries(
                self.name, self.kind, count, codecs[0], keys, codecs[1], values
            )

        return Piece(count, build)

    def _referenced(
        self, key_group: int, keys: list[Hashable], values: list[Any], chunk_size: int
    ) -> Piece:
        return Piece(
            len(keys),
            lambda: self._encode_refs(key_group, keys, values),
            min(len(keys) * _REFS_COST, chunk_size),
        )

    def _encode_refs(
        self, key_group: int, keys: list[Hashable], values: list[Any]
    ) -> KeyedStateEntries:
        allow_pickle = self._allow_pickle
        try:
            key_codec, key_column = encode_key_column(keys, allow_pickle)
        except SerializationError as exc:
            encode_key = key_serializer(allow_pickle).encode
            for key in keys:
                try:
                    encode_key(key)
                except SerializationError as key_exc:
                    raise self._error(key_group, key, key_exc) from key_exc
                except Exception as key_exc:  # e.g. a lone surrogate, with pickle forbidden
                    error = SerializationError(f"cannot encode key: {key_exc}")
                    raise self._error(key_group, key, error) from key_exc
            raise self._error(key_group, _NO_KEY, exc) from exc
        columns = self._columns
        try:
            value_codec, value_column = columns.encode(values)
        except SerializationError as exc:
            bad = columns.find_bad_value(values)
            if bad is None:
                raise self._error(key_group, _NO_KEY, exc) from exc
            raise self._error(key_group, keys[bad[0]], bad[1]) from bad[1]
        return KeyedStateEntries(
            self.name, self.kind, len(keys), key_codec, key_column, value_codec, value_column
        )

    def _error(self, key_group: int, key: object, exc: SerializationError) -> SerializationError:
        which = "" if key is _NO_KEY else f" for key {key!r}"
        return type(exc)(
            f"cannot snapshot {self.kind} state {self.name!r}{which} (key group {key_group}): {exc}"
        )


def pack_parts(pieces: list[Piece], chunk_size: int) -> list[list[Piece]]:
    """Pack a key group's pieces, in order, into parts of at most ``chunk_size`` weight.

    A piece heavier than ``chunk_size`` (a batch carried over from a run with larger
    chunks) is a part of its own.
    """
    parts: list[list[Piece]] = [[]]
    filled = 0
    for piece in pieces:
        if parts[-1] and filled + piece.weight > chunk_size:
            parts.append([])
            filled = 0
        parts[-1].append(piece)
        filled += piece.weight
    return parts
