"""Failure points: where a ``FailureSchedule``'s failures are raised inside a job.

Two kinds, both plain user functions, so they go where any function goes:

* ``failure_point(schedule, name)`` is an identity ``MapFunction``: put it anywhere in a
  job (``stream.map(failure_point(schedule, "after-count"), name="after-count")``).
  Chained to the operator before it (same parallelism, forward edge: the default), it
  fails that operator's subtask, since the operators of a chain share one task.
* ``FailingSink(sink, schedule, name="sink")`` wraps a sink and delegates every hook the
  runtime calls (``initialize_state``, ``open``, ``write_batch`` or ``invoke``,
  ``snapshot_state``, ``after_acknowledge``, ``notify_checkpoint_complete``,
  ``notify_checkpoint_aborted``, ``finish``, ``close``), raising around the wrapped
  sink's own: ``BEFORE_NOTIFY`` before it commits, ``AFTER_NOTIFY`` after, ``SNAPSHOT``
  after it pre-committed, ``RESTORE`` after it recovered its pending transactions.
  Other attributes (a two-phase-commit sink's ``pending_transactions``...) are read
  through from the wrapped sink.

Each subtask (and each attempt) works on its own deep copy of these functions, as with
any function; the schedule they hold is shared (see ``runtime.testing.failures``).
``SinkWrapper`` is the delegating base, also used by ``NotificationChaos``.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Awaitable
from typing import Any

from runtime.errors import ConfigError
from runtime.tasks.context import RuntimeContext
from runtime.tasks.functions import MapFunction, SinkFunction, maybe_await
from runtime.testing.failures import FailureSchedule, FiredFailure, InjectedFailureError, Phase


class _Site:
    """One subtask copy of a failure point: where it is, and what it has seen."""

    def __init__(self, schedule: FailureSchedule, name: str) -> None:
        if not isinstance(schedule, FailureSchedule):
            raise ConfigError(
                f"failure point {name!r}: schedule must be a FailureSchedule, got {schedule!r}"
            )
        if not isinstance(name, str) or not name:
            raise ConfigError(f"failure point name must be a non-empty str, got {name!r}")
        self.schedule = schedule
        self.name = name
        self.subtask = 0
        self.attempt = 0
        self.records = 0
        self.completed = 0
        # Refined by bind() once the subtask is known.
        self._watch_records = any(
            f.point == name and f.phase is Phase.PROCESSING for f in schedule.failures
        )

    def bind(self, ctx: RuntimeContext) -> None:
        self.subtask = ctx.subtask_index
        self.attempt = ctx.attempt
        self.records = 0
        self.completed = 0
        self._watch_records = self.schedule.watches(self.name, self.subtask, Phase.PROCESSING)

    def fail_if(self, phase: Phase, checkpoint_id: int | None = None) -> None:
        fired = self.schedule.check(
            self.name,
            self.subtask,
            self.attempt,
            phase,
            records=self.records,
            checkpoint_id=checkpoint_id,
            completed=self.completed,
        )
        if fired is not None:
            raise InjectedFailureError(fired)

    def admit(self, count: int) -> tuple[int, FiredFailure | None]:
        """Let up to ``count`` records through; stop at the first one a failure hits.

        Returns how many pass, and the failure that fired on the next one, if any.
        """
        if not self._watch_records:
            self.records += count
            return count, None
        check = self.schedule.check
        for index in range(count):
            fired = check(
                self.name,
                self.subtask,
                self.attempt,
                Phase.PROCESSING,
                records=self.records,
                completed=self.completed,
            )
            if fired is not None:
                return index, fired
            self.records += 1
        self._watch_records = self.schedule.watches(self.name, self.subtask, Phase.PROCESSING)
        return count, None

    def notified(self, checkpoint_id: int) -> None:
        self.completed = max(self.completed, checkpoint_id)


class FailingIdentity(MapFunction[Any, Any]):
    """An identity map that raises the schedule's failures for failure point ``name``.

    Args:
        schedule: the failures (shared by every copy).
        name: the failure point's name, as ``InjectedFailure.point`` names it.
    """

    def __init__(self, schedule: FailureSchedule, name: str) -> None:
        self.site = _Site(schedule, name)

    def initialize_state(self, ctx: RuntimeContext) -> None:
        """Learn the subtask and attempt; ``RESTORE`` fires here on a restored subtask."""
        self.site.bind(ctx)
        if ctx.is_restored:
            self.site.fail_if(Phase.RESTORE)

    def map(self, value: Any) -> Any:
        """Pass ``value`` on, unless a ``PROCESSING`` failure fires on it."""
        _passed, fired = self.site.admit(1)
        if fired is not None:
            raise InjectedFailureError(fired)
        return value

    def snapshot_state(self, checkpoint_id: int) -> None:
        """``SNAPSHOT`` fires here."""
        self.site.fail_if(Phase.SNAPSHOT, checkpoint_id)

    def after_acknowledge(self, checkpoint_id: int) -> None:
        """``AFTER_ACK`` fires here."""
        self.site.fail_if(Phase.AFTER_ACK, checkpoint_id)

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """``BEFORE_NOTIFY`` and then ``AFTER_NOTIFY`` fire here (nothing in between)."""
        self.site.fail_if(Phase.BEFORE_NOTIFY, checkpoint_id)
        self.site.notified(checkpoint_id)
        self.site.fail_if(Phase.AFTER_NOTIFY, checkpoint_id)


def failure_point(schedule: FailureSchedule, name: str) -> FailingIdentity:
    """An identity map function that fails where ``schedule`` says, for point ``name``.

    Insert it with ``stream.map(failure_point(schedule, name), name=name)``.
    """
    return FailingIdentity(schedule, name)


def _writes_async(sink: object) -> bool:
    if not isinstance(sink, SinkFunction):
        return inspect.iscoroutinefunction(sink) or inspect.iscoroutinefunction(
            getattr(sink, "__call__", None)  # noqa: B004 - an object with an async __call__
        )
    for method in ("write_batch", "invoke"):
        bound = getattr(sink, method, None)
        if bound is None:
            continue
        if getattr(type(sink), method, None) is getattr(SinkFunction, method):
            continue  # not implemented by this sink
        return inspect.iscoroutinefunction(bound)
    return False


class SinkWrapper(SinkFunction[Any]):
    """A sink that delegates every runtime hook to the sink it wraps.

    Subclasses override the hooks they intercept. A wrapped sink whose write path is
    ``async def`` gets an ``async`` ``write_batch`` (the runtime tells the two apart by
    the method, so the wrapper's class is chosen per sink).

    Args:
        sink: a ``SinkFunction`` (or a plain function of one record).
    """

    _is_async_variant = False

    def __new__(cls, sink: Any, *args: Any, **kwargs: Any) -> SinkWrapper:
        """A wrapper of ``cls``, or of its ``async`` variant if ``sink`` writes async."""
        chosen = cls
        if not cls._is_async_variant and _writes_async(sink):
            chosen = _async_variant(cls)
        return super().__new__(chosen)

    def __init__(self, sink: Any) -> None:
        if not isinstance(sink, SinkFunction) and not callable(sink):
            raise ConfigError(
                f"{type(self).__name__}: expected a SinkFunction or a function, got {sink!r}"
            )
        self.sink = sink
        self.ctx: RuntimeContext | None = None
        batch = isinstance(sink, SinkFunction) and (
            type(sink).write_batch is not SinkFunction.write_batch
        )
        if batch:
            self._write: Any = sink.write_batch
            self._per_record = False
        else:
            self._write = sink.invoke if isinstance(sink, SinkFunction) else sink
            self._per_record = True

    def _copy_args(self, memo: dict[int, Any]) -> tuple[Any, ...]:
        """The constructor arguments of a deep copy (subclasses add theirs)."""
        return (copy.deepcopy(self.sink, memo),)

    def __deepcopy__(self, memo: dict[int, Any]) -> SinkWrapper:
        return type(self)(*self._copy_args(memo))

    def __getattr__(self, name: str) -> Any:
        # Only called for attributes the wrapper lacks: read them through.
        if name in ("sink", "__setstate__") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.sink, name)

    def _hook(self, name: str, *args: Any) -> Any:
        method = getattr(self.sink, name, None)
        return None if method is None else method(*args)

    # -- the runtime's hooks --------------------------------------------------------------

    async def initialize_state(self, ctx: RuntimeContext) -> None:
        """Delegate (the wrapped sink restores its state here)."""
        self.ctx = ctx
        await maybe_await(self._hook("initialize_state", ctx))

    def open(self, ctx: RuntimeContext) -> Awaitable[None] | None:
        """Delegate."""
        self.ctx = ctx
        result: Awaitable[None] | None = self._hook("open", ctx)
        return result

    def admit(self, values: list[Any]) -> tuple[list[Any], BaseException | None]:
        """The records to hand on, and an error to raise once they were written.

        The wrapper's interception point for records (``FailingSink`` overrides it).
        """
        return values, None

    def write_batch(self, values: list[Any]) -> Awaitable[None] | None:
        """Delegate to the wrapped sink's ``write_batch`` (or ``invoke`` per record)."""
        passed, error = self.admit(values)
        write = self._write
        if passed:
            if self._per_record:
                for value in passed:
                    write(value)
            else:
                write(passed)
        if error is not None:
            raise error
        return None

    def snapshot_state(self, checkpoint_id: int) -> Awaitable[None] | None:
        """Delegate (a two-phase-commit sink pre-commits here).

        An asynchronous pre-commit is handed on, for the runtime to await before the
        acknowledgement.
        """
        result: Awaitable[None] | None = self._hook("snapshot_state", checkpoint_id)
        return result

    def after_acknowledge(self, checkpoint_id: int) -> None:
        """Delegate."""
        self._hook("after_acknowledge", checkpoint_id)

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """Delegate (a two-phase-commit sink commits here)."""
        self._hook("notify_checkpoint_complete", checkpoint_id)

    def notify_checkpoint_aborted(self, checkpoint_id: int) -> None:
        """Delegate."""
        self._hook("notify_checkpoint_aborted", checkpoint_id)

    def finish(self) -> Awaitable[None] | None:
        """Delegate."""
        result: Awaitable[None] | None = self._hook("finish")
        return result

    def close(self) -> Awaitable[None] | None:
        """Delegate."""
        result: Awaitable[None] | None = self._hook("close")
        return result

    async def _write_batch_async(self, values: list[Any]) -> None:
        passed, error = self.admit(values)
        write = self._write
        if passed:
            if self._per_record:
                for value in passed:
                    await maybe_await(write(value))
            else:
                await maybe_await(write(passed))
        if error is not None:
            raise error


_ASYNC_VARIANTS: dict[type[SinkWrapper], type[SinkWrapper]] = {}


def _async_variant(cls: type[SinkWrapper]) -> type[SinkWrapper]:
    """``cls`` with an ``async def write_batch``, for sinks that write asynchronously."""
    variant = _ASYNC_VARIANTS.get(cls)
    if variant is None:

        async def write_batch(self: SinkWrapper, values: list[Any]) -> None:
            """Await the wrapped sink's ``write_batch`` (or ``invoke`` per record)."""
            await self._write_batch_async(values)

        variant = type(
            cls.__name__,
            (cls,),
            {"write_batch": write_batch, "_is_async_variant": True, "__module__": cls.__module__},
        )
        _ASYNC_VARIANTS[cls] = variant
    return variant


class FailingSink(SinkWrapper):
    """Wraps ``sink`` and raises the schedule's failures for failure point ``name``.

    Args:
        sink: the sink to wrap (a ``TwoPhaseCommitSink``, a ``ValidatingSink``, ...).
        schedule: the failures (shared by every copy).
        name: the failure point's name (``"sink"`` by default).
    """

    def __init__(self, sink: Any, schedule: FailureSchedule, name: str = "sink") -> None:
        super().__init__(sink)
        self.site = _Site(schedule, name)

    def _copy_args(self, memo: dict[int, Any]) -> tuple[Any, ...]:
        return (copy.deepcopy(self.sink, memo), self.site.schedule, self.site.name)

    async def initialize_state(self, ctx: RuntimeContext) -> None:
        """Delegate; then ``RESTORE`` fires on a restored subtask."""
        self.site.bind(ctx)
        await super().initialize_state(ctx)
        if ctx.is_restored:
            self.site.fail_if(Phase.RESTORE)

    def admit(self, values: list[Any]) -> tuple[list[Any], BaseException | None]:
        """The records that pass; a ``PROCESSING`` failure fires on the next one."""
        passed, fired = self.site.admit(len(values))
        if fired is None:
            return values, None
        return values[:passed], InjectedFailureError(fired)

    def snapshot_state(self, checkpoint_id: int) -> Awaitable[None] | None:
        """Delegate (pre-commit); then ``SNAPSHOT`` fires.

        After an asynchronous pre-commit it fires once that finished, in the snapshot's
        asynchronous part (the subtask fails; nothing is left un-awaited).
        """
        result = super().snapshot_state(checkpoint_id)
        if result is not None:
            return self._fail_after(result, checkpoint_id)
        self.site.fail_if(Phase.SNAPSHOT, checkpoint_id)
        return None

    async def _fail_after(self, pre_commit: Awaitable[None], checkpoint_id: int) -> None:
        await pre_commit
        self.site.fail_if(Phase.SNAPSHOT, checkpoint_id)

    def after_acknowledge(self, checkpoint_id: int) -> None:
        """Delegate; then ``AFTER_ACK`` fires."""
        super().after_acknowledge(checkpoint_id)
        self.site.fail_if(Phase.AFTER_ACK, checkpoint_id)

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """``BEFORE_NOTIFY`` fires; delegate (commit); then ``AFTER_NOTIFY`` fires."""
        self.site.fail_if(Phase.BEFORE_NOTIFY, checkpoint_id)
        super().notify_checkpoint_complete(checkpoint_id)
        self.site.notified(checkpoint_id)
        self.site.fail_if(Phase.AFTER_NOTIFY, checkpoint_id)
