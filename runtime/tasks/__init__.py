"""Subtasks and operators, and the interfaces of the user's functions they run.

The record path of docs/design.md: a ``StreamTask`` (``task.py``, ``stream_task.py``,
``source_task.py``) drives an ``OperatorChain`` of operators over its input gate and
record writers. The interfaces a user implements live here, beside the operators that
call them (``functions``, ``source``, ``async_io``), as does how records are routed
between subtasks (``partitioning``), so that connectors, windows and the graph, which
sit above, can use them.
"""

from __future__ import annotations

from runtime.tasks.async_io import (
    AsyncFunction,
    AsyncOptions,
    ExponentialBackoffRetry,
    FixedDelayRetry,
    RetryStrategy,
)
from runtime.tasks.context import RuntimeContext
from runtime.tasks.functions import (
    CheckpointedFunction,
    CheckpointListener,
    FilterFunction,
    FlatMapFunction,
    Function,
    KeyedProcessFunction,
    MapFunction,
    ReduceFunction,
    SinkFunction,
)
from runtime.tasks.partitioning import Partitioning, PartitionKind
from runtime.tasks.source import Source, SourceReader, SourceSplit, SplitEnumerator

__all__ = [
    "AsyncFunction",
    "AsyncOptions",
    "CheckpointListener",
    "CheckpointedFunction",
    "ExponentialBackoffRetry",
    "FilterFunction",
    "FixedDelayRetry",
    "FlatMapFunction",
    "Function",
    "KeyedProcessFunction",
    "MapFunction",
    "PartitionKind",
    "Partitioning",
    "ReduceFunction",
    "RetryStrategy",
    "RuntimeContext",
    "SinkFunction",
    "Source",
    "SourceReader",
    "SourceSplit",
    "SplitEnumerator",
]
