"""``FileSink``: an exactly-once sink of text lines into part files, committed by rename.

Built on ``TwoPhaseCommitSink``. Each transaction of each subtask is one part file that
lives in three places in turn:

* in progress: ``<dir>/.inprogress/<name>`` while records are written to it;
* pending: ``<dir>/.pending/<name>`` once pre-committed (flushed, fsynced, renamed) when
  the checkpoint's barrier passed the sink;
* committed: ``<dir>/<name>`` once the checkpoint completed (a rename: atomic, and
  idempotent, since committing an already committed file does nothing).

Part names are ``part-<subtask>-<counter>-<random>``, so committed files sort in the
order a subtask committed them, and a restored or resumed job never reuses a name.
Readers of ``<dir>`` see committed files only. With parallelism 1 there is one
sequence of part files; empty transactions leave no file. After a failure, files of
transactions no checkpoint knows about are removed when the subtask is restored.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import msgspec

from runtime.connectors.two_phase_commit import TwoPhaseCommitSink
from runtime.tasks.context import RuntimeContext

IN_PROGRESS_DIR = ".inprogress"
PENDING_DIR = ".pending"


class FileTransaction(msgspec.Struct, frozen=True):
    """One part file: its name and its place in the subtask's sequence."""

    name: str
    counter: int


class FileSink(TwoPhaseCommitSink[Any, FileTransaction]):
    """Writes one line per record into part files under ``directory``; exactly-once.

    Args:
        directory: where committed part files appear (created if missing).
        formatter: turns a record into its line (without the newline); ``str`` by default.
    """

    transaction_type = FileTransaction

    def __init__(
        self, directory: str | os.PathLike[str], formatter: Callable[[Any], str] = str
    ) -> None:
        super().__init__()
        self.directory = Path(directory)
        self.formatter = formatter
        self._subtask = 0
        self._counter = 0
        self._files: dict[str, IO[str]] = {}

    def __deepcopy__(self, memo: dict[int, Any]) -> FileSink:
        return FileSink(self.directory, self.formatter)

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
        super().initialize_state(ctx)
        self._remove_strays()

    def _remove_strays(self) -> None:
        # Files of this subtask's transactions that no checkpoint knows (opened after
        # the restored checkpoint): their records come again from the sources.
        known = {t.name for t in self.pending_transactions.values()}
        if self.current_transaction is not None:
            known.add(self.current_transaction.name)
        prefix = f"part-{self._subtask}-"
        for folder in (IN_PROGRESS_DIR, PENDING_DIR):
            for path in (self.directory / folder).glob(prefix + "*"):
                if path.name not in known:
                    path.unlink(missing_ok=True)

    # -- transactions ---------------------------------------------------------------------

    def begin_transaction(self) -> FileTransaction:
        """A new part file name (the file is created at the first record)."""
        self._counter += 1
        name = f"part-{self._subtask}-{self._counter:06d}-{uuid.uuid4().hex[:8]}"
        return FileTransaction(name, self._counter)

    def recover_and_commit(self, transaction: FileTransaction) -> None:
        """Commit a restored transaction and continue its subtask's counter."""
        self._counter = max(self._counter, transaction.counter)
        self.commit(transaction)

    def recover_and_abort(self, transaction: FileTransaction) -> None:
        """Drop the transaction open at the snapshot; continue the counter."""
        self._counter = max(self._counter, transaction.counter)
        self.abort(transaction)

    def write(self, transaction: FileTransaction, value: Any) -> None:
        """Append one line."""
        self._file(transaction).write(f"{self.formatter(value)}\n")

    def write_batch(self, values: list[Any]) -> None:
        """Append a buffer's lines in one call."""
        transaction = self.current_transaction
        assert transaction is not None, "FileSink used before initialize_state"
        if values:
            fmt = self.formatter
            self._file(transaction).write("".join(f"{fmt(value)}\n" for value in values))

    def _file(self, transaction: FileTransaction) -> IO[str]:
        handle = self._files.get(transaction.name)
        if handle is None:
            handle = open(self._in_progress(transaction.name), "a", encoding="utf-8")  # noqa: SIM115
            self._files[transaction.name] = handle
        return handle

    def pre_commit(self, transaction: FileTransaction) -> None:
        """Flush, fsync and move the file to the pending folder."""
        handle = self._files.pop(transaction.name, None)
        if handle is None:
            return  # nothing written: no file
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()
        os.replace(self._in_progress(transaction.name), self._pending_path(transaction.name))

    def commit(self, transaction: FileTransaction) -> None:
        """Move the pending file into place (nothing to do if already there or empty)."""
        pending = self._pending_path(transaction.name)
        # No pending file: committed before (a repeated notification), or empty.
        with contextlib.suppress(FileNotFoundError):
            os.replace(pending, self._final(transaction.name))

    def abort(self, transaction: FileTransaction) -> None:
        """Delete the transaction's file, wherever it is."""
        handle = self._files.pop(transaction.name, None)
        if handle is not None:
            handle.close()
        self._in_progress(transaction.name).unlink(missing_ok=True)
        self._pending_path(transaction.name).unlink(missing_ok=True)

    def close(self) -> None:
        """Abort the open transaction and close any file still open."""
        super().close()
        for handle in self._files.values():
            handle.close()
        self._files.clear()


def read_committed(directory: str | os.PathLike[str]) -> list[str]:
    """The committed lines of a ``FileSink`` folder, file by file in name order."""
    lines: list[str] = []
    for path in sorted(Path(directory).glob("part-*")):
        with open(path, encoding="utf-8") as f:
            lines.extend(line.rstrip("\n") for line in f)
    return lines
