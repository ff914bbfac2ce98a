"""Sources and sinks: collections, sequences, files, PostgreSQL and Redis.

Their interfaces (``Source``, ``SinkFunction``) are in ``runtime.tasks``; the PostgreSQL
and Redis connectors import their client libraries only when a job uses them.
"""

from __future__ import annotations

from runtime.connectors.collection import CollectionSource
from runtime.connectors.errors import ConnectorError
from runtime.connectors.file_formats import Csv, FileFormat, JsonLines, TextLines
from runtime.connectors.file_sink import FileSink, FileTransaction, read_committed
from runtime.connectors.files import FileSource
from runtime.connectors.postgres import PostgresSink
from runtime.connectors.postgres_batch import PostgresBatchSink, PostgresUpsertSink
from runtime.connectors.redis_sink import RedisSetSink, RedisStreamSink
from runtime.connectors.redis_streams import RedisStreamSource
from runtime.connectors.sequence import GeneratorSource, NumberSequenceSource, RangeSplit
from runtime.connectors.sinks import CollectSink, PrintSink, TextFileSink
from runtime.connectors.two_phase_commit import TwoPhaseCommitSink

__all__ = [
    "CollectSink",
    "CollectionSource",
    "ConnectorError",
    "Csv",
    "FileFormat",
    "FileSink",
    "FileSource",
    "FileTransaction",
    "GeneratorSource",
    "JsonLines",
    "NumberSequenceSource",
    "PostgresBatchSink",
    "PostgresSink",
    "PostgresUpsertSink",
    "PrintSink",
    "RangeSplit",
    "RedisSetSink",
    "RedisStreamSink",
    "RedisStreamSource",
    "TextFileSink",
    "TextLines",
    "TwoPhaseCommitSink",
    "read_committed",
]
