"""Changelog state backend: checkpoints that cost what changed, restore, throughput.

Goals (issue 19): with 1,000,000 keys of heap state and 1 % of the keys changed between
checkpoints, a changelog checkpoint takes <= 5 % of the time of the same backend's full
checkpoint and writes <= 5 % of its bytes; restore of the materialized state plus the
changelog within 3x of reading the files; the keyed count job with checkpoints every
second keeps >= 0.85x of its throughput with the changelog on.

Three parts, variants interleaved (ABBA) over ``--repeats`` rounds:

* **checkpoints** (storage level, no job): two heap backends hold ``--keys`` keys, each a
  ``--value-bytes`` random value; one is wrapped in the changelog backend, which is
  materialized once after the fill (as the periodic materialization would). Each round
  changes 1 % of the keys of both and takes one checkpoint of each, as a task does:
  synchronous part, then the asynchronous part (heap: encode every key group in chunks
  and write the state file; changelog: upload the changes since the last checkpoint, all
  of them, none uploaded in the background before, to ``shared/`` and write the handles),
  then ``_metadata``. Measured: the time from the synchronous part through the commit,
  and the bytes written. Two checkpoints retained.
* **restore** of the last changelog checkpoint: *read* (read every file it names: the
  floor) and *restore* (a new backend reads and checks the files, restores the heap
  backend from the materialized parts, replays the changelog when the state is
  registered, then decodes every key group: everything in memory).
* **throughput**: the keyed count job of ``benchmarks.throughput`` with a checkpoint
  every second into a file storage, ``changelog=False`` and ``True``.

    python -m benchmarks.changelog            # 1M keys, 5 rounds
    python -m benchmarks.changelog --quick    # 50k keys, 2 rounds

Writes ``benchmarks/results/changelog.json`` and ``.md`` (full mode only). Asserts
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
from storage import HeapKeyedStateBackend, KeyGroupRange, ValueStateDescriptor
from storage.changelog import ChangelogKeyedStateBackend, ChangelogOptions
from storage.checkpoint import StateFrame, encode_frame
from storage.checkpoint.filesystem import FileCheckpointStorage
from storage.checkpoint.metadata import (
    METADATA_VERSION,
    CheckpointMetadata,
    OperatorStateHandle,
    SubtaskStateHandle,
)

MAX_PARALLELISM = 128
STATE = ValueStateDescriptor("value", type=bytes)
# No background upload or materialization during the measurement: the checkpoint
# uploads all the changes of its interval itself (the conservative case).
OPTIONS = ChangelogOptions(
    upload_interval=3600.0,
    file_size=1 << 40,
    materialization_interval=1e9,
    materialization_size=1 << 40,
)


class Subject:
    """A heap backend (or a changelog one around it) full of keys, and its file storage."""

    def __init__(self, folder: Path, keys: int, value_bytes: int, changelog: bool) -> None:
        self.keys = keys
        self.value_bytes = value_bytes
        self.loop = asyncio.new_event_loop()
        self.storage = FileCheckpointStorage(folder, "c" * 32 if changelog else "h" * 32)
        self.loop.run_until_complete(self.storage.initialize())
        heap = HeapKeyedStateBackend(MAX_PARALLELISM, KeyGroupRange.of(MAX_PARALLELISM))
        self.backend: Any = ChangelogKeyedStateBackend(heap, OPTIONS) if changelog else heap
        self.changelog = changelog
        self.state = self.backend.get_state(STATE)
        self.random = random.Random(19)
        self.next_id = 1
        self.sync_seconds = 0.0
        self.retained: list[int] = []
        self.last: tuple[str, list[tuple[int, bytes]], list[str]] | None = None
        put = self.state.put_for
        for key in range(keys):
            put(key, self.random.randbytes(value_bytes))

    def materialize(self) -> None:
        """Checkpoint once (binds the storage), then materialize, awaited."""
        self.checkpoint(change=False)

        async def run() -> None:
            assert self.backend.maybe_materialize(force=True)
            await self.backend.wait_materialized()

        self.loop.run_until_complete(run())

    def change(self, fraction: float = 0.01) -> None:
        put = self.state.put_for
        for key in self.random.sample(range(self.keys), int(self.keys * fraction)):
            put(key, self.random.randbytes(self.value_bytes))

    def checkpoint(self, change: bool = True) -> tuple[float, int]:
        """Change 1 % of the keys, take one checkpoint; (seconds, bytes written)."""
        if change:
            self.change()
        checkpoint_id = self.next_id
        self.next_id += 1
        return self.loop.run_until_complete(self._checkpoint(checkpoint_id))

    async def _checkpoint(self, checkpoint_id: int) -> tuple[float, int]:
        storage = self.storage
        start = time.perf_counter()
        snapshot = self.backend.snapshot()
        self.sync_seconds = time.perf_counter() - start
        shared = []
        uploaded = 0
        if self.changelog:
            shared = await snapshot.upload(storage, checkpoint_id)
            uploaded = snapshot.uploaded_bytes
        frames: list[bytes] = []
        blobs: list[tuple[int, bytes]] = []
        for chunk in snapshot.encode_chunks(2048):
            for key_group, blob in chunk:
                frames.append(encode_frame(StateFrame("keyed", "op", key_group, blob)))
            blobs.extend(chunk)
            await asyncio.sleep(0)
        snapshot.release()
        while not snapshot.fold_step():
            await asyncio.sleep(0)
        handle = await storage.write_state(checkpoint_id, "task", frames)
        subtask = SubtaskStateHandle(
            0, handle, uploaded + handle.size, 0, 0, MAX_PARALLELISM - 1, shared=shared
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
        self.last = (pointer, blobs, [file.name for file in shared])
        return elapsed, uploaded + handle.size

    def files(self) -> list[Path]:
        assert self.last is not None
        pointer, _, names = self.last
        return [Path(pointer).parent / "shared" / name for name in names]

    def read(self) -> float:
        start = time.perf_counter()
        for path in self.files():
            with open(path, "rb") as f:
                while f.read(1 << 20):
                    pass
        return time.perf_counter() - start

    def restore(self, decode_all: bool = True) -> float:
        """Seconds to restore the last checkpoint: until every key is decoded, or (not
        ``decode_all``) until the state is ready for records (the heap decodes the rest
        of its key groups lazily, between records)."""
        assert self.last is not None
        pointer, blobs, _ = self.last
        start = time.perf_counter()
        heap = HeapKeyedStateBackend(MAX_PARALLELISM, KeyGroupRange.of(MAX_PARALLELISM))
        backend = ChangelogKeyedStateBackend(heap, OPTIONS)
        backend.defer_restore(blobs, pointer)
        self.loop.run_until_complete(backend.prepare())
        value = backend.get_state(STATE)
        while decode_all and not backend.restore_step(1 << 16):
            pass
        elapsed = time.perf_counter() - start
        assert value.get_for(self.keys - 1) is not None
        self.loop.run_until_complete(backend.close())
        return elapsed

    def sizes(self) -> tuple[int, int]:
        """Bytes of materialized and of changelog files the last checkpoint names."""
        assert self.last is not None
        materialized = changelog = 0
        for path in self.files():
            size = path.stat().st_size
            if path.name.startswith("materialized-"):
                materialized += size
            else:
                changelog += size
        return materialized, changelog

    def close(self) -> None:
        if self.changelog:
            self.loop.run_until_complete(self.backend.close())
        self.loop.close()


def run_job(changelog: bool, records: int, keys: int, folder: Path) -> float:
    """Records/s of the keyed count job, checkpointing every second."""
    env = StreamEnvironment(parallelism=1, changelog=changelog)
    env.enable_checkpointing(1.0, storage=(folder / "jobs").absolute().as_uri())
    seconds, _ = time_keyed_count(env, records, keys)
    return records / seconds


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="50k keys, 2 rounds")
    parser.add_argument("--keys", type=int, default=None)
    parser.add_argument("--value-bytes", type=int, default=80)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--records", type=int, default=None, help="throughput job records")
    parser.add_argument(
        "--changed-rounds",
        type=int,
        default=None,
        help="checkpoints of 1 % changes before the restore (changelog size)",
    )
    parser.add_argument("--dir", default=None, help="scratch folder (default: a temp dir)")
    args = parser.parse_args(argv)
    keys = args.keys or (50_000 if args.quick else 1_000_000)
    repeats = args.repeats or (2 if args.quick else 5)
    records = args.records or (200_000 if args.quick else 2_000_000)
    info = machine()
    folder = Path(tempfile.mkdtemp(prefix="weir-bench-changelog-", dir=args.dir))
    subjects: dict[str, Subject] = {}
    try:
        for name in ("full", "changelog"):
            subjects[name] = Subject(folder / name, keys, args.value_bytes, name == "changelog")
            tick(f"{name} filled")
        subjects["changelog"].materialize()
        tick("materialized")
        seconds = {name: Series(name) for name in subjects}
        sizes = {name: Series(name) for name in subjects}
        syncs = {name: Series(name) for name in subjects}
        for subject in subjects.values():
            subject.checkpoint()  # warm-up
        for round_ in range(repeats):
            for name in round_order(list(subjects), round_):
                elapsed, size = subjects[name].checkpoint()
                seconds[name].values.append(elapsed)
                sizes[name].values.append(float(size))
                syncs[name].values.append(subjects[name].sync_seconds)
                tick(name)
        # Grow the changelog towards ~10 % of the materialized bytes before the restore.
        changelog = subjects["changelog"]
        extra = args.changed_rounds if args.changed_rounds is not None else max(0, 9 - repeats)
        for _ in range(extra):
            changelog.checkpoint()
        materialized_bytes, changelog_bytes = changelog.sizes()
        restore = interleave(
            {
                "read": changelog.read,
                "restore": changelog.restore,
                "ready": lambda: changelog.restore(decode_all=False),
            },
            repeats,
        )
        for subject in subjects.values():
            subject.close()
        subjects.clear()
        throughput = interleave(
            {
                "off": lambda: run_job(False, records, 10_000, folder),
                "on": lambda: run_job(True, records, 10_000, folder),
            },
            repeats,
            warmup=0 if args.quick else 1,
        )
    finally:
        for subject in subjects.values():
            subject.close()
        shutil.rmtree(folder, ignore_errors=True)
    by_seconds = paired_ratios(seconds["changelog"], seconds["full"])
    by_bytes = paired_ratios(sizes["changelog"], sizes["full"])
    restore_ratio = paired_ratios(restore["restore"], restore["read"])
    ready_ratio = paired_ratios(restore["ready"], restore["read"])
    throughput_ratio = paired_ratios(throughput["on"], throughput["off"])
    report: dict[str, Any] = {
        "machine": info,
        "keys": keys,
        "value_bytes": args.value_bytes,
        "repeats": repeats,
        "checkpoint_seconds": {n: s.summary() for n, s in seconds.items()},
        "checkpoint_bytes": {n: s.summary() for n, s in sizes.items()},
        "sync_part_seconds": {n: s.summary() for n, s in syncs.items()},
        "changelog_over_full_seconds": by_seconds,
        "changelog_over_full_bytes": by_bytes,
        "restore_materialized_bytes": materialized_bytes,
        "restore_changelog_bytes": changelog_bytes,
        "restore": {n: s.summary() for n, s in restore.items()},
        "restore_over_read": restore_ratio,
        "ready_over_read": ready_ratio,
        "throughput_records_per_second": {n: s.summary() for n, s in throughput.items()},
        "on_over_off_throughput": throughput_ratio,
        "goals": {
            "seconds_at_most_5_percent": by_seconds["ratio"] <= 0.05,
            "bytes_at_most_5_percent": by_bytes["ratio"] <= 0.05,
            "restore_at_most_3x_read": restore_ratio["ratio"] <= 3.0,
            "throughput_at_least_0_85": throughput_ratio["ratio"] >= 0.85,
        },
    }
    mb = 1e6
    goals = report["goals"]

    def met(goal: str) -> str:
        return "met" if goals[goal] else "NOT met"

    lines = [
        f"Changelog state backend over heap, {keys:,} keys x {args.value_bytes} B values, "
        f"1 % of keys changed per checkpoint, medians of {repeats}; {machine_line(info)}",
        "",
        "| checkpoint | written | time | synchronous part (on the loop) |",
        "|---|---:|---:|---:|",
        f"| heap, full | {sizes['full'].median / mb:.1f} MB | "
        f"{seconds['full'].median * 1e3:.0f} ms | {syncs['full'].median * 1e3:.2f} ms |",
        f"| heap + changelog | {sizes['changelog'].median / mb:.2f} MB | "
        f"{seconds['changelog'].median * 1e3:.0f} ms | "
        f"{syncs['changelog'].median * 1e3:.2f} ms (encodes the changed keys) |",
        f"| changelog / full | {by_bytes['ratio']:.3f} ({met('bytes_at_most_5_percent')}: "
        f"<= 0.05) | {by_seconds['ratio']:.3f} ({met('seconds_at_most_5_percent')}: <= 0.05) "
        "| |",
        "",
        f"| restore ({materialized_bytes / mb:.1f} MB materialized + "
        f"{changelog_bytes / mb:.1f} MB changelog, page cache) | time | / read |",
        "|---|---:|---:|",
        f"| read every file | {restore['read'].median * 1e3:.0f} ms | 1.00 |",
        f"| restore: read, check, index, replay, decode all | "
        f"{restore['restore'].median * 1e3:.0f} ms | {restore_ratio['ratio']:.2f} "
        f"({met('restore_at_most_3x_read')}: <= 3) |",
        f"| ready for records (read, check, index, replay; the rest decoded lazily) | "
        f"{restore['ready'].median * 1e3:.0f} ms | {ready_ratio['ratio']:.2f} |",
        "",
        "| keyed count job, checkpoint every 1 s | records/s |",
        "|---|---:|",
        f"| changelog off | {throughput['off'].median:,.0f} |",
        f"| changelog on | {throughput['on'].median:,.0f} |",
        f"| on / off | {throughput_ratio['ratio']:.2f} ({met('throughput_at_least_0_85')}: "
        ">= 0.85) |",
    ]
    markdown = "\n".join(lines)
    if not args.quick:
        write_report("changelog", report, markdown)
    print(markdown)
    report["markdown"] = markdown
    return report


if __name__ == "__main__":
    main()
