"""``WindowedStream``: ``key_by(...).window(assigner)`` (and ``window_all``) options and functions.

Options first (``allowed_lateness``, ``side_output_late_data``), then one of
``reduce``, ``aggregate`` or ``process``, which adds the ``WindowOperator``
(``runtime.windows.operator``) and returns the stream of window results. ``reduce`` and
``aggregate`` take an optional ``ProcessWindowFunction`` that gets the one
pre-aggregated value with the window's key and bounds (Flink's incremental aggregation
combined with a window function).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from runtime.errors import ConfigError
from runtime.tasks.functions import ReduceFunction, adapt
from runtime.tasks.time_operators import OutputTag
from runtime.time.watermarks import check_duration
from runtime.windows.assigners import WindowAssigner
from runtime.windows.functions import AggregateFunction, ProcessWindowFunction
from runtime.windows.operator import WindowFunctions, WindowOperator
from runtime.windows.triggers import Trigger, resolve

if TYPE_CHECKING:
    from runtime.api.datastream import DataStream, KeyedStream

__all__ = ["WindowedStream"]


def _identity(value: Any) -> Any:
    return value


def _concat(a: list[Any], b: list[Any]) -> list[Any]:
    return a + b


def _append(acc: list[Any], value: Any) -> list[Any]:
    acc.append(value)
    return acc


class WindowedStream:
    """A keyed stream cut into windows; see the module docstring.

    Args:
        stream: the keyed stream.
        assigner: the window assigner.
        timestamp: the records' timestamp function (event time), or None.
    """

    def __init__(
        self,
        stream: KeyedStream,
        assigner: WindowAssigner,
        timestamp: Callable[[Any], Any] | None,
        *,
        parallelism: int | None = None,
    ) -> None:
        if not isinstance(assigner, WindowAssigner):
            raise ConfigError(
                f"window: expected a window assigner such as TumblingEventTimeWindows.of(60), "
                f"got {type(assigner).__name__}"
            )
        if timestamp is not None and not callable(timestamp):
            raise ConfigError(
                f"window: timestamp must be a function of one record, got {timestamp!r}"
            )
        self._stream = stream
        self._assigner = assigner
        self._timestamp = timestamp
        self._lateness: float = 0
        self._late_tag: OutputTag | None = None
        self._trigger: Trigger | None = None
        self._parallelism = parallelism

    def allowed_lateness(self, lateness: float) -> WindowedStream:
        """Keep each window's state ``lateness`` after its end; late records fire it again.

        Raises:
            ConfigError: not a number >= 0, or processing-time windows (no lateness).
        """
        check_duration("allowed_lateness", lateness, positive=False)
        if not self._assigner.is_event_time and lateness:
            raise ConfigError(
                f"allowed_lateness: {self._assigner!r} is a processing-time assigner, and "
                f"processing-time windows have no late records; drop allowed_lateness"
            )
        self._lateness = lateness
        return self

    def trigger(self, trigger: Trigger) -> WindowedStream:
        """Fire with ``trigger`` instead of the assigner's default (``runtime.windows.triggers``).

        Raises:
            ConfigError: not a trigger, or a time trigger of the other time domain.
        """
        resolve(trigger, self._assigner.is_event_time, "trigger")
        self._trigger = trigger
        return self

    def side_output_late_data(self, tag: OutputTag) -> WindowedStream:
        """Send records too late for all of their windows to side output ``tag``.

        Raises:
            ConfigError: ``tag`` is not an ``OutputTag``.
        """
        if not isinstance(tag, OutputTag):
            raise ConfigError(
                f"side_output_late_data: expected an OutputTag, got {type(tag).__name__}"
            )
        self._late_tag = tag
        return self

    def reduce(
        self,
        fn: Callable[[Any, Any], Any] | ReduceFunction[Any],
        window_function: ProcessWindowFunction[Any, Any] | None = None,
        *,
        name: str | None = None,
        uid: str | None = None,
    ) -> DataStream:
        """Fold each window's records with ``fn(accumulated, record)``; emit per window."""
        default = "window-reduce"
        label = name or default
        adapted = adapt(fn, "reduce", 2, "the reduce function", label, ReduceFunction)
        if adapted.is_async:
            raise ConfigError(f"operator {label!r}: the reduce function must not be async")
        call = adapted.call
        owners = [adapted.owner] if adapted.owner is not None else []
        functions = WindowFunctions(
            None, call, call, _identity, self._process_call(window_function, label), owners
        )
        return self._build(default, name, uid, functions, window_function)

    def aggregate(
        self,
        fn: AggregateFunction[Any, Any, Any],
        window_function: ProcessWindowFunction[Any, Any] | None = None,
        *,
        name: str | None = None,
        uid: str | None = None,
    ) -> DataStream:
        """Aggregate each window incrementally with an ``AggregateFunction``."""
        default = "window-aggregate"
        label = name or default
        if not isinstance(fn, AggregateFunction):
            raise ConfigError(
                f"operator {label!r}: aggregate() takes an AggregateFunction, "
                f"got {type(fn).__name__}"
            )

        def add(acc: Any, value: Any) -> Any:
            return fn.add(value, acc)

        functions = WindowFunctions(
            fn.create_accumulator,
            add,
            fn.merge,
            fn.get_result,
            self._process_call(window_function, label),
            [fn],
        )
        return self._build(default, name, uid, functions, window_function)

    def process(
        self,
        fn: ProcessWindowFunction[Any, Any],
        *,
        name: str | None = None,
        uid: str | None = None,
    ) -> DataStream:
        """Call ``fn.process(key, context, elements)`` with all of each window's records."""
        default = "window-process"
        label = name or default
        call = self._process_call(fn, label)
        if call is None:
            raise ConfigError(f"operator {label!r}: process() needs a ProcessWindowFunction")
        functions = WindowFunctions(list, _append, _concat, _identity, call, [fn], elements=True)
        return self._build(default, name, uid, functions, fn)

    def _process_call(self, fn: Any, label: str) -> Any:
        if fn is None:
            return None
        if not isinstance(fn, ProcessWindowFunction):
            raise ConfigError(
                f"operator {label!r}: expected a ProcessWindowFunction, got {type(fn).__name__}"
            )
        return fn.process

    def _build(
        self,
        default: str,
        name: str | None,
        uid: str | None,
        functions: WindowFunctions,
        owner: Any,
    ) -> DataStream:
        label = name or default
        stream = self._stream
        assigner = self._assigner
        timestamp = self._timestamp or stream.timestamp_assigner
        key_selector = stream.key_selector
        lateness = self._lateness
        late_tag = self._late_tag
        count, purge = resolve(self._trigger, assigner.is_event_time, f"operator {label!r}")
        if owner is not None and owner not in functions.owners:
            functions.owners.append(owner)
        # Validated now (build time), not when the job is deployed.
        WindowOperator(
            label,
            "",
            assigner,
            key_selector,
            timestamp,
            functions,
            lateness,
            late_tag,
            set(),
            count,
            purge,
        )
        return stream._windowed(
            default,
            name,
            uid,
            self._parallelism,
            lambda n, u, side_tags: WindowOperator(
                n,
                u,
                assigner,
                key_selector,
                timestamp,
                copy.deepcopy(functions),  # each subtask its own function objects
                lateness,
                late_tag,
                side_tags,
                count,
                purge,
            ),
        )
