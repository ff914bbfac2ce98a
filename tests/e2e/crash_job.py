"""A job that kills itself: the subject of ``tests/e2e/test_crash_consistency.py``.

Run as a script in its own process (``python tests/e2e/crash_job.py CKPT OUT ...``). It
reads a rate-limited, deterministic generator of the integers ``0..count-1``, tags each
with its key (``i % keys``), counts the records of each key in keyed state (with a
padding blob per key, so that every checkpoint writes a few MB of state files) and
writes one line ``"<key> <i> <count>"`` per record through an exactly-once
``FileSink(OUT)``. Checkpoints go to ``file://CKPT`` every ``--interval`` seconds and are
retained (``RETAIN_ON_CANCELLATION``, ``retained=2``).

With ``--restore-from JOB_FOLDER`` it resumes from the newest valid checkpoint in that
folder (a killed run's; each run has a new job id, hence a new folder).

With ``--kill-at POINT`` the run kills itself with SIGKILL at that point, after printing
``{"event": "kill", "point": ...}``; nothing in it depends on timing (see
``KILL_POINTS``). Such a run reads at most ``--budget`` records and never ends its
input (a ``GatedSource`` holds it open), so its checkpoints go on until the point comes,
however slow the machine. Without ``--kill-at`` the run reads to the end and finishes.

It prints one JSON line when the job has started (``{"event": "started", "job_id":
..., "restored_from": ...}``) and one when it has finished (``{"event": "finished",
...}``), each flushed, so that a driver knows what a killed run was doing.

Exactly-once, stated on the output: for every key ``k`` the committed lines of ``k``
carry the counts ``1..n_k`` once each, and every ``i`` appears once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# Run as a script, the repository root is not on sys.path.
sys.path.insert(0, str(Path(__file__).absolute().parents[2]))

from runtime import (
    ExternalizedCheckpointRetention,
    FileSink,
    KeyedProcessFunction,
    NoRestart,
    RuntimeContext,
    StreamEnvironment,
    ValueStateDescriptor,
)
from runtime.connectors.sequence import GeneratorSource
from runtime.testing.gates import GatedSource, SourceGate
from storage.changelog import ChangelogOptions, uploader
from storage.checkpoint import METADATA_FILE, filesystem
from storage.checkpoint.layout import METADATA_TMP_FILE

SOURCE_UID = "numbers"
TAG_UID = "tag"
COUNT_UID = "count"
SINK_UID = "files"

KILL_POINTS = {
    "pre-commit:K": "the sink's snapshot of this run's K-th checkpoint, before it pre-commits "
    "(with K=1 no checkpoint of the run has completed: the sink has not acknowledged one)",
    "state-write:K": "the first state file of this run's K-th checkpoint, half written "
    "(a chk-<n> without _metadata and with a torn file)",
    "metadata:K": "this run's K-th metadata commit, with _metadata.tmp half written and no "
    "_metadata",
    "commit": "the first notify_checkpoint_complete that finds a pre-committed part file, "
    "before the sink commits it (the part file stays in .pending)",
    "discard": "the first discard of a subsumed checkpoint, once its _metadata was deleted "
    "(a chk-<n> without _metadata)",
    "record:N": "this run's N-th record at the count operator, while records flow",
    "changelog-upload:K": "this run's K-th changelog file (--changelog), half written",
    "materialize:K": "this run's K-th materialized snapshot file (--changelog), half written",
}
"""Where ``--kill-at`` kills the run: the ``K``/``N`` of a point count within the run."""


def _say(**event: Any) -> None:
    print(json.dumps(event), flush=True)


class KillSwitch:
    """Kills the process (SIGKILL) at one kill point; counts what it needs to know when.

    Its hooks run on the event loop and in the storage's worker threads, hence the lock.
    """

    def __init__(self, spec: str) -> None:
        kind, _, arg = spec.partition(":")
        known = {point.partition(":")[0] for point in KILL_POINTS}
        counted = (
            "pre-commit",
            "state-write",
            "metadata",
            "record",
            "changelog-upload",
            "materialize",
        )
        if kind not in known or (kind in counted and not arg.isdigit()):
            raise SystemExit(f"--kill-at: unknown kill point {spec!r}; one of {list(KILL_POINTS)}")
        self.spec = spec
        self.kind = kind
        self.arg = int(arg) if arg else 0
        self._lock = threading.Lock()
        self._killing = threading.Lock()
        self._checkpoints: list[int] = []
        self._count = 0

    def kill(self, **details: Any) -> None:
        """Say where, then SIGKILL this process (nothing after this line runs).

        Only the first caller says and kills: several worker threads may reach the
        point at once (the state files of one checkpoint are written in parallel); the
        others wait here for the process to die.
        """
        if not self._killing.acquire(blocking=False):
            threading.Event().wait()
        _say(event="kill", point=self.spec, **details)
        os.kill(os.getpid(), signal.SIGKILL)

    def at_checkpoint(self, kind: str, checkpoint_id: int | None) -> bool:
        """Whether ``checkpoint_id`` is this run's K-th checkpoint seen by hook ``kind``."""
        if kind != self.kind or checkpoint_id is None:
            return False
        with self._lock:
            if checkpoint_id not in self._checkpoints:
                self._checkpoints.append(checkpoint_id)
            return self._checkpoints.index(checkpoint_id) + 1 == self.arg

    def at_count(self, kind: str) -> bool:
        """Whether this is the K-th (or N-th) call of hook ``kind`` in this run."""
        if kind != self.kind:
            return False
        with self._lock:
            self._count += 1
            return self._count == self.arg


