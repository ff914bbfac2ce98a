"""``DataStream`` and ``KeyedStream``: the fluent API that builds a job's logical graph.

Each method adds a ``Transformation`` to the environment and returns a new stream; no
record moves until ``env.execute``. Every operator method takes the keyword options
``name`` (shown in results and errors), ``uid`` (the stable id that matches state
across runs; set it on every stateful operator) and ``parallelism`` (the number of
subtasks; the environment's default if omitted). Functions are checked when they are
added: one that cannot take the arguments it will be given is a ``ConfigError`` naming
the operator.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from runtime.connectors.sinks import CollectSink, PrintSink, TextFileSink
from runtime.errors import ConfigError
from runtime.graph.transformations import NodeKind, Transformation
from runtime.tasks.async_io import AsyncFunction, RetryStrategy, check_async_options
from runtime.tasks.async_wait import AsyncWaitOperator
from runtime.tasks.functions import (
    Adapted,
    FilterFunction,
    FlatMapFunction,
    Function,
    KeyedProcessFunction,
    MapFunction,
    ReduceFunction,
    SinkFunction,
    adapt,
    check_arity,
)
from runtime.tasks.keyed_operators import KeyedReduceOperator
from runtime.tasks.operators import (
    FilterOperator,
    FlatMapOperator,
    MapOperator,
    SinkOperator,
    StreamOperator,
)
from runtime.tasks.partitioning import (
    BROADCAST,
    REBALANCE,
    SHUFFLE,
    Partitioning,
    PartitionKind,
)
from runtime.tasks.time_operators import (
    OutputTag,
    SideOutputOperator,
    TimestampsAndWatermarksOperator,
    keyed_process_operator,
)
from runtime.time.watermarks import WatermarkStrategy
from storage import stable_hash
from storage.errors import KeyEncodingError

if TYPE_CHECKING:
    from runtime.api.environment import StreamEnvironment
    from runtime.api.windowed import WindowedStream
    from runtime.windows.assigners import WindowAssigner


def _per_subtask(adapted: Adapted, operator: str) -> Callable[[], Adapted]:
    """Each subtask works on its own copy of a function object (as in Flink)."""
    owner = adapted.owner
    if owner is None:
        return lambda: adapted
    try:
        copy.deepcopy(owner)
    except Exception as error:
        raise ConfigError(
            f"operator {operator!r}: cannot copy {type(owner).__name__} for each subtask "
            f"({type(error).__name__}: {error}); create resources such as connections "
            f"and locks in open(), not in __init__"
        ) from None
    method = adapted.call.__name__

    def make() -> Adapted:
        clone = copy.deepcopy(owner)
        return Adapted(getattr(clone, method), adapted.is_async, clone)

    return make


class DataStream:
    """A stream of records; methods add operators and return the resulting stream."""

    def __init__(self, env: StreamEnvironment, node: Transformation) -> None:
        self._env = env
        self._node = node
        # Event time (runtime.time): the records' timestamp function, and the side
        # output tags that have consumers (filled by get_side_output before the run).
        self._timestamps: Callable[[Any], Any] | None = None
        self._side_tags: set[OutputTag] = set()

    @property
    def timestamp_assigner(self) -> Callable[[Any], Any] | None:
        """The timestamp function of this stream's records, if event time is set up.

        Set by ``assign_timestamps_and_watermarks`` (or a source's strategy) and kept
        through operators that keep the records (``filter``, ``key_by``); records carry
        no timestamp field, so after a ``map`` give ``window()`` a ``timestamp=``.
        """
        return self._timestamps

    def assign_timestamps_and_watermarks(
        self,
        strategy: WatermarkStrategy,
        *,
        name: str | None = None,
        uid: str | None = None,
        parallelism: int | None = None,
    ) -> DataStream:
        """Give the records event timestamps and generate watermarks with ``strategy``.

        Raises:
            ConfigError: ``strategy`` is not a ``WatermarkStrategy``.
        """
        if not isinstance(strategy, WatermarkStrategy):
            raise ConfigError(
                f"assign_timestamps_and_watermarks: expected a WatermarkStrategy, "
                f"got {type(strategy).__name__}"
            )
        node = self._operator(
            "timestamps",
            name,
            uid,
            parallelism,
            lambda n, u: TimestampsAndWatermarksOperator(n, u, strategy),
        )
        stream = DataStream(self._env, node)
        stream._timestamps = strategy.timestamp_assigner
        return stream

    def get_side_output(self, tag: OutputTag) -> DataStream:
        """The records this stream's operator emitted with ``ctx.output(tag, value)``.

        Raises:
            ConfigError: ``tag`` is not an ``OutputTag``.
        """
        if not isinstance(tag, OutputTag):
            raise ConfigError(f"get_side_output: expected an OutputTag, got {type(tag).__name__}")
        self._side_tags.add(tag)
        node = self._operator(
            f"side-{tag.name}",
            None,
            None,
            self._node.parallelism,
            lambda n, u: SideOutputOperator(n, u, tag),
        )
        node.side_tag = tag
        return DataStream(self._env, node)

    def window_all(
        self, assigner: WindowAssigner, *, timestamp: Callable[[Any], Any] | None = None
    ) -> WindowedStream:
        """Windows over the whole stream (one subtask), as Flink's ``windowAll``."""
        keyed = self.key_by(_all_key)
        from runtime.api.windowed import WindowedStream

        return WindowedStream(keyed, assigner, timestamp, parallelism=1)

    @property
    def environment(self) -> StreamEnvironment:
        """The environment the stream belongs to."""
        return self._env

    @property
    def transformation(self) -> Transformation:
        """The logical node that produces this stream."""
        return self._node

    # -- one-input operators --------------------------------------------------------------

    def _operator(
        self,
        default_name: str,
        name: str | None,
        uid: str | None,
        parallelism: int | None,
        factory: Callable[[str, str], StreamOperator],
        kind: NodeKind = NodeKind.OPERATOR,
        key_selector: Callable[[Any], Any] | None = None,
    ) -> Transformation:
        return self._env._add_node(
            kind,
            default_name,
            name=name,
            uid=uid,
            parallelism=parallelism,
            inputs=[self._node],
            factory=factory,
            key_selector=key_selector,
        )

    def _adapt(
        self,
        fn: object,
        method: str,
        nargs: int,
        what: str,
        default: str,
        name: str | None,
        base: type[Function],
    ) -> Callable[[], Adapted]:
        label = name or default
        return _per_subtask(adapt(fn, method, nargs, what, label, base), label)

    def map(
        self,
        fn: Callable[[Any], Any] | MapFunction[Any, Any],
        *,
        name: str | None = None,
        uid: str | None = None,
        parallelism: int | None = None,
    ) -> DataStream:
        """Apply ``fn`` to every record (a function, ``async def``, or a ``MapFunction``)."""
        make = self._adapt(fn, "map", 1, "the map function", "map", name, MapFunction)
        node = self._operator("map", name, uid, parallelism, lambda n, u: MapOperator(n, u, make()))
        return DataStream(self._env, node)

    def filter(
        self,
        fn: Callable[[Any], Any] | FilterFunction[Any],
        *,
        name: str | None = None,
        uid: str | None = None,
        parallelism: int | None = None,
    ) -> DataStream:
        """Keep the records for which ``fn`` is true."""
        make = self._adapt(fn, "filter", 1, "the filter function", "filter", name, FilterFunction)
        node = self._operator(
            "filter", name, uid, parallelism, lambda n, u: FilterOperator(n, u, make())
        )
        stream = DataStream(self._env, node)
        stream._timestamps = self._timestamps
        return stream

    def flat_map(
        self,
        fn: Callable[[Any], Iterable[Any] | None] | FlatMapFunction[Any, Any],
        *,
        name: str | None = None,
        uid: str | None = None,
        parallelism: int | None = None,
    ) -> DataStream:
        """Replace every record by the records of the iterable ``fn`` returns."""
        make = self._adapt(
            fn, "flat_map", 1, "the flat_map function", "flat_map", name, FlatMapFunction
        )
        node = self._operator(
            "flat_map", name, uid, parallelism, lambda n, u: FlatMapOperator(n, u, make())
        )
        return DataStream(self._env, node)

    def async_map(
        self,
        fn: Callable[[Any], Any] | AsyncFunction[Any, Any],
        *,
        capacity: int = 100,
        ordered: bool = True,
        timeout: float | None = None,
        retry: RetryStrategy | None = None,
        name: str | None = None,
        uid: str | None = None,
        parallelism: int | None = None,
    ) -> DataStream:
        """Call ``fn`` for every record with up to ``capacity`` calls in flight (async I/O).

        As Flink's ``AsyncDataStream.orderedWait`` / ``unorderedWait``: ``fn`` is an
        ``async def`` of one record or an ``AsyncFunction``; it returns one output
        record or a list of them. The operator runs alone in its subtasks (not chained).

        Args:
            fn: the call.
            capacity: calls in flight per subtask; when full, the operator takes no more
                input (backpressure) but still takes part in checkpoints at once.
            ordered: emit results in input order (else as soon as each completes).
            timeout: seconds per record, retries included; on expiry the function's
                ``timeout(value)`` gives the outputs, else the operator fails.
            retry: a ``FixedDelayRetry`` or ``ExponentialBackoffRetry``.
            name: the operator's name.
            uid: its stable id (its checkpoints hold the records in flight).
            parallelism: its number of subtasks.

        Raises:
            ConfigError: an option is invalid or ``fn`` is not asynchronous.
        """
        label = name or "async_map"
        options = check_async_options(label, capacity, ordered, timeout, retry)
        adapted = adapt(fn, "async_invoke", 1, "the async_map function", label, AsyncFunction)
        if not adapted.is_async:
            what = getattr(adapted.call, "__qualname__", type(fn).__name__)
            raise ConfigError(
                f"operator {label!r}: the async_map function {what} is not asynchronous; "
                f"make it async def (use map() for a plain function)"
            )
        make = _per_subtask(adapted, label)

        def factory(n: str, u: str) -> StreamOperator:
            return AsyncWaitOperator(n, u, make(), options)

        node = self._operator("async_map", name, uid, parallelism, factory)
        node.chainable = False
        return DataStream(self._env, node)

    # -- partitioning ---------------------------------------------------------------------

    def _partition(self, partitioning: Partitioning) -> Transformation:
        return self._env._add_node(
            NodeKind.PARTITION,
            partitioning.kind.value,
            inputs=[self._node],
            partitioning=partitioning,
        )

    def key_by(
        self, key_selector: Callable[[Any], Any], *, key_type: type | None = None
    ) -> KeyedStream:
        """Partition by key: records with equal keys go to the same subtask.

        Args:
            key_selector: returns a record's key: a bool, int, float, str, bytes or a
                tuple of these (the types the stable hash encodes). As in Flink, None
                is not a key.
            key_type: the keys' type, if known: checked now, so a key type the stable
                hash cannot encode is an error when the job is built.
        """
        check_arity(key_selector, 1, "the key selector", "key_by")
        if key_type is type(None):
            raise ConfigError(
                "key_by: key_type NoneType cannot be keyed: None is not a key (as in Flink); "
                "map records without a key to a real key, e.g. '' or -1"
            )
        if key_type is not None:
            sample = _sample_of(key_type)
            try:
                stable_hash(sample)
            except KeyEncodingError as error:
                raise ConfigError(
                    f"key_by: key_type {key_type!r} cannot be keyed: {error}"
                ) from None
        partitioning = Partitioning(PartitionKind.KEY_GROUP, key_selector)
        keyed = KeyedStream(self._env, self._partition(partitioning), key_selector)
        keyed._timestamps = self._timestamps
        return keyed

    def rebalance(self) -> DataStream:
        """Spread buffers round robin over the next operator's subtasks."""
        return DataStream(self._env, self._partition(REBALANCE))

    def shuffle(self) -> DataStream:
        """Send each buffer to a random subtask of the next operator."""
        return DataStream(self._env, self._partition(SHUFFLE))

    def broadcast(self) -> DataStream:
        """Send every record to every subtask of the next operator."""
        return DataStream(self._env, self._partition(BROADCAST))

    def union(self, *others: DataStream) -> DataStream:
        """Merge this stream with ``others`` (records of the same type) into one."""
        for other in others:
            if not isinstance(other, DataStream):
                raise ConfigError(f"union: expected DataStreams, got {type(other).__name__}")
            if other._env is not self._env:
                raise ConfigError("union: streams of different environments cannot be merged")
        node = self._env._add_node(
            NodeKind.UNION, "union", inputs=[self._node, *(o._node for o in others)]
        )
        return DataStream(self._env, node)

    # -- sinks ----------------------------------------------------------------------------

    def sink_to(
        self,
        sink: Callable[[Any], Any] | SinkFunction[Any],
        *,
        name: str | None = None,
        uid: str | None = None,
        parallelism: int | None = None,
        _default_name: str = "sink",
    ) -> DataStreamSink:
        """Write every record with ``sink``.

        ``sink`` is a function or ``async def`` of one record, or a ``SinkFunction``
        implementing ``invoke`` or ``write_batch``.
        """
        label = name or _default_name
        if isinstance(sink, SinkFunction):
            batch = type(sink).write_batch is not SinkFunction.write_batch
            method = "write_batch" if batch else "invoke"
            adapted = adapt(sink, method, 1, f"the sink's {method}", label, SinkFunction)
        else:
            batch = False
            adapted = adapt(sink, "invoke", 1, "the sink function", label, SinkFunction)
        make = _per_subtask(adapted, label)
        node = self._operator(
            _default_name,
            name,
            uid,
            parallelism,
            lambda n, u: SinkOperator(n, u, make(), batch),
            kind=NodeKind.SINK,
        )
        return DataStreamSink(node)

    def collect(
        self, *, name: str | None = None, uid: str | None = None, parallelism: int | None = None
    ) -> DataStreamSink:
        """Keep the records in memory: ``JobResult.collected[name]`` after the job."""
        return self.sink_to(
            CollectSink(), name=name, _default_name="collect", uid=uid, parallelism=parallelism
        )

    def print(
        self,
        prefix: str = "",
        *,
        name: str | None = None,
        uid: str | None = None,
        parallelism: int | None = None,
    ) -> DataStreamSink:
        """Print every record on standard output (``"<subtask>> "`` first if parallel)."""
        return self.sink_to(
            PrintSink(prefix), name=name, _default_name="print", uid=uid, parallelism=parallelism
        )

    def write_text(
        self,
        path: str | os.PathLike[str],
        formatter: Callable[[Any], str] = str,
        *,
        name: str | None = None,
        uid: str | None = None,
        parallelism: int | None = None,
    ) -> DataStreamSink:
        """Write one line per record to ``path`` (a folder of part files if parallel)."""
        check_arity(formatter, 1, "the formatter", name or "write_text")
        return self.sink_to(
            TextFileSink(path, formatter),
            name=name,
            _default_name="write_text",
            uid=uid,
            parallelism=parallelism,
        )


def _all_key(record: Any) -> int:
    return 0


def _sample_of(key_type: type) -> Any:
    samples: dict[type, Any] = {
        int: 0,
        str: "",
        bytes: b"",
        float: 0.0,
        bool: False,
        tuple: (),
        type(None): None,
    }
    if key_type in samples:
        return samples[key_type]
    try:
        return key_type()
    except Exception:
        return object()


class KeyedStream(DataStream):
    """A stream partitioned by key: ``process``, ``reduce`` and ``sum`` keep keyed state."""

    def __init__(
        self, env: StreamEnvironment, node: Transformation, key_selector: Callable[[Any], Any]
    ) -> None:
        super().__init__(env, node)
        self.key_selector = key_selector

    def process(
        self,
        fn: KeyedProcessFunction[Any, Any] | Callable[[Any, Any], Iterable[Any] | None],
        *,
        name: str | None = None,
        uid: str | None = None,
        parallelism: int | None = None,
    ) -> DataStream:
        """Run ``fn.process_element(value, ctx)`` per record with keyed state (``ctx``).

        A function class may define ``on_timer(timestamp, ctx)`` and register timers
        with ``ctx.timer_service``; ``ctx.output(tag, value)`` emits to a side output.
        """
        make = self._adapt(
            fn, "process_element", 2, "process_element", "process", name, KeyedProcessFunction
        )
        key_selector = self.key_selector
        side_tags: set[OutputTag] = set()
        node = self._operator(
            "process",
            name,
            uid,
            parallelism,
            lambda n, u: keyed_process_operator(n, u, make(), key_selector, side_tags),
            key_selector=key_selector,
        )
        stream = DataStream(self._env, node)
        stream._side_tags = side_tags
        return stream

    def window(
        self, assigner: WindowAssigner, *, timestamp: Callable[[Any], Any] | None = None
    ) -> WindowedStream:
        """Cut each key's records into the windows of ``assigner``.

        Args:
            assigner: e.g. ``TumblingEventTimeWindows.of(60)``.
            timestamp: the records' event timestamp (default: the stream's assigner).
        """
        from runtime.api.windowed import WindowedStream

        return WindowedStream(self, assigner, timestamp)

    def count_window(self, size: int) -> WindowedStream:
        """Windows of ``size`` records per key (Flink's ``countWindow``).

        ``window(GlobalWindows.create())`` fired and purged every ``size`` records; a
        last window of fewer records does not fire.

        Raises:
            ConfigError: ``size`` is not an int >= 1.
        """
        from runtime.windows.assigners import GlobalWindows
        from runtime.windows.triggers import CountTrigger, PurgingTrigger

        trigger = PurgingTrigger.of(CountTrigger.of(size))
        return self.window(GlobalWindows.create()).trigger(trigger)

    def _windowed(
        self,
        default_name: str,
        name: str | None,
        uid: str | None,
        parallelism: int | None,
        factory: Callable[[str, str, set[OutputTag]], StreamOperator],
    ) -> DataStream:
        side_tags: set[OutputTag] = set()
        node = self._operator(
            default_name,
            name,
            uid,
            parallelism,
            lambda n, u: factory(n, u, side_tags),
            key_selector=self.key_selector,
        )
        stream = DataStream(self._env, node)
        stream._side_tags = side_tags
        return stream

    def reduce(
        self,
        fn: Callable[[Any, Any], Any] | ReduceFunction[Any],
        *,
        name: str | None = None,
        uid: str | None = None,
        parallelism: int | None = None,
    ) -> DataStream:
        """Fold each key's records with ``fn(accumulated, record)``; emit each new value."""
        make = self._adapt(fn, "reduce", 2, "the reduce function", "reduce", name, ReduceFunction)
        if make().is_async:
            raise ConfigError(
                f"operator {name or 'reduce'!r}: the reduce function must not be async"
            )
        key_selector = self.key_selector
        node = self._operator(
            "reduce",
            name,
            uid,
            parallelism,
            lambda n, u: KeyedReduceOperator(n, u, make(), key_selector),
            key_selector=key_selector,
        )
        return DataStream(self._env, node)

    def sum(
        self,
        field: int | str | None = None,
        *,
        name: str | None = None,
        uid: str | None = None,
        parallelism: int | None = None,
    ) -> DataStream:
        """Running sum per key, emitted per record.

        Sums the records themselves (``field=None``), a tuple position (``field=1``) or a
        dict key (``field="n"``); other fields come from the first record of the key, as
        in Flink.
        """
        if field is None:

            def add(acc: Any, value: Any) -> Any:
                return acc + value
        elif isinstance(field, int) and not isinstance(field, bool):
            position = field

            def add(acc: Any, value: Any) -> Any:
                return (*acc[:position], acc[position] + value[position], *acc[position + 1 :])
        elif isinstance(field, str):
            key = field

            def add(acc: Any, value: Any) -> Any:
                return {**acc, key: acc[key] + value[key]}
        else:
            raise ConfigError(
                f"sum: field must be None, a tuple position or a dict key, got {field!r}"
            )
        return self.reduce(add, name=name or "sum", uid=uid, parallelism=parallelism)


class DataStreamSink:
    """The end of a stream: returned by ``sink_to``, ``collect``, ``print``, ``write_text``."""

    def __init__(self, node: Transformation) -> None:
        self.transformation = node

    @property
    def name(self) -> str:
        """The sink's name (``JobResult.collected`` uses it for ``collect``)."""
        return self.transformation.name
