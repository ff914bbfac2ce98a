"""Savepoints: what a savepoint costs next to a checkpoint, and restoring at 2x parallelism.

For each state size (``--keys`` keys of keyed state) and value kind, the state is
bootstrapped offline with the state processor (``storage.processor.SavepointWriter``:
one value per key), and a job is started from it: an unbounded, rate-limited generator
-> ``key_by`` -> a keyed function that reads its key's value -> a sink that discards;
parallelism ``--parallelism``, max parallelism 128, checkpoints to files (no periodic
ones). Value kinds:

* ``plain``: 16 bytes per key. msgpack carries it as is: both savepoint formats encode
  it exactly as a checkpoint does.
* ``nested``: ``(i, ("v", i % 7))``, a tuple holding a tuple. The native format (and a
  checkpoint) pickles such a column in one call; the canonical format encodes it with
  msgpack extension types, value by value.

**Part (a), savepoint vs checkpoint**: on the running job, interleaved (ABBA) rounds of a
checkpoint (``JobClient.trigger_checkpoint``), a canonical savepoint and a native
savepoint (``trigger_savepoint``); each is timed by the checkpoint statistics'
end-to-end duration (trigger to completion: snapshot, encoding, writing, fsync,
``_metadata``). Ratios savepoint / checkpoint per round and of the medians.

**Part (b), restore at doubled parallelism**: from one canonical savepoint of that job
(``plain`` values, taken at ``--parallelism``), interleaved rounds of a restore at the
same parallelism and at twice it:

* **load + deploy**: ``load_checkpoint`` (read, checksum, split into frames) and a
  ``Deployment`` built from it (each keyed subtask takes the blobs of its key groups),
  as ``benchmarks.recovery`` measures it;
* **restore to processing**: from just before ``env.start(restore_from=...)`` until every
  keyed subtask has processed a record (its state decoded in ``open``).

The files stay in the page cache (just written). Reports medians, per-round ratios, and
the machine; writes ``benchmarks/results/savepoint.json`` and ``.md`` in full mode only.
Asserts nothing about time.

    python -m benchmarks.savepoint            # 100k and 1M keys, plain and nested, 5 rounds
    python -m benchmarks.savepoint --quick    # 20k keys, 2 rounds
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    interleave,
    machine,
    machine_line,
    paired_ratios,
    write_report,
)
from runtime import (
    JobClient,
    KeyedProcessFunction,
    RuntimeContext,
    SavepointFormat,
    SinkFunction,
    StreamEnvironment,
    ValueStateDescriptor,
)
from runtime.scheduler import Deployment, load_checkpoint
from storage.checkpoint import FileCheckpointStorage, dispose_savepoint
from storage.processor import SavepointWriter

MAX_PARALLELISM = 128
JOB_TIMEOUT = 600.0
"""Seconds any one job or trigger may take before it is abandoned as hung."""

VALUES: dict[str, Callable[[int], Any]] = {
    "plain": lambda i: i.to_bytes(8, "big") * 2,
    "nested": lambda i: (i, ("v", i % 7)),
}

TAKES = ("checkpoint", "canonical savepoint", "native savepoint")


class Probe:
    """When each keyed subtask processed its first record; shared by the copies."""

    def __init__(self, parallelism: int) -> None:
        self.parallelism = parallelism
        self.first: dict[int, float] = {}
        self.done = asyncio.Event()

    def __deepcopy__(self, memo: dict[int, Any]) -> Probe:
        return self

    def saw(self, subtask: int) -> None:
        if subtask not in self.first:
            self.first[subtask] = time.perf_counter()
            if len(self.first) == self.parallelism:
                self.done.set()


class Touch(KeyedProcessFunction):
    """Reads its key's value (registered in ``open``, where restored state is decoded)."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe

    def open(self, ctx: RuntimeContext) -> None:
        self.state = ctx.get_state(ValueStateDescriptor("value"))
        self.subtask = ctx.subtask_index

    def process_element(self, value: int, ctx: RuntimeContext) -> None:
        self.probe.saw(self.subtask)
        self.state.value()


class Discard(SinkFunction[Any]):
    """Drops every record."""

    def write_batch(self, values: list[Any]) -> None:
        pass