def _checkpoint_of(path: Path) -> int | None:
    name = path.parent.name
    return int(name[4:]) if name.startswith("chk-") and name[4:].isdigit() else None


def install_kill_switch(switch: KillSwitch) -> None:
    """Hook the switch into the storage's file writes and the sink's transactions.

    The storage runs ``_write_file``, ``_commit`` and ``_discard`` in worker threads and
    looks them up in its module when it calls them, so replacing them there is enough.
    """
    write_file, commit, discard = filesystem._write_file, filesystem._commit, filesystem._discard

    def killing_write_file(path: Path, chunks: Iterable[bytes]) -> tuple[int, int]:
        if switch.at_checkpoint("state-write", _checkpoint_of(path)):
            data = b"".join(chunks)
            write_file(path, [data[: len(data) // 2]])
            switch.kill(file=str(path), size=len(data))
        return write_file(path, chunks)

    def killing_commit(folder: Path, data: bytes) -> None:
        if switch.at_count("metadata"):
            folder.mkdir(parents=True, exist_ok=True)
            (folder / METADATA_TMP_FILE).write_bytes(data[: len(data) // 2])
            switch.kill(folder=str(folder))
        commit(folder, data)

    def killing_discard(folder: Path) -> None:
        if switch.kind == "discard":
            (folder / METADATA_FILE).unlink(missing_ok=True)
            switch.kill(folder=str(folder))
        discard(folder)

    changelog_write = uploader.write_file

    def killing_changelog_write(path: Path, data: bytes) -> tuple[int, str]:
        kind = "changelog-upload" if path.name.startswith("changelog-") else "materialize"
        if switch.at_count(kind):
            changelog_write(path, data[: len(data) // 2])
            switch.kill(file=str(path), size=len(data))
        return changelog_write(path, data)

    uploader.write_file = killing_changelog_write  # type: ignore[assignment]
    filesystem._write_file = killing_write_file  # type: ignore[assignment]
    filesystem._commit = killing_commit  # type: ignore[assignment]
    filesystem._discard = killing_discard  # type: ignore[assignment]

    snapshot_state = FileSink.snapshot_state
    notify = FileSink.notify_checkpoint_complete

    def killing_snapshot_state(self: FileSink, checkpoint_id: int) -> Any:
        if switch.at_checkpoint("pre-commit", checkpoint_id):
            switch.kill(checkpoint=checkpoint_id)
        return snapshot_state(self, checkpoint_id)  # the asynchronous pre-commit

    def killing_notify(self: FileSink, checkpoint_id: int) -> None:
        if switch.kind == "commit":
            pending = [
                txn.name
                for pending_id, txn in self.pending_transactions.items()
                if pending_id <= checkpoint_id and self._pending_path(txn.name).exists()
            ]
            if pending:
                switch.kill(checkpoint=checkpoint_id, pending=pending)
        notify(self, checkpoint_id)

    FileSink.snapshot_state = killing_snapshot_state  # type: ignore[method-assign]
    FileSink.notify_checkpoint_complete = killing_notify  # type: ignore[method-assign]


class CountPerKey(KeyedProcessFunction):
    """Counts the records of each key; keeps a padding blob per key to weigh the state."""

    def __init__(self, padding: int, switch: KillSwitch | None = None) -> None:
        self.padding = padding
        self.switch = switch

    def __deepcopy__(self, memo: dict[int, Any]) -> CountPerKey:
        # One switch per process: its record count spans every subtask.
        return CountPerKey(self.padding, self.switch)

    def open(self, ctx: RuntimeContext) -> None:
        self.count = ctx.get_state(ValueStateDescriptor("count", default=0))
        self.blob = ctx.get_state(ValueStateDescriptor("blob", default=b""))

    def process_element(self, value: tuple[int, int], ctx: RuntimeContext) -> list[str]:
        if self.switch is not None and self.switch.at_count("record"):
            self.switch.kill(record=value[1])
        n = self.count.value() + 1
        self.count.update(n)
        if n == 1 and self.padding:
            self.blob.update(b"x" * self.padding)
        key, i = value
        return [f"{key} {i} {n}"]


def make_env(args: argparse.Namespace, switch: KillSwitch | None = None) -> StreamEnvironment:
    """The job (the same graph in every run, so that uids match).

    A run with a kill switch reads at most ``args.budget`` records and holds its input
    open (a ``GatedSource`` whose gate is never opened): it cannot end before its kill
    point, and its checkpoints go on meanwhile. Its source's splits and positions are
    the generator's, so any run restores any other's checkpoints.
    """
    env = StreamEnvironment(
        parallelism=args.parallelism,
        max_parallelism=128,
        state_backend=args.state_backend,
        # Small files and frequent materializations: every run uploads and materializes.
        changelog=(
            ChangelogOptions(upload_interval=0.01, file_size=2_048, materialization_size=4_096)
            if args.changelog
            else False
        ),
    )
    env.enable_checkpointing(
        args.interval,
        storage=Path(args.checkpoints).absolute().as_uri(),
        retention=ExternalizedCheckpointRetention.RETAIN_ON_CANCELLATION,
        retained=2,
        unaligned=args.unaligned,
    )
    # A failure inside the process is a bug, not an injected fault: surface it.
    env.set_restart_strategy(NoRestart())
    keys = args.keys
    rate = args.rate or None
    if switch is None:
        numbers = env.generate(lambda i: i, args.count, records_per_second=rate, uid=SOURCE_UID)
    else:
        gate = SourceGate(hold_after=args.budget, hold_at_end=True)
        source = GatedSource(GeneratorSource(lambda i: i, args.count, rate), gate)
        numbers = env.from_source(source, name="numbers", uid=SOURCE_UID)
    (
        numbers.map(lambda i: (i % keys, i), name="tag", uid=TAG_UID)
        .key_by(lambda pair: pair[0])
        .process(CountPerKey(args.padding, switch), name="count", uid=COUNT_UID)
        .sink_to(FileSink(args.out), name="files", uid=SINK_UID)
    )
    return env


DUMPED = "-- end of dump --"
"""The last line of what SIGUSR1 prints on stderr."""


def _dump(client: Any) -> None:
    """On SIGUSR1 (a driver that waited too long): checkpoints, metrics, task stacks."""
    out = sys.stderr
    stats = client.checkpoint_stats()
    print(f"status {client.status.value}", file=out)
    print("no checkpoint statistics" if stats is None else stats.summary(), file=out)
    for name, metrics in sorted(client.metrics().items()):
        print(f"{name}: {metrics}", file=out)
    for task in asyncio.all_tasks():
        task.print_stack(file=out)
    print(DUMPED, file=out, flush=True)


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoints", help="the checkpoint directory")
    parser.add_argument("out", help="the FileSink folder")
    parser.add_argument("--restore-from", default=None, help="a job's checkpoint folder")
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument(
        "--rate", type=float, default=10_000.0, help="records/s, all subtasks (0: no limit)"
    )
    parser.add_argument("--keys", type=int, default=1_000)
    parser.add_argument("--padding", type=int, default=2_000, help="state bytes per key")
    parser.add_argument("--interval", type=float, default=0.05, help="checkpoint interval")
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--unaligned", action="store_true", help="unaligned checkpoints")
    parser.add_argument("--changelog", action="store_true", help="the changelog state backend")
    parser.add_argument("--state-backend", default="heap", help="heap or rocksdb")
    parser.add_argument(
        "--kill-at", default=None, help=f"kill this run at one of {list(KILL_POINTS)}"
    )
    parser.add_argument(
        "--budget", type=int, default=1_000, help="records a run with --kill-at reads at most"
    )
    args = parser.parse_args(argv)
    switch = None
    if args.kill_at is not None:
        switch = KillSwitch(args.kill_at)
        install_kill_switch(switch)
    env = make_env(args, switch)
    client = await env.start("crash consistency", restore_from=args.restore_from)
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, _dump, client)
    stats = client.checkpoint_stats()
    _say(
        event="started",
        job_id=client.job_id,
        restored_from=None if stats is None else stats.restored_from,
    )
    result = await client.wait()
    checkpoints = result.checkpoints
    _say(
        event="finished",
        job_id=result.job_id,
        status=result.status.value,
        completed=0 if checkpoints is None else checkpoints.counts.completed,
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
