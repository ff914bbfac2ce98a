"""Recovery: time to restore keyed state, and from a failure to processing again.

Goal (issue 4): restoring 100 MB of state takes at most 2x the time to read its files.

For each state size (a number of keys, each holding a value of ``--value-bytes``), a
job builds that state once and is cancelled as soon as a checkpoint holding all of it
has completed (``RETAIN_ON_CANCELLATION``): that checkpoint is the subject. The job is
an unbounded generator -> ``key_by(i % keys)`` -> a keyed function that gives every new
key its value -> a sink that discards; parallelism 1, file storage under ``--dir``.
Then, interleaved, several rounds of:

* **read**: ``open().read()`` of every file of the checkpoint (``_metadata`` and state
  files): the floor, what any restore must at least do;
* **load**: ``runtime.scheduler.restore.load_checkpoint`` (read, checksum, split into
  frames) and a ``Deployment`` built from it (key groups decoded into the backends):
  the restore path without a job around it;
* **restore**: a job started with ``restore_from=<that checkpoint>``, from just before
  ``env.start`` to the moment its keyed function processes its first record (the
  keyed function registers its state in ``open``); nothing of the first run is in
  memory. The heap backend decodes restored key groups lazily (a key's group on first
  access, the others in bounded steps between records), so the same run also measures
* **decoded**: from the same start to the first record processed after the last
  restored key group was decoded (the backend's ``restoring`` turned False): the
  time until the whole state is in memory as Python objects, records flowing meanwhile;
* **failure**: a job restored the same way runs until a checkpoint of the whole state
  has completed, then its keyed function raises once; with ``FixedDelayRestart(delay=0)``
  the job restarts from that checkpoint. Measured from the raise to the first record the
  restarted keyed function processes: cancel, restart decision, load, deploy, open.

Each measurement starts after a full garbage collection (a job's state is freed by the
cyclic collector: the next measurement must not pay for it) and with the checkpoint's
files evicted from the page cache (``posix_fadvise(DONTNEED)`` on each of them, nothing
else), so reads come from the disk as after a machine restart; ``--warm`` keeps them
cached instead. The *failure* path reads the checkpoint its own run has just written,
cached, as a real restart would.

    python -m benchmarks.recovery            # 10k, 100k, 1M keys and ~100 MB; 5 rounds
    python -m benchmarks.recovery --quick    # 10k and 100k keys, 2 rounds

Reports medians and the ratios restore / read, decoded / read and load / read, per size; writes
``benchmarks/results/recovery.json`` and ``.md`` in full mode only. Asserts nothing
about time.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks.harness import Series, interleave, machine, machine_line, write_report
from runtime import (
    ExternalizedCheckpointRetention,
    FixedDelayRestart,
    KeyedProcessFunction,
    RuntimeContext,
    SinkFunction,
    StreamEnvironment,
    ValueStateDescriptor,
)
from runtime.scheduler import Deployment, load_checkpoint
from storage.checkpoint import METADATA_FILE, FileCheckpointStorage, find_latest_valid

JOB_TIMEOUT = 600.0
"""Seconds any one job of the benchmark may take before it is abandoned as hung."""


class InjectedFailure(Exception):
    """The failure the benchmark injects."""


class Probe:
    """Times seen from inside the job; shared by every copy of the keyed function.

    The runtime deep-copies function objects per subtask and attempt, so the copies
    must all report to this one object: ``__deepcopy__`` returns it.
    """

    def __init__(self, until: str) -> None:
        assert until in ("checkpointed", "first record", "resumed")
        self.until = until
        self.inject = until == "resumed"
        self.armed = False  # a checkpoint with the whole state completed
        self.first_record: float | None = None
        self.decoded: float | None = None  # restored state all decoded (seen at a record)
        self.failed_at: float | None = None
        self.resumed_at: float | None = None
        self.done = asyncio.Event()

    def __deepcopy__(self, memo: dict[int, Any]) -> Probe:
        return self


class KeepValue(KeyedProcessFunction[int, Any]):
    """Gives each new key its value; reports to the probe; raises once when told to."""

    def __init__(self, keys: int, value_bytes: int, probe: Probe) -> None:
        self.keys = keys
        self.value_bytes = value_bytes
        self.probe = probe

    def open(self, ctx: RuntimeContext) -> None:
        self.state = ctx.get_state(ValueStateDescriptor("value", default=None))
        self.backend = ctx.keyed_backend
        self.attempt = ctx.attempt
        self.complete = ctx.is_restored  # a restored run starts with every key
        self.seen = 0
        self.full_checkpoint: int | None = None

    def process_element(self, value: int, ctx: RuntimeContext) -> None:
        probe = self.probe
        if probe.decoded is None and not getattr(self.backend, "restoring", False):
            probe.decoded = time.perf_counter()
            if probe.until == "first record":
                probe.done.set()
        if probe.first_record is None:
            probe.first_record = time.perf_counter()
        if self.attempt > 0 and probe.resumed_at is None:
            probe.resumed_at = time.perf_counter()
            probe.done.set()
        if probe.armed and probe.inject and self.attempt == 0:
            probe.failed_at = time.perf_counter()
            raise InjectedFailure("the benchmark's injected failure")
        if self.state.value() is None:
            pattern = value.to_bytes(8, "big")
            self.state.update((pattern * (self.value_bytes // 8 + 1))[: self.value_bytes])
        self.seen += 1
        if self.seen >= self.keys:
            self.complete = True

    def snapshot_state(self, checkpoint_id: int) -> None:
        if self.complete and self.full_checkpoint is None:
            self.full_checkpoint = checkpoint_id

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        if self.full_checkpoint is not None and checkpoint_id >= self.full_checkpoint:
            self.probe.armed = True
            if self.probe.until == "checkpointed":
                self.probe.done.set()


class Discard(SinkFunction[Any]):
    """Drops every record."""

    def write_batch(self, values: list[Any]) -> None:
        pass


def make_env(
    directory: Path, keys: int, value_bytes: int, probe: Probe, interval: float
) -> StreamEnvironment:
    env = StreamEnvironment(parallelism=1)
    env.enable_checkpointing(
        interval,
        storage=directory.absolute().as_uri(),
        retention=ExternalizedCheckpointRetention.RETAIN_ON_CANCELLATION,
    )
    env.set_restart_strategy(FixedDelayRestart(attempts=1, delay=0.0))
    (
        env.generate(lambda i: i, uid="numbers")
        .key_by(lambda i: i % keys)
        .process(KeepValue(keys, value_bytes, probe), name="keep", uid="keep")
        .sink_to(Discard(), name="discard", uid="discard")
    )
    return env


async def _run_until(env: StreamEnvironment, probe: Probe, **start: Any) -> str:
    """Start the job, wait for the probe, cancel it; return its job id."""
    async with asyncio.timeout(JOB_TIMEOUT):
        client = await env.start("recovery benchmark", **start)
        waiter = asyncio.ensure_future(probe.done.wait())
        ended = asyncio.ensure_future(client.wait())
        await asyncio.wait({waiter, ended}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        client.cancel()
        await ended  # raises if the job failed
        return client.job_id


# -- the subject ---------------------------------------------------------------------------


@dataclass
class Subject:
    """A retained checkpoint holding ``keys`` keys, and its files."""

    keys: int
    value_bytes: int
    folder: Path
    files: list[Path]
    size: int = 0

    def __post_init__(self) -> None:
        self.size = sum(path.stat().st_size for path in self.files)


def build_subject(directory: Path, keys: int, value_bytes: int) -> Subject:
    """Run the job until a checkpoint with every key completed; return that checkpoint."""
    probe = Probe("checkpointed")
    # A long interval: the checkpoint that holds everything is not followed by another.
    env = make_env(directory, keys, value_bytes, probe, interval=0.5)
    job_id = asyncio.run(_run_until(env, probe))
    scan = find_latest_valid(directory / job_id)
    assert scan.latest is not None, f"no checkpoint completed under {directory / job_id}"
    folder, metadata = scan.latest
    files = [folder / METADATA_FILE]
    for operator in metadata.operators:
        for subtask in operator.subtasks:
            if subtask.handle is not None:
                files.append(folder / subtask.handle.path)
    return Subject(keys, value_bytes, folder, sorted(set(files)))


def evict(files: list[Path]) -> None:
    """Drop the files' pages from the page cache (they are clean: fsynced on write)."""
    for path in files:
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(descriptor)


