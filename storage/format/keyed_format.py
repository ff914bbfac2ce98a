"""The keyed state snapshot format: the blobs of key groups, and how to read them.

The asynchronous part of a keyed state snapshot (:mod:`storage.keyed_snapshot`) writes a
key group as one or more blobs, its *parts*: a large key group is split so that no step
of the writer handles more than its share of entries. Each blob is a msgpack
:class:`KeyGroupSnapshotData` (format version :data:`KEYED_STATE_FORMAT_VERSION`) that
names its key group, its part index and the number of parts; parts can be read alone and
in any order. It holds batches of entries (:class:`KeyedStateEntries`): the name and kind
of a state and two columns, the keys and the stored values, each one msgpack value
encoded as a whole (see :mod:`storage.format.entry_columns` for the codecs: msgpack, typed
msgspec, or pickle).

Readers (the backend's restore, the offline checkpoint reader) call
:func:`decode_key_group` on a blob and :func:`decode_entries` (or :func:`decode_keys`,
:func:`decode_columns`) on its batches.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, Final

import msgspec

from storage.descriptors import (
    ListStateDescriptor,
    MapStateDescriptor,
    ReducingStateDescriptor,
    StateDescriptor,
    StateKind,
    ValueStateDescriptor,
)
from storage.errors import PickleForbiddenError, SerializationError, StateError
from storage.format.entry_columns import ColumnCodec, ValueColumns, decode_key_column
from storage.format.serializers import Serializer, UntypedSerializer, serializer_for

__all__ = [
    "KEYED_STATE_FORMAT_VERSION",
    "KeyGroupSnapshotData",
    "KeyedStateEntries",
    "decode_columns",
    "decode_entries",
    "decode_key_group",
    "decode_keys",
    "encode_key_group",
    "key_serializer",
    "stored_value_serializer",
    "value_columns",
]

KEYED_STATE_FORMAT_VERSION: Final = 2
"""Version 2: batches with encoded key and value columns, key groups split into parts.

