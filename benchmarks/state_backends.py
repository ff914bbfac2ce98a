"""RocksDB state backend: incremental vs full checkpoints, restore, throughput vs heap.

Goals (issue 6): with 1,000,000 keys (about 100 MB) and 1 % of the keys changed per
checkpoint interval, an incremental checkpoint uploads <= 5 % of the bytes of a full one
and takes <= 20 % of its time; restore time is reported against the time to read the
files; and the keyed count job's throughput on RocksDB against the heap backend.

Three parts, each with its variants interleaved (ABBA) over ``--repeats`` rounds:

* **checkpoints** (storage level, no job): a RocksDB backend holds ``--keys`` keys, each
  a ``--value-bytes`` random value in value state, checkpointed into a file storage.
  Each round changes 1 % of the keys (other keys every round) and takes one checkpoint:
  *incremental* (uploads the SST files the registry does not have yet) or *full* (uploads
  every file). Measured: bytes uploaded and the checkpoint's time, from the synchronous
  part (RocksDB checkpoint) through upload, the state file and the commit of
  ``_metadata``. Two checkpoints are retained (older ones discarded through the
  registry), as a job would. The synchronous part runs as in a job: ``snapshot()`` on
  the event loop, the RocksDB checkpoint (flush, hard links) in a worker thread
  (``RocksDBSnapshot.take``); both are reported, and the longest stall of the event
  loop during the checkpoint, seen by a probe task that sleeps 1 ms at a time.
* **restore**, of the last incremental checkpoint: *read* (read every file it refers to:
  the floor), *restore* (a new backend fetches the files from the checkpoint storage,
  hard links on one file system, checks their crc32 and opens RocksDB), *restore-local*
  (from the task-local copy, hard links). The files are in the page cache (the
  checkpoint was just written).
* **throughput**: the keyed count job of ``benchmarks.throughput`` (source -> map ->
  key_by -> reduce -> sink, parallelism 1) on ``state_backend="heap"`` and ``"rocksdb"``.

    python -m benchmarks.state_backends            # 1M keys, 5 rounds
    python -m benchmarks.state_backends --quick    # 50k keys, 2 rounds

Writes ``benchmarks/results/state_backends.json`` and ``.md`` (full mode only). Asserts
nothing about time.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from rocksdict import Checkpoint

from benchmarks.harness import (
    Series,
    interleave,
    machine,
    machine_line,
    paired_ratios,
    round_order,
    tick,
    write_report,
)
from benchmarks.throughput import time_keyed_count
from runtime import StreamEnvironment
from storage import KeyGroupRange, ValueStateDescriptor
from storage.checkpoint.filesystem import FileCheckpointStorage
from storage.checkpoint.metadata import (
    METADATA_VERSION,
    CheckpointMetadata,
    OperatorStateHandle,
    SubtaskStateHandle,
)
from storage.rocksdb import RocksDBKeyedStateBackend
from storage.rocksdb.handle import decode_handle

MAX_PARALLELISM = 128
PROBE_INTERVAL = 0.001
STATE = ValueStateDescriptor("value", type=bytes)


class Subject:
    """A RocksDB backend full of keys, and the file storage it checkpoints into."""

    def __init__(self, folder: Path, keys: int, value_bytes: int) -> None:
        self.folder = folder
        self.keys = keys
        self.value_bytes = value_bytes
        self.storage = FileCheckpointStorage(folder / "checkpoints", "f" * 32)
        asyncio.run(self.storage.initialize())
        self.backend = RocksDBKeyedStateBackend(
            MAX_PARALLELISM,
            KeyGroupRange.of(MAX_PARALLELISM),
            state_dir=folder / "state",
            local_recovery=True,
        )
        self.backend.defer_snapshots = True  # as in a job: see RocksDBSnapshot.take
        self.take_seconds = self.loop_sync_seconds = self.stall_seconds = 0.0
        self.state = self.backend.get_state(STATE)
        self.random = random.Random(6)
        self.next_id = 1
        self.retained: list[int] = []
        self.last: tuple[str, list[tuple[int, bytes]]] | None = None
        put = self.state.put_for
        for key in range(keys):
            put(key, self.random.randbytes(value_bytes))

    def change(self, fraction: float = 0.01) -> None:
        """Give 1 % of the keys (chosen at random) a new value."""
        put = self.state.put_for
        for key in self.random.sample(range(self.keys), int(self.keys * fraction)):
            put(key, self.random.randbytes(self.value_bytes))

    def checkpoint(self, incremental: bool) -> tuple[float, int]:
        """Take one checkpoint; return (seconds, bytes uploaded).

        Also sets :attr:`take_seconds` (the synchronous part, in a worker thread),
        :attr:`loop_sync_seconds` (``snapshot()`` on the loop) and :attr:`stall_seconds`
        (the longest the event loop did not answer a 1 ms probe during the checkpoint).
        """
        self.change()
        self.backend.incremental = incremental
        checkpoint_id = self.next_id
        self.next_id += 1
        return asyncio.run(self._probed(checkpoint_id))

    async def _probed(self, checkpoint_id: int) -> tuple[float, int]:
        stop = asyncio.Event()
        longest = [0.0]

        async def probe() -> None:
            # Sleeps, not a busy loop: it must not take the GIL from the worker threads.
            last = time.perf_counter()
            while not stop.is_set():
                await asyncio.sleep(PROBE_INTERVAL)
                now = time.perf_counter()
                longest[0] = max(longest[0], now - last - PROBE_INTERVAL)
                last = now

        prober = asyncio.create_task(probe())
        await asyncio.sleep(0)
        try:
            return await self._checkpoint(checkpoint_id)
        finally:
            stop.set()
            await prober
            self.stall_seconds = longest[0]

    async def _checkpoint(self, checkpoint_id: int) -> tuple[float, int]:
        storage = self.storage
        start = time.perf_counter()
        # As a task does: snapshot() on the loop, the RocksDB checkpoint in a thread.
        snapshot = self.backend.snapshot()
        self.loop_sync_seconds = time.perf_counter() - start
        await snapshot.take()
        self.take_seconds = time.perf_counter() - start - self.loop_sync_seconds
        shared = await snapshot.upload(storage, checkpoint_id)
        blobs = snapshot.encode_key_groups()
        snapshot.release()
        frames = b"".join(blob for _, blob in blobs[:1])
        handle = await storage.write_state(checkpoint_id, "task", [frames])
        subtask = SubtaskStateHandle(
            0, handle, snapshot.uploaded_bytes, 0, 0, MAX_PARALLELISM - 1, shared=shared
        )
        meta = CheckpointMetadata(
            METADATA_VERSION,
            storage.job_id,
            checkpoint_id,
            time.time(),
            False,
            [OperatorStateHandle("op", "op", 1, MAX_PARALLELISM, [subtask])],
        )
        pointer = await storage.commit(meta)
        elapsed = time.perf_counter() - start
        self.retained.append(checkpoint_id)
        while len(self.retained) > 2:
            await storage.discard(self.retained.pop(0))
        self.last = (pointer, blobs)
        return elapsed, snapshot.uploaded_bytes + handle.size

    def sync_part(self, deferred: bool) -> tuple[float, float]:
        """Change 1 % of the keys, take the synchronous part alone; (seconds, stall).

        ``deferred``: as a job does now (``snapshot()``, ``take()`` in a worker
        thread); else as before: RocksDB's checkpoint (a waiting flush) on the loop.
        """
        self.change()

        async def run() -> tuple[float, float]:
            folder = self.folder / f"sync-{self.next_id}"
            self.next_id += 1
            stop = asyncio.Event()
            longest = [0.0]

            async def probe() -> None:
                last = time.perf_counter()
                while not stop.is_set():
                    await asyncio.sleep(PROBE_INTERVAL)
                    now = time.perf_counter()
                    longest[0] = max(longest[0], now - last - PROBE_INTERVAL)
                    last = now

            prober = asyncio.create_task(probe())
            await asyncio.sleep(2 * PROBE_INTERVAL)
            start = time.perf_counter()
            if deferred:
                snapshot = self.backend.snapshot()
                await snapshot.take()
                elapsed = time.perf_counter() - start
                snapshot.release()
            else:
                Checkpoint(self.backend.db).create_checkpoint(str(folder))
                elapsed = time.perf_counter() - start
            await asyncio.sleep(2 * PROBE_INTERVAL)
            stop.set()
            await prober
            shutil.rmtree(folder, ignore_errors=True)
            return elapsed, longest[0]

        return asyncio.run(run())

    def files(self) -> list[Path]:
        """Every file the last checkpoint refers to."""
        assert self.last is not None
        pointer, blobs = self.last
        handle = decode_handle(blobs[0][1], pointer)
        return [Path(pointer) / file.path for file in handle.files]

    def read(self) -> float:
        start = time.perf_counter()
        for path in self.files():
            with open(path, "rb") as f:
                while f.read(1 << 20):
                    pass
        return time.perf_counter() - start

    def restore(self, local: bool) -> float:
        assert self.last is not None
        pointer, blobs = self.last
        state_dir = self.folder / "state" if local else self.folder / "elsewhere"
        start = time.perf_counter()
        backend = RocksDBKeyedStateBackend(
            MAX_PARALLELISM, KeyGroupRange.of(MAX_PARALLELISM), state_dir=state_dir
        )
        backend.restore(blobs, pointer)
        value = backend.get_state(STATE)
        assert value.get_for(self.keys - 1) is not None
        elapsed = time.perf_counter() - start
        backend.dispose()
        return elapsed

    def size(self) -> int:
        return sum(path.stat().st_size for path in self.files())

    def close(self) -> None:
        self.backend.dispose()


def run_job(backend: str, records: int, keys: int, state_dir: Path) -> float:
    """Records/s of the keyed count job on ``backend``."""
    env = StreamEnvironment(parallelism=1, state_backend=backend, state_dir=state_dir)
    seconds, _ = time_keyed_count(env, records, keys)
    return records / seconds


def measure_checkpoints(subject: Subject, repeats: int) -> dict[str, Series]:
    """Interleaved incremental and full checkpoints: seconds and bytes."""
    seconds = {"incremental": Series("incremental"), "full": Series("full")}
    sizes = {"incremental": Series("incremental"), "full": Series("full")}
    takes = {"incremental": Series("incremental"), "full": Series("full")}
    loop_syncs = {"incremental": Series("incremental"), "full": Series("full")}
    stalls = {"incremental": Series("incremental"), "full": Series("full")}
    subject.checkpoint(incremental=False)  # the first upload of everything
    tick("first checkpoint")
    subject.checkpoint(incremental=True)  # warm-up
    for round_ in range(repeats):
        for name in round_order(["incremental", "full"], round_):
            elapsed, size = subject.checkpoint(incremental=name == "incremental")
            seconds[name].values.append(elapsed)
            sizes[name].values.append(float(size))
            takes[name].values.append(subject.take_seconds)
            loop_syncs[name].values.append(subject.loop_sync_seconds)
            stalls[name].values.append(subject.stall_seconds)
            tick(name)
    # Restore measures the last checkpoint: make it an incremental one.
    subject.checkpoint(incremental=True)
    return {
        "incremental_seconds": seconds["incremental"],
        "full_seconds": seconds["full"],
        "incremental_bytes": sizes["incremental"],
        "full_bytes": sizes["full"],
        "incremental_take_seconds": takes["incremental"],
        "full_take_seconds": takes["full"],
        "incremental_loop_sync_seconds": loop_syncs["incremental"],
        "full_loop_sync_seconds": loop_syncs["full"],
        "incremental_stall_seconds": stalls["incremental"],
        "full_stall_seconds": stalls["full"],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="50k keys, 2 rounds")
    parser.add_argument("--keys", type=int, default=None)
    parser.add_argument("--value-bytes", type=int, default=80)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--records", type=int, default=None, help="throughput job records")
    parser.add_argument("--dir", default=None, help="scratch folder (default: a temp dir)")
    args = parser.parse_args(argv)
    keys = args.keys or (50_000 if args.quick else 1_000_000)
    repeats = args.repeats or (2 if args.quick else 5)
    records = args.records or (50_000 if args.quick else 300_000)
    info = machine()
    folder = Path(tempfile.mkdtemp(prefix="weir-bench-rocksdb-", dir=args.dir))
    try:
        start = time.perf_counter()
        subject = Subject(folder, keys, args.value_bytes)
        fill_seconds = time.perf_counter() - start
        checkpoints = measure_checkpoints(subject, repeats)
        state_bytes = subject.size()
        restore = interleave(
            {
                "read": subject.read,
                "restore": lambda: subject.restore(local=False),
                "restore_local": lambda: subject.restore(local=True),
            },
            repeats,
            warmup=1,
        )
        sync_parts: dict[str, Series] = {"on_loop": Series("on_loop"), "take": Series("take")}
        sync_stalls: dict[str, Series] = {"on_loop": Series("on_loop"), "take": Series("take")}
        for round_ in range(repeats):
            for name in round_order(["on_loop", "take"], round_):
                elapsed, stall = subject.sync_part(deferred=name == "take")
                sync_parts[name].values.append(elapsed)
                sync_stalls[name].values.append(stall)
        tick("synchronous parts")
        subject.close()
        throughput = interleave(
            {
                "heap": lambda: run_job("heap", records, 10_000, folder / "jobs"),
                "rocksdb": lambda: run_job("rocksdb", records, 10_000, folder / "jobs"),
            },
            repeats,
            warmup=0 if args.quick else 1,
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    inc_b, full_b = checkpoints["incremental_bytes"], checkpoints["full_bytes"]
    inc_s, full_s = checkpoints["incremental_seconds"], checkpoints["full_seconds"]
    inc_take, full_take = checkpoints["incremental_take_seconds"], checkpoints["full_take_seconds"]
    inc_loop = checkpoints["incremental_loop_sync_seconds"]
    full_loop = checkpoints["full_loop_sync_seconds"]
    stalls = (
        checkpoints["incremental_stall_seconds"].values + checkpoints["full_stall_seconds"].values
    )
    bytes_ratio = paired_ratios(inc_b, full_b)
    seconds_ratio = paired_ratios(inc_s, full_s)
    restore_ratio = paired_ratios(restore["restore"], restore["read"])
    local_ratio = paired_ratios(restore["restore_local"], restore["read"])
    throughput_ratio = paired_ratios(throughput["rocksdb"], throughput["heap"])
    mean_inc_bytes = sum(inc_b.values) / len(inc_b.values)
    mean_full_bytes = sum(full_b.values) / len(full_b.values)
    report: dict[str, Any] = {
        "machine": info,
        "keys": keys,
        "value_bytes": args.value_bytes,
        "repeats": repeats,
        "fill_seconds": fill_seconds,
        "state_bytes": state_bytes,
        "checkpoints": {name: series.summary() for name, series in checkpoints.items()},
        "incremental_over_full_bytes": bytes_ratio,
        "incremental_over_full_bytes_mean": mean_inc_bytes / mean_full_bytes,
        "incremental_over_full_seconds": seconds_ratio,
        "longest_stall_seconds": max(stalls),
        "sync_part_seconds": {name: series.summary() for name, series in sync_parts.items()},
        "sync_part_stall_seconds": {name: series.summary() for name, series in sync_stalls.items()},
        "restore": {name: series.summary() for name, series in restore.items()},
        "restore_over_read": restore_ratio,
        "restore_local_over_read": local_ratio,
        "throughput_records_per_second": {n: s.summary() for n, s in throughput.items()},
        "rocksdb_over_heap_throughput": throughput_ratio,
        "goals": {
            "incremental_bytes_at_most_5_percent": bytes_ratio["ratio"] <= 0.05,
            "incremental_seconds_at_most_20_percent": seconds_ratio["ratio"] <= 0.20,
        },
    }
    mib = 1 << 20
    lines = [
        f"RocksDB state backend, {keys:,} keys x {args.value_bytes} B values "
        f"({state_bytes / mib:.0f} MiB of SST files), 1 % of keys changed per checkpoint, "
        f"medians of {repeats}; {machine_line(info)}",
        "",
        "| checkpoint | uploaded | time |",
        "|---|---:|---:|",
        f"| full | {full_b.median / mib:.1f} MiB | {full_s.median * 1e3:.0f} ms |",
        f"| incremental | {inc_b.median / mib:.2f} MiB | {inc_s.median * 1e3:.0f} ms |",
        f"| incremental / full | {bytes_ratio['ratio']:.3f} "
        f"(mean of rounds {mean_inc_bytes / mean_full_bytes:.3f}) "
        f"| {seconds_ratio['ratio']:.3f} |",
        "",
        "| synchronous part | on the event loop (`snapshot()`) "
        "| in a worker thread (flush + RocksDB checkpoint) | longest loop stall |",
        "|---|---:|---:|---:|",
        f"| full | {full_loop.median * 1e3:.2f} ms | {full_take.median * 1e3:.1f} ms "
        f"| {checkpoints['full_stall_seconds'].median * 1e3:.1f} ms |",
        f"| incremental | {inc_loop.median * 1e3:.2f} ms | {inc_take.median * 1e3:.1f} ms "
        f"| {checkpoints['incremental_stall_seconds'].median * 1e3:.1f} ms |",
        "",
        f"Longest event-loop stall in any checkpoint of the run: {max(stalls) * 1e3:.1f} ms "
        "(probe sleeping 1 ms; includes the upload's, state file's and commit's loop "
        "turns).",
        "",
        "| synchronous part alone (1 % changed) | time | loop stall (median) | loop stall (max) |",
        "|---|---:|---:|---:|",
        f"| before: RocksDB checkpoint on the loop | {sync_parts['on_loop'].median * 1e3:.1f} ms "
        f"| {sync_stalls['on_loop'].median * 1e3:.1f} ms "
        f"| {max(sync_stalls['on_loop'].values) * 1e3:.1f} ms |",
        f"| now: `take()` in a worker thread | {sync_parts['take'].median * 1e3:.1f} ms "
        f"| {sync_stalls['take'].median * 1e3:.1f} ms "
        f"| {max(sync_stalls['take'].values) * 1e3:.1f} ms |",
        "",
        "| restore (files in page cache) | time | / read |",
        "|---|---:|---:|",
        f"| read every file | {restore['read'].median * 1e3:.0f} ms | 1.00 |",
        f"| restore from checkpoint storage (hard links, crc32 read, open) "
        f"| {restore['restore'].median * 1e3:.0f} ms | {restore_ratio['ratio']:.2f} |",
        f"| restore from the local copy (hard links, open) "
        f"| {restore['restore_local'].median * 1e3:.0f} ms | {local_ratio['ratio']:.2f} |",
        "",
        "| keyed count job | records/s |",
        "|---|---:|",
        f"| heap | {throughput['heap'].median:,.0f} |",
        f"| rocksdb | {throughput['rocksdb'].median:,.0f} |",
        f"| rocksdb / heap | {throughput_ratio['ratio']:.2f} |",
        "",
        "Goals: incremental bytes <= 5 % of full: "
        f"{'met' if report['goals']['incremental_bytes_at_most_5_percent'] else 'NOT met'}"
        f"; incremental time <= 20 % of full: "
        f"{'met' if report['goals']['incremental_seconds_at_most_20_percent'] else 'NOT met'}.",
    ]
    markdown = "\n".join(lines)
    if not args.quick:
        write_report("state_backends", report, markdown)
    print(markdown)
    report["markdown"] = markdown
    return report


if __name__ == "__main__":
    main()
