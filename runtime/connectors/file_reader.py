"""``FileReader``: one source subtask's reader of ``FileSource`` splits (aiofiles).

Made by ``FileSource.create_reader``. It reads its splits one after another: a chunk
of ``chunk_size`` bytes at a time through aiofiles, cut into lines with their byte
offsets; ``read(max_records)`` decodes the next ``max_records`` lines with the format.
A split's position is the offset after the last line handed out. In continuous mode
it lists the directories every ``monitor_interval`` seconds (in a worker thread) and
takes the new files that are its share.

Per-split watermarks (``runtime.tasks.source.SplitAwareReader``): every batch holds
lines of one split, ``current_split`` names it; a split listener hears of a split when
the reader starts it and when it was read to its end. As in Flink, where a file
reader is handed one split at a time, splits still queued do not hold the watermark
back: a subtask reading many files (a backfill) fires its windows as it goes instead
of holding every window until its last file.
"""

from __future__ import annotations

import asyncio
import copy
import zlib
from bisect import bisect_left
from itertools import accumulate
from time import monotonic
from typing import TYPE_CHECKING, Any

import aiofiles  # type: ignore[import-untyped]
import anyio

from runtime.connectors.errors import ConnectorError
from runtime.connectors.file_formats import LineError
from runtime.connectors.files import FileSource, FileSplit, MonitorSplit, file_splits, list_files

if TYPE_CHECKING:
    from runtime.tasks.source import SplitListener

__all__ = ["FileReader"]


