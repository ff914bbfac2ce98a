"""``GatedSource``: a source that holds back until the test says so.

Tests that need a job to be in a known state (still running when it is cancelled, data
queued in a channel when a barrier arrives, a checkpoint taken after exactly ``n``
records) must not depend on how fast the machine is. ``GatedSource(source, gate)``
wraps any ``Source``; its readers read through the wrapped readers until the
``SourceGate`` says to hold, and then return ``[]`` (nothing available yet) until the
test opens the gate. A holding source subtask stays responsive: it still takes
checkpoints, savepoints and cancellation, with its reader positions exactly where the
hold began. The gate holds

* after ``hold_after`` records over all of the source's readers in this run (None:
  no such limit), the batch that reaches it cut to size;
* and, with ``hold_at_end``, when a reader reached the end of its input (so that a
  bounded source never ends while the gate is shut: a job cannot finish before the
  test let it).

The test opens the gate with ``gate.open()``; after that the readers read on (and end)
as the wrapped ones do. A gate made with ``blocking=True`` does not return ``[]``: the
holding read waits until the gate opens, so the source subtask handles nothing
meanwhile (a checkpoint trigger waits in its mailbox: its barrier comes only after the
test opened the gate), and then returns ``[]`` once, so that the subtask handles its
control messages before it reads on.

What the test can wait for (each on the job's event loop, none polls):

* ``await gate.wait_held(readers)``: ``readers`` readers have held back; every record
  they read before has been handed to the source's chain;
* ``await gate.wait_flushed(readers)``: ``readers`` readers have held back twice (not
  for a blocking gate). A source subtask whose read returned ``[]`` sends its partial
  output buffers before it reads again, so every record read before the hold is then
  in the output channels (or in a downstream subtask);
* ``await gate.wait_snapshots(readers)``: ``readers`` readers have snapshotted their
  positions for a checkpoint since the gate was made. A source subtask emits its
  barrier in the same step as the snapshot, so the barriers are in its output channels
  by then.

A ``SourceGate`` is shared by every copy of the source and every attempt (its
``__deepcopy__`` returns itself), and belongs to one event loop: ``open`` and the reads
run on the loop of the job.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Sequence
from typing import Any

from runtime.errors import ConfigError


class SourceGate:
    """When a ``GatedSource``'s readers hold back, and the switch that lets them go on.

    Args:
        hold_after: records the source may emit in this run (over all of its readers)
            before it holds; None: no limit.
        hold_at_end: hold a reader that reached the end of its input instead of ending.

    Attributes:
        emitted: records handed out so far by the readers.
        is_open: whether the test opened the gate.
        holds: per reader, times it held back because of the gate.
        snapshots: per reader, times it snapshotted its position.
        blocking: whether a holding read waits for the gate instead of returning ``[]``.

    Raises:
        ConfigError: ``hold_after`` is not None or an int >= 0.
    """

    def __init__(
        self,
        hold_after: int | None = None,
        *,
        hold_at_end: bool = False,
        blocking: bool = False,
    ) -> None:
        if hold_after is not None and (
            isinstance(hold_after, bool) or not isinstance(hold_after, int) or hold_after < 0
        ):
            raise ConfigError(
                f"SourceGate: hold_after must be None or an int >= 0, got {hold_after!r}"
            )
        self.hold_after = hold_after
        self.hold_at_end = hold_at_end
        self.blocking = blocking
        self.emitted = 0
        self.is_open = False
        self.holds: dict[int, int] = {}
        self.snapshots: dict[int, int] = {}
        self._opened = asyncio.Event()
        self._changed = asyncio.Event()

    def __deepcopy__(self, memo: dict[int, Any]) -> SourceGate:
        # Shared by every copy of the source, over subtasks and attempts.
        return self

    def __repr__(self) -> str:
        state = "open" if self.is_open else "shut"
        return f"SourceGate({state}, emitted={self.emitted}, hold_after={self.hold_after})"

    def open(self) -> None:
        """Let the readers read on (and end). Does not block."""
        self.is_open = True
        self._opened.set()

    @property
    def held(self) -> bool:
        """Whether a reader has held back since the gate was made."""
        return bool(self.holds)

    async def _wait_for(self, counts: dict[int, int], readers: int, times: int) -> None:
        while sum(n >= times for n in counts.values()) < readers:
            self._changed.clear()
            await self._changed.wait()

    async def wait_held(self, readers: int = 1) -> None:
        """Wait until ``readers`` readers held back (each emitted all it read before)."""
        await self._wait_for(self.holds, readers, 1)

    async def wait_flushed(self, readers: int = 1) -> None:
        """Wait until ``readers`` readers held back twice: their output buffers were sent.

        Raises:
            ConfigError: the gate is blocking (a blocked reader holds only once).
        """
        if self.blocking:
            raise ConfigError("SourceGate.wait_flushed: a blocking gate holds a reader once")
        await self._wait_for(self.holds, readers, 2)

    async def wait_snapshots(self, readers: int = 1) -> None:
        """Wait until ``readers`` readers snapshotted their positions (barriers emitted)."""
        await self._wait_for(self.snapshots, readers, 1)

    def _note(self, counts: dict[int, int], reader: int) -> None:
        counts[reader] = counts.get(reader, 0) + 1
        self._changed.set()

    def allowance(self, wanted: int) -> int:
        """How many of ``wanted`` records a reader may read now (0: hold)."""
        if self.is_open or self.hold_after is None:
            return wanted
        return max(0, min(wanted, self.hold_after - self.emitted))

    async def hold(self, reader: int) -> list[Any]:
        """Hold reader ``reader`` back: note it, wait if blocking; the ``[]`` to return."""
        self._note(self.holds, reader)
        if self.blocking:
            await self._opened.wait()
        return []

    def snapshotted(self, reader: int) -> None:
        """Note that reader ``reader`` snapshotted its position."""
        self._note(self.snapshots, reader)


class GatedReader:
    """A reader that reads through ``reader`` while ``gate`` allows it."""

    def __init__(self, reader: Any, gate: SourceGate, subtask_index: int) -> None:
        self.reader = reader
        self.gate = gate
        self.subtask_index = subtask_index
        self._ended = False

    def add_splits(self, splits: Sequence[Any]) -> None:
        """Give the splits to the wrapped reader."""
        self.reader.add_splits(splits)

    async def read(self, max_records: int) -> list[Any] | None:
        """The wrapped reader's next batch, cut to what the gate allows; ``[]`` to hold."""
        gate = self.gate
        if not self._ended:
            allowed = gate.allowance(max_records)
            if allowed == 0:
                return await gate.hold(self.subtask_index)
            result = self.reader.read(allowed)
            batch: list[Any] | None = await result if inspect.isawaitable(result) else result
            if batch is not None:
                gate.emitted += len(batch)
                return batch
            self._ended = True
        if gate.hold_at_end and not gate.is_open:
            return await gate.hold(self.subtask_index)
        return None

    def snapshot_state(self) -> list[Any]:
        """The wrapped reader's splits and positions (noted by the gate)."""
        splits: list[Any] = self.reader.snapshot_state()
        self.gate.snapshotted(self.subtask_index)
        return splits

    def close(self) -> None:
        """Close the wrapped reader."""
        self.reader.close()


