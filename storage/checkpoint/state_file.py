"""The state file of one subtask: a sequence of length-prefixed state frames.

In the asynchronous part of a checkpoint a subtask's checkpoint writer encodes its
operator state, keyed state (one frame per key group, so restore can pick the key groups
of a new range) and channel state into frames (:func:`encode_frame`) and passes the
encoded frames as chunks to :meth:`CheckpointStorage.write_state
<storage.checkpoint.storage.CheckpointStorage.write_state>`. Restore reads the file back
(:meth:`~storage.checkpoint.storage.CheckpointStorage.read_state`, which verifies size and
checksum) and walks it with :func:`iter_frames`.

Each frame is::

    length   4 bytes   big-endian length of the body
    body     length    msgpack of StateFrame

The format is versioned together with the checkpoint metadata
(:data:`~storage.checkpoint.metadata.METADATA_VERSION`): a metadata version names the
format of the state files it points to. Only msgspec decodes it, never pickle.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Final, TypeVar

import msgspec

from storage.checkpoint.errors import CorruptCheckpointError

__all__ = [
    "MAX_FRAME_SIZE",
    "NO_KEY_GROUP",
    "StateFrame",
    "decode_frames",
    "encode_frame",
    "iter_frames",
]

T = TypeVar("T")

NO_KEY_GROUP: Final = -1
"""The ``key_group`` of a frame that holds no keyed state."""

_LENGTH: Final = struct.Struct(">I")

MAX_FRAME_SIZE: Final = 2**32 - 1
"""The largest frame body the 4-byte length can describe."""


class StateFrame(msgspec.Struct, frozen=True, array_like=True):
    """One piece of a subtask's state.

    Attributes:
        kind: What the data is, e.g. ``"keyed"``, ``"operator"``, ``"input_channel"``,
            ``"output_channel"``, ``"source_split"``; the reader dispatches on it.
        operator_uid: The operator of the chain that owns the data.
        key_group: The key group of keyed data, or :data:`NO_KEY_GROUP`.
        data: The encoded state (e.g. a key group's blob).
    """

    kind: str
    operator_uid: str
    key_group: int
    data: bytes


_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder(StateFrame)


def encode_frame(frame: StateFrame) -> bytes:
    """Return the bytes of one frame: its length, then its msgpack body.

    Args:
        frame: The frame.

    Returns:
        The bytes to append to the state file.

    Raises:
        ValueError: If the body is larger than :data:`MAX_FRAME_SIZE`; split the data.
    """
    body = _encoder.encode(frame)
    if len(body) > MAX_FRAME_SIZE:
        raise ValueError(
            f"state frame of operator {frame.operator_uid!r} (key group {frame.key_group}) "
            f"is {len(body)} bytes; split its data into frames under {MAX_FRAME_SIZE} bytes"
        )
    return _LENGTH.pack(len(body)) + body


def iter_frames(data: bytes | bytearray | memoryview, path: str) -> Iterator[StateFrame]:
    """Yield the frames of a state file, in the order they were written.

    A generator: an error surfaces when the reader reaches the bad frame, after the good
    frames before it have been yielded.

    Args:
        data: The file's bytes (verified against its handle by ``read_state``).
        path: Where they were read from, for error messages.

    Yields:
        Each frame.

    Raises:
        CorruptCheckpointError: If a length or a body is truncated, or a body does not
            decode to a :class:`StateFrame`; names ``path`` and the frame's offset.
    """
    return decode_frames(data, path, _decoder)


def decode_frames(
    data: bytes | bytearray | memoryview, path: str, decoder: msgspec.msgpack.Decoder[T]
) -> Iterator[T]:
    """Yield the frames of a state file decoded by ``decoder``; see :func:`iter_frames`.

    A reader that wants frames of its own type (e.g. with the payload left as views into
    ``data``) passes its decoder.

    Raises:
        CorruptCheckpointError: If a length or a body is truncated, or a body does not
            decode; names ``path`` and the frame's offset.
    """
    view = memoryview(data)
    offset = 0
    end = len(view)
    while offset < end:
        if end - offset < _LENGTH.size:
            raise CorruptCheckpointError(
                path,
                f"truncated frame length at byte {offset} ({end - offset} of {_LENGTH.size} bytes)",
                "checkpoint state file",
            )
        (length,) = _LENGTH.unpack_from(view, offset)
        start = offset + _LENGTH.size
        if end - start < length:
            raise CorruptCheckpointError(
                path,
                f"truncated frame at byte {offset}: it needs {length} bytes, {end - start} remain",
                "checkpoint state file",
            )
        try:
            frame = decoder.decode(view[start : start + length])
        except msgspec.DecodeError as error:
            raise CorruptCheckpointError(
                path, f"frame at byte {offset} does not decode: {error}", "checkpoint state file"
            ) from error
        offset = start + length
        yield frame
