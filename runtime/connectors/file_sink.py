"""``FileSink``: an exactly-once sink of text lines into part files, committed by rename.

Built on ``TwoPhaseCommitSink``. Each transaction of each subtask is one part file that
lives in three places in turn:

* in progress: ``<dir>/.inprogress/<name>`` while records are written to it;
* pending: ``<dir>/.pending/<name>`` once pre-committed (flushed, fsynced, renamed) when
  the checkpoint's barrier passed the sink;
* committed: ``<dir>/<name>`` once the checkpoint completed (a rename: atomic, and
  idempotent, since committing an already committed file does nothing).

Part names are ``part-<subtask>-<counter>-<lineage>-<random>``, so committed files
sort in the order a subtask committed them, and a restored or resumed job never reuses
a name. ``<lineage>`` is drawn when a job starts without restored state and carried on
by every run restored from its checkpoints. Readers of ``<dir>`` see committed files
only. With parallelism 1 there is one sequence of part files; empty transactions leave
no file. After a failure, files of transactions no checkpoint knows about are removed
when the subtask is restored.

**Output committed after the restored checkpoint is set aside, not written twice.** The
restored state holds, per old subtask, the transaction that was open at the checkpoint
(``part-<s>-<c>-<lineage>-...``): every part file of that subtask and lineage with a
counter of ``c`` or more was begun after the checkpoint, by a run that went on past it.
If such a file is committed (a job restored from a checkpoint older than its newest
completed one: a broken newest checkpoint, or an older savepoint), the restored job will
write its records again, so the sink moves it into ``<dir>/.superseded/`` (nothing is
deleted) and logs it on the ``weir.sink`` logger. The folder then holds exactly the
output of the restored history, each record once (``skips_committed_on_restore``).
Files of other lineages (another job writing into the same folder) are never touched.

**Formats and rolling.** ``format=`` writes records with a file format of
``runtime.connectors.file_formats`` (``TextLines()``, ``JsonLines()``, ``Csv(...)``)
instead of ``formatter``. ``rolling_size=`` (bytes) and ``rolling_interval=`` (seconds)
roll a transaction's part file over to a new one (``<name>.0001``, ``<name>.0002``...) when it
grows past the size or has been open that long (checked as records are written): the
finished part is flushed, fsynced and moved to the pending folder at once, and every
part of the transaction is committed together when its checkpoint completes, as
Flink's rolling policies do.

**Nothing blocks the event loop on the data.** Lines collect in memory and go to the
part file through aiofiles (a worker thread) every ``WRITE_CHUNK`` bytes; the
pre-commit (write the rest, flush, fsync, move to pending) is asynchronous: it runs
while records go on into the next transaction, and the subtask acknowledges the
checkpoint once it finished (``TwoPhaseCommitSink``). Opening a part file and the
renames of commit and abort are metadata operations, done directly. A subclass that
overrides ``write_batch`` makes it ``async def`` and awaits ``super().write_batch``.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any

import aiofiles.os  # type: ignore[import-untyped]
import aiofiles.threadpool  # type: ignore[import-untyped]
import msgspec

from runtime.connectors.file_formats import FileFormat
from runtime.connectors.two_phase_commit import TwoPhaseCommitSink
from runtime.errors import ConfigError
from runtime.tasks.context import RuntimeContext

WRITE_CHUNK = 256 * 1024
"""Bytes of lines a part file collects before they are written (through aiofiles)."""

IN_PROGRESS_DIR = ".inprogress"
PENDING_DIR = ".pending"
SUPERSEDED_DIR = ".superseded"

logger = logging.getLogger("weir.sink")


def _parse_part_name(name: str) -> tuple[str, int, str] | None:
    """``(subtask, counter, lineage)`` of ``part-<s>-<counter>-<lineage>-<random>``."""
    parts = name.split("-")
    if len(parts) != 5 or parts[0] != "part" or not parts[2].isdigit():
        return None
    return parts[1], int(parts[2]), parts[3]


class _PartFile:
    """An open part file: the file object, its aiofiles wrapper, and its size so far."""

    __slots__ = ("buffered", "buffered_size", "handle", "path", "raw", "size")

    def __init__(self, path: Path, raw: IO[str]) -> None:
        self.path = path
        self.raw = raw
        self.handle: Any = aiofiles.threadpool.wrap(raw)
        self.size = 0
        # Text not yet handed to aiofiles: one worker-thread hop per WRITE_CHUNK bytes,
        # not per buffer of records (a hop per buffer halved the sink's throughput).
        self.buffered: list[str] = []
        self.buffered_size = 0

    async def write_buffered(self) -> None:
        """Hand the buffered text to aiofiles (one worker-thread hop)."""
        if self.buffered:
            text = "".join(self.buffered)
            self.buffered.clear()
            self.buffered_size = 0
            await self.handle.write(text)


class FileTransaction(msgspec.Struct, frozen=True):
    """One part file: its name and its place in the subtask's sequence."""

    name: str
    counter: int


