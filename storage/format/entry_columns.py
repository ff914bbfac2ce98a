"""Entry columns: how the keys and the values of a batch of keyed state entries become bytes.

The asynchronous part of a keyed state snapshot (:mod:`storage.keyed_snapshot`) writes the
entries of one state in one key group in batches of up to a few thousand entries, each
batch as two columns: its keys and its stored values. A column is one msgpack value (an
array, or a bin that holds a pickle) written by one encoder call, and read back by one
decoder call: never a call per entry, which is what makes snapshots and restores of
large states fast. Each column records the :class:`ColumnCodec` it was written with:

* ``MSGPACK``: an array read by the untyped decoder of :mod:`storage.format.serializers`: plain
  msgpack values, with tuples, ints beyond 64 bits and dicts with non-scalar keys as that
  decoder's extension types.
* ``TUPLES``: an array of arrays of scalars, each inner array being a tuple (the common
  untyped ``(count, total)`` kind of value, and tuple keys), written without extension
  types.
* ``TYPED``: an array of values of the state's declared type, validated against it when
  read.
* ``PICKLE``: a bin holding the pickle (protocol 5) of the list; only for values of no
  declared type (or of a declared type msgspec cannot encode) while pickle is allowed.

Keys are written as ``MSGPACK`` (scalars), ``TUPLES`` (tuples of scalars), ``MSGPACK``
with extension types (nested tuples, big ints) or, for key types msgpack cannot carry
and only if pickle is allowed, ``PICKLE``. Values with a declared msgspec type are
``TYPED``; values of no declared type are ``MSGPACK`` or ``TUPLES`` when a C-level look at
their types shows that msgpack carries them exactly (scalars, tuples or lists of scalars,
dicts from scalars to scalars), else ``PICKLE`` if pickle is allowed (fast, but a reader
then needs pickle: declare a type to keep such a state readable without running code),
else ``MSGPACK`` with extension types (correct, slower: Python work per value).

A column that fails to encode or decode raises :class:`~storage.errors.SerializationError`
without naming an entry; :meth:`ValueColumns.find_bad_value` and
:meth:`ValueColumns.find_bad_encoded` then locate the entry, so that the caller can name
its key.
"""

from __future__ import annotations

import enum
import pickle
from collections.abc import Hashable
from itertools import chain
from typing import Any, Final

import msgspec

from storage.errors import PickleForbiddenError, SerializationError
from storage.format.serializers import (
    MsgspecSerializer,
    PickleSerializer,
    Serializer,
    UntypedSerializer,
)

__all__ = [
    "ColumnCodec",
    "ValueColumns",
    "decode_key_column",
    "encode_key_column",
    "plain_shape",
]


class ColumnCodec(enum.StrEnum):
    """How a column of keys or values is encoded; the value is what snapshots record."""

    MSGPACK = "msgpack"
    TUPLES = "tuples"
    TYPED = "typed"
    PICKLE = "pickle"


_SCALARS: Final = frozenset({str, int, float, bool, bytes, type(None)})
_MSGPACK_ERRORS: Final = (TypeError, ValueError, OverflowError)
_encoder: Final = msgspec.msgpack.Encoder()
# Arrays straight into tuples: a TUPLES column holds only scalars inside its tuples.
_tuples: Final = msgspec.msgpack.Decoder(list[tuple])  # type: ignore[type-arg]
_bin: Final = msgspec.msgpack.Decoder(bytes)


def plain_shape(items: list[Any], *, containers: bool) -> ColumnCodec | None:
    """Return MSGPACK or TUPLES if msgpack carries ``items`` exactly as such, else None.

    Only C-level passes over the items (``set(map(type, ...))``): scalars; tuples of
    scalars; and, if ``containers``, lists of scalars and dicts from scalars to scalars.
    Ints beyond 64 bits and strs with lone surrogates pass this test but make the encoder
    fail, which the caller handles.
    """
    kinds = set(map(type, items))
    if kinds <= _SCALARS:
        return ColumnCodec.MSGPACK
    if len(kinds) != 1:
        return None
    (kind,) = kinds
    if kind is tuple:
        scalars = set(map(type, chain.from_iterable(items))) <= _SCALARS
        return ColumnCodec.TUPLES if scalars else None
    if not containers:
        return None
    if kind is list and set(map(type, chain.from_iterable(items))) <= _SCALARS:
        return ColumnCodec.MSGPACK
    if (
        kind is dict
        and set(map(type, chain.from_iterable(items))) <= _SCALARS
        and set(map(type, chain.from_iterable(map(dict.values, items)))) <= _SCALARS
    ):
        return ColumnCodec.MSGPACK
    return None


