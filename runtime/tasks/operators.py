"""Stream operators: what one link of an operator chain does to a buffer of records.

An operator takes a list of records and returns the list it emits. Synchronous operators
(``process_batch``) run a whole buffer in one call; an operator whose user function is
``async def`` has ``is_async`` set and runs in ``process_batch_async``. Operators never
mutate the list they are given (a broadcast hands the same buffer to several
consumers).

Every operator counts the records it took in and gave out, and turns an exception of a
user function into an ``OperatorError`` naming the operator, the subtask and the record.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable
from dataclasses import dataclass, field
from itertools import compress
from typing import Any

import msgspec

from runtime.checkpoint.events import SubtaskStateReport
from runtime.errors import OperatorError
from runtime.tasks.context import RuntimeContext
from runtime.tasks.functions import Adapted, UserHooks, maybe_await
from storage import HeapSnapshot, stable_hash
from storage.checkpoint import StateHandle, SubtaskStateHandle
from storage.errors import KeyEncodingError

_NO_KEY = object()


def explain_key_error(error: BaseException, key: Any) -> BaseException:
    """A clearer cause for an error raised while handling a record's key.

    None is not a key (as in Flink: a null key has no key group); an unhashable or
    unsupported key gets the stable hash's ``KeyEncodingError`` naming its type.
    """
    if key is _NO_KEY or isinstance(error, KeyEncodingError):
        return error
    if key is None:
        return KeyEncodingError(
            "the key selector of key_by returned None, and None cannot be a key (as in "
            "Flink); map records without a key to a real key, e.g. '' or -1"
        )
    if isinstance(error, TypeError):
        try:
            stable_hash(key)
        except KeyEncodingError as better:
            return better
    return error


_operator_state_encoder = msgspec.msgpack.Encoder()


@dataclass(slots=True)
class OperatorSnapshot:
    """The synchronous part of one operator's snapshot.

    Attributes:
        uid: the operator's uid.
        subtask: the subtask's index.
        keyed: a copy-on-write view of its keyed state, encoded in the async part.
        frames: ``(kind, data)`` already encoded (operator state, source splits).
        key_group_range: ``(start, end)`` of a keyed operator's key groups.
        completion: what the user's ``snapshot_state`` returned to be awaited (e.g. the
            I/O of a two-phase-commit sink's asynchronous pre-commit): the subtask
            acknowledges the checkpoint only once it finished.
    """

    uid: str
    subtask: int
    keyed: HeapSnapshot | None = None
    frames: list[tuple[str, bytes]] = field(default_factory=list)
    key_group_range: tuple[int, int] | None = None
    completion: Awaitable[Any] | None = None

    def release(self) -> None:
        """Release the keyed view (idempotent)."""
        if self.keyed is not None:
            self.keyed.release()

    def report(
        self, handle: StateHandle | None, state_size: int, in_flight: int
    ) -> SubtaskStateReport:
        """This operator's entry in the task's acknowledgement."""
        start, end = self.key_group_range if self.key_group_range is not None else (None, None)
        return SubtaskStateReport(
            self.uid,
            SubtaskStateHandle(
                subtask_index=self.subtask,
                handle=handle,
                state_size=state_size,
                in_flight_bytes=in_flight,
                key_group_start=start,
                key_group_end=end,
            ),
        )


class StreamOperator:
    """Base of all operators. One instance per subtask.

    Args:
        name: the operator's name (unique in the job after build).
        uid: the operator's stable id (matches state across runs).
    """

    is_async = False

    def __init__(self, name: str, uid: str) -> None:
        self.name = name
        self.uid = uid
        self.records_in = 0
        self.records_out = 0
        self.ctx: RuntimeContext | None = None

    def setup(self, ctx: RuntimeContext) -> None:
        """Bind the operator to its subtask. Called once before ``open``."""
        self.ctx = ctx

    @property
    def context(self) -> RuntimeContext:
        """The subtask's context (after ``setup``)."""
        assert self.ctx is not None, "operator used before setup()"
        return self.ctx

    def error(self, cause: BaseException, record: Any) -> OperatorError:
        """An ``OperatorError`` for ``cause`` raised while processing ``record``."""
        ctx = self.context
        return OperatorError(
            self.name, ctx.subtask_index, ctx.parallelism, cause, record=record, has_record=True
        )

    def phase_error(self, cause: BaseException, phase: str) -> OperatorError:
        """An ``OperatorError`` for ``cause`` raised outside a record (open, close...)."""
        ctx = self.context
        return OperatorError(self.name, ctx.subtask_index, ctx.parallelism, cause, phase=phase)

    async def open(self) -> None:
        """Prepare to process records (calls the user function's ``open``)."""

    def process_batch(self, batch: list[Any]) -> list[Any]:
        """Process a buffer synchronously and return the records emitted."""
        raise NotImplementedError

    async def process_batch_async(self, batch: list[Any]) -> list[Any]:
        """Process a buffer, awaiting the user function where it is ``async``."""
        return self.process_batch(batch)

    def end_input(self) -> list[Any]:
        """All input has ended; return any last records to emit."""
        return []

    async def finish(self) -> None:
        """After ``end_input`` and after the records it emitted went downstream."""

    async def close(self) -> None:
        """Release resources after the last record (calls the user function's ``close``)."""

    # -- checkpoints ----------------------------------------------------------------------

    def snapshot_state(self, checkpoint_id: int, *, canonical: bool = False) -> OperatorSnapshot:
        """The synchronous part of a snapshot: O(number of states), not O(keys).

        ``canonical``: a canonical savepoint: state is encoded without pickle.
        """
        ctx = self.context
        snapshot = OperatorSnapshot(self.uid, ctx.subtask_index)
        if ctx.keyed_backend is not None:
            snapshot.keyed = ctx.keyed_backend.snapshot(canonical=canonical)
            kg = ctx.keyed_backend.key_group_range
            snapshot.key_group_range = (kg.start, kg.end)
        if ctx.operator_backend is not None and ctx.operator_backend.state_names:
            encoded = _operator_state_encoder.encode(
                ctx.operator_backend.snapshot(canonical=canonical)
            )
            snapshot.frames.append(("operator", encoded))
        return snapshot

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """Checkpoint ``checkpoint_id`` completed (and every one before it)."""

    def notify_checkpoint_aborted(self, checkpoint_id: int) -> None:
        """Checkpoint ``checkpoint_id`` was aborted."""

    def after_acknowledge(self, checkpoint_id: int) -> None:
        """The subtask acknowledged ``checkpoint_id`` (a hook for failure injection)."""


