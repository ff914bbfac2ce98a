"""How source splits are stored in checkpoints: msgspec, with their type's name.

A split that is a ``msgspec.Struct`` (all built-in splits are) is stored as msgpack of
``[[type name, fields], ...]``: no pickle, readable offline as plain data, and turned
back into its type on restore (``module:QualName``, looked up among the modules already
imported: restoring never imports a module a file names, since importing runs code, and
the type must be a ``msgspec.Struct``). Any other split needs pickle, which a job can
forbid (``allow_pickle=False``): then the checkpoint says which split type to make a
``msgspec.Struct``.
"""

from __future__ import annotations

import sys
from typing import Any

import msgspec

from storage.errors import SerializationError
from storage.format.serializers import serializer_for

_MARK = b"WSPL1"
_encoder = msgspec.msgpack.Encoder()


def encode_splits(splits: list[Any], allow_pickle: bool) -> bytes:
    """Encode a reader's splits for a checkpoint."""
    if all(isinstance(split, msgspec.Struct) for split in splits):
        entries = [
            (f"{type(split).__module__}:{type(split).__qualname__}", msgspec.to_builtins(split))
            for split in splits
        ]
        return _MARK + _encoder.encode(entries)
    return serializer_for(None, allow_pickle=allow_pickle, what="source split").encode(splits)


def _type_of(name: str) -> Any:
    module, _, qualname = name.partition(":")
    target: Any = sys.modules.get(module)
    if target is None:
        raise SerializationError(
            f"cannot restore source splits of type {name!r}: module {module!r} is not "
            "imported; restore with the job that defines the source (restoring never "
            "imports a module a checkpoint names)"
        )
    for part in qualname.split("."):
        target = getattr(target, part, None)
    if not (isinstance(target, type) and issubclass(target, msgspec.Struct)):
        raise SerializationError(
            f"cannot restore source splits of type {name!r}: it is not a msgspec.Struct "
            "of an imported module; the checkpoint is corrupt or was not written by weir"
        )
    return target


def is_struct_splits(data: bytes) -> bool:
    """Whether ``data`` holds splits written as msgspec (not pickle)."""
    return data.startswith(_MARK)


def decode_splits_raw(data: bytes) -> list[tuple[str, Any]]:
    """``(type name, fields)`` of each split, without importing their types (offline)."""
    if not data.startswith(_MARK):
        raise ValueError("these splits were not written as msgspec; use decode_splits")
    return [(name, fields) for name, fields in msgspec.msgpack.decode(data[len(_MARK) :])]


def encode_splits_raw(entries: list[tuple[str, Any]]) -> bytes:
    """Encode ``(type name, fields)`` pairs as msgspec splits, without their types.

    The inverse of :func:`decode_splits_raw`: offline tools (the state processor) write
    splits they read as plain data, and restore turns them back into their types.
    """
    return _MARK + _encoder.encode([[name, fields] for name, fields in entries])


def decode_splits(data: bytes, allow_pickle: bool) -> list[Any]:
    """Decode splits written by ``encode_splits`` (importing their Struct types)."""
    if data.startswith(_MARK):
        entries = msgspec.msgpack.decode(data[len(_MARK) :])
        return [msgspec.convert(fields, _type_of(name)) for name, fields in entries]
    decoded = serializer_for(None, allow_pickle=allow_pickle, what="source split").decode(data)
    return list(decoded)
