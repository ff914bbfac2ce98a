"""Built-in sinks: collect, print, plain text files.

Delivery guarantees (see the README's table):

* ``CollectSink`` (``stream.collect()``): results on ``JobResult.collected[name]``;
  per subtask in arrival order. A test and demo sink.
* ``PrintSink`` (``stream.print()``): one line per record on standard output, prefixed
  with ``"<subtask>> "`` when the sink runs with parallelism > 1, as Flink's does.
  At-least-once after a failure.
* ``TextFileSink`` (``stream.write_text(path)``): one line per record; with parallelism
  1 the file ``path``, else the folder ``path`` with ``part-<subtask>`` files.
  At-least-once: after a failure it may hold records twice.

Each subtask works on its own copy of a sink object.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from runtime.tasks.context import RuntimeContext
from runtime.tasks.functions import SinkFunction


class CollectSink(SinkFunction[Any]):
    """Keeps every record in memory; the job result gathers them by sink name."""

    def __init__(self) -> None:
        self.items: list[Any] = []

    def write_batch(self, values: list[Any]) -> None:
        """Append the buffer to this subtask's list."""
        self.items.extend(values)


class PrintSink(SinkFunction[Any]):
    """Prints each record on its own line.

    Args:
        prefix: put before each line (after the subtask prefix).
        stream: where to write; standard output if None (looked up when opened, so
            ``capsys`` and redirections see it).
    """

    def __init__(self, prefix: str = "", stream: IO[str] | None = None) -> None:
        self.prefix = prefix
        self.stream = stream
        self._line_prefix = prefix

    def __deepcopy__(self, memo: dict[int, Any]) -> PrintSink:
        # Each subtask gets its own sink, but all of them write to the same stream.
        return PrintSink(self.prefix, self.stream)

    def open(self, ctx: RuntimeContext) -> None:
        """Work out the subtask prefix (``"2> "``) when the sink is parallel."""
        subtask = f"{ctx.subtask_index + 1}> " if ctx.parallelism > 1 else ""
        self._line_prefix = subtask + self.prefix

    def write_batch(self, values: list[Any]) -> None:
        """Print the buffer's records, one per line, in one write."""
        out = self.stream if self.stream is not None else sys.stdout
        prefix = self._line_prefix
        out.write("".join(f"{prefix}{value}\n" for value in values))


class TextFileSink(SinkFunction[Any]):
    """Writes one line per record to a file per subtask.

    Args:
        path: the file (parallelism 1) or the folder of ``part-<i>`` files.
        formatter: turns a record into its line (without the newline); ``str`` by default.
    """

    def __init__(self, path: str | os.PathLike[str], formatter: Callable[[Any], str] = str):
        self.path = Path(path)
        self.formatter = formatter
        self._file: IO[str] | None = None

    def open(self, ctx: RuntimeContext) -> None:
        """Open (truncate) this subtask's file."""
        if ctx.parallelism == 1:
            target = self.path
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            target = self.path / f"part-{ctx.subtask_index}"
        target.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(target, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write_batch(self, values: list[Any]) -> None:
        """Write the buffer's lines in one call."""
        assert self._file is not None, "TextFileSink used before open()"
        fmt = self.formatter
        self._file.write("".join(f"{fmt(value)}\n" for value in values))

    def close(self) -> None:
        """Flush and close the file."""
        if self._file is not None:
            self._file.close()
            self._file = None
