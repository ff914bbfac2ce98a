"""The stable key hash: the function that sends a key to its key group.

Keys are hashed to key groups when records are partitioned (upstream), and again when
keyed state is snapshotted and restored (downstream). Both must agree in every process
and on every machine, today and after an upgrade, or a restored checkpoint would hand a
key's state to a subtask that never sees the key. Python's ``hash()`` cannot be used: it is
salted per process for ``str`` and ``bytes``.

Compatibility contract (checkpoints depend on it; change it only with a new format
version). ``stable_hash(key)`` is a 32-bit unsigned integer computed as follows.

* An ``int`` key ``k`` with ``-2**63 <= k < 2**63`` (also ``bool``, an integral ``float``
  or an ``int`` subclass equal to such a ``k``) takes the arithmetic fast path:
  with ``lo = k mod 2**32`` and ``hi = (k >> 32) mod 2**32`` (arithmetic shift), the hash
  is ``fmix32(lo XOR ((hi * 0x9E3779B1) mod 2**32) XOR 0x9E3779B9)``, where ``fmix32`` is
  MurmurHash3's 32-bit finalizer.
* Every other key is turned into a canonical byte string ``enc(key)`` and hashed as
  ``fmix32(zlib.crc32(enc(key)))`` (MurmurHash3's 32-bit finalizer, for spread):

  ====================  ====  ==========================================================
  key                   tag   payload after the tag byte
  ====================  ====  ==========================================================
  ``None``              0x00  nothing
  ``int``               0x01  two's complement, big-endian, ``(k.bit_length() + 8) // 8`` bytes
  ``float``             0x02  IEEE 754 binary64, big-endian (NaN is refused, see below)
  ``str``               0x03  UTF-8 (lone surrogates pass through)
  ``bytes``             0x04  the bytes
  ``tuple``             0x05  per element: 4-byte big-endian length of ``enc(e)``, ``enc(e)``
  ====================  ====  ==========================================================

Keys that Python considers equal hash equally, because the runtime keeps keyed state in
dicts and caches key groups in dicts, which merge equal keys: ``True`` and ``1.0`` are
encoded as the ``int`` ``1`` (so is ``(True,)`` as ``(1,)``), and ``-0.0`` as ``0``. Keys
that are not equal are told apart by the tag: ``1``, ``"1"``, ``b"1"`` and ``1.5`` are
encoded differently. Subclasses of the supported types (``IntEnum``, ``StrEnum``, a
``NamedTuple``) are encoded as their base type, which is what they compare equal to.
Any other type raises :class:`~storage.errors.KeyEncodingError`, and so does a NaN
(alone or inside a tuple): a NaN is not equal to itself, so keyed state could never find
its key again (a dict of heap state would keep one entry per NaN object, RocksDB one
entry for all of them).

:func:`stable_hashes` computes the same hashes for many keys at once (the asynchronous
part of a keyed state snapshot hashes every key). When the keys are all ``int`` (64-bit),
all ``str`` or all ``bytes`` it does the arithmetic on 64-bit lanes of one large Python
int, so the per-key cost is a few C-level conversions instead of a Python call.
"""

from __future__ import annotations

import functools
import struct
import sys
import zlib
from array import array
from collections.abc import Sequence
from itertools import repeat
from typing import Final, cast

from storage.errors import KeyEncodingError

__all__ = ["SUPPORTED_KEY_TYPES", "encode_key", "stable_hash", "stable_hashes"]

SUPPORTED_KEY_TYPES: Final = "None, bool, int, float, str, bytes and tuples of these"

_M32: Final = 0xFFFFFFFF
_INT_SEED: Final = 0x9E3779B9
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1

_TAG_NONE: Final = b"\x00"
_TAG_INT: Final = b"\x01"
_TAG_FLOAT: Final = b"\x02"
_TAG_STR: Final = b"\x03"
_TAG_BYTES: Final = b"\x04"
_TAG_TUPLE: Final = b"\x05"

# crc32 of a tag byte, used as the running crc so that str and bytes keys are hashed
# without concatenating the tag (zlib.crc32(b, crc32(tag)) == zlib.crc32(tag + b)).
_CRC_STR: Final = zlib.crc32(_TAG_STR)
_CRC_BYTES: Final = zlib.crc32(_TAG_BYTES)
_pack_double = struct.Struct(">d").pack
_pack_u32 = struct.Struct(">I").pack


