"""Frames over loopback TCP: one ``PeerLink`` per worker pair, channels multiplexed.

A frame is ``length (u32) | kind (u8) | channel (u32) | payload``. Kinds:

* ``DATA``: one item of a channel's data lane (a buffer of records or an ordered event);
  it spends one credit of the sender.
* ``PRIORITY``: one item of the priority lane (unaligned barrier, cancellation marker);
  it needs no credit and overtakes what the sender still queues.
* ``CREDIT``: the receiver grants ``n`` more items (payload: u32), Flink's credit-based
  flow control: a sender without credit queues locally, and its producer then meets a
  full channel, so backpressure crosses processes as it does in one.
* ``CLOSE``: the producer closed the channel (after everything it sent); payload: the
  newest checkpoint whose completion the producer's worker had been notified of (u32).

Payloads: ordered events and control messages are msgspec (``control.encode_message``);
buffers of user records are pickled (records are arbitrary Python objects, and msgspec
would turn their tuples into lists).

Bytes: a link counts, per channel, the whole frames (10-byte header and payload) of the
channel's items it wrote (``bytes_sent``) and read (``bytes_received``): ``DATA`` and
``PRIORITY`` frames, i.e. buffers of records and events (watermarks, barriers, end of
input). Flow control (``CREDIT``, ``CLOSE``) is not counted. These are Flink's
``numBytesOut`` / ``numBytesIn`` of the subtasks at either end.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import struct
from collections.abc import Callable
from typing import Any

from runtime.cluster.control import decode_message, encode_message, is_message

logger = logging.getLogger("weir.cluster")

DATA = 1
PRIORITY = 2
CREDIT = 3
CLOSE = 4

_HEADER = struct.Struct("!IBBI")  # length of the rest, kind, codec, channel
_CREDIT = struct.Struct("!I")
_FRAME_OVERHEAD = 4  # the length field, which the length does not count
_PICKLED = 0
_MSGSPEC = 1
_NONE = 2


def encode_item(item: Any) -> tuple[int, bytes]:
    """The codec and bytes of a channel item."""
    if item.__class__ is list:
        return _PICKLED, pickle.dumps(item, protocol=5)
    if is_message(item):
        return _MSGSPEC, encode_message(item)
    return _PICKLED, pickle.dumps(item, protocol=5)


def decode_item(codec: int, payload: bytes) -> Any:
    """The channel item of ``payload``."""
    if codec == _MSGSPEC:
        return decode_message(payload)
    return pickle.loads(payload)


def frame(kind: int, channel: int, item: Any = None) -> bytes:
    """One frame, ready for the socket."""
    if kind in (CREDIT, CLOSE):
        payload, codec = _CREDIT.pack(item or 0), _NONE
    else:
        codec, payload = encode_item(item)
    return _HEADER.pack(len(payload) + 6, kind, codec, channel) + payload


class PeerLink:
    """The connection between this worker and one other: writes frames, reads them.

    Args:
        reader, writer: the connected stream.
        on_frame: called with ``(kind, channel, item)`` for each frame read.

    Attributes:
        bytes_sent: per channel, bytes of the ``DATA`` and ``PRIORITY`` frames written.
        bytes_received: per channel, bytes of the ``DATA`` and ``PRIORITY`` frames read.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_frame: Callable[[int, int, Any], None],
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.on_frame = on_frame
        self.frames_sent = 0
        self.bytes_sent: dict[int, int] = {}
        self.bytes_received: dict[int, int] = {}

    def send(self, kind: int, channel: int, item: Any = None) -> None:
        """Write one frame. Never blocks: credits bound what is in flight."""
        data = frame(kind, channel, item)
        self.writer.write(data)
        self.frames_sent += 1
        if kind in (DATA, PRIORITY):
            sent = self.bytes_sent
            sent[channel] = sent.get(channel, 0) + len(data)

    async def read_forever(self) -> None:
        """Read frames until the peer closes the connection."""
        reader, header = self.reader, _HEADER
        size = header.size
        received = self.bytes_received
        while True:
            try:
                head = await reader.readexactly(size)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            length, kind, codec, channel = header.unpack(head)
            payload = await reader.readexactly(length - 6) if length > 6 else b""
            if kind in (CREDIT, CLOSE):
                item: Any = _CREDIT.unpack(payload)[0]
            else:
                item = decode_item(codec, payload)
                received[channel] = received.get(channel, 0) + length + _FRAME_OVERHEAD
            self.on_frame(kind, channel, item)

    def close(self) -> None:
        """Close the connection."""
        self.writer.close()
