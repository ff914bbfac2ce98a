"""Crash consistency: a job in its own process, killed with SIGKILL at chosen points.

The job (``tests/e2e/crash_job.py``) counts records per key and writes them through an
exactly-once ``FileSink``, checkpointing every 50 ms into a file-system storage that
retains its last two checkpoints. The driver starts it with a kill point
(``--kill-at``): the run kills itself with SIGKILL when it gets there, after saying so
on its stdout. The driver then restarts it from the job folder that holds the newest
valid checkpoint (from scratch while none has completed), with the next kill point, and
so on ``WEIR_CRASH_KILLS`` times (20 by default); the last run is left to finish.

Nothing depends on timing. A run that is to be killed reads at most ``BUDGET`` records
and never ends its input (its checkpoints go on until the kill point comes, however
slow the machine), and the record count leaves every such run ``BUDGET`` records to
read. The kill points, in turn (``KILL_SCHEDULE``): the first run dies in the sink's
first pre-commit (before any checkpoint can complete: the next run starts from
scratch, over the killed run's part files); later runs die half way through a state
file, half way through ``_metadata.tmp``, between a checkpoint's completion and the
sink's commit (pre-committed part files left in ``.pending``), in the middle of a
discard, at a record while records flow, and in a later pre-commit. Every third kill
after a checkpoint completed, the driver also tears the metadata of the checkpoint
after the newest valid one, as a file system without atomic renames could, to check
that a corrupt newest checkpoint is skipped with a warning.

What must hold:

* once a checkpoint has completed, every restart finds a valid one, never an older one
  than before, and the job restores exactly that one (never an incomplete or corrupt
  one: the run reports which checkpoint it restored);
* the committed output (``read_committed``) holds each record exactly once, and the
  per-key counts in it are ``1..n`` once each: state and output are exactly-once
  together, across every kill. Transactions pre-committed by a killed run are committed
  by the run that resumes it (``TwoPhaseCommitSink.recover_and_commit``), and the
  committed output of earlier runs is never lost;
* no part file is left pending or in progress when the last run has finished;
* and each kill point left what it should: an incomplete checkpoint folder, part
  files in ``.pending`` that the next run committed, no checkpoint before the first.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from runtime import read_committed
from runtime.connectors.file_sink import IN_PROGRESS_DIR, PENDING_DIR
from storage.checkpoint import METADATA_FILE, find_latest_valid

CRASH_JOB = Path(__file__).with_name("crash_job.py")
REPO = Path(__file__).absolute().parents[2]

KILLS = int(os.environ.get("WEIR_CRASH_KILLS", "20"))
STRESS_KILLS = int(os.environ.get("WEIR_CRASH_STRESS_KILLS", "10"))

BUDGET = 1_000
"""Records a run that is to be killed reads at most (``crash_job.py --budget``)."""

FIRST_KILL = "pre-commit:1"
"""The first run's kill point: before any checkpoint can have completed."""
KILL_SCHEDULE = (
    "state-write:2",
    "commit",
    "metadata:2",
    "record:500",
    "discard",
    "pre-commit:3",
)
"""The kill points of the later runs, in turn (``crash_job.KILL_POINTS``)."""
LEAVES_INCOMPLETE = ("state-write", "metadata", "discard")
"""Kill points that leave a ``chk-<n>`` folder without ``_metadata``."""
TEAR_EVERY = 3
"""Every third kill after a checkpoint completed, tear the next metadata."""

RUN_TIMEOUT = 120.0
"""Seconds a run may take to reach its kill point, or the last run to finish: a bound
against hangs, not an expectation (a run takes well under a second)."""
DUMP_TIMEOUT = 5.0
"""Seconds a stuck run is given to print what it is stuck on (SIGUSR1) before it is killed."""


def kill_point(index: int, schedule: tuple[str, ...] = KILL_SCHEDULE) -> str:
    """The kill point of run ``index``."""
    return FIRST_KILL if index == 0 else schedule[(index - 1) % len(schedule)]


@dataclass
class Checkpoint:
    """The newest valid checkpoint over every job folder."""

    job_folder: Path
    folder: Path
    checkpoint_id: int