def _fmix32(h: int) -> int:
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _M32
    return h ^ (h >> 16)


def _hash_int64(k: int) -> int:
    h = (k & _M32) ^ ((((k >> 32) & _M32) * 0x9E3779B1) & _M32) ^ _INT_SEED
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _M32
    return h ^ (h >> 16)


def _int_payload(k: int) -> bytes:
    return k.to_bytes((k.bit_length() + 8) // 8, "big", signed=True)


def encode_key(key: object) -> bytes:
    """Return the canonical byte encoding of ``key`` (see the module docstring).

    Args:
        key: A key of a supported type.

    Returns:
        The tag byte followed by the payload.

    Raises:
        KeyEncodingError: If ``key`` (or an element of it) has an unsupported type.
    """
    if type(key) is str:
        return _TAG_STR + key.encode("utf-8", "surrogatepass")
    if type(key) is int:
        return _TAG_INT + _int_payload(key)
    if type(key) is tuple:
        return _encode_tuple(key)
    if type(key) is bytes:
        return _TAG_BYTES + key
    if key is None:
        return _TAG_NONE
    if type(key) is bool:
        return _TAG_INT + (b"\x01" if key else b"\x00")
    if type(key) is float:
        return _encode_float(key)
    return _encode_subclass(key)


def _encode_float(x: float) -> bytes:
    if x.is_integer():
        return _TAG_INT + _int_payload(int(x))
    if x != x:
        raise KeyEncodingError(
            "cannot use NaN as a key (or inside a tuple key): NaN is not equal to itself, "
            "so its keyed state could never be found again; map NaN to another value "
            "(e.g. None) in key_by"
        )
    return _TAG_FLOAT + _pack_double(x)


def _encode_tuple(key: tuple[object, ...]) -> bytes:
    parts = [_TAG_TUPLE]
    for element in key:
        encoded = encode_key(element)
        parts.append(_pack_u32(len(encoded)))
        parts.append(encoded)
    return b"".join(parts)


def _encode_subclass(key: object) -> bytes:
    # Subclasses compare equal to their base value, so they must hash like it.
    if isinstance(key, bool):
        return encode_key(bool(key))
    if isinstance(key, int):
        return encode_key(int(key))
    if isinstance(key, float):
        return encode_key(float(key))
    if isinstance(key, str):
        return encode_key(str(key))
    if isinstance(key, bytes):
        return encode_key(bytes(key))
    if isinstance(key, tuple):
        return _encode_tuple(key)
    raise KeyEncodingError(
        f"cannot hash key {key!r} of type {type(key).__qualname__!r}: supported key types "
        f"are {SUPPORTED_KEY_TYPES}; turn the key into one of them in key_by"
    )


def stable_hash(key: object) -> int:
    """Hash ``key`` to a 32-bit unsigned integer that is the same in every process.

    Args:
        key: None, bool, int, float, str, bytes, or a tuple of these (nested allowed).

    Returns:
        An integer in ``[0, 2**32)``; equal keys give equal hashes.

    Raises:
        KeyEncodingError: If the key, or an element of it, has an unsupported type.
    """
    # The fast paths inline fmix32 and use literals (a call or a global lookup costs as
    # much as the arithmetic). Keep them equal to _hash_int64 and _fmix32.
    if type(key) is str:
        h = zlib.crc32(key.encode("utf-8", "surrogatepass"), _CRC_STR)
    elif type(key) is int and -0x8000000000000000 <= key <= 0x7FFFFFFFFFFFFFFF:
        h = (
            (key & 0xFFFFFFFF)
            ^ ((((key >> 32) & 0xFFFFFFFF) * 0x9E3779B1) & 0xFFFFFFFF)
            ^ 0x9E3779B9
        )
    elif type(key) is bytes:
        h = zlib.crc32(key, _CRC_BYTES)
    else:
        return _hash_slow(key)
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    return h ^ (h >> 16)


def _hash_slow(key: object) -> int:
    encoded = encode_key(key)
    if encoded[0] == 1:
        # bool, integral floats and int subclasses hash as the int they equal.
        value = int.from_bytes(encoded[1:], "big", signed=True)
        if _INT64_MIN <= value <= _INT64_MAX:
            return _hash_int64(value)
    return _fmix32(zlib.crc32(encoded))


# Bulk hashing works on lanes of 64 bits of one Python int: lane i holds the 32-bit value
# of key i in its low half. Products of a lane by a 32-bit constant fit in 64 bits, and
# after each step the high halves are masked off, so no carry or shift crosses a lane.
_LANE_BYTES: Final = 8
_BULK_SLICE: Final = 8192
_BULK_OK: Final = array("q").itemsize == _LANE_BYTES and array("Q").itemsize == _LANE_BYTES
_BYTEORDER: Final = sys.byteorder
_INT_TYPES: Final = frozenset({int, bool})


@functools.lru_cache(maxsize=8)
def _lane_ones(lanes: int) -> int:
    """Return the int whose ``lanes`` lanes each hold 1 (the same in either byte order)."""
    return int.from_bytes((b"\x01" + bytes(_LANE_BYTES - 1)) * lanes, "little")


def _lanes_fmix32(h: int, low: int) -> int:
    h ^= (h >> 16) & low
    h = (h * 0x85EBCA6B) & low
    h ^= (h >> 13) & low
    h = (h * 0xC2B2AE35) & low
    return h ^ ((h >> 16) & low)


def _bulk_lanes(keys: Sequence[object], ones: int) -> int | None:
    """Return the hashes of ``keys`` as lanes, or None if the keys need the slow path."""
    kinds = set(map(type, keys))
    low = ones * 0xFFFFFFFF
    if kinds <= _INT_TYPES:
        try:
            packed = array("q", cast("Sequence[int]", keys))
        except OverflowError:  # an int beyond 64 bits: hashed through its encoding
            return None
        x = int.from_bytes(packed.tobytes(), _BYTEORDER)
        h = (x & low) ^ ((((x >> 32) & low) * 0x9E3779B1) & low) ^ (ones * _INT_SEED)
    elif kinds == {str}:
        try:
            encoded = list(map(str.encode, keys, repeat("utf-8"), repeat("surrogatepass")))  # type: ignore[arg-type]
        except UnicodeEncodeError:
            return None
        crcs = array("Q", map(zlib.crc32, encoded, repeat(_CRC_STR)))
        h = int.from_bytes(crcs.tobytes(), _BYTEORDER)
    elif kinds == {bytes}:
        crcs = array("Q", map(zlib.crc32, keys, repeat(_CRC_BYTES)))  # type: ignore[arg-type]
        h = int.from_bytes(crcs.tobytes(), _BYTEORDER)
    else:
        return None
    return _lanes_fmix32(h, low)


def stable_hashes(keys: Sequence[object], modulus: int | None = None) -> list[int]:
    """Return ``[stable_hash(key) % modulus for key in keys]``, computed in bulk.

    Equal to hashing each key with :func:`stable_hash` (a test holds it to that), but
    several times faster when the keys are all ``int``, all ``str`` or all ``bytes``.
    Other keys (tuples, floats, mixed types) are hashed one by one.

    Args:
        keys: The keys.
        modulus: Reduce each hash modulo this (e.g. ``max_parallelism``); None keeps
            the 32-bit hashes.

    Returns:
        One hash per key, in the order of ``keys``.

    Raises:
        KeyEncodingError: If a key has a type the stable hash cannot encode.
    """
    if not _BULK_OK or len(keys) < 16:
        hashes = list(map(stable_hash, keys))
        return hashes if modulus is None else [h % modulus for h in hashes]
    power_of_two = modulus is not None and modulus & (modulus - 1) == 0 and modulus <= 1 << 32
    result: list[int] = []
    for start in range(0, len(keys), _BULK_SLICE):
        part = keys[start : start + _BULK_SLICE]
        ones = _lane_ones(len(part))
        lanes = _bulk_lanes(part, ones)
        if lanes is None:
            hashes = list(map(stable_hash, part))
            result.extend(hashes if modulus is None else [h % modulus for h in hashes])
            continue
        if power_of_two:
            lanes &= ones * (modulus - 1)  # type: ignore[operator]
        unpacked = array("Q")
        unpacked.frombytes(lanes.to_bytes(_LANE_BYTES * len(part), _BYTEORDER))
        if modulus is None or power_of_two:
            result.extend(unpacked.tolist())
        else:
            result.extend([h % modulus for h in unpacked])
    return result