def _raw_bin(data: bytes) -> msgspec.Raw:
    return msgspec.Raw(_encoder.encode(data))


def _pickle(items: list[Any], what: str) -> msgspec.Raw:
    try:
        return _raw_bin(pickle.dumps(items, protocol=5))
    except Exception as exc:
        raise SerializationError(
            f"cannot pickle {what}: {exc}; make the values picklable or declare a msgspec type"
        ) from exc


def _unpickle(raw: msgspec.Raw, allow_pickle: bool, what: str) -> list[Any]:
    if not allow_pickle:
        raise PickleForbiddenError(
            f"{what} were written with pickle, and pickle is forbidden; allow pickle to read them"
        )
    try:
        items = pickle.loads(_bin.decode(raw))
    except Exception as exc:
        raise SerializationError(f"cannot unpickle {what}: {exc}") from exc
    if type(items) is not list:
        raise SerializationError(f"cannot unpickle {what}: expected a list; the data is corrupt")
    return items


def _decode_plain(codec: ColumnCodec, raw: msgspec.Raw, untyped: UntypedSerializer) -> list[Any]:
    if codec is ColumnCodec.TUPLES:
        try:
            return _tuples.decode(raw)
        except msgspec.DecodeError as exc:
            raise SerializationError(f"cannot decode {untyped.what}: {exc}") from exc
    return untyped.decode_many(raw)


# Key columns need no state-specific serializer: one untyped serializer per pickle policy.
_KEYS: Final = {allow: UntypedSerializer(allow, "keys") for allow in (False, True)}


def encode_key_column(keys: list[Hashable], allow_pickle: bool) -> tuple[ColumnCodec, msgspec.Raw]:
    """Encode a column of keys (see the module docstring for the codec chosen).

    Raises:
        PickleForbiddenError: If a key needs pickle and pickle is forbidden.
        SerializationError: If the keys cannot be encoded.
    """
    shape = plain_shape(keys, containers=False)
    if shape is not None:
        try:
            return shape, msgspec.Raw(_encoder.encode(keys))
        except _MSGPACK_ERRORS:
            pass  # an int beyond 64 bits, a lone surrogate: the general path below
    try:
        data = _KEYS[allow_pickle].encode_many(keys)
    except SerializationError:
        if not allow_pickle:
            raise
        data = None  # e.g. a lone surrogate, which msgpack cannot carry and pickle can
    if data is not None:
        return ColumnCodec.MSGPACK, msgspec.Raw(data)
    if not allow_pickle:
        raise PickleForbiddenError("a key needs pickle, and pickle is forbidden")
    return ColumnCodec.PICKLE, _pickle(keys, "keys")


def decode_key_column(
    codec: ColumnCodec, raw: msgspec.Raw, allow_pickle: bool = True
) -> list[Hashable]:
    """Decode a column of keys written by :func:`encode_key_column`.

    Raises:
        PickleForbiddenError: If the keys were pickled and pickle is forbidden.
        SerializationError: If the column is corrupt.
    """
    if codec is ColumnCodec.PICKLE:
        return _unpickle(raw, allow_pickle, "keys")
    if codec is ColumnCodec.TYPED:
        raise SerializationError("keys are never written as typed values; the data is corrupt")
    return _decode_plain(codec, raw, _KEYS[allow_pickle])