class GatedSource:
    """``source``, whose readers hold back when ``gate`` says so (see the module docstring).

    Its splits and their positions are the wrapped source's: a job may be restored from
    a checkpoint of the same job without the gate, and the other way round.

    Args:
        source: the source to wrap (any ``runtime.tasks.source.Source``).
        gate: when to hold, and the switch to go on.

    Raises:
        ConfigError: ``source`` is not a source, or ``gate`` not a ``SourceGate``.
    """

    def __init__(self, source: Any, gate: SourceGate) -> None:
        for method in ("create_enumerator", "create_reader"):
            if not callable(getattr(source, method, None)):
                raise ConfigError(
                    f"GatedSource: {type(source).__name__} is not a Source (it has no {method}())"
                )
        if not isinstance(gate, SourceGate):
            raise ConfigError(f"GatedSource: gate must be a SourceGate, got {gate!r}")
        self.source = source
        self.gate = gate
        self.records_per_second = getattr(source, "records_per_second", None)
        limit = getattr(source, "max_source_parallelism", None)
        if limit is not None:
            self.max_source_parallelism = limit

    def create_enumerator(self) -> Any:
        """The wrapped source's enumerator."""
        return self.source.create_enumerator()

    def create_reader(self, subtask_index: int) -> GatedReader:
        """The wrapped source's reader for ``subtask_index``, behind the gate."""
        return GatedReader(self.source.create_reader(subtask_index), self.gate, subtask_index)