class UserFunctionOperator(StreamOperator):
    """An operator around one adapted user function with ``open`` / ``close`` hooks."""

    def __init__(self, name: str, uid: str, function: Adapted) -> None:
        super().__init__(name, uid)
        self.function = function
        self.is_async = function.is_async
        self.hooks = UserHooks.of(function.owner)

    async def open(self) -> None:
        """Call ``initialize_state(ctx)`` and then ``open(ctx)``, where defined."""
        # Found again here: a test may have replaced a hook after the job was built.
        hooks = self.hooks = UserHooks.of(self.function.owner)
        if hooks.initialize_state is not None:
            try:
                await maybe_await(hooks.initialize_state(self.context))
            except Exception as error:
                raise self.phase_error(error, "initialize_state()") from error
        if hooks.open is not None:
            try:
                await maybe_await(hooks.open(self.context))
            except Exception as error:
                raise self.phase_error(error, "open()") from error

    async def finish(self) -> None:
        """Call the function object's ``finish()`` (end of input), if it has one."""
        if self.hooks.finish is not None:
            try:
                await maybe_await(self.hooks.finish())
            except Exception as error:
                raise self.phase_error(error, "finish()") from error

    async def close(self) -> None:
        """Call the function object's ``close()``, if it has one."""
        if self.hooks.close is not None:
            try:
                await maybe_await(self.hooks.close())
            except Exception as error:
                raise self.phase_error(error, "close()") from error

    def snapshot_state(self, checkpoint_id: int, *, canonical: bool = False) -> OperatorSnapshot:
        """Call the user's ``snapshot_state(checkpoint_id)`` first, then snapshot state.

        An awaitable it returns is the snapshot's ``completion`` (awaited before the
        checkpoint is acknowledged).
        """
        completion = None
        if self.hooks.snapshot_state is not None:
            try:
                completion = self.hooks.snapshot_state(checkpoint_id)
            except Exception as error:
                raise self.phase_error(error, f"snapshot_state({checkpoint_id})") from error
        try:
            snapshot = super().snapshot_state(checkpoint_id, canonical=canonical)
        except BaseException:
            if inspect.iscoroutine(completion):
                completion.close()
            raise
        if completion is not None and inspect.isawaitable(completion):
            snapshot.completion = completion
        return snapshot

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """Forward to the user function's ``notify_checkpoint_complete``, if any."""
        if self.hooks.notify_checkpoint_complete is not None:
            try:
                self.hooks.notify_checkpoint_complete(checkpoint_id)
            except Exception as error:
                raise self.phase_error(
                    error, f"notify_checkpoint_complete({checkpoint_id})"
                ) from error

    def after_acknowledge(self, checkpoint_id: int) -> None:
        """Forward to the user function's ``after_acknowledge``, if any."""
        if self.hooks.after_acknowledge is not None:
            try:
                self.hooks.after_acknowledge(checkpoint_id)
            except Exception as error:
                raise self.phase_error(error, f"after_acknowledge({checkpoint_id})") from error

    def notify_checkpoint_aborted(self, checkpoint_id: int) -> None:
        """Forward to the user function's ``notify_checkpoint_aborted``, if any."""
        if self.hooks.notify_checkpoint_aborted is not None:
            try:
                self.hooks.notify_checkpoint_aborted(checkpoint_id)
            except Exception as error:
                raise self.phase_error(
                    error, f"notify_checkpoint_aborted({checkpoint_id})"
                ) from error