def make_env(
    checkpoints: Path, keys: int, parallelism: int, probe: Probe, rate: float | None
) -> StreamEnvironment:
    env = StreamEnvironment(parallelism=parallelism, max_parallelism=MAX_PARALLELISM)
    env.enable_checkpointing(3600.0, storage=checkpoints.absolute().as_uri())
    (
        env.generate(lambda i: i % keys, records_per_second=rate, uid="numbers")
        .key_by(lambda key: key)
        .process(Touch(probe), name="keep", uid="keep")
        .sink_to(Discard(), name="discard", uid="discard")
    )
    return env


def bootstrap(directory: Path, keys: int, kind: str, parallelism: int) -> tuple[Path, float]:
    """Write the subject state with the state processor; return it and the seconds taken."""
    started = time.perf_counter()
    value = VALUES[kind]
    path = (
        SavepointWriter.new(MAX_PARALLELISM)
        .with_operator_state(
            "keep", parallelism=parallelism, keyed={"value": {i: value(i) for i in range(keys)}}
        )
        .write(directory)
    )
    return path, time.perf_counter() - started


# -- part (a): a running job, in an event loop of its own thread -------------------------


class RunningJob:
    """A job running on an event loop in a background thread; triggers run there too."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.client: JobClient | None = None

    def call(self, make: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(self._timed(make()), self.loop)
        return future.result()

    async def _timed(self, awaitable: Awaitable[Any]) -> Any:
        async with asyncio.timeout(JOB_TIMEOUT):
            return await awaitable

    def start(self, env: StreamEnvironment, probe: Probe, subject: Path) -> None:
        async def go() -> JobClient:
            client = await env.start("savepoint benchmark", restore_from=subject)
            await probe.done.wait()  # every subtask decoded its state and runs
            return client

        self.client = self.call(go)

    def take(self, what: str, directory: Path) -> tuple[float, int, str]:
        """Take a checkpoint or savepoint; its end-to-end seconds, state size and path."""
        client = self.client
        assert client is not None

        async def go() -> tuple[float, int, str]:
            if what == "checkpoint":
                pointer = (await client.trigger_checkpoint()).pointer
            else:
                fmt = (
                    SavepointFormat.CANONICAL
                    if what.startswith("canonical")
                    else (SavepointFormat.NATIVE)
                )
                pointer = await client.trigger_savepoint(directory, format=fmt)
            stats = client.checkpoint_stats()
            assert stats is not None
            entry = next(h for h in stats.history if h.external_pointer == pointer)
            assert entry.end_to_end_duration is not None
            return entry.end_to_end_duration, entry.state_size, pointer

        return self.call(go)  # type: ignore[no-any-return]

    def stop(self) -> None:
        client = self.client
        if client is not None:

            async def cancel() -> None:
                client.cancel()
                await client.wait()

            self.call(cancel)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


def measure_takes(
    root: Path, keys: int, kind: str, parallelism: int, rate: float, repeats: int, warmup: int
) -> tuple[dict[str, Any], Path | None]:
    """Part (a) for one state; returns the row and (plain values) a canonical savepoint."""
    subject, bootstrap_s = bootstrap(root / "subjects", keys, kind, parallelism)
    probe = Probe(parallelism)
    job = RunningJob()
    sizes: dict[str, int] = {}
    savepoints = root / "savepoints"
    keep: Path | None = None
    try:
        job.start(make_env(root / "checkpoints", keys, parallelism, probe, rate), probe, subject)

        def variant(what: str) -> Callable[[], float]:
            def run() -> float:
                seconds, size, pointer = job.take(what, savepoints)
                sizes[what] = size
                if what != "checkpoint":
                    dispose_savepoint(pointer)
                return seconds

            return run

        series = interleave({what: variant(what) for what in TAKES}, repeats, warmup)
        if kind == "plain":
            _, _, pointer = job.take("canonical savepoint", root / "subject-b")
            keep = Path(pointer)
    finally:
        job.stop()
        shutil.rmtree(root / "subjects", ignore_errors=True)
        shutil.rmtree(root / "checkpoints", ignore_errors=True)
    checkpoint = series["checkpoint"]
    row: dict[str, Any] = {
        "keys": keys,
        "value": kind,
        "state_bytes": sizes,
        "bootstrap_write_s": bootstrap_s,
        **{f"{what.replace(' ', '_')}_s": s.summary() for what, s in series.items()},
        "canonical_to_checkpoint": paired_ratios(series["canonical savepoint"], checkpoint),
        "native_to_checkpoint": paired_ratios(series["native savepoint"], checkpoint),
    }
    return row, keep


# -- part (b): restoring a savepoint at 1x and 2x parallelism ----------------------------


def measure_load(subject: Path, keys: int, parallelism: int) -> float:
    """``load_checkpoint`` and a ``Deployment`` built from it, at ``parallelism``."""
    env = make_env(subject.parent / "unused", keys, parallelism, Probe(parallelism), None)
    graph = env.get_job_graph()
    storage = FileCheckpointStorage(subject.parent.parent, subject.parent.name)

    async def go() -> float:
        started = time.perf_counter()
        restored = await load_checkpoint(storage, str(subject))
        Deployment(graph, env.config, "savepoint benchmark", 0, restored, checkpointing=True)
        return time.perf_counter() - started

    return asyncio.run(go())


def measure_restore(subject: Path, scratch: Path, keys: int, parallelism: int) -> float:
    """From ``env.start(restore_from=...)`` until every keyed subtask processed a record."""

    async def go() -> float:
        probe = Probe(parallelism)
        env = make_env(scratch, keys, parallelism, probe, None)
        async with asyncio.timeout(JOB_TIMEOUT):
            started = time.perf_counter()
            client = await env.start("savepoint benchmark", restore_from=subject)
            await probe.done.wait()
            seconds = max(probe.first.values()) - started
            client.cancel()
            await client.wait()
        return seconds

    try:
        return asyncio.run(go())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def measure_rescale(
    subject: Path, scratch: Path, keys: int, parallelism: int, repeats: int, warmup: int
) -> dict[str, Any]:
    """Part (b) for one savepoint."""
    doubled = 2 * parallelism
    series = interleave(
        {
            f"load p={parallelism}": lambda: measure_load(subject, keys, parallelism),
            f"load p={doubled}": lambda: measure_load(subject, keys, doubled),
            f"restore p={parallelism}": lambda: measure_restore(
                subject, scratch, keys, parallelism
            ),
            f"restore p={doubled}": lambda: measure_restore(subject, scratch, keys, doubled),
        },
        repeats,
        warmup,
    )
    load_1, load_2 = series[f"load p={parallelism}"], series[f"load p={doubled}"]
    restore_1, restore_2 = series[f"restore p={parallelism}"], series[f"restore p={doubled}"]
    return {
        "keys": keys,
        "from_parallelism": parallelism,
        "savepoint_bytes": sum(p.stat().st_size for p in subject.iterdir()),
        "load_same_s": load_1.summary(),
        "load_doubled_s": load_2.summary(),
        "restore_same_s": restore_1.summary(),
        "restore_doubled_s": restore_2.summary(),
        "load_doubled_to_same": paired_ratios(load_2, load_1),
        "restore_doubled_to_same": paired_ratios(restore_2, restore_1),
    }


# -- the report ----------------------------------------------------------------------------


def _ms(summary: dict[str, Any]) -> str:
    return f"{summary['median'] * 1e3:,.0f} ms"


def _ratio(entry: dict[str, Any]) -> str:
    rounds = entry["per_round"]
    return f"**{entry['ratio']:.2f}x** ({rounds['min']:.2f}-{rounds['max']:.2f})"


def markdown_tables(
    takes: list[dict[str, Any]], restores: list[dict[str, Any]], args: Any, info: dict[str, Any]
) -> str:
    noisy = any(
        row[name]["noisy"]
        for row in takes
        for name in ("checkpoint_s", "canonical_savepoint_s", "native_savepoint_s")
    )
    lines = [
        f"Savepoint vs checkpoint of the same state, parallelism {args.parallelism}, medians of "
        f"{args.repeats} (end-to-end durations; per-round ratio range in brackets)"
        f"{' (noisy: spread > 1.25)' if noisy else ''}; {machine_line(info)}",
        "",
        "| keys | value | state | checkpoint | canonical savepoint | native savepoint "
        "| canonical / checkpoint | native / checkpoint |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in takes:
        size = row["state_bytes"].get("checkpoint", 0)
        lines.append(
            f"| {row['keys']:,} | {row['value']} | {size / 1e6:,.1f} MB "
            f"| {_ms(row['checkpoint_s'])} | {_ms(row['canonical_savepoint_s'])} "
            f"| {_ms(row['native_savepoint_s'])} | {_ratio(row['canonical_to_checkpoint'])} "
            f"| {_ratio(row['native_to_checkpoint'])} |"
        )
    lines += [
        "",
        f"Restore of a canonical savepoint (plain values, taken at parallelism "
        f"{args.parallelism}) at the same and at doubled parallelism, medians of {args.repeats}",
        "",
        "| keys | savepoint | load + deploy, same | doubled | doubled / same "
        "| restore to processing, same | doubled | doubled / same |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in restores:
        lines.append(
            f"| {row['keys']:,} | {row['savepoint_bytes'] / 1e6:,.1f} MB "
            f"| {_ms(row['load_same_s'])} | {_ms(row['load_doubled_s'])} "
            f"| {_ratio(row['load_doubled_to_same'])} | {_ms(row['restore_same_s'])} "
            f"| {_ms(row['restore_doubled_s'])} | {_ratio(row['restore_doubled_to_same'])} |"
        )
    return "\n".join(lines)


def headline(takes: list[dict[str, Any]], restores: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows for the kit's headline table: the largest state of each kind."""
    rows: list[dict[str, Any]] = []
    for kind in VALUES:
        mine = [row for row in takes if row["value"] == kind]
        if not mine:
            continue
        row = max(mine, key=lambda r: r["keys"])
        for fmt in ("canonical", "native"):
            entry = row[f"{fmt}_to_checkpoint"]
            rows.append(
                {
                    "figure": f"{fmt} savepoint, {row['keys']:,} keys ({kind} values)",
                    "value": _ms(row[f"{fmt}_savepoint_s"]),
                    "baseline": f"checkpoint {_ms(row['checkpoint_s'])}",
                    "ratio": entry["ratio"],
                    "per_round": entry["per_round"],
                    "goal": "",
                    "met": None,
                }
            )
    if restores:
        row = max(restores, key=lambda r: r["keys"])
        entry = row["restore_doubled_to_same"]
        rows.append(
            {
                "figure": f"restore at 2x parallelism, {row['keys']:,} keys",
                "value": _ms(row["restore_doubled_s"]),
                "baseline": f"same parallelism {_ms(row['restore_same_s'])}",
                "ratio": entry["ratio"],
                "per_round": entry["per_round"],
                "goal": "",
                "met": None,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--keys", type=int, nargs="+", default=[100_000, 1_000_000], help="state sizes, in keys"
    )
    parser.add_argument(
        "--values", nargs="+", choices=sorted(VALUES), default=list(VALUES), help="value kinds"
    )
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument(
        "--rate", type=float, default=20_000.0, help="records/s of the running job in part (a)"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None, help="where files go (a temp dir)")
    parser.add_argument("--quick", action="store_true", help="20k keys, 2 rounds")
    args = parser.parse_args(argv)
    if args.quick:
        args.keys, args.repeats = [20_000], 2
    warmup = 0 if args.quick else 1

    root = Path(tempfile.mkdtemp(prefix="weir-savepoint-", dir=args.dir))
    info = machine()
    takes: list[dict[str, Any]] = []
    restores: list[dict[str, Any]] = []
    try:
        for keys in args.keys:
            for kind in args.values:
                row, subject = measure_takes(
                    root / "a", keys, kind, args.parallelism, args.rate, args.repeats, warmup
                )
                takes.append(row)
                print(
                    f"{keys:,} keys ({kind}): canonical / checkpoint "
                    f"{row['canonical_to_checkpoint']['ratio']:.2f}x, native / checkpoint "
                    f"{row['native_to_checkpoint']['ratio']:.2f}x",
                    flush=True,
                )
                if subject is not None:
                    restores.append(
                        measure_rescale(
                            subject, root / "scratch", keys, args.parallelism, args.repeats, warmup
                        )
                    )
                    print(
                        f"{keys:,} keys: restore at 2x / 1x parallelism "
                        f"{restores[-1]['restore_doubled_to_same']['ratio']:.2f}x",
                        flush=True,
                    )
                shutil.rmtree(root / "a", ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    markdown = markdown_tables(takes, restores, args, info)
    report = {
        "benchmark": "savepoint",
        "parallelism": args.parallelism,
        "rate": args.rate,
        "repeats": args.repeats,
        "page_cache": "warm",
        "machine": info,
        "savepoint_vs_checkpoint": takes,
        "restore_rescaled": restores,
        "headline": headline(takes, restores),
    }
    if not args.quick:
        write_report("savepoint", report, markdown)
    print(markdown)
    report["markdown"] = markdown
    return report


if __name__ == "__main__":
    main()
