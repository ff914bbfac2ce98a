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
as the wrapped ones do. ``await gate.wait_held()`` returns once a reader has held back:
every record before the hold has been handed to the source's chain by then.

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
        holds: times a reader returned ``[]`` because of the gate.

    Raises:
        ConfigError: ``hold_after`` is not None or an int >= 0.
    """

    def __init__(self, hold_after: int | None = None, *, hold_at_end: bool = False) -> None:
        if hold_after is not None and (
            isinstance(hold_after, bool) or not isinstance(hold_after, int) or hold_after < 0
        ):
            raise ConfigError(
                f"SourceGate: hold_after must be None or an int >= 0, got {hold_after!r}"
            )
        self.hold_after = hold_after
        self.hold_at_end = hold_at_end
        self.emitted = 0
        self.is_open = False
        self.holds = 0
        self._held = asyncio.Event()

    def __deepcopy__(self, memo: dict[int, Any]) -> SourceGate:
        # Shared by every copy of the source, over subtasks and attempts.
        return self

    def __repr__(self) -> str:
        state = "open" if self.is_open else "shut"
        return f"SourceGate({state}, emitted={self.emitted}, hold_after={self.hold_after})"

    def open(self) -> None:
        """Let the readers read on (and end). Does not block."""
        self.is_open = True

    @property
    def held(self) -> bool:
        """Whether a reader has held back since the gate was made."""
        return self._held.is_set()

    async def wait_held(self) -> None:
        """Wait until a reader holds back (every record before the hold was emitted)."""
        await self._held.wait()

    def allowance(self, wanted: int) -> int:
        """How many of ``wanted`` records a reader may read now (0: hold)."""
        if self.is_open or self.hold_after is None:
            return wanted
        return max(0, min(wanted, self.hold_after - self.emitted))

    def hold(self) -> list[Any]:
        """Note a hold; the ``[]`` the reader returns."""
        self.holds += 1
        self._held.set()
        return []


class GatedReader:
    """A reader that reads through ``reader`` while ``gate`` allows it."""

    def __init__(self, reader: Any, gate: SourceGate) -> None:
        self.reader = reader
        self.gate = gate
        self._ended = False

    def add_splits(self, splits: Sequence[Any]) -> None:
        """Give the splits to the wrapped reader."""
        self.reader.add_splits(splits)

    async def read(self, max_records: int) -> list[Any] | None:
        """The wrapped reader's next batch, cut to what the gate allows; ``[]`` to hold."""
        gate = self.gate
        if self._ended:
            return None if gate.is_open or not gate.hold_at_end else gate.hold()
        allowed = gate.allowance(max_records)
        if allowed == 0:
            return gate.hold()
        batch = self.reader.read(allowed)
        if inspect.isawaitable(batch):
            batch = await batch
        if batch is None:
            self._ended = True
            return None if gate.is_open or not gate.hold_at_end else gate.hold()
        gate.emitted += len(batch)
        return batch

    def snapshot_state(self) -> list[Any]:
        """The wrapped reader's splits and positions."""
        splits: list[Any] = self.reader.snapshot_state()
        return splits

    def close(self) -> None:
        """Close the wrapped reader."""
        self.reader.close()


class GatedSource:
    """``source``, whose readers hold back when ``gate`` says so (see the module docstring).

    Its splits and their positions are the wrapped source's: a job may be restored from
    a checkpoint of the same job without the gate, and the other way round.

    Args:
        source: the source to wrap (any ``runtime.connectors.source.Source``).
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
        return GatedReader(self.source.create_reader(subtask_index), self.gate)
