"""Worker processes: one process against ``workers=2``, side by side in one run.

Figures (the goals are issue 16's):

* a job with about 20 us of Python work per record (source -> map doing the work ->
  key_by -> count): ``workers=2, parallelism=2`` against one process at parallelism 1
  (goal >= 1.8x);
* the keyed count (trivial work): ``workers=2, parallelism=2`` against one process at
  parallelism 1 (goal >= 1.2x);
* one cross-process channel alone: records/s of ``(int, int)`` tuples in buffers of 512
  from a ``RemoteSender`` in this process to a ``RemoteReceiver`` in another (goal >= 1M);
* job start with 2 workers (execute of a 10-record job; goal <= 1.5 s) and the resident
  memory of an idle worker (goal <= 80 MB).

Job figures are records over the whole ``execute`` (job start included).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from typing import Any

from actors import EndOfChannel
from benchmarks.harness import interleave, machine, machine_line, paired_ratios, write_report
from runtime import StreamEnvironment

BUFFER = 512


def _work(x: int) -> tuple[int, int]:
    end = time.perf_counter() + 20e-6
    while time.perf_counter() < end:
        pass
    return (x % 100, 1)


def _trivial(x: int) -> tuple[int, int]:
    return (x % 100, 1)


def run_job(records: int, workers: int, parallelism: int, heavy: bool) -> float:
    """Records/s of the keyed count over the whole execute."""

    async def go() -> float:
        env = StreamEnvironment(parallelism=parallelism, workers=workers)
        (
            env.from_collection(range(records))
            .map(_work if heavy else _trivial)
            .key_by(lambda t: t[0])
            .reduce(lambda a, b: (a[0], a[1] + b[1]))
            .filter(lambda t: False)
            .collect(name="out")
        )
        start = time.perf_counter()
        await env.execute("processes")
        return records / (time.perf_counter() - start)

    return asyncio.run(go())


def job_start_seconds() -> float:
    """Seconds to execute a 10-record job with 2 workers (start, run, stop)."""

    async def go() -> float:
        env = StreamEnvironment(parallelism=2, workers=2)
        env.from_collection(range(10)).map(_trivial).collect(name="out")
        start = time.perf_counter()
        await env.execute("start")
        return time.perf_counter() - start

    return asyncio.run(go())


def _trivial_id(i: int) -> int:
    return i


def _slow(x: int) -> int:
    time.sleep(0.01)
    return x


def idle_worker_rss_mb() -> float:
    """The largest resident set (MB) of the 2 workers of a job that is mostly asleep."""

    async def go() -> float:
        env = StreamEnvironment(parallelism=2, workers=2)
        env.generate(_trivial_id, 10**6).map(_slow).filter(lambda x: False).collect(name="o")
        client = await env.start("idle")
        try:
            deadline = time.monotonic() + 30
            children: list[int] = []
            while len(children) < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                children = _children(os.getpid())
            await asyncio.sleep(0.5)  # let them settle to their running size
            return max(_rss_mb(pid) for pid in children)
        finally:
            client.cancel()
            await client.wait()

    return asyncio.run(go())


def _children(pid: int) -> list[int]:
    """The worker processes started by ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                ppid = int(stat.read().rsplit(") ", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                command = cmdline.read()
        except OSError:
            continue
        if ppid == pid and b"runtime.cluster.worker" in command:
            found.append(int(entry))
    return found


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# -- checkpoints under backpressure ----------------------------------------------------


def checkpoints_under_backpressure(duration: float) -> dict[str, float]:
    """Median checkpoint durations (s) of ``benchmarks.backpressure``'s job, 2 workers.

    Its job (generator -> map -> key_by -> a 1 ms per record sink) at parallelism 2
    in 2 worker processes: the key_by channels between workers are network channels.
    """
    import tempfile
    from types import SimpleNamespace

    from benchmarks import backpressure
    from runtime.api.overrides import OVERRIDES

    args = SimpleNamespace(
        parallelism=2,
        buffer_size=128,
        channel_capacity=8,
        interval=0.5,
        sink_cost=0.001,
        duration=duration,
        min_checkpoints=2,
    )
    medians: dict[str, float] = {}
    OVERRIDES.workers = 2
    try:
        for mode in ("aligned", "unaligned"):
            with tempfile.TemporaryDirectory() as directory:
                run = asyncio.run(backpressure.run_mode(mode, args, directory))  # type: ignore[arg-type]
            medians[mode] = backpressure.median(run["durations"])
    finally:
        OVERRIDES.workers = None
    return medians


# -- one channel alone ----------------------------------------------------------------


async def _receive(port: int) -> None:
    from runtime.cluster.network import CREDIT, PeerLink
    from runtime.cluster.remote_channel import RemoteReceiver

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    receiver = RemoteReceiver(8, name="bench", channel_id=0)
    link = PeerLink(reader, writer, lambda kind, channel, item: receiver.on_frame(kind, item))
    reading = asyncio.ensure_future(link.read_forever())
    receiver.attach(link)
    count = 0
    while True:
        try:
            item = await receiver.receive()
        except EndOfChannel:
            break
        count += len(item)
    link.send(CREDIT, 1, count)  # done: the count, on a channel of its own
    await writer.drain()
    reading.cancel()


def channel_records_per_second(records: int) -> float:
    """Records/s through one RemoteSender -> RemoteReceiver pair across two processes."""

    async def go() -> float:
        from runtime.cluster.network import PeerLink
        from runtime.cluster.remote_channel import RemoteSender

        connected: asyncio.Future[tuple[Any, Any]] = asyncio.get_running_loop().create_future()

        async def on_connect(reader: Any, writer: Any) -> None:
            connected.set_result((reader, writer))

        server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        child = subprocess.Popen(  # noqa: ASYNC220 - returns at once
            [sys.executable, "-m", "benchmarks.processes", "--receiver", str(port)],
            env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)),
        )
        reader, writer = await connected
        sender = RemoteSender(8, name="bench", channel_id=0)
        done = asyncio.get_running_loop().create_future()

        def on_frame(kind: int, channel: int, item: Any) -> None:
            if channel == 1:
                done.set_result(item)
            else:
                sender.grant(item)

        link = PeerLink(reader, writer, on_frame)
        reading = asyncio.ensure_future(link.read_forever())
        sender.attach(link)
        buffer = [(i, i) for i in range(BUFFER)]
        start = time.perf_counter()
        for _ in range(records // BUFFER):
            await sender.send(list(buffer))
            if writer.transport.get_write_buffer_size() > 1 << 20:
                await writer.drain()
        sender.close()
        received = await done
        elapsed = time.perf_counter() - start
        reading.cancel()
        server.close()
        child.wait()
        assert received == (records // BUFFER) * BUFFER, received
        return received / elapsed

    return asyncio.run(go())


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the part; ``--quick`` for the kit's quick run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--heavy-records", type=int, default=200_000)
    parser.add_argument("--channel-records", type=int, default=5_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smaller runs, 1 round")
    parser.add_argument("--receiver", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.receiver is not None:
        asyncio.run(_receive(args.receiver))
        return {}
    if args.quick:
        args.records, args.heavy_records, args.channel_records, args.repeats = (
            300_000,
            40_000,
            1_000_000,
            1,
        )
    heavy = interleave(
        {
            "one process": lambda: run_job(args.heavy_records, 1, 1, True),
            "workers=2": lambda: run_job(args.heavy_records, 2, 2, True),
        },
        repeats=args.repeats,
        warmup=0,
    )
    light = interleave(
        {
            "one process": lambda: run_job(args.records, 1, 1, False),
            "workers=2": lambda: run_job(args.records, 2, 2, False),
        },
        repeats=args.repeats,
        warmup=0,
    )
    channel = interleave(
        {"channel": lambda: channel_records_per_second(args.channel_records)},
        repeats=args.repeats,
        warmup=0,
    )["channel"]
    starts = interleave({"start": job_start_seconds}, repeats=args.repeats, warmup=0)["start"]
    rss = idle_worker_rss_mb()
    checkpoints = checkpoints_under_backpressure(2.0 if args.quick else 6.0)
    aligned_over_unaligned = checkpoints["aligned"] / checkpoints["unaligned"]
    heavy_ratio = paired_ratios(heavy["workers=2"], heavy["one process"])
    light_ratio = paired_ratios(light["workers=2"], light["one process"])
    info = machine()
    report = {
        "benchmark": "processes",
        "machine": info,
        "heavy_records": args.heavy_records,
        "records": args.records,
        "heavy_one_process": heavy["one process"].summary(),
        "heavy_workers2": heavy["workers=2"].summary(),
        "heavy_ratio": heavy_ratio,
        "light_one_process": light["one process"].summary(),
        "light_workers2": light["workers=2"].summary(),
        "light_ratio": light_ratio,
        "channel_records_per_s": channel.summary(),
        "job_start_seconds": starts.summary(),
        "idle_worker_rss_mb": rss,
        "checkpoint_seconds_under_backpressure": checkpoints,
        "aligned_over_unaligned": aligned_over_unaligned,
    }
    md = [
        f"Worker processes, medians of {args.repeats}; {machine_line(info)}",
        "",
        "| figure | one process (p=1) | workers=2 (p=2) | ratio | goal |",
        "|---|---:|---:|---:|---|",
        f"| 20 us/record keyed count, {args.heavy_records:,} records (rec/s) | "
        f"{heavy['one process'].median:,.0f} | {heavy['workers=2'].median:,.0f} | "
        f"**{heavy_ratio['ratio']:.2f}x** | >= 1.8x |",
        f"| keyed count, {args.records:,} records (rec/s) | "
        f"{light['one process'].median:,.0f} | {light['workers=2'].median:,.0f} | "
        f"**{light_ratio['ratio']:.2f}x** | >= 1.2x |",
        "",
        "| figure | value | goal |",
        "|---|---:|---|",
        f"| one cross-process channel ((int, int) records/s) | {channel.median:,.0f} | >= 1M |",
        f"| job start + stop with 2 workers (s) | {starts.median:.2f} | <= 1.5 |",
        f"| resident memory of an idle worker (MB) | {rss:.0f} | <= 80 |",
        f"| unaligned checkpoint under backpressure, 2 workers (ms) | "
        f"{checkpoints['unaligned'] * 1000:.0f} | <= 50 |",
        f"| aligned checkpoint under backpressure, 2 workers (ms) | "
        f"{checkpoints['aligned'] * 1000:.0f} | |",
        f"| aligned / unaligned | {aligned_over_unaligned:.0f}x | >= 100x |",
    ]
    markdown = "\n".join(md)
    if not args.quick:
        write_report("processes", report, markdown)
    print(markdown)
    report["markdown"] = markdown
    return report


if __name__ == "__main__":
    main()
