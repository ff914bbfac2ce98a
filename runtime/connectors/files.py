"""``FileSource``: records from files (text lines, JSON Lines, CSV), read with aiofiles.

After Flink's ``FileSource``. The input is files and directories (a directory means the
files in it, not hidden ones, in name order). Each file is one split, or, for a
splittable format with ``split_size`` set, one split per ``split_size`` bytes; a split
that starts inside a line leaves that line to the split before it, and a split reads
past its end to finish the line it is in, as Hadoop's line reader does. A split's
position is a **byte offset** (the start of the next line to read), stored in
checkpoints (``FileSplit``, msgspec): a restored job goes on mid-file.

Reads go through aiofiles in chunks of ``chunk_size`` bytes (one worker-thread hop per
call, a few calls per chunk), so the loop never blocks on the disk; lines are decoded
``max_records`` at a time, so a large chunk does not hold the loop either.

**Continuous mode** (``monitor_interval=`` seconds): the directories are listed again
at that interval and files that appeared are read too, as Flink's
``monitorContinuously``; the source never ends. Each source subtask claims the new
files whose name hashes (crc32) to it, and remembers the files it has seen in its
checkpointed state, so a restored job reads each file once.

A line that does not decode fails the job with a ``ConnectorError`` naming the file,
the line number (when the split started at the beginning of the file) and the byte
offset; the checkpoint covering it does not complete.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from runtime.connectors.errors import ConnectorError
from runtime.connectors.file_formats import FileFormat, TextLines
from runtime.errors import ConfigError

__all__ = ["FileSource", "FileSplit", "MonitorSplit", "list_files"]

DEFAULT_CHUNK_SIZE = 1 << 20


class FileSplit(msgspec.Struct):
    """A byte range of a file and the reader's position in it.

    Attributes:
        split_id: ``"<path>:<start>"``.
        path: the file.
        start: where the split begins (a line that began before it is not its own).
        end: where it ends (the line it is in is its own); -1 for the end of the file.
        position: the byte offset of the next line to read.
        line: the 1-based number of that line, when known (splits from the start).
    """

    split_id: str
    path: str
    start: int
    end: int
    position: int
    line: int | None = None


class MonitorSplit(msgspec.Struct):
    """A subtask's share of the directories watched in continuous mode.

    Attributes:
        split_id: ``"monitor-<index>/<count>"``.
        index: claims new files whose name's crc32 modulo ``count`` is ``index``.
        count: the number of monitor splits (the parallelism at the first start).
        seen: the files already claimed (read, being read, or in a split).
    """

    split_id: str
    index: int
    count: int
    seen: list[str] = msgspec.field(default_factory=list)


def list_files(paths: Sequence[Path]) -> list[Path]:
    """The files named or in the directories named (not hidden ones), in name order."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(
                sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
            )
        elif path.is_file():
            found.append(path)
    return found


def file_splits(path: Path, size: int, split_size: int | None) -> list[FileSplit]:
    """The splits of one file."""
    name = str(path)
    if split_size is None or size <= split_size:
        return [FileSplit(f"{name}:0", name, 0, -1, 0, 1)]
    splits = []
    for start in range(0, size, split_size):
        end = min(start + split_size, size)
        splits.append(
            FileSplit(f"{name}:{start}", name, start, end, start, 1 if start == 0 else None)
        )
    splits[-1].end = -1
    return splits


class FileSource:
    """Reads files; see the module docstring.

    Args:
        paths: a file or directory, or several.
        format: ``TextLines()`` (the default), ``JsonLines(type)`` or ``Csv(...)``.
        split_size: bytes per split of a large file (splittable formats); None: one
            split per file.
        monitor_interval: seconds between listings of the directories (continuous
            mode); None: read what is there when the job starts, then end.
        chunk_size: bytes per read.

    Raises:
        ConfigError: an option is invalid (when the source is made).
    """

    def __init__(
        self,
        paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        *,
        format: FileFormat | None = None,
        split_size: int | None = None,
        monitor_interval: float | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        items = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
        self.paths = [Path(p) for p in items]
        self.connector = f"FileSource({', '.join(str(p) for p in self.paths)})"
        if not self.paths:
            raise ConfigError("FileSource: give at least one file or directory")
        self.format = format if format is not None else TextLines()
        if not isinstance(self.format, FileFormat):
            raise ConfigError(
                f"{self.connector}: format must be TextLines(), JsonLines() or Csv(), "
                f"got {self.format!r}"
            )
        for option, value in (("split_size", split_size), ("chunk_size", chunk_size)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ConfigError(f"{self.connector}: {option} must be an int >= 1, got {value!r}")
        if monitor_interval is not None and not (
            isinstance(monitor_interval, int | float) and monitor_interval > 0
        ):
            raise ConfigError(
                f"{self.connector}: monitor_interval must be seconds > 0 or None, "
                f"got {monitor_interval!r}"
            )
        if split_size is not None and not self.format.splittable:
            raise ConfigError(
                f"{self.connector}: the {self.format.name} format with a header is read "
                f"a file at a time; drop split_size"
            )
        self.split_size = split_size
        self.monitor_interval = monitor_interval
        self.chunk_size = chunk_size

    def create_enumerator(self) -> _FileEnumerator:
        """Lists the files now (blocks briefly).

        Raises:
            ConnectorError: a path does not exist (in continuous mode, a directory).
        """
        for path in self.paths:
            if not path.exists():
                raise ConnectorError(self.connector, None, f"{path} does not exist; check the path")
        splits: list[FileSplit] = []
        for path in list_files(self.paths):
            splits.extend(file_splits(path, path.stat().st_size, self.split_size))
        return _FileEnumerator(splits, self.monitor_interval is not None)

    def create_reader(self, subtask_index: int) -> Any:
        """A reader of the splits it is given."""
        from runtime.connectors.file_reader import FileReader

        return FileReader(self, subtask_index)


class _FileEnumerator:
    def __init__(self, splits: list[FileSplit], monitor: bool) -> None:
        self._splits = splits
        self._monitor = monitor

    def assign_splits(self, parallelism: int) -> list[list[Any]]:
        """Splits round-robin; in continuous mode, one monitor split per subtask."""
        assignment: list[list[Any]] = [[] for _ in range(parallelism)]
        for index, split in enumerate(self._splits):
            assignment[index % parallelism].append(copy.copy(split))
        if self._monitor:
            initial = sorted({split.path for split in self._splits})
            for index in range(parallelism):
                assignment[index].append(
                    MonitorSplit(f"monitor-{index}/{parallelism}", index, parallelism, initial)
                )
        return assignment
