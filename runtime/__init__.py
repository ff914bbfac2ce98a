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

import logging

from runtime.api.async_io import (
    AsyncFunction,
    ExponentialBackoffRetry,
    FixedDelayRetry,
    RetryStrategy,
)
from runtime.api.datastream import DataStream, DataStreamSink, KeyedStream
from runtime.api.environment import StreamEnvironment
from runtime.api.functions import (
    FilterFunction,
    FlatMapFunction,
    Function,
    KeyedProcessFunction,
    MapFunction,
    ReduceFunction,
    SinkFunction,
)
from runtime.api.result import (
    JobClient,
    JobResult,
    JobStatus,
    OperatorMetrics,
    SavepointFormat,
)
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
from runtime.connectors.source import Source, SourceReader, SourceSplit, SplitEnumerator
from runtime.connectors.two_phase_commit import TwoPhaseCommitSink
from runtime.errors import ConfigError, JobFailedError, OperatorError, WeirError
from runtime.scheduler.executor import RestoreWarning
from runtime.scheduler.restart import (
    ExponentialDelayRestart,
    FailureRateRestart,
    FixedDelayRestart,
    NoRestart,
    RestartStrategy,
)
from runtime.tasks.context import RuntimeContext
from storage import (
    ListStateDescriptor,
    MapStateDescriptor,
    ReducingStateDescriptor,
    ValueStateDescriptor,
)

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
