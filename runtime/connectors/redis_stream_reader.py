"""``RedisStreamReader``: one source subtask's reader of ``RedisStreamSource`` splits.

Made by ``RedisStreamSource.create_reader`` in the source subtask; reads its streams
with one ``XREAD`` for all of them (redis-py's blocking client in a worker thread, so
the loop never waits on the socket; raw replies parsed here for speed),
``FETCH_COUNT`` entries at a time, and hands them out ``max_records`` at a
time. A split's position is the id of the last entry *handed out*: entries fetched but
not yet handed out are not in a checkpoint, and are read again after a restore.

Per-split watermarks (``runtime.tasks.source.SplitAwareReader``): one split per stream;
every batch holds entries of one stream, ``current_split`` names it; a split listener
hears of every stream at once, and of a bounded stream's end once its last entry was
handed out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from runtime.tasks.source import SplitListener

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
        # Fetched entries not yet handed out: (stream, ids, records), and the cursor in
        # the first.
        self._chunks: list[tuple[str, list[str], list[Any]]] = []
        self._cursor = 0
        self._client: Any = None
        self._sync_client: Any = None
        self.current_split: str | None = None
        self._listener: SplitListener | None = None
        self._reported: set[str] = set()  # splits the listener was told finished

    def set_split_listener(self, listener: SplitListener) -> None:
        """Report every stream now; a bounded one's end once it was handed out."""
        self._listener = listener
        for split_id in self._splits:
            listener.split_added(split_id)
        self._report_finished()

    def _report_finished(self) -> None:
        """Tell the listener of the ended streams none of whose entries wait here."""
        listener = self._listener
        if listener is None or len(self._reported) == len(self._done):
            return
        waiting = {chunk[0] for chunk in self._chunks}
        for name in self._done:
            if name not in self._reported and name not in waiting:
                self._reported.add(name)
                listener.split_finished(name)

    def add_splits(self, splits: Sequence[Any]) -> None:
        """Take the splits (at start, or restored with their positions)."""
        for split in splits:
            split = msgspec.structs.replace(split)
            self._splits[split.split_id] = split
            self._fetched[split.split_id] = split.position
            if self._listener is not None:
                self._listener.split_added(split.split_id)
            end = None if split.end is None else parse_id(split.end)
            self._ends[split.split_id] = end
            if end is not None and parse_id(split.position) >= end:
                self._done.add(split.split_id)

    def _connect(self) -> Any:
        if self._client is None:
            redis = import_redis()
            client = redis.Redis.from_url(
                self._source.url, socket_connect_timeout=10, decode_responses=True
            )
            # Raw replies: redis-py's own parsing of XREAD builds dicts we do not need.
            client.set_response_callback("XREAD", lambda response, **_: response)
            self._client = client
        return self._client

    async def read(self, max_records: int) -> list[Any] | None:
        """Up to ``max_records`` entries; ``[]`` if none yet; None when every split ended."""
        popped = False
        while self._chunks and self._cursor >= len(self._chunks[0][2]):
            self._chunks.pop(0)
            self._cursor = 0
            popped = True
        if popped and self._done:
            self._report_finished()
        if not self._chunks:
            if len(self._done) == len(self._splits):
                return None
            await asyncio.to_thread(self._fetch)
            if self._done:
                self._report_finished()
            if not self._chunks:
                return None if len(self._done) == len(self._splits) else []
        name, ids, records = self._chunks[0]
        first = self._cursor
        last = min(len(records), first + max_records)
        self._cursor = last
        self._splits[name].position = ids[last - 1]
        self.current_split = name
        return records[first:last]

    def _fetch(self) -> None:
        """One ``XREAD`` of every active stream (in the worker thread)."""
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
        # RESP3 answers a map of streams, RESP2 a list of pairs.
        pairs = reply.items() if isinstance(reply, dict) else reply
        for name, entries in pairs:
            if not entries:
                continue
            end = self._ends[name]
            if end is not None and parse_id(entries[-1][0]) > end:
                # The end is in this batch: keep the entries up to it.
                keep = 0
                while keep < len(entries) and parse_id(entries[keep][0]) <= end:
                    keep += 1
                entries = entries[:keep]
                self._done.add(name)
            if not entries:
                continue
            ids = [entry[0] for entry in entries]
            if deserializer is None:
                records: list[Any] = [
                    RedisStreamEntry(name, entry_id, _fields(flat)) for entry_id, flat in entries
                ]
            else:
                records = [
                    deserializer(name, entry_id, _fields(flat)) for entry_id, flat in entries
                ]
            self._chunks.append((name, ids, records))
            self._fetched[name] = ids[-1]
            if end is not None and parse_id(ids[-1]) >= end:
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


def _fields(flat: Any) -> dict[str, str]:
    """A flat ``[field, value, ...]`` reply (a dict already under RESP3) as a dict."""
    if isinstance(flat, dict):
        return flat
    it = iter(flat)
    return dict(zip(it, it, strict=True))