class MapOperator(UserFunctionOperator):
    """``map``: one record in, one out."""

    def process_batch(self, batch: list[Any]) -> list[Any]:
        """Apply the function to every record."""
        out: list[Any] = []
        try:
            # extend() keeps what it appended before an exception: len(out) is the index
            # of the failing record, without a Python-level loop on the hot path.
            out.extend(map(self.function.call, batch))
        except Exception as error:
            raise self.error(error, batch[len(out)]) from error
        self.records_in += len(batch)
        self.records_out += len(out)
        return out

    async def process_batch_async(self, batch: list[Any]) -> list[Any]:
        """Await the function for every record, in order."""
        call = self.function.call
        out: list[Any] = []
        record = None
        try:
            for record in batch:
                out.append(await call(record))
        except Exception as error:
            raise self.error(error, record) from error
        self.records_in += len(batch)
        self.records_out += len(out)
        return out


class FilterOperator(UserFunctionOperator):
    """``filter``: keep the records the predicate accepts."""

    def process_batch(self, batch: list[Any]) -> list[Any]:
        """Keep the records for which the predicate is true."""
        flags: list[Any] = []
        try:
            flags.extend(map(self.function.call, batch))
        except Exception as error:
            raise self.error(error, batch[len(flags)]) from error
        out = list(compress(batch, flags))
        self.records_in += len(batch)
        self.records_out += len(out)
        return out

    async def process_batch_async(self, batch: list[Any]) -> list[Any]:
        """Await the predicate for every record, in order."""
        call = self.function.call
        out: list[Any] = []
        record = None
        try:
            for record in batch:
                if await call(record):
                    out.append(record)
        except Exception as error:
            raise self.error(error, record) from error
        self.records_in += len(batch)
        self.records_out += len(out)
        return out


class FlatMapOperator(UserFunctionOperator):
    """``flat_map``: each record gives an iterable of records (None counts as empty)."""

    def process_batch(self, batch: list[Any]) -> list[Any]:
        """Concatenate the function's results for every record."""
        call = self.function.call
        out: list[Any] = []
        extend = out.extend
        record = None
        try:
            for record in batch:
                result = call(record)
                if result is not None:
                    extend(result)
        except Exception as error:
            raise self.error(error, record) from error
        self.records_in += len(batch)
        self.records_out += len(out)
        return out

    async def process_batch_async(self, batch: list[Any]) -> list[Any]:
        """Await the function for every record and concatenate the results."""
        call = self.function.call
        out: list[Any] = []
        record = None
        try:
            for record in batch:
                result = call(record)
                if hasattr(result, "__aiter__"):  # an async generator function
                    async for item in result:
                        out.append(item)
                    continue
                result = await result
                if result is not None:
                    out.extend(result)
        except Exception as error:
            raise self.error(error, record) from error
        self.records_in += len(batch)
        self.records_out += len(out)
        return out


class SinkOperator(UserFunctionOperator):
    """The end of a chain: hands buffers to a sink function; emits nothing."""

    def __init__(self, name: str, uid: str, function: Adapted, batch: bool) -> None:
        super().__init__(name, uid, function)
        self.batch = batch

    def process_batch(self, batch: list[Any]) -> list[Any]:
        """Write the buffer (``write_batch``) or each record (``invoke``)."""
        call = self.function.call
        if self.batch:
            try:
                call(batch)
            except Exception as error:
                raise self.error(error, batch[0] if len(batch) == 1 else batch) from error
        else:
            record = None
            try:
                for record in batch:
                    call(record)
            except Exception as error:
                raise self.error(error, record) from error
        self.records_in += len(batch)
        return []

    async def process_batch_async(self, batch: list[Any]) -> list[Any]:
        """Await the sink function for the buffer or for each record."""
        call = self.function.call
        if self.batch:
            try:
                await call(batch)
            except Exception as error:
                raise self.error(error, batch) from error
        else:
            record = None
            try:
                for record in batch:
                    await call(record)
            except Exception as error:
                raise self.error(error, record) from error
        self.records_in += len(batch)
        return []