class ValueColumns:
    """Encodes and decodes the value columns of one state, per its serializer.

    Args:
        serializer: The state's stored-value serializer
            (:func:`~storage.keyed_snapshot.stored_value_serializer`), or None to read
            columns without knowing the declared type (``TYPED`` columns are then read as
            plain msgpack values, e.g. a Struct as a dict).
        allow_pickle: Whether pickle may be used (to write or to read).
        what: Names the values in error messages.
    """

    __slots__ = ("_entry", "_typed", "_untyped", "allow_pickle", "serializer")

    def __init__(
        self, serializer: Serializer[Any] | None, allow_pickle: bool, what: str = "values"
    ) -> None:
        self.serializer = serializer
        self.allow_pickle = allow_pickle
        self._untyped = UntypedSerializer(allow_pickle, what)
        self._typed: msgspec.msgpack.Decoder[list[Any]] | None = None
        if isinstance(serializer, MsgspecSerializer):
            self._typed = msgspec.msgpack.Decoder(list[serializer.type])  # type: ignore[name-defined]
        # The per-entry serializer, used only to find the entry a column fails on.
        self._entry: Serializer[Any] = (
            serializer if serializer is not None else UntypedSerializer(allow_pickle, what)
        )

    @property
    def what(self) -> str:
        """Names the values in error messages."""
        return self._untyped.what

    def encode(self, values: list[Any]) -> tuple[ColumnCodec, msgspec.Raw]:
        """Encode a column of values.

        Raises:
            PickleForbiddenError: If a value needs pickle and pickle is forbidden.
            SerializationError: If the values cannot be encoded; call
                :meth:`find_bad_value` to learn which.
        """
        serializer = self.serializer
        if isinstance(serializer, MsgspecSerializer):
            try:
                return ColumnCodec.TYPED, msgspec.Raw(_encoder.encode(values))
            except _MSGPACK_ERRORS as exc:
                raise SerializationError(f"cannot encode {self.what}: {exc}") from exc
        if isinstance(serializer, PickleSerializer):
            return ColumnCodec.PICKLE, _pickle(values, self.what)
        shape = plain_shape(values, containers=True)
        if shape is not None:
            try:
                return shape, msgspec.Raw(_encoder.encode(values))
            except _MSGPACK_ERRORS:
                pass
        if self.allow_pickle:
            return ColumnCodec.PICKLE, _pickle(values, self.what)
        data = self._untyped.encode_many(values)
        if data is None:
            raise PickleForbiddenError(f"one of the {self.what} needs pickle")
        return ColumnCodec.MSGPACK, msgspec.Raw(data)

    def decode(self, codec: ColumnCodec, raw: msgspec.Raw) -> list[Any]:
        """Decode a column of values written with ``codec``.

        A column written without a declared type is validated against the declared type
        if there is one now (a state may gain a type between runs).

        Raises:
            PickleForbiddenError: If the values were pickled and pickle is forbidden.
            SerializationError: If the column does not decode (to the declared type);
                call :meth:`find_bad_encoded` to learn which value.
        """
        typed = self._typed
        if codec is ColumnCodec.TYPED:
            if typed is not None:
                try:
                    return typed.decode(raw)
                except msgspec.DecodeError as exc:
                    raise SerializationError(f"cannot decode {self.what}: {exc}") from exc
            if self.serializer is not None:
                raise SerializationError(
                    f"{self.what} were written with a declared msgspec type, and the state "
                    "now declares none (or one msgspec cannot encode); declare the type again"
                )
            return self._untyped.decode_many(raw)
        if codec is ColumnCodec.PICKLE:
            values = _unpickle(raw, self.allow_pickle, self.what)
        else:
            if typed is not None:
                try:
                    return typed.decode(raw)
                except msgspec.DecodeError as exc:
                    raise SerializationError(f"cannot decode {self.what}: {exc}") from exc
            values = _decode_plain(codec, raw, self._untyped)
        if typed is not None:
            serializer = self.serializer
            assert isinstance(serializer, MsgspecSerializer)
            try:
                return msgspec.convert(values, list[serializer.type])  # type: ignore[name-defined]
            except msgspec.ValidationError as exc:
                raise SerializationError(f"cannot decode {self.what}: {exc}") from exc
        return values

    def find_bad_value(self, values: list[Any]) -> tuple[int, SerializationError] | None:
        """Return the index of the first value that does not encode alone, and its error."""
        encode = self._entry.encode
        for index, value in enumerate(values):
            try:
                encode(value)
            except SerializationError as exc:
                return index, exc
            except Exception as exc:  # e.g. a lone surrogate in an untyped value
                return index, SerializationError(f"cannot encode {self.what}: {exc}")
        return None

    def find_bad_encoded(
        self, codec: ColumnCodec, raw: msgspec.Raw
    ) -> tuple[int, SerializationError] | None:
        """Return the index of the first value of a column that fails to decode, and why.

        Only a ``TYPED`` or plain column checked against a declared type can fail on one
        value; for other failures there is no single value to blame and None is returned.
        """
        serializer = self.serializer
        if not isinstance(serializer, MsgspecSerializer) or codec is ColumnCodec.PICKLE:
            return None
        try:
            items = msgspec.msgpack.decode(raw, type=list[msgspec.Raw])
        except msgspec.DecodeError:
            return None
        for index, item in enumerate(items):
            try:
                serializer.decode(bytes(item))
            except SerializationError as exc:
                return index, exc
        return None
