"""The control plane: typed messages between the job master and its workers.

Every message is a msgspec Struct, sent in an ``Envelope`` (its type's name and its
encoded body) and encoded once. The checkpoint messages of ``runtime.checkpoint.events``
(triggers, acknowledgements with state handles, declines, notifications, end of input)
travel unchanged: the coordinator's ``SendToTasks`` reaches a task's mailbox through its
worker's control connection, and a task's report reaches the coordinator's mailbox the
same way. The cluster's own messages:

* worker -> master: ``Hello`` (its index and data port), ``Ready`` (subtasks built, peers
  connected), ``Heartbeat``, ``ToCoordinator``, ``WorkerDone`` (its subtasks ended, with
  the first error if one failed, and what collect sinks gathered), ``WorkerExiting``
  (told to exit: its final counters).
* master -> worker: ``Deploy`` (the attempt: the pickled graph and restore, the peers'
  ports), ``Start``, ``ToTasks``, ``Exit``.

Control frames are ``length (u32) | envelope``.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import msgspec

from runtime.checkpoint import events


class Envelope(msgspec.Struct, array_like=True):
    """A message's type name and its msgspec-encoded body."""

    kind: str
    body: msgspec.Raw


class Hello(msgspec.Struct, frozen=True):
    """A worker is up: its index and the port of its data server."""

    worker: int
    data_port: int
    pid: int


class Deploy(msgspec.Struct, frozen=True):
    """Build this attempt's subtasks: ``payload`` is the cloudpickled ``DeploySpec``."""

    attempt: int
    payload: bytes
    peer_ports: list[int]


class Ready(msgspec.Struct, frozen=True):
    """The worker built its subtasks and connected to its peers."""

    worker: int


class Start(msgspec.Struct, frozen=True):
    """Every worker is ready: run the subtasks."""


class Heartbeat(msgspec.Struct, frozen=True):
    """The worker is alive; ``metrics`` are its operators' record counters.

    Each entry of ``metrics``: ``(vertex id, subtask, operator index in the chain,
    records in, records out)``. Each entry of ``network``: ``(vertex id, subtask, bytes
    in, bytes out)``, what the subtask's data channels to other workers read and wrote
    (``network.PeerLink``), one entry for each subtask of the worker.
    """

    worker: int
    metrics: list[tuple[int, int, int, int, int]] = []
    network: list[tuple[int, int, int, int]] = []


class ToTask(msgspec.Struct, frozen=True):
    """A control message for subtask ``task`` (an encoded ``Envelope``)."""

    task: str
    message: bytes


class ToTasks(msgspec.Struct, frozen=True):
    """The control messages of one turn of the master's loop for one worker's subtasks.

    The worker hands them to the mailboxes in one go, as the coordinator does in one
    process: a subtask that ends after its notification cannot end the input of another
    subtask of the same worker before that one was notified too.
    """

    messages: list[ToTask]


class ToCoordinator(msgspec.Struct, frozen=True):
    """A report of a subtask for the checkpoint coordinator (an encoded ``Envelope``)."""

    message: bytes


class WorkerDone(msgspec.Struct, frozen=True):
    """The worker's subtasks ended; ``error`` is the first failure, if any.

    ``collected`` holds what collect sinks gathered (pickled dict name -> list).
    """

    worker: int
    error: str | None = None
    collected: bytes = b""
    metrics: list[tuple[int, int, int, int, int]] = []
    network: list[tuple[int, int, int, int]] = []


class WorkerExiting(msgspec.Struct, frozen=True):
    """The worker was told to exit: its final counters (as in ``Heartbeat``).

    Sent after ``Exit``, when every worker's subtasks have ended: a channel whose producer
    ended with items still waiting for credit sends them after its worker's
    ``WorkerDone``, so only now are its bytes out final.
    """

    worker: int
    metrics: list[tuple[int, int, int, int, int]] = []
    network: list[tuple[int, int, int, int]] = []


class WorkerFailed(msgspec.Struct, frozen=True):
    """The worker could not build its subtasks (e.g. the job's code does not import)."""

    worker: int
    error: str


class Exit(msgspec.Struct, frozen=True):
    """The attempt is over: exit."""


_TYPES: dict[str, type[msgspec.Struct]] = {}
for _module_types in (vars(events).values(), list(globals().values())):
    for _value in list(_module_types):
        if (
            isinstance(_value, type)
            and issubclass(_value, msgspec.Struct)
            and _value is not Envelope
        ):
            _TYPES[_value.__name__] = _value
_DECODERS = {name: msgspec.msgpack.Decoder(cls) for name, cls in _TYPES.items()}
_ENVELOPE = msgspec.msgpack.Decoder(Envelope)
_ENCODER = msgspec.msgpack.Encoder()
_LENGTH = struct.Struct("!I")


def is_message(item: Any) -> bool:
    """Whether ``item`` is a message this codec carries."""
    return type(item).__name__ in _TYPES and _TYPES[type(item).__name__] is type(item)


def encode_message(message: msgspec.Struct) -> bytes:
    """``message`` in its envelope."""
    return _ENCODER.encode(Envelope(type(message).__name__, msgspec.Raw(_ENCODER.encode(message))))


def decode_message(data: bytes) -> Any:
    """The message of an encoded envelope."""
    envelope = _ENVELOPE.decode(data)
    return _DECODERS[envelope.kind].decode(envelope.body)


def write_message(writer: asyncio.StreamWriter, message: msgspec.Struct) -> None:
    """Write one length-prefixed control message. Never blocks."""
    data = encode_message(message)
    writer.write(_LENGTH.pack(len(data)) + data)


async def read_message(reader: asyncio.StreamReader) -> Any:
    """Read one control message; None when the connection closed."""
    try:
        head = await reader.readexactly(_LENGTH.size)
        data = await reader.readexactly(_LENGTH.unpack(head)[0])
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    return decode_message(data)