Version 1 (one encoded key and one encoded value per entry, one blob per key group)
is not read: no checkpoint of it was kept (no golden file of it exists).
"""

_encoder: Final = msgspec.msgpack.Encoder()


class KeyedStateEntries(msgspec.Struct, frozen=True, array_like=True):
    """A batch of entries of one state in one key group: its keys and its stored values.

    Read the entries with :func:`decode_entries` (or :func:`decode_keys`,
    :func:`decode_columns`); the columns stay encoded until then.

    Attributes:
        name: The state's name.
        kind: The state's kind.
        count: The number of entries.
        key_codec: How ``keys`` is encoded.
        keys: The encoded keys, one msgpack value (see :mod:`storage.format.entry_columns`).
        value_codec: How ``values`` is encoded.
        values: The encoded stored values, in the order of the keys.
    """

    name: str
    kind: StateKind
    count: int
    key_codec: ColumnCodec
    keys: msgspec.Raw
    value_codec: ColumnCodec
    values: msgspec.Raw


class KeyGroupSnapshotData(msgspec.Struct, frozen=True, array_like=True):
    """One blob of a key group: batches of entries of the states with keys in the group.

    A key group with many entries is written as several blobs (parts); each can be
    read alone, and together they hold the key group's entries.

    Attributes:
        version: The format version, :data:`KEYED_STATE_FORMAT_VERSION`.
        key_group: The key group.
        states: The batches of entries, at most a few per state.
        part: The index of this blob among the key group's blobs.
        parts: The number of blobs the key group was written as.
    """

    version: int
    key_group: int
    states: list[KeyedStateEntries]
    part: int = 0
    parts: int = 1


class _Version(msgspec.Struct, array_like=True):
    version: int


_decoder: Final = msgspec.msgpack.Decoder(KeyGroupSnapshotData)
ENTRIES_DECODER: Final = msgspec.msgpack.Decoder(KeyedStateEntries)
"""Decodes one ``KeyedStateEntries`` (the RocksDB backend stores them per row)."""
_version_decoder: Final = msgspec.msgpack.Decoder(_Version)


def stored_value_serializer(descriptor: StateDescriptor, allow_pickle: bool) -> Serializer[Any]:
    """Return the serializer of what a state stores per key.

    A value or reducing state stores the value; a list state the list of elements; a
    map state the dict. With every type declared the serializer is msgspec's.

    Args:
        descriptor: The state's descriptor.
        allow_pickle: Whether pickle may be used for undeclared types.

    Raises:
        PickleForbiddenError: If a declared type needs pickle and pickle is forbidden.
    """
    what = f"{descriptor.kind} state {descriptor.name!r}"
    if isinstance(descriptor, ValueStateDescriptor | ReducingStateDescriptor):
        return serializer_for(descriptor.type, allow_pickle, what)
    if isinstance(descriptor, ListStateDescriptor):
        tp = None if descriptor.type is None else list[descriptor.type]  # type: ignore[name-defined]
        return serializer_for(tp, allow_pickle, what)
    if isinstance(descriptor, MapStateDescriptor):
        if descriptor.key_type is None or descriptor.value_type is None:
            return serializer_for(None, allow_pickle, what)
        return serializer_for(
            dict[descriptor.key_type, descriptor.value_type],  # type: ignore[name-defined]
            allow_pickle,
            what,
        )
    raise StateError(f"unknown state descriptor {descriptor!r}")


def value_columns(descriptor: StateDescriptor, allow_pickle: bool) -> ValueColumns:
    """Return the codec of a state's value columns, per its descriptor's types.

    Raises:
        PickleForbiddenError: If a declared type needs pickle and pickle is forbidden.
    """
    serializer = stored_value_serializer(descriptor, allow_pickle)
    return ValueColumns(serializer, allow_pickle, f"{descriptor.kind} state {descriptor.name!r}")


def key_serializer(allow_pickle: bool) -> UntypedSerializer:
    """Return the serializer of one key (keys are written in columns; see ``decode_keys``)."""
    return UntypedSerializer(allow_pickle=allow_pickle, what="key")


def encode_key_group(
    key_group: int, batches: list[KeyedStateEntries], part: int = 0, parts: int = 1
) -> bytes:
    """Return the blob of one part of a key group (the columns are already encoded)."""
    data = KeyGroupSnapshotData(KEYED_STATE_FORMAT_VERSION, key_group, batches, part, parts)
    return _encoder.encode(data)


def decode_key_group(
    key_group: int, blob: bytes | memoryview, *, allow_pickle: bool = True
) -> KeyGroupSnapshotData:
    """Decode one blob (one part) of ``key_group`` and check its version and key group.

    A key group may have been written as several blobs (``parts``); each decodes alone.
    The batches' columns stay encoded: read them with :func:`decode_entries`.

    Args:
        key_group: The key group the blob was stored for.
        blob: The blob.
        allow_pickle: Whether batches written with pickle may be read later; if False, a
            batch whose keys or values were pickled is refused here, before anything is
            unpickled (O(batches): the columns' codecs are looked at, not their bytes).

    Raises:
        SerializationError: If the blob is not a key group snapshot of a known version,
            or is the blob of another key group.
        PickleForbiddenError: If ``allow_pickle`` is False and a batch was pickled; the
            message names the state and the key group.
    """
    try:
        data = _decoder.decode(blob)
    except msgspec.DecodeError as exc:
        try:
            version = _version_decoder.decode(blob).version
        except msgspec.DecodeError:
            version = KEYED_STATE_FORMAT_VERSION
        if version != KEYED_STATE_FORMAT_VERSION:
            raise _version_error(key_group, version) from exc
        raise SerializationError(
            f"cannot decode the keyed state of key group {key_group}: {exc}; the checkpoint "
            "file is corrupt or not a weir keyed state snapshot"
        ) from exc
    if data.version != KEYED_STATE_FORMAT_VERSION:
        raise _version_error(key_group, data.version)
    if data.key_group != key_group:
        raise SerializationError(
            f"the blob given for key group {key_group} holds key group {data.key_group}; "
            "the checkpoint metadata does not match its files"
        )
    if not 0 <= data.part < data.parts:
        raise SerializationError(
            f"the blob of key group {key_group} says it is part {data.part} of {data.parts}; "
            "the checkpoint file is corrupt"
        )
    if not allow_pickle:
        for batch in data.states:
            if ColumnCodec.PICKLE in (batch.key_codec, batch.value_codec):
                column = "keys" if batch.key_codec is ColumnCodec.PICKLE else "values"
                raise PickleForbiddenError(
                    f"the {column} of {batch.kind} state {batch.name!r} in key group "
                    f"{key_group} were written with pickle, and pickle may not be read here"
                )
    return data


def _version_error(key_group: int, version: int) -> SerializationError:
    return SerializationError(
        f"keyed state of key group {key_group} has format version {version}, this "
        f"weir reads version {KEYED_STATE_FORMAT_VERSION}; restore with a matching weir"
    )


def decode_keys(entries: KeyedStateEntries, allow_pickle: bool = True) -> list[Hashable]:
    """Return the keys of a batch, in order.

    Raises:
        PickleForbiddenError: If the keys were pickled and pickle is forbidden.
        SerializationError: If the column is corrupt; the message names the state.
    """
    try:
        keys = decode_key_column(entries.key_codec, entries.keys, allow_pickle)
    except SerializationError as exc:
        raise type(exc)(f"cannot restore {entries.kind} state {entries.name!r}: {exc}") from exc
    if len(keys) != entries.count:
        raise SerializationError(
            f"cannot restore {entries.kind} state {entries.name!r}: a batch says it holds "
            f"{entries.count} entries but has {len(keys)} keys; the checkpoint file is corrupt"
        )
    return keys


def decode_columns(
    entries: KeyedStateEntries, values: ValueColumns
) -> tuple[list[Hashable], list[Any]]:
    """Return the keys and the stored values of a batch, as two lists in entry order.

    Args:
        entries: The batch.
        values: The codec of the state's values (:func:`value_columns` of its
            descriptor); it says whether pickle may be read.

    Raises:
        PickleForbiddenError: If a column was pickled and pickle is forbidden.
        SerializationError: If a column is corrupt or a value does not decode to the
            declared type; the message names the state and, if one is to blame, the key.
    """
    keys = decode_keys(entries, values.allow_pickle)
    try:
        decoded = values.decode(entries.value_codec, entries.values)
    except SerializationError as exc:
        bad = values.find_bad_encoded(entries.value_codec, entries.values)
        if bad is None:
            raise type(exc)(f"cannot restore {entries.kind} state {entries.name!r}: {exc}") from exc
        raise type(bad[1])(
            f"cannot restore {entries.kind} state {entries.name!r} for key "
            f"{keys[bad[0]]!r}: {bad[1]}"
        ) from bad[1]
    if len(decoded) != len(keys):
        raise SerializationError(
            f"cannot restore {entries.kind} state {entries.name!r}: a batch has "
            f"{len(keys)} keys but {len(decoded)} values; the checkpoint file is corrupt"
        )
    return keys, decoded


def decode_entries(
    entries: KeyedStateEntries,
    descriptor: StateDescriptor | None = None,
    *,
    allow_pickle: bool = True,
) -> list[tuple[Hashable, Any]]:
    """Return the ``(key, stored value)`` pairs of a batch.

    Args:
        entries: The batch.
        descriptor: The state's descriptor, whose types the values are decoded (and
            validated) as; None reads them without a declared type (msgspec-typed values
            then come back as plain msgpack values, e.g. a Struct as a dict).
        allow_pickle: Whether pickled columns may be read.

    Raises:
        PickleForbiddenError: If a column was pickled and pickle is forbidden.
        SerializationError: See :func:`decode_columns`.
    """
    if descriptor is None:
        codec = ValueColumns(None, allow_pickle, f"{entries.kind} state {entries.name!r}")
    else:
        codec = value_columns(descriptor, allow_pickle)
    keys, values = decode_columns(entries, codec)
    return list(zip(keys, values, strict=True))
