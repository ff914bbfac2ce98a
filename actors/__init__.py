"""The actor kernel of Weir: actors, bounded two-lane channels, input gates, supervision.

This package knows nothing of streams, records or checkpoints; ``runtime`` builds those
on top of it. Everything here runs on one asyncio event loop thread.
"""

from __future__ import annotations

from actors.actor import Actor, ActorState, ActorStatistics, Mailbox
from actors.channel import EMPTY, END_OF_CHANNEL, Channel, ChannelStatistics
from actors.errors import (
    ActorError,
    ActorFailedError,
    ChannelClosedError,
    ChannelEmptyError,
    ChannelFullError,
    EndOfChannel,
    WouldBlock,
)
from actors.input_gate import InputGate
from actors.supervisor import Supervisor
from actors.waker import Waker

__all__ = [
    "EMPTY",
    "END_OF_CHANNEL",
    "Actor",
    "ActorError",
    "ActorFailedError",
    "ActorState",
    "ActorStatistics",
    "Channel",
    "ChannelClosedError",
    "ChannelEmptyError",
    "ChannelFullError",
    "ChannelStatistics",
    "EndOfChannel",
    "InputGate",
    "Mailbox",
    "Supervisor",
    "Waker",
    "WouldBlock",
]
