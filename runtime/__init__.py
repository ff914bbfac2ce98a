"""Weir: an asyncio actor runtime for stream jobs, with Flink's checkpoint mechanism.

The public API::

    from runtime import StreamEnvironment

    env = StreamEnvironment(parallelism=2)
    (env.from_collection(["a b", "b c"])
        .flat_map(str.split)
        .map(lambda w: (w, 1))
        .key_by(lambda t: t[0])
        .sum(1)
        .collect(name="counts"))
    result = await env.execute("word count")
    result.collected["counts"]
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runtime.api.client import JobClient
    from runtime.api.datastream import DataStream, DataStreamSink, KeyedStream
    from runtime.api.environment import StreamEnvironment
    from runtime.checkpoint import (
        CheckpointConfig,
        CheckpointError,
        CheckpointFailedError,
        CheckpointingMode,
        CheckpointStatistics,
        CheckpointStats,
        CompletedCheckpoint,
        ExternalizedCheckpointRetention,
    )
    from runtime.config import ExecutionConfig
    from runtime.connectors.collection import CollectionSource
    from runtime.connectors.file_sink import FileSink, FileTransaction, read_committed
    from runtime.connectors.sequence import GeneratorSource, NumberSequenceSource, RangeSplit
    from runtime.connectors.sinks import CollectSink, PrintSink, TextFileSink
    from runtime.connectors.two_phase_commit import TwoPhaseCommitSink
    from runtime.errors import ConfigError, OperatorError, WeirError
    from runtime.scheduler.executor import RestoreWarning
    from runtime.scheduler.restart import (
        ExponentialDelayRestart,
        FailureRateRestart,
        FixedDelayRestart,
        NoRestart,
        RestartStrategy,
    )
    from runtime.scheduler.result import (
        JobFailedError,
        JobResult,
        JobStatus,
        OperatorMetrics,
        SavepointFormat,
    )
    from runtime.tasks.async_io import (
        AsyncFunction,
        ExponentialBackoffRetry,
        FixedDelayRetry,
        RetryStrategy,
    )
    from runtime.tasks.context import RuntimeContext
    from runtime.tasks.functions import (
        FilterFunction,
        FlatMapFunction,
        Function,
        KeyedProcessFunction,
        MapFunction,
        ReduceFunction,
        SinkFunction,
    )
    from runtime.tasks.source import Source, SourceReader, SourceSplit, SplitEnumerator
    from storage import (
        ListStateDescriptor,
        MapStateDescriptor,
        ReducingStateDescriptor,
        ValueStateDescriptor,
    )

_LAZY: dict[str, str] = {
    "AsyncFunction": "runtime.tasks.async_io",
    "CheckpointConfig": "runtime.checkpoint",
    "CheckpointError": "runtime.checkpoint",
    "CheckpointFailedError": "runtime.checkpoint",
    "CheckpointStatistics": "runtime.checkpoint",
    "CheckpointStats": "runtime.checkpoint",
    "CheckpointingMode": "runtime.checkpoint",
    "CollectSink": "runtime.connectors.sinks",
    "CollectionSource": "runtime.connectors.collection",
    "CompletedCheckpoint": "runtime.checkpoint",
    "ConfigError": "runtime.errors",
    "DataStream": "runtime.api.datastream",
    "DataStreamSink": "runtime.api.datastream",
    "ExecutionConfig": "runtime.config",
    "ExponentialBackoffRetry": "runtime.tasks.async_io",
    "ExponentialDelayRestart": "runtime.scheduler.restart",
    "ExternalizedCheckpointRetention": "runtime.checkpoint",
    "FailureRateRestart": "runtime.scheduler.restart",
    "FileSink": "runtime.connectors.file_sink",
    "FileTransaction": "runtime.connectors.file_sink",
    "FilterFunction": "runtime.tasks.functions",
    "FixedDelayRestart": "runtime.scheduler.restart",
    "FixedDelayRetry": "runtime.tasks.async_io",
    "FlatMapFunction": "runtime.tasks.functions",
    "Function": "runtime.tasks.functions",
    "GeneratorSource": "runtime.connectors.sequence",
    "JobClient": "runtime.api.client",
    "JobFailedError": "runtime.scheduler.result",
    "JobResult": "runtime.scheduler.result",
    "JobStatus": "runtime.scheduler.result",
    "KeyedProcessFunction": "runtime.tasks.functions",
    "KeyedStream": "runtime.api.datastream",
    "ListStateDescriptor": "storage",
    "MapFunction": "runtime.tasks.functions",
    "MapStateDescriptor": "storage",
    "NoRestart": "runtime.scheduler.restart",
    "NumberSequenceSource": "runtime.connectors.sequence",
    "OperatorError": "runtime.errors",
    "OperatorMetrics": "runtime.scheduler.result",
    "PrintSink": "runtime.connectors.sinks",
    "RangeSplit": "runtime.connectors.sequence",
    "ReduceFunction": "runtime.tasks.functions",
    "ReducingStateDescriptor": "storage",
    "RestartStrategy": "runtime.scheduler.restart",
    "RestoreWarning": "runtime.scheduler.executor",
    "RetryStrategy": "runtime.tasks.async_io",
    "RuntimeContext": "runtime.tasks.context",
    "SavepointFormat": "runtime.scheduler.result",
    "SinkFunction": "runtime.tasks.functions",
    "Source": "runtime.tasks.source",
    "SourceReader": "runtime.tasks.source",
    "SourceSplit": "runtime.tasks.source",
    "SplitEnumerator": "runtime.tasks.source",
    "StreamEnvironment": "runtime.api.environment",
    "TextFileSink": "runtime.connectors.sinks",
    "TwoPhaseCommitSink": "runtime.connectors.two_phase_commit",
    "ValueStateDescriptor": "storage",
    "WeirError": "runtime.errors",
    "read_committed": "runtime.connectors.file_sink",
}
"""Where each public name lives: imported on first use (``weir --help`` stays fast)."""


def __getattr__(name: str) -> Any:
    """Import a public name on first use (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'runtime' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


# Library convention: weir logs under the "weir" logger and leaves handlers to the
# application (``weir run`` adds one that prints on stderr).
logging.getLogger("weir").addHandler(logging.NullHandler())

__all__ = [
    "AsyncFunction",
    "CheckpointConfig",
    "CheckpointError",
    "CheckpointFailedError",
    "CheckpointStatistics",
    "CheckpointStats",
    "CheckpointingMode",
    "CollectSink",
    "CollectionSource",
    "CompletedCheckpoint",
    "ConfigError",
    "DataStream",
    "DataStreamSink",
    "ExecutionConfig",
    "ExponentialBackoffRetry",
    "ExponentialDelayRestart",
    "ExternalizedCheckpointRetention",
    "FailureRateRestart",
    "FileSink",
    "FileTransaction",
    "FilterFunction",
    "FixedDelayRestart",
    "FixedDelayRetry",
    "FlatMapFunction",
    "Function",
    "GeneratorSource",
    "JobClient",
    "JobFailedError",
    "JobResult",
    "JobStatus",
    "KeyedProcessFunction",
    "KeyedStream",
    "ListStateDescriptor",
    "MapFunction",
    "MapStateDescriptor",
    "NoRestart",
    "NumberSequenceSource",
    "OperatorError",
    "OperatorMetrics",
    "PrintSink",
    "RangeSplit",
    "ReduceFunction",
    "ReducingStateDescriptor",
    "RestartStrategy",
    "RestoreWarning",
    "RetryStrategy",
    "RuntimeContext",
    "SavepointFormat",
    "SinkFunction",
    "Source",
    "SourceReader",
    "SourceSplit",
    "SplitEnumerator",
    "StreamEnvironment",
    "TextFileSink",
    "TwoPhaseCommitSink",
    "ValueStateDescriptor",
    "WeirError",
    "read_committed",
]
