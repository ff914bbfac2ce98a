"""``RecordWriter``: a subtask's output towards one consumer operator.

The tail of an operator chain hands its output records to one writer per outgoing edge.
The writer partitions them (``runtime.tasks.partitioning``), collects them into buffers of
``buffer_size`` records per channel, and queues full buffers for sending. Sending is the
task's job (``StreamTask.drain_outputs``): it calls ``try_flush`` and, when a channel is
full, waits on its waker (backpressure) while still reacting to control messages.

What the writer holds is bounded: one partial buffer per channel plus the full buffers
made from one input buffer of the task. ``pending_records`` counts them, and an unaligned
checkpoint records them, with the channel's queued buffers, as output channel state.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from actors import Channel
from runtime.tasks.partitioning import Partitioning, PartitionKind
from storage import KeyGroupAssigner

Buffer = list[Any]


class RecordWriter:
    """Partitions records into per-channel buffers and queues full ones for sending.

    Args:
        channels: the output channels, by consumer subtask index.
        partitioning: how records choose a channel.
        buffer_size: records per buffer.
        max_parallelism: key groups, for ``KEY_GROUP`` partitioning.
        subtask_index: this producer's index (seeds rebalance and shuffle).
        key_error: wraps a failing key selector call ``(error, record) -> Exception``.
    """

    def __init__(
        self,
        channels: Sequence[Channel[Any]],
        partitioning: Partitioning,
        buffer_size: int,
        max_parallelism: int,
        subtask_index: int,
        key_error: Callable[[BaseException, Any], BaseException],
    ) -> None:
        self.channels = list(channels)
        self.partitioning = partitioning
        self.buffer_size = buffer_size
        n = len(self.channels)
        self._n = n
        self._partial: list[Buffer] = [[] for _ in range(n)]
        self._full: list[deque[Buffer]] = [deque() for _ in range(n)]
        self._full_count = 0
        self._partial_since: float | None = None
        self._next = subtask_index % n if n else 0
        self._random = random.Random(subtask_index)
        self._key_error = key_error
        self._key_selector = partitioning.key_selector
        self._assigner = KeyGroupAssigner(max_parallelism, n) if n else None
        kind = partitioning.kind
        self._single = False
        self.write: Callable[[list[Any]], None]
        if kind is PartitionKind.KEY_GROUP and n > 1:
            self.write = self._write_keyed
        elif kind is PartitionKind.BROADCAST and n > 1:
            self.write = self._write_broadcast
        else:
            self.write = self._write_single
            self._single = True

    @property
    def has_full_buffers(self) -> bool:
        """Whether full buffers wait to be sent."""
        return self._full_count > 0

    @property
    def partial_since(self) -> float | None:
        """``time.monotonic()`` when the oldest partial buffer got its first record."""
        return self._partial_since

    def pending_records(self) -> int:
        """Records held by the writer (partial and full buffers), all channels."""
        total = sum(len(b) for b in self._partial)
        for queue in self._full:
            total += sum(len(b) for b in queue if b.__class__ is list)
        return total

    def pending_buffers(self, channel: int) -> list[Buffer]:
        """The buffers of ``channel`` not yet handed to it, oldest first (copies of lists).

        Queued events (watermarks) are not buffers: they are not channel state.
        """
        out = [list(b) for b in self._full[channel] if b.__class__ is list]
        if self._partial[channel]:
            out.append(list(self._partial[channel]))
        return out

    # -- partitioning ---------------------------------------------------------------------
    # ``write(records)`` (set per instance in __init__ to the partitioner's method)
    # partitions records into buffers; it never blocks: call ``try_flush`` after.

    def _target(self) -> int:
        kind = self.partitioning.kind
        if kind is PartitionKind.FORWARD or self._n == 1:
            return 0
        if kind is PartitionKind.SHUFFLE:
            return self._random.randrange(self._n)
        target = self._next
        self._next = target + 1 if target + 1 < self._n else 0
        return target

    def _write_single(self, records: list[Any]) -> None:
        # Forward, rebalance and shuffle move whole buffers; with one channel, keyed and
        # broadcast edges do too. Rebalance and shuffle pick a channel per full buffer.
        if not records:
            return
        size = self.buffer_size
        partial = self._partial[0]
        if not partial and self._partial_since is None:
            self._partial_since = time.monotonic()
        partial.extend(records)
        if len(partial) >= size:
            self._partial[0] = []
            if len(partial) == size:
                self._queue_full(self._target(), partial)
            else:
                for start in range(0, len(partial) - size + 1, size):
                    self._queue_full(self._target(), partial[start : start + size])
                rest = len(partial) % size
                if rest:
                    self._partial[0] = partial[len(partial) - rest :]
            if not self._partial[0]:
                self._partial_since = None

    def _write_broadcast(self, records: list[Any]) -> None:
        if not records:
            return
        if self._partial_since is None:
            self._partial_since = time.monotonic()
        size = self.buffer_size
        for channel in range(self._n):
            partial = self._partial[channel]
            partial.extend(records)
            if len(partial) >= size:
                self._partial[channel] = []
                for start in range(0, len(partial), size):
                    chunk = partial[start : start + size]
                    if len(chunk) == size:
                        self._queue_full(channel, chunk)
                    else:
                        self._partial[channel] = chunk
        if not any(self._partial):
            self._partial_since = None

    def _write_keyed(self, records: list[Any]) -> None:
        if not records:
            return
        if self._partial_since is None:
            self._partial_since = time.monotonic()
        key_selector = self._key_selector
        assert key_selector is not None and self._assigner is not None
        channel_of = self._assigner.channel
        partial = self._partial
        size = self.buffer_size
        record = None
        try:
            for record in records:
                channel = channel_of(key_selector(record))
                buffer = partial[channel]
                buffer.append(record)
                if len(buffer) >= size:
                    partial[channel] = []
                    self._queue_full(channel, buffer)
        except Exception as error:
            raise self._key_error(error, record) from error
        if not any(partial):
            self._partial_since = None

    def _queue_full(self, channel: int, buffer: Buffer) -> None:
        self._full[channel].append(buffer)
        self._full_count += 1

    def restore_pending(self, channel: int, records: list[Any]) -> None:
        """Queue restored output channel state for ``channel``, ahead of any new output."""
        size = self.buffer_size
        for start in range(0, len(records), size):
            self._queue_full(channel, list(records[start : start + size]))

    # -- sending --------------------------------------------------------------------------

    def seal_partial(self) -> None:
        """Turn every non-empty partial buffer into a full one (buffer timeout, end, barrier)."""
        single = self._single
        for channel, partial in enumerate(self._partial):
            if partial:
                self._partial[channel] = []
                self._queue_full(self._target() if single else channel, partial)
        self._partial_since = None

    def try_flush(self) -> bool:
        """Hand queued full buffers to their channels while they have room. Never blocks.

        Returns:
            True if nothing is left queued, False if some channel is full.
        """
        if not self._full_count:
            return True
        done = True
        for channel, queue in enumerate(self._full):
            if not queue:
                continue
            target = self.channels[channel]
            while queue:
                if not target.try_send(queue[0]):
                    done = False
                    break
                queue.popleft()
                self._full_count -= 1
        return done

    def force_flush(self) -> None:
        """Hand every queued buffer to its channel even if full (before an ordered event)."""
        self.seal_partial()
        for channel, queue in enumerate(self._full):
            target = self.channels[channel]
            while queue:
                target.force_send(queue.popleft())
                self._full_count -= 1

    def emit_event(self, event: object) -> None:
        """Queue an ordered event (a watermark) on every channel, after the data so far.

        Unlike ``broadcast_event`` it is sent like a buffer: a full channel holds it
        back (backpressure), and ``try_flush`` sends it in order.
        """
        self.seal_partial()
        for channel in range(self._n):
            self._queue_full(channel, event)  # type: ignore[arg-type]

    def broadcast_event(self, event: object) -> None:
        """Send an ordered event on every channel, after all data written so far."""
        self.force_flush()
        for channel in self.channels:
            channel.force_send(event)

    def close(self) -> None:
        """Close every channel (end of input), after flushing what is queued."""
        self.force_flush()
        for channel in self.channels:
            channel.close()
