"""``RedisStreamSource``: entries of Redis Streams, with their ids as checkpointed positions.

After Flink's Kafka source: one **split per stream** (``RedisStreamSplit``), assigned
round-robin to the source subtasks; a split's position is the id of the last entry
emitted, and it is what checkpoints store (msgspec, no pickle). A restored reader goes
on with ``XREAD`` after that id, so each entry is read once per restored history. The
source reads with ``XREAD`` (not ``XREADGROUP``): Redis keeps no per-reader state, as
Kafka keeps no offsets for a Flink job.

* **Bounded or not.** ``until=None`` reads forever (new entries as they come);
  ``until="now"`` reads to the last entry each stream has when the job starts (fixed
  then, and carried by checkpoints: a restored job stops at the same entry);
  ``until="<id>"`` reads up to and including that id.
* **Where to start.** ``start="0"`` (every entry; the default) or an id (entries after
  it); ``"$"`` means entries added after the job starts (resolved then to the
  stream's last id, so that a restart does not skip).
* **Consumer group** (``group=``, optional): when a checkpoint completes, the group's
  last-delivered id is set to the checkpointed position (``XGROUP SETID``; the group
  is created if missing), as Flink commits Kafka offsets on checkpoint completion for
  monitoring. Positions never come from the group.
* **Idle streams and event time.** A reader with nothing new returns ``[]`` and the
  subtask polls again (``IDLE_POLL_INTERVAL``). Event time comes from the source's
  ``watermark_strategy`` (``from_source(source, watermark_strategy=...)``); an entry id
  starts with its milliseconds, so ``with_timestamp_assigner(lambda e:
  int(e.id.split("-")[0]))`` gives Redis's own time, and ``with_idleness(seconds)``
  marks a subtask whose streams gave nothing that long idle, so that it does not hold
  back the watermark (Weir's watermarks are per subtask, not per split).

Records are :class:`RedisStreamEntry` (stream, id, fields decoded as UTF-8), or what
``deserializer(stream, id, fields)`` returns.

Errors: an unreachable server, refused credentials or a missing stream (checked when
the job is built, and for a bounded stream again by the reader) raise
:class:`~runtime.connectors.errors.ConnectorError` naming the source, the stream and
the subtask.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from runtime.connectors.errors import ConnectorError
from runtime.errors import ConfigError

__all__ = ["RedisStreamEntry", "RedisStreamSource", "RedisStreamSplit", "parse_id"]

FETCH_COUNT = 4096
"""Entries asked for per ``XREAD`` (a reader hands them out ``max_records`` at a time)."""


class RedisStreamEntry(msgspec.Struct, frozen=True):
    """One stream entry: its stream, its id (``"<ms>-<seq>"``) and its fields."""

    stream: str
    id: str
    fields: dict[str, str]


class RedisStreamSplit(msgspec.Struct):
    """One stream and the reader's position in it.

    Attributes:
        split_id: the stream's name.
        position: the id of the last entry emitted (``"0-0"`` before the first).
        end: the last id to read (inclusive), or None for an unbounded split.
    """

    split_id: str
    position: str = "0-0"
    end: str | None = None


def parse_id(entry_id: str | bytes) -> tuple[int, int]:
    """``"<ms>-<seq>"`` as a pair of ints (``"5"`` is ``(5, 0)``), for comparing ids.

    Raises:
        ValueError: not a stream id.
    """
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def import_redis() -> Any:
    """The ``redis`` module, or a ``ConfigError`` saying how to install it."""
    try:
        import redis
    except ImportError:
        raise ConfigError("the Redis connectors need redis-py: pip install 'weir[redis]'") from None
    return redis


class RedisStreamSource:
    """Reads Redis Streams; see the module docstring.

    Args:
        url: ``redis://[user:password@]host:port/db``.
        streams: one stream name or several (one split each).
        start: ``"0"``, ``"$"`` or an id: read entries after it.
        until: None (unbounded), ``"now"`` or an id (inclusive).
        group: a consumer group to move to each completed checkpoint's position.
        deserializer: ``(stream, id, fields) -> record`` (fields a ``{str: str}``
            dict); None for :class:`RedisStreamEntry` records.

    Raises:
        ConfigError: an option is invalid (when the source is made).
    """

    def __init__(
        self,
        url: str,
        streams: str | Sequence[str],
        *,
        start: str = "0",
        until: str | None = None,
        group: str | None = None,
        deserializer: Callable[[str, str, dict[str, str]], Any] | None = None,
    ) -> None:
        names = [streams] if isinstance(streams, str) else list(streams)
        self.connector = f"RedisStreamSource(streams={names!r})"
        if not names or not all(isinstance(n, str) and n for n in names):
            raise ConfigError(f"{self.connector}: streams must be non-empty stream names")
        if len(set(names)) != len(names):
            raise ConfigError(f"{self.connector}: a stream is named twice")
        for option, value in (("start", start), ("until", until)):
            if value is None or value in ("$", "now", "0"):
                continue
            try:
                parse_id(value)
            except ValueError:
                raise ConfigError(
                    f"{self.connector}: {option}={value!r} is not a stream id "
                    f"('<ms>-<seq>') nor one of {'0, $' if option == 'start' else 'now, None'}"
                ) from None
        if start == "now" or until in ("$", "0"):
            raise ConfigError(
                f"{self.connector}: start takes '0', '$' or an id; until takes None, 'now' or an id"
            )
        self.url = url
        self.streams = names
        self.start = start
        self.until = until
        self.group = group
        self.deserializer = deserializer
        self._splits: list[RedisStreamSplit] | None = None

    def _resolve_splits(self) -> list[RedisStreamSplit]:
        """Check the streams exist and fix ``"$"`` / ``"now"`` to ids (blocks, once)."""
        if self._splits is not None:
            return self._splits
        redis = import_redis()
        client = redis.Redis.from_url(self.url, socket_connect_timeout=10)
        splits = []
        try:
            for name in self.streams:
                try:
                    info = client.xinfo_stream(name)
                except redis.ResponseError as error:
                    if "no such key" in str(error).lower():
                        raise ConnectorError(
                            self.connector,
                            None,
                            f"stream {name!r} does not exist at {_where(self.url)}; "
                            f"create it (XADD) or check the name",
                        ) from None
                    raise _failed(self.connector, None, self.url, error) from error
                except redis.RedisError as error:
                    raise _failed(self.connector, None, self.url, error) from error
                last = info["last-generated-id"]
                last = last.decode() if isinstance(last, bytes) else str(last)
                position = (
                    last if self.start == "$" else ("0-0" if self.start == "0" else self.start)
                )
                end = last if self.until == "now" else self.until
                splits.append(RedisStreamSplit(name, position, end))
        finally:
            client.close()
        self._splits = splits
        return splits

    def create_enumerator(self) -> _RedisEnumerator:
        """Resolves the splits (checks the streams; blocks once per job run)."""
        return _RedisEnumerator(self._resolve_splits())

    def create_reader(self, subtask_index: int) -> Any:
        """A reader of the splits it is given."""
        from runtime.connectors.redis_stream_reader import RedisStreamReader

        return RedisStreamReader(self, subtask_index)


class _RedisEnumerator:
    def __init__(self, splits: list[RedisStreamSplit]) -> None:
        self._splits = splits

    def assign_splits(self, parallelism: int) -> list[list[Any]]:
        assignment: list[list[Any]] = [[] for _ in range(parallelism)]
        for index, split in enumerate(self._splits):
            assignment[index % parallelism].append(msgspec.structs.replace(split))
        return assignment


def _where(url: str) -> str:
    """``host:port/db`` of a Redis URL (no password)."""
    redis = import_redis()
    try:
        kwargs = redis.connection.parse_url(url)
    except ValueError:
        return "<unparsable url>"
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"


def _failed(connector: str, subtask: int | None, url: str, error: BaseException) -> ConnectorError:
    return ConnectorError(
        connector,
        subtask,
        f"Redis at {_where(url)} failed: {error}; check that the server runs and the "
        f"url's host, port and password",
    )