# -- the measurements ----------------------------------------------------------------------


def settle() -> None:
    """Collect the garbage of the previous measurement before the next one starts.

    A job's keyed state hangs in reference cycles (backend, state handles, user
    function) that only the cyclic collector frees: without this, whichever measurement
    comes next pays for freeing the previous one's million entries.
    """
    gc.collect()


def measure_read(subject: Subject, warm: bool) -> float:
    settle()
    if not warm:
        evict(subject.files)
    start = time.perf_counter()
    for path in subject.files:
        with open(path, "rb") as f:
            f.read()
    return time.perf_counter() - start


def measure_load(subject: Subject, warm: bool) -> float:
    """``load_checkpoint`` and a ``Deployment`` built from it."""
    settle()
    env = make_env(
        subject.folder.parent.parent, subject.keys, subject.value_bytes, Probe("first record"), 60
    )
    graph = env.get_job_graph()
    storage = FileCheckpointStorage(subject.folder.parent.parent, subject.folder.parent.name)
    if not warm:
        evict(subject.files)

    async def go() -> float:
        start = time.perf_counter()
        restored = await load_checkpoint(storage, str(subject.folder))
        Deployment(graph, env.config, "recovery benchmark", 0, restored, checkpointing=True)
        return time.perf_counter() - start

    return asyncio.run(go())


