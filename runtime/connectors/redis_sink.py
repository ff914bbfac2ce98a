"""``RedisStreamSink`` (XADD) and ``RedisSetSink`` (SET): records into Redis, batched.

Both buffer records and send them in pipelines of ``batch_size`` (redis-py's blocking
client in a worker thread, one pipeline in flight), and send everything buffered when a
checkpoint's barrier passes, before the subtask acknowledges; after a failure the
records since the restored checkpoint are sent again.

* ``RedisStreamSink(url, stream, fields=...)`` appends each record as an entry:
  **at-least-once** with ids chosen by Redis (``*``). With ``entry_id=`` (a function of
  the record giving an id that grows with the record's order, e.g. from the source's
  own id) it is **idempotent**: Redis refuses an id not greater than the stream's last,
  so entries sent again after a failure are dropped, and the stream holds each record
  once (exactly-once in effect, for one writer per stream).
* ``RedisSetSink(url, key=..., value=...)`` sets a key per record: **idempotent**
  (the last write of a key wins, whether sent once or twice).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from runtime.connectors.background import BackgroundWriter
from runtime.connectors.errors import ConnectorError, short_repr
from runtime.connectors.redis_streams import _where, import_redis
from runtime.errors import ConfigError
from runtime.tasks.context import RuntimeContext
from runtime.tasks.functions import SinkFunction

__all__ = ["RedisSetSink", "RedisStreamSink"]

_ID_NOT_GREATER = "equal or smaller than the target stream top item"


class _RedisBatchSink(SinkFunction[Any]):
    """Buffers records and sends pipelines of them; see the module docstring."""

    def __init__(self, url: str, connector: str, batch_size: int) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"{connector}: batch_size must be an int >= 1, got {batch_size!r}")
        self.url = url
        self.connector = connector
        self.batch_size = batch_size
        self._label = connector
        self._client: Any = None
        self._records: list[Any] = []
        self._writer = BackgroundWriter()

    def __deepcopy__(self, memo: dict[int, Any]) -> _RedisBatchSink:
        clone = type(self).__new__(type(self))
        memo[id(self)] = clone
        for name, value in self.__dict__.items():
            if name == "_client":
                setattr(clone, name, None)
            elif name == "_writer":
                setattr(clone, name, BackgroundWriter())
            elif callable(value):
                setattr(clone, name, value)
            else:
                setattr(clone, name, copy.deepcopy(value, memo))
        return clone

    def open(self, ctx: RuntimeContext) -> None:
        """Connect and check the server answers (blocks once).

        Raises:
            ConnectorError: the server cannot be reached or refuses the credentials.
        """
        redis = import_redis()
        self._label = f"{self.connector} (subtask {ctx.subtask_index + 1}/{ctx.parallelism})"
        self._client = redis.Redis.from_url(self.url, socket_connect_timeout=10)
        try:
            self._client.ping()
        except redis.RedisError as error:
            raise ConnectorError(
                self._label,
                None,
                f"cannot reach Redis at {_where(self.url)}: {error}; check that the server "
                f"runs and the url's host, port and password",
            ) from error

    def write_batch(self, values: list[Any]) -> None:
        """Buffer; once ``batch_size`` records wait, send them in the worker."""
        self._records.extend(values)
        if len(self._records) >= self.batch_size:
            records, self._records = self._records, []
            self._writer.submit(lambda: self._send(records))

    def _send(self, records: list[Any]) -> None:
        redis = import_redis()
        pipe = self._client.pipeline(transaction=False)
        for record in records:
            try:
                self._queue(pipe, record)
            except Exception as error:
                raise ConnectorError(
                    self._label,
                    None,
                    f"cannot make a command of record {short_repr(record)}: {error}",
                ) from error
        try:
            replies = pipe.execute(raise_on_error=False)
        except redis.RedisError as error:
            raise ConnectorError(
                self._label, None, f"Redis at {_where(self.url)} failed: {error}"
            ) from error
        for record, reply in zip(records, replies, strict=True):
            if isinstance(reply, Exception) and not self._tolerated(reply):
                raise ConnectorError(
                    self._label, None, f"Redis rejected record {short_repr(record)}: {reply}"
                )

    def _queue(self, pipe: Any, record: Any) -> None:
        raise NotImplementedError

    def _tolerated(self, reply: Exception) -> bool:
        return False

    def flush(self) -> None:
        """Send everything buffered (blocks)."""
        self._writer.wait()
        records, self._records = self._records, []
        if records:
            self._send(records)

    def snapshot_state(self, checkpoint_id: int) -> None:
        """Send everything before the checkpoint is acknowledged."""
        self.flush()

    def finish(self) -> None:
        """End of input: send everything."""
        self.flush()

    def close(self) -> None:
        """Drop what is unsent (it comes again after a failure) and disconnect."""
        self._records = []
        self._writer.close()
        if self._client is not None:
            self._client.close()
            self._client = None


class RedisStreamSink(_RedisBatchSink):
    """Appends each record to ``stream`` (``XADD``).

    Args:
        url: ``redis://[user:password@]host:port/db``.
        stream: the stream's name (created by the first entry).
        fields: the record's fields (``{name: value}``); by default a dict record is
            taken as it is, anything else as ``{"value": str(record)}``.
        entry_id: the record's entry id (``"<ms>-<seq>"``), growing with the record
            order; makes the sink idempotent. None: Redis picks (at-least-once).
        maxlen: trim the stream to about this many entries (``MAXLEN ~``), or None.
        batch_size: records per pipeline.
    """

    def __init__(
        self,
        url: str,
        stream: str,
        *,
        fields: Callable[[Any], dict[str, Any]] | None = None,
        entry_id: Callable[[Any], str] | None = None,
        maxlen: int | None = None,
        batch_size: int = 1000,
    ) -> None:
        if not isinstance(stream, str) or not stream:
            raise ConfigError(f"RedisStreamSink: stream must be a non-empty name, got {stream!r}")
        super().__init__(url, f"RedisStreamSink(stream={stream!r})", batch_size)
        self.stream = stream
        self.fields = fields
        self.entry_id = entry_id
        self.maxlen = maxlen

    def _queue(self, pipe: Any, record: Any) -> None:
        if self.fields is not None:
            fields = self.fields(record)
        elif isinstance(record, dict):
            fields = record
        else:
            fields = {"value": str(record)}
        entry_id = "*" if self.entry_id is None else self.entry_id(record)
        pipe.xadd(
            self.stream,
            fields,
            id=entry_id,
            maxlen=self.maxlen,
            approximate=True,
        )

    def _tolerated(self, reply: Exception) -> bool:
        # An entry sent again after a failure: already in the stream.
        return self.entry_id is not None and _ID_NOT_GREATER in str(reply)


class RedisSetSink(_RedisBatchSink):
    """Sets ``key(record)`` to ``value(record)`` (``SET``); idempotent.

    Args:
        url: ``redis://[user:password@]host:port/db``.
        key: the record's key.
        value: the record's value (bytes, str, int or float); ``str`` by default.
        ttl: seconds before the key expires, or None.
        batch_size: records per pipeline.
    """

    def __init__(
        self,
        url: str,
        *,
        key: Callable[[Any], str],
        value: Callable[[Any], Any] = str,
        ttl: float | None = None,
        batch_size: int = 1000,
    ) -> None:
        if not callable(key):
            raise ConfigError(f"RedisSetSink: key must be a function of the record, got {key!r}")
        super().__init__(url, "RedisSetSink", batch_size)
        self.key = key
        self.value = value
        self.ttl = ttl

    def _queue(self, pipe: Any, record: Any) -> None:
        ttl = None if self.ttl is None else max(1, int(self.ttl * 1000))
        pipe.set(self.key(record), self.value(record), px=ttl)