class FileSink(TwoPhaseCommitSink[Any, FileTransaction]):
    """Writes one line per record into part files under ``directory``; exactly-once.

    Args:
        directory: where committed part files appear (created if missing).
        formatter: turns a record into its line (without the newline); ``str`` by default.
        format: a file format (``JsonLines()``, ``Csv(...)``...) used instead of
            ``formatter``.
        rolling_size: roll over to a new part file past this many bytes; None: never.
        rolling_interval: roll over to a new part file after this many seconds; None:
            never.

    Raises:
        ConfigError: a rolling option is not a positive number.
    """

    transaction_type = FileTransaction
    skips_committed_on_restore = True

    def __init__(
        self,
        directory: str | os.PathLike[str],
        formatter: Callable[[Any], str] = str,
        *,
        format: FileFormat | None = None,
        rolling_size: int | None = None,
        rolling_interval: float | None = None,
    ) -> None:
        super().__init__()
        rolling = (("rolling_size", rolling_size), ("rolling_interval", rolling_interval))
        for option, value in rolling:
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or value <= 0
            ):
                raise ConfigError(f"FileSink: {option} must be a number > 0 or None, got {value!r}")
        self.directory = Path(directory)
        self.formatter = formatter
        self.format = format
        self.rolling_size = rolling_size
        self.rolling_interval = rolling_interval
        # Per open transaction: its current part file's name, and when it was opened.
        self._parts: dict[str, tuple[str, float]] = {}
        self._subtask = 0
        self._counter = 0
        self._lineage = ""
        self._cuts: list[tuple[str, int, str]] = []
        self._files: dict[str, _PartFile] = {}
        self._closing: set[_PartFile] = set()

    def __deepcopy__(self, memo: dict[int, Any]) -> FileSink:
        """A copy for one subtask: same class and attributes, no open files.

        A subclass keeps its overrides and its own attributes (deep-copied); open file
        handles are never shared (the copy opens its own).
        """
        clone = type(self).__new__(type(self))
        memo[id(self)] = clone
        for name, value in self.__dict__.items():
            if name == "_files":
                setattr(clone, name, {})
            elif name == "_closing":
                setattr(clone, name, set())
            elif name == "formatter":
                setattr(clone, name, value)  # a function: shared, as before
            else:
                setattr(clone, name, copy.deepcopy(value, memo))
        return clone

    # -- paths ----------------------------------------------------------------------------

    def _in_progress(self, name: str) -> Path:
        return self.directory / IN_PROGRESS_DIR / name

    def _pending_path(self, name: str) -> Path:
        return self.directory / PENDING_DIR / name

    def _final(self, name: str) -> Path:
        return self.directory / name

    # -- lifecycle ------------------------------------------------------------------------

    def initialize_state(self, ctx: RuntimeContext) -> None:
        """Create the folders, recover pending transactions, remove stray files."""
        self._subtask = ctx.subtask_index
        for folder in (
            self.directory,
            self.directory / IN_PROGRESS_DIR,
            self.directory / PENDING_DIR,
        ):
            folder.mkdir(parents=True, exist_ok=True)
        self._cuts = []
        self._lineage = ""
        super().initialize_state(ctx)
        self._remove_strays()
        self._set_aside_superseded()

    def _remove_strays(self) -> None:
        # Files of this subtask's transactions that no checkpoint knows (opened after
        # the restored checkpoint): their records come again from the sources.
        known = {t.name for t in self.pending_transactions.values()}
        if self.current_transaction is not None:
            known.add(self.current_transaction.name)
        prefix = f"part-{self._subtask}-"
        for folder in (IN_PROGRESS_DIR, PENDING_DIR):
            for path in (self.directory / folder).glob(prefix + "*"):
                # A rolled part ``<name>.<k>`` belongs to transaction ``<name>``.
                if path.name.split(".")[0] not in known:
                    path.unlink(missing_ok=True)

    # -- transactions ---------------------------------------------------------------------

    def _set_aside_superseded(self) -> None:
        """Move committed files begun after the restored checkpoint to ``.superseded/``."""
        if not self._cuts:
            return
        moved = []
        for path in sorted(self.directory.glob("part-*")):
            parsed = _parse_part_name(path.name)
            if parsed is None:
                continue
            subtask, counter, lineage = parsed
            if any(subtask == s and lineage == line and counter >= c for s, c, line in self._cuts):
                target = self.directory / SUPERSEDED_DIR / path.name
                target.parent.mkdir(exist_ok=True)
                os.replace(path, target)
                moved.append(path.name)
        if moved:
            logger.warning(
                "FileSink %s subtask %d: %d part file(s) committed after the restored "
                "checkpoint by a run that went on past it were moved to %s (their "
                "records are written again by this run): %s",
                self.directory,
                self._subtask,
                len(moved),
                self.directory / SUPERSEDED_DIR,
                ", ".join(moved),
            )

    def begin_transaction(self) -> FileTransaction:
        """A new part file name (the file is created at the first record)."""
        if not self._lineage:
            self._lineage = uuid.uuid4().hex[:8]
        self._counter += 1
        name = f"part-{self._subtask}-{self._counter:06d}-{self._lineage}-{uuid.uuid4().hex[:6]}"
        return FileTransaction(name, self._counter)

    def _continue_lineage(self, transaction: FileTransaction) -> tuple[str, int, str] | None:
        parsed = _parse_part_name(transaction.name)
        if parsed is not None and (not self._lineage or parsed[0] == str(self._subtask)):
            self._lineage = parsed[2]
        return parsed

    def recover_and_commit(self, transaction: FileTransaction) -> None:
        """Commit a restored transaction and continue its subtask's counter."""
        self._continue_lineage(transaction)
        self._counter = max(self._counter, transaction.counter)
        self.commit(transaction)

    def recover_and_abort(self, transaction: FileTransaction) -> None:
        """Drop the transaction open at the snapshot; continue the counter.

        Its name marks where the restored checkpoint cut its subtask's sequence: files
        of that sequence from that counter on were begun after the checkpoint.
        """
        parsed = self._continue_lineage(transaction)
        if parsed is not None:
            self._cuts.append(parsed)
        self._counter = max(self._counter, transaction.counter)
        self.abort(transaction)

    def write(self, transaction: FileTransaction, value: Any) -> None:
        """Not used: a FileSink writes whole buffers (``write_batch``, asynchronously)."""
        raise TypeError("FileSink writes whole buffers: await write_batch(values)")

    async def write_batch(self, values: list[Any]) -> None:
        """Append a buffer's lines, written by aiofiles (the event loop does not block)."""
        self.check_pre_commits()
        transaction = self.current_transaction
        assert transaction is not None, "FileSink used before initialize_state"
        if not values:
            return
        if self.format is not None:
            text = self.format.encode(values)
        else:
            fmt = self.formatter
            text = "".join(f"{fmt(value)}\n" for value in values)
        part = self._file(transaction)
        size = len(text) if text.isascii() else len(text.encode("utf-8"))
        part.size += size
        part.buffered.append(text)
        part.buffered_size += size
        if part.buffered_size >= WRITE_CHUNK:
            await part.write_buffered()
        if self.rolling_size is not None or self.rolling_interval is not None:
            await self._maybe_roll(transaction, part)

    def _part(self, transaction: FileTransaction) -> str:
        """The name of the transaction's current part file."""
        part = self._parts.get(transaction.name)
        return transaction.name if part is None else part[0]

    async def _maybe_roll(self, transaction: FileTransaction, part: _PartFile) -> None:
        """Finish the current part (to pending) if it is big or old enough."""
        name, opened = self._parts.get(transaction.name, (transaction.name, time.monotonic()))
        self._parts.setdefault(transaction.name, (name, opened))
        big = self.rolling_size is not None and part.size >= self.rolling_size
        old = (
            self.rolling_interval is not None and time.monotonic() - opened >= self.rolling_interval
        )
        if not (big or old):
            return
        await self._finish_part(self._files.pop(transaction.name))
        index = int(name.rsplit(".", 1)[1]) + 1 if "." in name else 1
        # Zero-padded, so that committed parts sort in the order they were written.
        self._parts[transaction.name] = (f"{transaction.name}.{index:04d}", time.monotonic())

    async def _finish_part(self, part: _PartFile) -> None:
        """Flush, fsync and close a part file; move it to the pending folder.

        Through aiofiles (one worker-thread hop per step). Until it is closed the part
        stays in ``_closing``, so that ``close()`` closes it if the task stops first.
        """
        self._closing.add(part)
        try:
            await part.write_buffered()
            await part.handle.flush()
            await aiofiles.os.wrap(os.fsync)(part.raw.fileno())
        finally:
            part.raw.close()
            self._closing.discard(part)
        await aiofiles.os.replace(part.path, self._pending_path(part.path.name))

    def _file(self, transaction: FileTransaction) -> _PartFile:
        part = self._files.get(transaction.name)
        if part is None:
            path = self._in_progress(self._part(transaction))
            # Opening is a metadata operation; the data goes through aiofiles.
            raw = open(path, "a", encoding="utf-8")  # noqa: SIM115
            part = self._files[transaction.name] = _PartFile(path, raw)
        return part

    def pre_commit(self, transaction: FileTransaction) -> Awaitable[None] | None:
        """Flush, fsync and move the (current part) file to the pending folder.

        Asynchronous (aiofiles): records go on into the next transaction's file
        meanwhile, and the checkpoint is acknowledged once the file is pending.
        """
        self._parts.pop(transaction.name, None)
        part = self._files.pop(transaction.name, None)
        if part is None:
            return None  # nothing written: no file
        self._closing.add(part)  # close() closes it even if the pre-commit never runs
        return self._finish_part(part)

    def _names(self, folder: str, name: str) -> list[str]:
        """The transaction's part files in ``folder``: ``<name>`` and rolled ``<name>.<k>``."""
        found = [p.name for p in (self.directory / folder).glob(f"{name}.*")]
        if (self.directory / folder / name).exists():
            found.append(name)
        return found

    def commit(self, transaction: FileTransaction) -> None:
        """Move the pending files into place (nothing to do if already there or empty)."""
        for name in self._names(PENDING_DIR, transaction.name):
            # Gone meanwhile: committed before (a repeated notification).
            with contextlib.suppress(FileNotFoundError):
                os.replace(self._pending_path(name), self._final(name))

    def abort(self, transaction: FileTransaction) -> None:
        """Delete the transaction's files, wherever they are."""
        part = self._files.pop(transaction.name, None)
        if part is not None:
            part.raw.close()
        self._parts.pop(transaction.name, None)
        for folder in (IN_PROGRESS_DIR, PENDING_DIR):
            for name in self._names(folder, transaction.name):
                (self.directory / folder / name).unlink(missing_ok=True)

    def close(self) -> None:
        """Abort the open transaction and close any file still open."""
        super().close()
        for part in [*self._files.values(), *self._closing]:
            part.raw.close()
        self._files.clear()
        self._closing.clear()


def read_committed(directory: str | os.PathLike[str]) -> list[str]:
    """The committed lines of a ``FileSink`` folder, file by file in name order."""
    lines: list[str] = []
    for path in sorted(Path(directory).glob("part-*")):
        with open(path, encoding="utf-8") as f:
            lines.extend(line.rstrip("\n") for line in f)
    return lines
