"""The user's API: ``StreamEnvironment``, ``DataStream`` and friends, ``JobClient``.

The top of the runtime below the CLI: it builds the job graph from the user's
transformations and hands it to the scheduler.
"""

from __future__ import annotations

from runtime.api.client import JobClient
from runtime.api.datastream import DataStream, DataStreamSink, KeyedStream
from runtime.api.environment import StreamEnvironment
from runtime.api.windowed import WindowedStream

__all__ = [
    "DataStream",
    "DataStreamSink",
    "JobClient",
    "KeyedStream",
    "StreamEnvironment",
    "WindowedStream",
]
