"""``RedisStreamReader``: one source subtask's reader of ``RedisStreamSource`` splits.

Made by ``RedisStreamSource.create_reader`` in the source subtask; reads its streams
with one ``XREAD`` for all of them (redis-py's blocking client in a worker thread, so
the loop never waits on the socket; raw replies parsed here for speed),
``FETCH_COUNT`` entries at a time, and hands them out ``max_records`` at a
time. A split's position is the id of the last entry *handed out*: entries fetched but
not yet handed out are not in a checkpoint, and are read again after a restore.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import msgspec

from runtime.connectors.errors import ConnectorError
from runtime.connectors.redis_streams import (
    FETCH_COUNT,
    RedisStreamEntry,
    RedisStreamSource,
    RedisStreamSplit,
    _failed,
    _where,
    import_redis,
    parse_id,
)

__all__ = ["RedisStreamReader"]


class RedisStreamReader:
    """Reads the splits of one subtask; positions are the last ids handed out."""

    def __init__(self, source: RedisStreamSource, subtask_index: int) -> None:
        self._source = source
        self._label = f"{source.connector} (subtask {subtask_index + 1})"
        self._splits: dict[str, RedisStreamSplit] = {}
        self._fetched: dict[str, str] = {}
        self._ends: dict[str, tuple[int, int] | None] = {}
        self._done: set[str] = set()
        self._buffer: list[tuple[str, str, Any]] = []
        self._client: Any = None
        self._sync_client: Any = None

    def add_splits(self, splits: Sequence[Any]) -> None:
        """Take the splits (at start, or restored with their positions)."""
        for split in splits:
            split = msgspec.structs.replace(split)
            self._splits[split.split_id] = split
            self._fetched[split.split_id] = split.position
            end = None if split.end is None else parse_id(split.end)
            self._ends[split.split_id] = end
            if end is not None and parse_id(split.position) >= end:
                self._done.add(split.split_id)

    def _connect(self) -> Any:
        if self._client is None:
            redis = import_redis()
            client = redis.Redis.from_url(self._source.url, socket_connect_timeout=10)
            # Raw replies: redis-py's own parsing of XREAD builds dicts we do not need.
            client.set_response_callback("XREAD", lambda response, **_: response)
            self._client = client
        return self._client

    async def read(self, max_records: int) -> list[Any] | None:
        """Up to ``max_records`` entries; ``[]`` if none yet; None when every split ended."""
        if not self._buffer:
            if len(self._done) == len(self._splits):
                return None
            await asyncio.to_thread(self._fetch)
            if not self._buffer:
                return None if len(self._done) == len(self._splits) else []
        taken = self._buffer[:max_records]
        del self._buffer[:max_records]
        splits = self._splits
        records = []
        for stream, entry_id, record in taken:
            splits[stream].position = entry_id
            records.append(record)
        return records

    def _fetch(self) -> None:
        redis = import_redis()
        active = [name for name in self._splits if name not in self._done]
        client = self._connect()
        try:
            reply = client.execute_command(
                "XREAD", "COUNT", FETCH_COUNT, "STREAMS", *active,
                *(self._fetched[name] for name in active),
            )  # fmt: skip
        except redis.RedisError as error:
            raise _failed(self._label, None, self._source.url, error) from error
        if not reply:
            return
        deserializer = self._source.deserializer
        buffer = self._buffer
        # RESP3 answers a map of streams, RESP2 a list of pairs.
        pairs = reply.items() if isinstance(reply, dict) else reply
        for raw_name, entries in pairs:
            name = raw_name.decode() if isinstance(raw_name, bytes) else raw_name
            end = self._ends[name]
            last = None
            for raw_id, flat in entries:
                entry_id = raw_id.decode()
                if end is not None and parse_id(entry_id) > end:
                    self._done.add(name)
                    break
                if deserializer is None:
                    record: Any = RedisStreamEntry(name, entry_id, _decode_fields(flat))
                else:
                    it = iter(flat)
                    record = deserializer(name, entry_id, dict(zip(it, it, strict=True)))
                buffer.append((name, entry_id, record))
                last = entry_id
            if last is not None:
                self._fetched[name] = last
                if end is not None and parse_id(last) >= end:
                    self._done.add(name)

    def snapshot_state(self) -> list[Any]:
        """Every split with the id of the last entry handed out."""
        return [msgspec.structs.replace(s) for s in self._splits.values()]

    def notify_checkpoint_complete(self, checkpoint_id: int, splits: Sequence[Any]) -> None:
        """Move the consumer group (if any) to the positions of a completed checkpoint.

        Blocks for one round trip per stream. Raises ``ConnectorError`` if Redis fails.
        """
        group = self._source.group
        if group is None:
            return
        redis = import_redis()
        if self._sync_client is None:
            self._sync_client = redis.Redis.from_url(self._source.url, socket_connect_timeout=10)
        client = self._sync_client
        for split in splits:
            try:
                try:
                    client.xgroup_setid(split.split_id, group, split.position)
                except redis.ResponseError as error:
                    if "NOGROUP" not in str(error):
                        raise
                    client.xgroup_create(split.split_id, group, split.position)
            except redis.RedisError as error:
                raise ConnectorError(
                    self._label,
                    None,
                    f"cannot move consumer group {group!r} of stream {split.split_id!r} at "
                    f"{_where(self._source.url)} to {split.position}: {error}",
                ) from error

    def close(self) -> None:
        """Close the connections."""
        for client in (self._client, self._sync_client):
            if client is not None:
                client.close()
        self._client = None
        self._sync_client = None


def _decode_fields(flat: list[bytes]) -> dict[str, str]:
    it = iter(flat)
    return {k.decode(): v.decode() for k, v in zip(it, it, strict=True)}