@dataclass
class Tally:
    """What the kills hit, for the report and the checks."""

    kills: int = 0
    points: list[str] = field(default_factory=list)  # the kill points, in order
    during_checkpoint: int = 0  # an incomplete chk-<n> folder was left behind
    with_pending: int = 0  # pre-committed part files were left in .pending
    pending_left: set[str] = field(default_factory=set)  # their names, over all kills
    before_first_checkpoint: int = 0
    torn: int = 0  # metadata torn on purpose by the driver
    recovered: int = 0  # files of pending_left committed by a resumed run
    restored_ids: list[int] = field(default_factory=list)


def newest_valid(checkpoints: Path) -> tuple[Checkpoint | None, list[str]]:
    """The newest valid checkpoint in any job folder, and the scans' skip messages."""
    best: Checkpoint | None = None
    skipped: list[str] = []
    if not checkpoints.exists():
        return None, skipped
    for job_folder in sorted(p for p in checkpoints.iterdir() if p.is_dir()):
        scan = find_latest_valid(job_folder)
        skipped.extend(scan.skipped)
        if scan.latest is None:
            continue
        folder, metadata = scan.latest
        if best is None or metadata.checkpoint_id > best.checkpoint_id:
            best = Checkpoint(job_folder, folder, metadata.checkpoint_id)
    return best, skipped


def incomplete_folders(job_folder: Path) -> list[Path]:
    """``chk-<n>`` folders of a job without ``_metadata``: checkpoints cut short."""
    if not job_folder.exists():
        return []
    return [p for p in job_folder.glob("chk-*") if p.is_dir() and not (p / METADATA_FILE).exists()]