class FileReader:
    """Reads the splits of one subtask; see the module docstring."""

    def __init__(self, source: FileSource, subtask_index: int) -> None:
        self._source = source
        self._format = copy.deepcopy(source.format)
        self._label = f"{source.connector} (subtask {subtask_index + 1})"
        self._queue: list[FileSplit] = []
        self._monitors: list[MonitorSplit] = []
        self._opened = False
        self._offset = 0  # where the next chunk is read from
        self._carry = b""  # the unfinished line at the end of the last chunk
        self._skip_partial = False
        self._split_done = False
        self._lines: list[bytes] = []
        self._base = 0  # start offset of the next pending line
        self._limit = 0  # the file's end as far as read (the last line may lack "\n")
        self._next = 0  # index of the next pending line
        self._listed_at = 0.0
        self.current_split: str | None = None
        self._listener: SplitListener | None = None

    def set_split_listener(self, listener: SplitListener) -> None:
        """Report each split when reading it starts and when it ends."""
        self._listener = listener

    def add_splits(self, splits: Any) -> None:
        """Take file splits (with their positions) and monitor splits."""
        for split in splits:
            if isinstance(split, MonitorSplit):
                self._monitors.append(copy.deepcopy(split))
            else:
                self._queue.append(copy.copy(split))

    # -- reading --------------------------------------------------------------------------

    async def read(self, max_records: int) -> list[Any] | None:
        """Up to ``max_records`` records; ``[]`` if none yet; None at the end of input."""
        while True:
            if self._next < len(self._lines):
                records = self._take(max_records)
                if records:
                    return records
                continue
            if self._queue and self._split_done:
                self._finish_split()
                continue
            if not self._queue:
                if not self._monitors:
                    return None
                if not await self._discover():
                    return []
                continue
            await self._load()

    def _take(self, max_records: int) -> list[Any]:
        split = self._queue[0]
        first = self._next
        last = min(len(self._lines), first + max_records)
        taken = self._lines[first:last] if first or last < len(self._lines) else self._lines
        try:
            records = self._format.decode(taken)
        except LineError as error:
            index = first + error.index
            offset = self._base + sum(len(line) + 1 for line in self._lines[:index])
            where = f"byte offset {offset}"
            if split.line is not None:
                where = f"line {split.line + error.index}, {where}"
            raise ConnectorError(
                self._label,
                None,
                f"{split.path}: {where}: {error.reason}; fix or remove the line",
            ) from None
        self._next = last
        # The offset after the last line taken (the base moves past each line taken).
        self._base += sum(map(len, taken)) + len(taken)
        split.position = min(self._base, self._limit)
        if split.line is not None:
            split.line += last - first
        if self.current_split != split.split_id:
            self.current_split = split.split_id
            if self._listener is not None:
                self._listener.split_added(split.split_id)  # started: it counts now
        return records

    def _finish_split(self) -> None:
        split = self._queue.pop(0)
        if self._listener is not None:
            self._listener.split_finished(split.split_id)
        self._opened = False
        self._split_done = False
        self._lines, self._next = [], 0
        self._carry = b""

    async def _open(self, split: FileSplit) -> None:
        """Read the header (formats that have one); place the first read."""
        fmt = self._format
        if fmt.header_lines():
            header = await self._read_at(split.path, 0, self._source.chunk_size)
            line, newline, _ = header.partition(b"\n")
            fmt.set_header(line)
            if split.position == 0:
                split.position = len(line) + len(newline)
                split.line = 2
        if split.position == split.start and split.start > 0:
            # Not the file's first split: the line it starts in is the previous split's.
            self._offset = split.start - 1
            self._skip_partial = True
        else:
            self._offset = split.position
            self._skip_partial = False
        self._carry = b""
        self._opened = True

    async def _read_at(self, path: str, offset: int, size: int) -> bytes:
        try:
            # Shielded: a task cancelled (a restart) while aiofiles' worker thread opens
            # or reads would drop the file object unclosed (a ResourceWarning at some
            # later garbage collection); one chunk's read is worth waiting for.
            with anyio.CancelScope(shield=True):
                async with aiofiles.open(path, "rb") as f:
                    await f.seek(offset)
                    data: bytes = await f.read(size)
        except OSError as error:
            raise ConnectorError(self._label, None, f"cannot read {path}: {error}") from error
        return data

    async def _load(self) -> None:
        """Read the next chunk of the current split into pending lines."""
        split = self._queue[0]
        if not self._opened:
            await self._open(split)
        data = await self._read_at(split.path, self._offset, self._source.chunk_size)
        eof = len(data) < self._source.chunk_size
        base = self._offset - len(self._carry)
        self._offset += len(data)
        data = self._carry + data
        if self._skip_partial:
            cut = data.find(b"\n")
            if cut < 0:
                # The whole chunk is the previous split's line: go on skipping.
                self._carry = b""
                self._split_done = eof
                return
            base += cut + 1
            data = data[cut + 1 :]
            self._skip_partial = False
        lines = data.split(b"\n")
        self._carry = b"" if eof else lines.pop()
        if eof and lines and not lines[-1]:
            lines.pop()  # the file ended with a newline
        if eof:
            self._split_done = True
        if split.end >= 0 and base + len(data) > split.end:
            # Lines that start at or past the split's end belong to the next split.
            starts = list(accumulate((len(line) + 1 for line in lines), initial=base))
            owned = bisect_left(starts, split.end, hi=len(lines))
            if owned < len(lines):
                lines = lines[:owned]
                self._split_done = True
            elif not eof and starts[-1] >= split.end:
                self._split_done = True  # the unfinished line is the next split's
        self._limit = self._offset if eof else 2**63
        self._lines, self._base, self._next = lines, base, 0

    async def _discover(self) -> bool:
        """List the directories if it is time; queue this reader's new files."""
        interval = self._source.monitor_interval
        now = monotonic()
        if interval is None or now - self._listed_at < interval:
            return False
        self._listed_at = now
        files = await asyncio.to_thread(list_files, self._source.paths)
        found = False
        for monitor in self._monitors:
            seen = set(monitor.seen)
            for path in files:
                name = str(path)
                if name in seen or zlib.crc32(name.encode()) % monitor.count != monitor.index:
                    continue
                monitor.seen.append(name)
                size = (await asyncio.to_thread(path.stat)).st_size
                new = file_splits(path, size, self._source.split_size)
                self._queue.extend(new)
                found = True
        return found

    def snapshot_state(self) -> list[Any]:
        """The splits left, the current one at its position; the monitor splits."""
        return [copy.copy(s) for s in self._queue] + [copy.deepcopy(m) for m in self._monitors]

    def close(self) -> None:
        """Nothing to release: files are opened per chunk."""
