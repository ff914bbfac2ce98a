"""Serializers: how keys and state values become bytes in a snapshot, and back.

A keyed or operator state backend picks one serializer per state from its descriptor
(:func:`serializer_for`) and uses it in the asynchronous part of a snapshot and on
restore. A declared type gives a :class:`MsgspecSerializer` (plain msgpack, readable
without running user code). No declared type gives an :class:`UntypedSerializer`, a
tagged envelope that round-trips exactly:

* ``b"M"`` + msgpack, for values built from None, bool, int, float, str, bytes, list,
  dict and tuple. msgpack has no tuple and no int beyond 64 bits, so these travel as
  msgpack extension types: code 1 is a tuple (payload: its elements as a msgpack array,
  recursively enveloped), code 2 an int (payload: two's complement, big-endian), code 3 a
  dict whose keys are not all str/int/float/bool/None/bytes (payload: a flat array
  ``[k0, v0, k1, v1, ...]``).
* ``b"P"`` + pickle, for anything else, unless pickle is forbidden, in which case
  :class:`~storage.errors.PickleForbiddenError` says which type to declare.

The envelope is part of the checkpoint format; its first byte is its version.
"""

from __future__ import annotations

import pickle
from typing import Any, Final, Protocol, TypeVar

import msgspec

from storage.errors import PickleForbiddenError, SerializationError

__all__ = [
    "MsgspecSerializer",
    "PickleSerializer",
    "Serializer",
    "UntypedSerializer",
    "serializer_for",
]

T = TypeVar("T")

_MSGPACK: Final = b"M"
_PICKLE: Final = b"P"
_EXT_TUPLE: Final = 1
_EXT_INT: Final = 2
_EXT_DICT: Final = 3
_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**64 - 1
_SCALARS: Final = frozenset({str, int, float, bool, bytes, type(None)})


class Serializer(Protocol[T]):
    """Turns values of one type into bytes and back; ``decode(encode(v)) == v``."""

    def encode(self, value: T) -> bytes:
        """Return the bytes of ``value``.

        Raises:
            SerializationError: If the value cannot be encoded.
        """
        ...

    def decode(self, data: bytes) -> T:
        """Return the value encoded in ``data``.

        Raises:
            SerializationError: If the bytes do not hold a value of the expected type.
        """
        ...


