"""The RocksDB key layout: key group first, then the state key, then the map key.

Every row of a keyed state lives in the column family of its state, under::

    key group     2 bytes   big-endian
    key length    4 bytes   big-endian length of the encoded key
    key           n bytes   storage.key_hash.encode_key(key), the stable encoding
    map key       rest      encode_key(map key), map state only

With the key group first, the rows of one key group (and of a range of them) are
contiguous, so a rescale keeps its range by iterating from the first key group's prefix
to the last one's, and the rows of one key of a map state are contiguous too. The key
encoding is the one the stable hash uses: equal keys (``1``, ``1.0``, ``True``) get equal
bytes, in every process. :func:`decode_key` inverts it (an int-valued float comes back
as an int, which compares equal).
"""

from __future__ import annotations

import struct
from collections.abc import Hashable
from typing import Final

from storage.errors import StateError
from storage.key_hash import encode_key

__all__ = [
    "decode_key",
    "key_group_prefix",
    "row_prefix",
    "split_row",
]

_U16: Final = struct.Struct(">H")
_U32: Final = struct.Struct(">I")
_DOUBLE: Final = struct.Struct(">d")


def key_group_prefix(key_group: int) -> bytes:
    """Return the 2-byte prefix of every row of ``key_group``."""
    return _U16.pack(key_group)


def row_prefix(key_group: int, key: Hashable) -> bytes:
    """Return the row key of ``key`` (the prefix of its map rows, for map state)."""
    encoded = encode_key(key)
    return _U16.pack(key_group) + _U32.pack(len(encoded)) + encoded


def split_row(row: bytes) -> tuple[int, bytes, bytes]:
    """Split a row key into ``(key group, encoded key, encoded map key)``."""
    (length,) = _U32.unpack_from(row, 2)
    end = 6 + length
    return _U16.unpack_from(row)[0], row[6:end], row[end:]


def decode_key(data: bytes) -> Hashable:
    """Invert :func:`storage.key_hash.encode_key`.

    Raises:
        StateError: If ``data`` is not an encoded key.
    """
    value, end = _decode(memoryview(data), 0, len(data))
    if end != len(data):
        raise StateError(f"corrupt key in RocksDB state: {bytes(data)!r} has trailing bytes")
    return value


def _decode(view: memoryview, start: int, end: int) -> tuple[Hashable, int]:
    tag = view[start]
    payload = bytes(view[start + 1 : end])
    if tag == 0:
        return None, start + 1
    if tag == 1:
        return int.from_bytes(payload, "big", signed=True), end
    if tag == 2:
        return _DOUBLE.unpack(payload)[0], end
    if tag == 3:
        return payload.decode("utf-8", "surrogatepass"), end
    if tag == 4:
        return payload, end
    if tag == 5:
        items: list[Hashable] = []
        position = start + 1
        while position < end:
            (length,) = _U32.unpack_from(view, position)
            position += 4
            item, _ = _decode(view, position, position + length)
            items.append(item)
            position += length
        return tuple(items), end
    raise StateError(f"corrupt key in RocksDB state: unknown tag {tag} in {bytes(view)!r}")