def tear_next_metadata(latest: Checkpoint) -> Path | None:
    """Give ``chk-<n+1>`` of the newest checkpoint's job a torn ``_metadata``.

    A copy of ``chk-<n>/_metadata`` cut in half: what a crash during a non-atomic
    metadata write would leave. Returns the file, or None if ``chk-<n+1>`` has one.
    """
    target = latest.job_folder / f"chk-{latest.checkpoint_id + 1}" / METADATA_FILE
    if target.exists():
        return None
    data = (latest.folder / METADATA_FILE).read_bytes()
    target.parent.mkdir(exist_ok=True)
    target.write_bytes(data[: len(data) // 2])
    return target


class Run:
    """One process of the job, its output in files (a pipe could fill and block it)."""

    def __init__(self, workdir: Path, index: int, job_args: list[str]) -> None:
        self.index = index
        self.stdout_path = workdir / f"run-{index}.out"
        self.stderr_path = workdir / f"run-{index}.err"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, str(CRASH_JOB), *job_args], stdout=out, stderr=err, cwd=REPO
            )

    def events(self) -> list[dict[str, Any]]:
        text = self.stdout_path.read_text(encoding="utf-8")
        # A killed run may have been cut in the middle of a line.
        return [json.loads(line) for line in text.splitlines() if line.endswith("}")]

    def event(self, name: str) -> dict[str, Any]:
        found = [e for e in self.events() if e["event"] == name]
        assert found, f"run {self.index} printed no {name!r} event:\n{self.stderr()}"
        return found[0]

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def wait(self) -> int:
        """Wait for the process to exit; its return code."""
        try:
            return self.process.wait(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            # Ask the run what it is stuck on (checkpoints, metrics, task stacks).
            self.process.send_signal(signal.SIGUSR1)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=DUMP_TIMEOUT)
            self.kill()
            pytest.fail(f"run {self.index} did not exit within {RUN_TIMEOUT} s:\n{self.stderr()}")

    def wait_killed(self, point: str) -> dict[str, Any]:
        """Wait until the run killed itself at ``point``; its ``kill`` event."""
        code = self.wait()
        assert code == -signal.SIGKILL, (
            f"run {self.index} exited with {code} instead of killing itself at {point}:\n"
            f"{self.stderr()}"
        )
        killed = self.event("kill")
        assert killed["point"] == point, killed
        return killed

    def kill(self) -> None:
        """SIGKILL the process if it still runs (cleanup after a failure)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def finish(self) -> dict[str, Any]:
        code = self.wait()
        assert code == 0, self.stderr()
        return self.event("finished")


def check_output(out: Path, count: int, keys: int) -> None:
    """Each record once; per key, the counts 1..n once each."""
    lines = read_committed(out)
    numbers: list[int] = []
    counts: dict[int, list[int]] = defaultdict(list)
    for line in lines:
        key, i, n = map(int, line.split())
        assert key == i % keys, line
        numbers.append(i)
        counts[key].append(n)
    duplicated = len(numbers) - len(set(numbers))
    missing = sorted(set(range(count)) - set(numbers))
    assert duplicated == 0 and not missing, (
        f"committed output is not exactly-once: {duplicated} duplicated lines, "
        f"{len(missing)} missing records (first: {missing[:10]})"
    )
    for key, seen in counts.items():
        assert sorted(seen) == list(range(1, len(seen) + 1)), f"key {key}: counts {seen[:20]}"
    leftovers = sorted(
        p.name for folder in (IN_PROGRESS_DIR, PENDING_DIR) for p in (out / folder).iterdir()
    )
    assert not leftovers, f"part files left pending or in progress: {leftovers}"


def crash_and_recover(
    tmp_path: Path,
    *,
    kills: int,
    extra_args: list[str],
    records_per_second: int = 10_000,
    keys: int = 1_000,
    schedule: tuple[str, ...] = KILL_SCHEDULE,
) -> Tally:
    """Kill the job ``kills`` times, resume it each time, let it finish; check it all."""
    checkpoints, out = tmp_path / "checkpoints", tmp_path / "out"
    # A run restores a position no later than where the run before it stopped, and
    # reads at most BUDGET records: run i starts before i * BUDGET, so every killed run
    # has BUDGET records left to read.
    count = BUDGET * (kills + 1)
    job_args = [
        str(checkpoints),
        str(out),
        f"--count={count}",
        f"--keys={keys}",
        f"--budget={BUDGET}",
        *extra_args,
    ]
    tally = Tally()
    committed: dict[str, int] = {}
    latest: Checkpoint | None = None
    torn: Path | None = None
    for index in range(kills + 1):
        restore = [] if latest is None else [f"--restore-from={latest.job_folder}"]
        point = kill_point(index, schedule)
        # The last run reads the rest as fast as it goes, and finishes.
        run_args = (
            ["--rate=0"]
            if index == kills
            else [f"--rate={records_per_second}", f"--kill-at={point}"]
        )
        run = Run(tmp_path, index, job_args + restore + run_args)
        try:
            if index == kills:
                break
            run.wait_killed(point)
        except BaseException:
            run.kill()
            raise
        started = check_started(run, latest, torn)

        tally.kills += 1
        tally.points.append(point)
        job_folder = checkpoints / started["job_id"]
        incomplete = incomplete_folders(job_folder)
        if incomplete:
            tally.during_checkpoint += 1
        if point.startswith(LEAVES_INCOMPLETE):
            assert incomplete, f"kill {index + 1} at {point} left no incomplete checkpoint"
        pending = {p.name for p in (out / PENDING_DIR).glob("part-*")}
        if pending:
            tally.with_pending += 1
            tally.pending_left |= pending
        if point == "commit":
            assert pending, f"kill {index + 1} at {point} left no pre-committed part file"
        # Committed part files stay, unchanged, whatever happens after.
        now_committed = committed_files(out)
        lost = {n: size for n, size in committed.items() if now_committed.get(n) != size}
        assert not lost, f"kill {index + 1}: committed part files lost or changed: {lost}"
        committed = now_committed

        previous = latest
        latest, _skipped = newest_valid(checkpoints)
        if previous is not None:
            # Once a checkpoint completed, there is always one, and never an older one.
            assert latest is not None, f"after kill {index + 1} no valid checkpoint is left"
            assert latest.checkpoint_id >= previous.checkpoint_id
        if index == 0:
            assert latest is None, "a checkpoint completed before the sink's first pre-commit"
        if latest is None:
            tally.before_first_checkpoint += 1
            torn = None
            continue
        tally.restored_ids.append(latest.checkpoint_id)
        torn = tear_next_metadata(latest) if len(tally.restored_ids) % TEAR_EVERY == 0 else None
        if torn is not None:
            tally.torn += 1
            rescan, skipped = newest_valid(checkpoints)
            assert rescan == latest and any(str(torn) in message for message in skipped)

    try:
        finished = run.finish()
        check_started(run, latest, torn)
    finally:
        run.kill()
    assert finished["status"] == "finished"
    check_output(out, count, keys)
    # A pre-committed file a kill left in .pending was either a transaction of the
    # checkpoint the next run restored, committed by that run under its own name
    # (recover_and_commit), or one of a later, never completed checkpoint, removed
    # (its records came again from the sources and went into another file).
    tally.recovered = len(tally.pending_left & set(committed_files(out)))
    return tally


def check_started(run: Run, latest: Checkpoint | None, torn: Path | None) -> dict[str, Any]:
    """The run restored exactly the checkpoint the scan found (or none), warning of ``torn``."""
    started = run.event("started")
    restored = started["restored_from"]
    if latest is None:
        assert restored is None, restored
    else:
        assert restored is not None and Path(restored) == latest.folder, (
            f"run {run.index} restored {restored}, the newest valid checkpoint is {latest.folder}"
        )
    if torn is not None:
        warnings = run.stderr()
        assert "RestoreWarning" in warnings and str(torn) in warnings, warnings
    return started


def committed_files(out: Path) -> dict[str, int]:
    """The committed part files of a FileSink folder, with their sizes."""
    return {p.name: p.stat().st_size for p in out.glob("part-*")} if out.exists() else {}


def summary(tally: Tally) -> str:
    return (
        f"{tally.kills} kills: {tally.before_first_checkpoint} before the first checkpoint, "
        f"{tally.during_checkpoint} left an incomplete checkpoint, {tally.with_pending} left "
        f"{len(tally.pending_left)} pre-committed files ({tally.recovered} of them committed "
        f"by the next run), {tally.torn} torn metadata files skipped; restored checkpoints "
        f"{tally.restored_ids}"
    )


def check_tally(tally: Tally, kills: int, schedule: tuple[str, ...] = KILL_SCHEDULE) -> None:
    """Every kill happened where it was aimed, and hit what its point promises."""
    assert tally.kills == kills
    assert tally.points == [kill_point(i, schedule) for i in range(kills)]
    assert tally.before_first_checkpoint == 1, tally
    if kills > 1:
        # Recovery, not only fresh starts.
        assert tally.restored_ids, tally
    aimed = tally.points
    incomplete = sum(p.startswith(LEAVES_INCOMPLETE) for p in aimed)
    assert tally.during_checkpoint >= incomplete, tally
    if "commit" in aimed:
        # Part files pre-committed for a completed checkpoint: the next run commits them.
        assert tally.recovered > 0, tally


def test_crash_consistency(tmp_path: Path) -> None:
    tally = crash_and_recover(tmp_path, kills=KILLS, extra_args=[])
    print(summary(tally))
    check_tally(tally, KILLS)


@pytest.mark.stress
def test_crash_consistency_stress_unaligned(tmp_path: Path) -> None:
    """More kills (``WEIR_CRASH_STRESS_KILLS``), parallelism 3, unaligned checkpoints.

    Unaligned checkpoints store in-flight records as channel state; after a kill they
    are replayed before anything new, and the sink must still commit each once.
    """
    tally = crash_and_recover(
        tmp_path,
        kills=STRESS_KILLS,
        extra_args=["--parallelism=3", "--unaligned", "--padding=4000"],
        records_per_second=15_000,
    )
    print(summary(tally))
    check_tally(tally, STRESS_KILLS)


CHANGELOG_SCHEDULE = ("state-write:2", "changelog-upload:8", "materialize:1", "record:500")
"""Kill points with the changelog state backend: after a checkpoint completed, during a
state file's write; then during a changelog file's upload and during a materialized
snapshot's write (each leaves a torn file in ``shared/`` that no checkpoint names, and
the next run restores a checkpoint made of changelog files); then while records flow."""
CHANGELOG_KILLS = int(os.environ.get("WEIR_CRASH_CHANGELOG_KILLS", "5"))


def test_crash_consistency_with_the_changelog_backend(tmp_path: Path) -> None:
    """Kill -9 during a changelog upload and during a materialization (heap)."""
    tally = crash_and_recover(
        tmp_path,
        kills=CHANGELOG_KILLS,
        extra_args=["--changelog"],
        schedule=CHANGELOG_SCHEDULE,
    )
    print(summary(tally))
    check_tally(tally, CHANGELOG_KILLS, CHANGELOG_SCHEDULE)


@pytest.mark.stress
def test_crash_consistency_with_the_changelog_backend_on_rocksdb_stress(tmp_path: Path) -> None:
    """The same on RocksDB, unaligned, with more kills."""
    kills = STRESS_KILLS
    tally = crash_and_recover(
        tmp_path,
        kills=kills,
        extra_args=["--changelog", "--state-backend=rocksdb", "--unaligned"],
        schedule=CHANGELOG_SCHEDULE,
    )
    print(summary(tally))
    check_tally(tally, kills, CHANGELOG_SCHEDULE)