def measure_restore(subject: Subject, scratch: Path, warm: bool) -> tuple[float, float]:
    """From ``env.start(restore_from=...)`` to the first record processed, and to all
    restored state decoded (seen at the first record processed after that)."""
    settle()
    probe = Probe("first record")
    env = make_env(scratch, subject.keys, subject.value_bytes, probe, interval=3600)
    if not warm:
        evict(subject.files)

    async def go() -> tuple[float, float]:
        start = time.perf_counter()
        await _run_until(env, probe, restore_from=subject.folder)
        assert probe.first_record is not None and probe.decoded is not None
        return probe.first_record - start, probe.decoded - start

    try:
        return asyncio.run(go())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def measure_failure(subject: Subject, scratch: Path) -> float:
    """From an injected failure to the first record processed after the restart."""
    settle()
    probe = Probe("resumed")
    env = make_env(scratch, subject.keys, subject.value_bytes, probe, interval=0.1)

    async def go() -> float:
        await _run_until(env, probe, restore_from=subject.folder)
        assert probe.failed_at is not None and probe.resumed_at is not None
        return probe.resumed_at - probe.failed_at

    try:
        return asyncio.run(go())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# -- the report ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--keys",
        type=int,
        nargs="+",
        default=[10_000, 100_000, 1_000_000],
        help="state sizes, in keys",
    )
    parser.add_argument("--value-bytes", type=int, default=16, help="bytes of each key's value")
    parser.add_argument(
        "--large-mb",
        type=int,
        default=100,
        help="also a size of about this many MB of state files (0: none)",
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warm", action="store_true", help="keep the files in the page cache")
    parser.add_argument("--dir", type=Path, default=None, help="where checkpoints go (a temp dir)")
    parser.add_argument("--quick", action="store_true", help="10k and 100k keys, 2 rounds")
    args = parser.parse_args(argv)
    if args.quick:
        args.keys, args.large_mb, args.repeats = [10_000, 100_000], 0, 2
    sizes = [(keys, args.value_bytes) for keys in args.keys]
    if args.large_mb:
        # 1M keys; an entry takes its value plus ~12 bytes on disk (key, framing).
        sizes.append((1_000_000, max(8, args.large_mb - 12)))

    root = Path(tempfile.mkdtemp(prefix="weir-recovery-", dir=args.dir))
    info = machine()
    rows: list[dict[str, Any]] = []
    try:
        for keys, value_bytes in sizes:
            started = time.perf_counter()
            subject = build_subject(root / "subjects", keys, value_bytes)
            built = time.perf_counter() - started
            scratch = root / "scratch"
            decoded = Series("decoded")

            def restore(s: Subject = subject, d: Path = scratch, out: Series = decoded) -> float:
                first, whole = measure_restore(s, d, args.warm)
                out.values.append(whole)
                return first

            variants: dict[str, Callable[[], float]] = {
                "read": partial(measure_read, subject, args.warm),
                "load": partial(measure_load, subject, args.warm),
                "restore": restore,
                "failure": partial(measure_failure, subject, scratch),
            }
            series = interleave(
                variants,
                repeats=args.repeats,
                warmup=0 if args.quick else 1,
            )
            decoded.values = decoded.values[-args.repeats :]  # not the warm-up's
            series["decoded"] = decoded
            read = series["read"].median
            row = {
                "keys": keys,
                "value_bytes": value_bytes,
                "state_bytes": subject.size,
                "seconds_to_build": built,
                **{f"{name}_s": s.summary() for name, s in series.items()},
                "ratio_restore_to_read": series["restore"].median / read,
                "ratio_decoded_to_read": series["decoded"].median / read,
                "ratio_load_to_read": series["load"].median / read,
                "ratio_failure_to_read": series["failure"].median / read,
            }
            rows.append(row)
            shutil.rmtree(root / "subjects", ignore_errors=True)
            print(
                f"{keys:,} keys x {value_bytes} B: {subject.size / 1e6:.1f} MB, "
                f"restore / read {row['ratio_restore_to_read']:.1f}x, "
                f"all decoded / read {row['ratio_decoded_to_read']:.1f}x",
                flush=True,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)

    noisy = any(
        row[f"{name}_s"]["noisy"] for row in rows for name in ("read", "restore", "decoded")
    )
    cache = "page cache kept warm" if args.warm else "files evicted from the page cache first"
    lines = [
        f"Recovery, parallelism 1, medians of {args.repeats} ({cache})"
        f"{' (noisy: spread > 1.25)' if noisy else ''}; {machine_line(info)}",
        "",
        "| keys | state files | read | load + deploy | restore to 1st record "
        "| restore / read | restore to all state decoded | decoded / read "
        "| failure to processing |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['keys']:,} x {row['value_bytes']} B | {row['state_bytes'] / 1e6:,.1f} MB "
            f"| {row['read_s']['median'] * 1e3:,.1f} ms | {row['load_s']['median'] * 1e3:,.1f} ms "
            f"| {row['restore_s']['median'] * 1e3:,.1f} ms "
            f"| **{row['ratio_restore_to_read']:.1f}x** (goal <= 2x) "
            f"| {row['decoded_s']['median'] * 1e3:,.1f} ms "
            f"| {row['ratio_decoded_to_read']:.1f}x "
            f"| {row['failure_s']['median'] * 1e3:,.1f} ms |"
        )
    markdown = "\n".join(lines)
    report = {
        "benchmark": "recovery",
        "parallelism": 1,
        "repeats": args.repeats,
        "page_cache": "warm" if args.warm else "evicted",
        "machine": info,
        "sizes": rows,
        "goal": "restore of ~100 MB of state <= 2x the time to read its files",
    }
    if not args.quick:
        write_report("recovery", report, markdown)
    print(markdown)
    report["markdown"] = markdown
    return report


if __name__ == "__main__":
    main()