class MsgspecSerializer:
    """msgpack serialization of a declared type, with one reusable encoder and decoder.

    Args:
        type: Any type msgspec supports (``int``, ``list[str]``, a ``msgspec.Struct``...).
    """

    __slots__ = ("_decoder", "_encoder", "type")

    def __init__(self, type: Any) -> None:
        self.type = type
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(type)

    def encode(self, value: Any) -> bytes:
        """Return the msgpack bytes of ``value``.

        Raises:
            SerializationError: If msgspec cannot encode the value.
        """
        try:
            return self._encoder.encode(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise SerializationError(
                f"cannot encode {type(value).__qualname__} value as {_type_name(self.type)}: "
                f"{exc}; store values that msgspec can encode as the declared type"
            ) from exc

    def decode(self, data: bytes) -> Any:
        """Return the value in ``data``, validated against the declared type.

        Raises:
            SerializationError: If ``data`` is not a msgpack value of the declared type.
        """
        try:
            return self._decoder.decode(data)
        except msgspec.DecodeError as exc:
            raise SerializationError(
                f"cannot decode a {_type_name(self.type)} value: {exc}; check that the "
                "state was written with the same declared type"
            ) from exc


class PickleSerializer:
    """Pickle (highest protocol) serialization of any picklable value.

    Pickled state can only be read by running code that defines the pickled classes;
    prefer declaring a msgspec type.
    """

    __slots__ = ()

    def encode(self, value: Any) -> bytes:
        """Return the pickle of ``value``.

        Raises:
            SerializationError: If the value cannot be pickled.
        """
        try:
            return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise SerializationError(
                f"cannot pickle {type(value).__qualname__} value: {exc}; make it picklable "
                "or declare a msgspec type"
            ) from exc

    def decode(self, data: bytes) -> Any:
        """Return the unpickled value.

        Raises:
            SerializationError: If ``data`` is not a valid pickle.
        """
        try:
            return pickle.loads(data)
        except Exception as exc:
            raise SerializationError(f"cannot unpickle value: {exc}") from exc


class UntypedSerializer:
    """Exact round trips for values of no declared type (see the module docstring).

    Args:
        allow_pickle: Whether values that msgpack cannot carry may be pickled.
        what: Names the state or stream in error messages, e.g. ``"state 'count'"``.
    """

    __slots__ = ("_decoder", "_encoder", "allow_pickle", "what")

    def __init__(self, allow_pickle: bool = True, what: str = "value") -> None:
        self.allow_pickle = allow_pickle
        self.what = what
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(
            ext_hook=self._ext_hook
        )

    def encode(self, value: Any) -> bytes:
        """Return the enveloped bytes of ``value``.

        Raises:
            PickleForbiddenError: If the value needs pickle and pickle is forbidden.
            SerializationError: If the value cannot be encoded at all.
        """
        if type(value) in _SCALARS and not (type(value) is int and not _fits(value)):
            return _MSGPACK + self._encoder.encode(value)
        try:
            plain = self._to_msgpack(value)
        except _NeedsPickle as need:
            if not self.allow_pickle:
                raise PickleForbiddenError(
                    f"{self.what} holds a {need.type_name} value, which needs pickle, and "
                    "pickle is forbidden; declare a msgspec-encodable type on the state "
                    "descriptor or stream, or allow pickle"
                ) from None
            return _PICKLE + PickleSerializer().encode(value)
        return _MSGPACK + self._encoder.encode(plain)

    def decode(self, data: bytes) -> Any:
        """Return the value in enveloped ``data``.

        Raises:
            PickleForbiddenError: If ``data`` is a pickle and pickle is forbidden.
            SerializationError: If ``data`` is not a valid envelope.
        """
        tag = data[:1]
        if tag == _MSGPACK:
            try:
                return self._decoder.decode(memoryview(data)[1:])
            except msgspec.DecodeError as exc:
                raise SerializationError(f"cannot decode {self.what}: {exc}") from exc
        if tag == _PICKLE:
            if not self.allow_pickle:
                raise PickleForbiddenError(
                    f"{self.what} was written with pickle, and pickle is forbidden here (a "
                    "job with allow_pickle=False, or a savepoint that declares the canonical "
                    "format); unpickling runs code: allow pickle only for data you trust"
                )
            return PickleSerializer().decode(memoryview(data)[1:].tobytes())
        raise SerializationError(
            f"cannot decode {self.what}: unknown envelope tag {tag!r}; the data is corrupt "
            "or was not written by an untyped serializer"
        )

    def encode_many(self, values: list[Any]) -> bytes | None:
        """Return the msgpack array of ``values`` (extension types, no envelope tag).

        One encoder call for the whole list: the batched form of :meth:`encode` used by
        keyed state snapshots. Read it back with :meth:`decode_many`.

        Returns:
            The bytes, or None if a value needs pickle (encode that value alone with
            :meth:`encode` to get the error that names its type).

        Raises:
            SerializationError: If msgpack cannot encode a value.
        """
        try:
            plain = [self._to_msgpack(v) for v in values]
        except _NeedsPickle:
            return None
        try:
            return self._encoder.encode(plain)
        except (TypeError, ValueError, OverflowError) as exc:
            raise SerializationError(f"cannot encode {self.what}: {exc}") from exc

    def decode_many(self, data: bytes | memoryview | msgspec.Raw) -> list[Any]:
        """Return the list that :meth:`encode_many` encoded in ``data``.

        Raises:
            SerializationError: If ``data`` is not such a msgpack array.
        """
        try:
            values = self._decoder.decode(data)
        except msgspec.DecodeError as exc:
            raise SerializationError(f"cannot decode {self.what}: {exc}") from exc
        if type(values) is not list:
            raise SerializationError(
                f"cannot decode {self.what}: expected an array of values, got "
                f"{type(values).__name__}; the data is corrupt"
            )
        return values

    def _to_msgpack(self, value: Any) -> Any:
        t = type(value)
        if t in _SCALARS:
            if t is int and not _fits(value):
                return msgspec.msgpack.Ext(
                    _EXT_INT, value.to_bytes((value.bit_length() + 8) // 8, "big", signed=True)
                )
            return value
        if t is list:
            return [self._to_msgpack(v) for v in value]
        if t is tuple:
            items = [self._to_msgpack(v) for v in value]
            return msgspec.msgpack.Ext(_EXT_TUPLE, self._encoder.encode(items))
        if t is dict:
            if all(type(k) in _SCALARS and (type(k) is not int or _fits(k)) for k in value):
                return {k: self._to_msgpack(v) for k, v in value.items()}
            flat: list[Any] = []
            for k, v in value.items():
                flat.append(self._to_msgpack(k))
                flat.append(self._to_msgpack(v))
            return msgspec.msgpack.Ext(_EXT_DICT, self._encoder.encode(flat))
        raise _NeedsPickle(t.__qualname__)

    def _ext_hook(self, code: int, data: memoryview) -> Any:
        if code == _EXT_TUPLE:
            return tuple(self._decoder.decode(data))
        if code == _EXT_INT:
            return int.from_bytes(data, "big", signed=True)
        if code == _EXT_DICT:
            flat = self._decoder.decode(data)
            return dict(zip(flat[::2], flat[1::2], strict=True))
        raise SerializationError(f"cannot decode {self.what}: unknown msgpack extension {code}")


class _NeedsPickle(Exception):
    def __init__(self, type_name: str) -> None:
        super().__init__(type_name)
        self.type_name = type_name


def _fits(value: int) -> bool:
    return _INT_MIN <= value <= _INT_MAX


def _type_name(tp: Any) -> str:
    return getattr(tp, "__qualname__", None) or repr(tp)


def serializer_for(
    type: Any | None, allow_pickle: bool = True, what: str = "value"
) -> Serializer[Any]:
    """Choose the serializer for values of a declared type, or of no declared type.

    Args:
        type: The declared type, or None. A type msgspec supports gives a
            :class:`MsgspecSerializer`; a plain class msgspec cannot encode gives a
            :class:`PickleSerializer` (if allowed); None gives an :class:`UntypedSerializer`.
        allow_pickle: Whether pickle may be used.
        what: Names the state or stream in error messages.

    Returns:
        A serializer for the values.

    Raises:
        PickleForbiddenError: If ``type`` needs pickle and pickle is forbidden.
    """
    if type is None:
        return UntypedSerializer(allow_pickle=allow_pickle, what=what)
    if _msgspec_supports(type):
        return MsgspecSerializer(type)
    if not allow_pickle:
        raise PickleForbiddenError(
            f"{what} is declared as {_type_name(type)}, which msgspec cannot encode, and "
            "pickle is forbidden; declare a msgspec-encodable type (e.g. a msgspec.Struct) "
            "on the state descriptor or stream, or allow pickle"
        )
    return PickleSerializer()


def _msgspec_supports(tp: Any) -> bool:
    try:
        info = msgspec.inspect.type_info(tp)
    except (TypeError, ValueError):
        return False
    return not isinstance(info, msgspec.inspect.CustomType)
