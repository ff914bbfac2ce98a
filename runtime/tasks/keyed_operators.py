"""Operators on a keyed stream: ``process`` with keyed state, and ``reduce``.

Each record is processed under its key: the operator sets the key on the subtask's keyed
state backend (``RuntimeContext.keyed_backend``) before it calls the user function, so
the function's state handles act on that key's state. A key selector that raises is
reported with ``explain_key_error`` (``runtime.tasks.operators``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from runtime.tasks.context import RuntimeContext
from runtime.tasks.functions import Adapted
from runtime.tasks.operators import _NO_KEY, UserFunctionOperator, explain_key_error
from storage import KeyGroupAssigner, ValueStateDescriptor

__all__ = ["KeyedProcessOperator", "KeyedReduceOperator"]


class KeyedProcessOperator(UserFunctionOperator):
    """``process`` on a keyed stream: the user function with keyed state.

    Args:
        key_selector: extracts the key; sets the state backend's current key per record.
    """

    def __init__(
        self, name: str, uid: str, function: Adapted, key_selector: Callable[[Any], Any]
    ) -> None:
        super().__init__(name, uid, function)
        self.key_selector = key_selector
        self._assigner: KeyGroupAssigner | None = None

    def setup(self, ctx: RuntimeContext) -> None:
        """Bind to the subtask; keyed operators need a keyed state backend."""
        super().setup(ctx)
        assert ctx.keyed_backend is not None, "keyed operator without a keyed backend"
        self._assigner = KeyGroupAssigner(ctx.max_parallelism, ctx.parallelism)

    def process_batch(self, batch: list[Any]) -> list[Any]:
        """Run the function for every record with its key set."""
        ctx = self.context
        backend = ctx.keyed_backend
        assert backend is not None and self._assigner is not None
        key_group = self._assigner.key_group
        key_selector = self.key_selector
        call = self.function.call
        out: list[Any] = []
        extend = out.extend
        record = key = None
        try:
            for record in batch:
                key = _NO_KEY
                key = key_selector(record)
                key_group(key)  # validates the key: a cached dict lookup after the first
                if key is None:
                    raise explain_key_error(ValueError(), None)
                backend.current_key = key
                result = call(record, ctx)
                if result is not None:
                    extend(result)
        except Exception as error:
            cause = explain_key_error(error, key)
            raise self.error(cause, record) from cause
        self.records_in += len(batch)
        self.records_out += len(out)
        return out

    async def process_batch_async(self, batch: list[Any]) -> list[Any]:
        """Await the function for every record with its key set."""
        ctx = self.context
        backend = ctx.keyed_backend
        assert backend is not None and self._assigner is not None
        call = self.function.call
        out: list[Any] = []
        record = key = None
        try:
            for record in batch:
                key = _NO_KEY
                key = self.key_selector(record)
                self._assigner.key_group(key)
                if key is None:
                    raise explain_key_error(ValueError(), None)
                backend.current_key = key
                result = await call(record, ctx)
                if result is not None:
                    out.extend(result)
        except Exception as error:
            cause = explain_key_error(error, key)
            raise self.error(cause, record) from cause
        self.records_in += len(batch)
        self.records_out += len(out)
        return out


class KeyedReduceOperator(UserFunctionOperator):
    """``reduce`` / ``sum`` on a keyed stream: emits the running value per record.

    The running value of each key lives in keyed value state ``"reduce"``.
    """

    def __init__(
        self, name: str, uid: str, function: Adapted, key_selector: Callable[[Any], Any]
    ) -> None:
        super().__init__(name, uid, function)
        self.key_selector = key_selector
        self._state: Any = None
        self._assigner: KeyGroupAssigner | None = None

    def setup(self, ctx: RuntimeContext) -> None:
        """Bind to the subtask and register the running value's state."""
        super().setup(ctx)
        assert ctx.keyed_backend is not None, "keyed operator without a keyed backend"
        self._state = ctx.keyed_backend.get_state(ValueStateDescriptor("reduce"))
        self._assigner = KeyGroupAssigner(ctx.max_parallelism, ctx.parallelism)

    def process_batch(self, batch: list[Any]) -> list[Any]:
        """Fold every record into its key's running value and emit the new value."""
        assert self._assigner is not None

        state = self._state
        get_for = state.get_for
        put_for = state.put_for
        key_group = self._assigner.key_group
        key_selector = self.key_selector
        reduce = self.function.call
        out: list[Any] = []
        append = out.append
        record = key = None
        try:
            for record in batch:
                key = _NO_KEY
                key = key_selector(record)
                current = get_for(key)
                if current is None:
                    # A key seen for the first time: validate it (None is no key).
                    key_group(key)
                    if key is None:
                        raise explain_key_error(ValueError(), None)
                    current = record
                else:
                    current = reduce(current, record)
                put_for(key, current)
                append(current)
        except Exception as error:
            cause = explain_key_error(error, key)
            raise self.error(cause, record) from cause
        self.records_in += len(batch)
        self.records_out += len(out)
        return out
