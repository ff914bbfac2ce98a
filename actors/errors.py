"""Errors of the actor kernel.

The tree::

    ActorError                      base of everything raised by ``actors``
    ├── ChannelClosedError          send on a channel whose producer side was closed
    ├── WouldBlock                  a ``*_nowait`` call that cannot complete now
    │   ├── ChannelFullError        ``send_nowait`` on a full channel
    │   └── ChannelEmptyError       ``receive_nowait`` on an empty, open channel
    ├── EndOfChannel                ``receive`` on a closed and drained channel
    └── ActorFailedError            an actor of a supervised group failed; names the actor

User code never sees the ``WouldBlock`` family: the runtime turns them into waits.
"""

from __future__ import annotations


class ActorError(Exception):
    """Base class of the actor kernel's errors."""


class ChannelClosedError(ActorError):
    """The channel was closed by its producer; nothing more may be sent on it."""


class WouldBlock(ActorError):
    """A non-blocking call could not complete without waiting."""


class ChannelFullError(WouldBlock):
    """The channel's data lane holds ``capacity`` buffers; wait for room."""


class ChannelEmptyError(WouldBlock):
    """The channel holds nothing to receive right now."""


class EndOfChannel(ActorError):
    """The channel was closed and everything queued on it was received."""


class ActorFailedError(ActorError):
    """An actor of a supervised group raised; the group was cancelled.

    Attributes:
        actor: the name of the actor that failed first.
    """

    def __init__(self, actor: str, cause: BaseException) -> None:
        super().__init__(f"actor {actor!r} failed: {type(cause).__name__}: {cause}")
        self.actor = actor
        self.__cause__ = cause
