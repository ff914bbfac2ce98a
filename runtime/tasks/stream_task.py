"""``StreamTask``: a subtask that reads its input channels through an ``InputGate``.

Its loop, per turn: control messages first; then one element from the gate. A buffer
goes through the chain (``Task.process``); an event goes to ``handle_event``; the end
of a channel is noted by the gate, and when every channel has ended the loop returns
and ``Task.run`` ends the input. With nothing to read, the task sends its partial
buffers (an idle task holds no data back) and waits on its waker.
"""

from __future__ import annotations

from typing import Any

from actors import END_OF_CHANNEL, InputGate
from runtime.tasks.chain import OperatorChain
from runtime.tasks.task import Task


class StreamTask(Task):
    """A subtask with input channels.

    Args:
        name: ``"<chain name> (i/p)"``.
        chain: the operators this subtask runs.
        gate: its input channels.
        buffer_timeout: seconds a partial output buffer may wait.
    """

    def __init__(
        self, name: str, chain: OperatorChain, gate: InputGate[Any], *, buffer_timeout: float
    ) -> None:
        super().__init__(name, chain, buffer_timeout=buffer_timeout)
        self.gate = gate
        gate.waker = self.waker
        for channel in gate.channels:
            channel.set_consumer_waker(self.waker)

    async def run_loop(self) -> None:
        """Read the gate until every input channel ended."""
        gate = self.gate
        mailbox = self.mailbox
        process = self.process
        while True:
            if mailbox:
                self.poll_mailbox()
            polled = gate.poll()
            if polled is None:
                if gate.finished:
                    return
                await self.flush_all()
                if gate.finished:
                    return
                await self.wait_idle()
                continue
            index, item = polled
            if item.__class__ is list:
                await process(item)
            elif item is END_OF_CHANNEL:
                continue
            else:
                self.handle_event(index, item)

    def handle_event(self, channel: int, event: object) -> None:
        """Handle an event that arrived on input ``channel``. Extended by checkpointing."""
        raise TypeError(f"task {self.name!r}: unexpected event {event!r} on input {channel}")
