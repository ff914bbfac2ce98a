"""Async I/O (``async_map``) against hand-written asyncio, and its checkpoints.

Every figure is a ratio of two variants run side by side in one run (interleaved ABBA,
medians), parallelism 1, and says whether ``async_map`` ran ordered or unordered:

* **throughput** against a service of 10 ms latency (an awaited ``asyncio.sleep``),
  capacity 100: ``async_map`` vs a hand-written ``asyncio.Semaphore(100)`` + tasks loop
  making the same calls (goal >= 0.8x), and vs plain ``map(async_fn)``, which awaits
  one call at a time (goal >= 50x);
* **HTTP**: against a real loopback service (starlette + uvicorn in a child process,
  5 ms latency), ``async_map`` with an httpx client vs the same hand-written httpx loop,
  10 requests in flight (``HTTP_CAPACITY``) (goal >= 0.7x);
* **latency**: 10 ms service, ``buffer_timeout=0.01``, the source rate-limited to half
  of the saturating rate measured above; p99 from a record leaving the source to
  reaching the sink (goal < 50 ms);
* **checkpoints**: an unthrottled source into ``async_map`` (10 ms service, capacity
  100: 100 calls in flight, the source backpressured); unaligned checkpoint duration
  (goal <= 50 ms) with the aligned one beside it.

    python -m benchmarks.async_io            # full: a few minutes
    python -m benchmarks.async_io --quick    # a smoke run of ~20 s
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import socket
import statistics
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import httpx

from benchmarks.harness import (
    interleave,
    machine,
    machine_line,
    paired_ratios,
    summarize,
    tick,
    write_report,
)
from runtime import AsyncFunction, RuntimeContext, StreamEnvironment

SERVICE_LATENCY = 0.010
"""Seconds per call of the awaited-sleep service."""
HTTP_LATENCY = 0.005
"""Seconds per request of the loopback HTTP service."""
CAPACITY = 100
"""Calls in flight (``async_map`` capacity, the loops' semaphore)."""
HTTP_CAPACITY = 10
"""Requests in flight against the HTTP service: httpx's connection pool costs CPU that
grows with the requests in it (a few ms per request at 100 on the development machine,
which then bounds both variants), so the HTTP figures use fewer."""


async def service(x: Any) -> Any:
    """The 10 ms service: an awaited sleep."""
    await asyncio.sleep(SERVICE_LATENCY)
    return x


def _variant(ordered: bool) -> str:
    return "ordered" if ordered else "unordered"


# -- throughput against the sleep service ---------------------------------------------


def run_async_map(records: int, ordered: bool) -> float:
    """Records/s of source -> async_map(service) -> sink."""
    env = StreamEnvironment(parallelism=1)
    (
        env.from_sequence(0, records - 1)
        .async_map(service, capacity=CAPACITY, ordered=ordered)
        .sink_to(lambda batch: None, name="sink")
    )
    return _rate(env, records)


def run_plain_map(records: int) -> float:
    """Records/s of source -> map(service) -> sink: one call at a time."""
    env = StreamEnvironment(parallelism=1)
    env.from_sequence(0, records - 1).map(service).sink_to(lambda batch: None, name="sink")
    return _rate(env, records)


def _rate(env: StreamEnvironment, records: int) -> float:
    async def job() -> float:
        started = time.perf_counter()
        result = await env.execute("async io")
        elapsed = time.perf_counter() - started
        assert result.records_in("sink") == records, "the job lost or duplicated records"
        return records / elapsed

    return asyncio.run(job())


def run_semaphore_loop(records: int) -> float:
    """Records/s of a hand-written ``Semaphore(CAPACITY)`` + tasks loop, same calls."""

    async def go() -> float:
        started = time.perf_counter()
        semaphore = asyncio.Semaphore(CAPACITY)
        results: list[Any] = []
        tasks: set[asyncio.Task[None]] = set()

        async def one(x: int) -> None:
            try:
                results.append(await service(x))
            finally:
                semaphore.release()

        for x in range(records):
            await semaphore.acquire()
            task = asyncio.create_task(one(x))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
        assert len(results) == records
        return records / (time.perf_counter() - started)

    return asyncio.run(go())


# -- the loopback HTTP service ------------------------------------------------------------


def _serve(sock: socket.socket, latency: float) -> None:  # in the child process
    import uvicorn

    from examples.enrich import profile_service

    config = uvicorn.Config(
        profile_service(latency), log_level="warning", access_log=False, lifespan="off"
    )
    uvicorn.Server(config).run(sockets=[sock])


@contextlib.contextmanager
def http_service(latency: float) -> Iterator[str]:
    """The example's profile service in a child process on 127.0.0.1; yields its URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    process = multiprocessing.get_context("fork").Process(
        target=_serve, args=(sock, latency), daemon=True
    )
    process.start()
    try:
        deadline = time.monotonic() + 20.0
        while True:  # bounded: the service answers within seconds or the part fails
            try:
                httpx.get(f"{url}/users/1", timeout=1.0).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or not process.is_alive():
                    raise RuntimeError("the loopback HTTP service did not start") from None
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.join(5.0)
        sock.close()


def _client(url: str) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=HTTP_CAPACITY, max_keepalive_connections=HTTP_CAPACITY)
    return httpx.AsyncClient(base_url=url, limits=limits)


class Lookup(AsyncFunction[int, Any]):
    """One GET per record with one httpx client per subtask."""

    def __init__(self, url: str) -> None:
        self.url = url

    def open(self, ctx: RuntimeContext) -> None:
        self.client = _client(self.url)

    async def async_invoke(self, value: int) -> Any:
        response = await self.client.get(f"/users/{value}")
        return response.json()["tier"]

    async def close(self) -> None:
        await self.client.aclose()


def run_http_async_map(url: str, records: int, ordered: bool) -> float:
    """Records/s of source -> async_map(httpx GET) -> sink."""
    env = StreamEnvironment(parallelism=1)
    (
        env.from_sequence(0, records - 1)
        .async_map(Lookup(url), capacity=HTTP_CAPACITY, ordered=ordered)
        .sink_to(lambda batch: None, name="sink")
    )
    return _rate(env, records)


def run_http_loop(url: str, records: int) -> float:
    """Records/s of the hand-written loop making the same GETs with one httpx client."""

    async def go() -> float:
        async with _client(url) as client:
            started = time.perf_counter()
            semaphore = asyncio.Semaphore(HTTP_CAPACITY)
            results: list[Any] = []
            tasks: set[asyncio.Task[None]] = set()

            async def one(x: int) -> None:
                try:
                    response = await client.get(f"/users/{x}")
                    results.append(response.json()["tier"])
                finally:
                    semaphore.release()

            for x in range(records):
                await semaphore.acquire()
                task = asyncio.create_task(one(x))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.gather(*tasks)
            assert len(results) == records
            return records / (time.perf_counter() - started)

    return asyncio.run(go())


# -- latency ------------------------------------------------------------------------------


def run_latency(records: int, rate: float, ordered: bool) -> dict[str, float]:
    """Source (rate-limited) -> stamp -> async_map(service) -> sink: latency percentiles."""
    latencies: list[float] = []

    def sink(record: tuple[int, float]) -> None:
        latencies.append(time.perf_counter() - record[1])

    env = StreamEnvironment(parallelism=1, buffer_timeout=0.01)
    (
        env.generate(lambda i: i, records, records_per_second=rate, name="source")
        .map(lambda i: (i, time.perf_counter()), name="stamp")  # chained: leaving the source
        .async_map(service, capacity=CAPACITY, ordered=ordered)
        .sink_to(sink, name="sink")
    )
    asyncio.run(env.execute("latency"))
    assert len(latencies) == records
    steady = sorted(latencies[records // 10 :])  # past the first tenth (warm-up)
    return {
        "p50": steady[len(steady) // 2],
        "p99": steady[min(len(steady) - 1, int(len(steady) * 0.99))],
        "max": steady[-1],
    }


# -- checkpoints with calls in flight under backpressure ----------------------------------


async def run_checkpoints(
    unaligned: bool, ordered: bool, duration: float, interval: float, directory: str
) -> dict[str, Any]:
    """Checkpoint durations of source -> async_map (100 calls in flight) -> sink."""
    env = StreamEnvironment(parallelism=1)
    options: dict[str, Any] = {"unaligned": unaligned}
    if unaligned:
        options["aligned_timeout"] = 0.0
    env.enable_checkpointing(interval, timeout=60.0, storage=f"file://{directory}", **options)
    (
        env.generate(lambda i: i, name="source")
        .async_map(service, capacity=CAPACITY, ordered=ordered, name="enrich")
        .sink_to(lambda batch: None, name="sink")
    )
    client = await env.start("checkpoints in flight")
    await asyncio.sleep(interval)  # the queue and the channels fill up first
    started_wall = time.time()
    await asyncio.sleep(duration)
    client.cancel()
    result = await client.wait()
    stats = result.checkpoints
    assert stats is not None
    done = [s for s in stats.completed() if s.trigger_time >= started_wall]
    return {
        "durations": [s.end_to_end_duration for s in done],
        "state_bytes": [s.state_size for s in done],
        "in_flight_bytes": [s.in_flight_bytes for s in done],
    }


def checkpoint_modes(args: argparse.Namespace, ordered: bool) -> dict[str, dict[str, Any]]:
    """Aligned and unaligned, interleaved; medians over every completed checkpoint."""
    runs: dict[str, list[dict[str, Any]]] = {"unaligned": [], "aligned": []}
    with tempfile.TemporaryDirectory() as directory:
        for round_ in range(args.repeats):
            names = ["unaligned", "aligned"] if round_ % 2 == 0 else ["aligned", "unaligned"]
            for name in names:
                runs[name].append(
                    asyncio.run(
                        run_checkpoints(
                            name == "unaligned",
                            ordered,
                            args.checkpoint_seconds,
                            args.interval,
                            directory,
                        )
                    )
                )
                tick(f"checkpoints {name} ({_variant(ordered)})")
    out: dict[str, dict[str, Any]] = {}
    for name, results in runs.items():
        durations = [d for r in results for d in r["durations"]]
        out[name] = {
            "checkpoints": len(durations),
            "duration": summarize(durations),
            "state_bytes_median": _median([b for r in results for b in r["state_bytes"]]),
            "in_flight_bytes_median": _median([b for r in results for b in r["in_flight_bytes"]]),
        }
    return out


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# -- the report ---------------------------------------------------------------------------


def _row(
    figure: str,
    value: str,
    baseline: str,
    ratio: float | None,
    goal: str,
    met: bool | None,
    per_round: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "figure": figure,
        "value": value,
        "baseline": baseline,
        "ratio": ratio,
        "per_round": None
        if per_round is None
        else {"min": per_round.get("min"), "max": per_round.get("max")},
        "goal": goal,
        "met": met,
    }


def _ms(seconds: float) -> str:
    return "none" if seconds != seconds else f"{seconds * 1e3:,.1f} ms"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=20000, help="records per throughput run")
    parser.add_argument("--map-records", type=int, default=200, help="records of plain map")
    parser.add_argument("--http-records", type=int, default=1000, help="records per HTTP run")
    parser.add_argument(
        "--http-repeats", type=int, default=6, help="HTTP rounds (its runs are noisier)"
    )
    parser.add_argument("--latency-records", type=int, default=3000)
    parser.add_argument("--checkpoint-seconds", type=float, default=4.0)
    parser.add_argument("--interval", type=float, default=0.5, help="checkpoint interval")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a smoke run of ~20 s")
    args = parser.parse_args(argv)
    if args.quick:  # smaller defaults; sizes given explicitly still win
        parser.set_defaults(
            records=1000,
            map_records=20,
            http_records=300,
            latency_records=500,
            checkpoint_seconds=1.0,
            interval=0.2,
            repeats=1,
            http_repeats=1,
        )
        args = parser.parse_args(argv)

    throughput = interleave(
        {
            "async_map ordered": lambda: run_async_map(args.records, True),
            "async_map unordered": lambda: run_async_map(args.records, False),
            "semaphore loop": lambda: run_semaphore_loop(args.records),
            "map(async_fn)": lambda: run_plain_map(args.map_records),
        },
        repeats=args.repeats,
    )
    loop = throughput["semaphore loop"]
    plain = throughput["map(async_fn)"]
    with http_service(HTTP_LATENCY) as url:
        http = interleave(
            {
                "async_map ordered": lambda: run_http_async_map(url, args.http_records, True),
                "async_map unordered": lambda: run_http_async_map(url, args.http_records, False),
                "httpx loop": lambda: run_http_loop(url, args.http_records),
            },
            repeats=args.http_repeats,
        )
    latency: dict[str, dict[str, Any]] = {}
    for ordered in (True, False):
        saturating = throughput[f"async_map {_variant(ordered)}"].median
        rate = saturating / 2
        runs = []
        for _ in range(args.repeats):
            runs.append(run_latency(args.latency_records, rate, ordered))
            tick(f"latency ({_variant(ordered)})")
        latency[_variant(ordered)] = {
            "rate": rate,
            "p50": _median([r["p50"] for r in runs]),
            "p99": _median([r["p99"] for r in runs]),
            "p99_runs": [r["p99"] for r in runs],
        }
    checkpoints = checkpoint_modes(args, ordered=True)

    info = machine()
    headline: list[dict[str, Any]] = []
    for variant in ("ordered", "unordered"):
        series = throughput[f"async_map {variant}"]
        paired = paired_ratios(series, loop)
        headline.append(
            _row(
                f"async_map ({variant}) vs Semaphore({CAPACITY}) + tasks loop, 10 ms service",
                f"{series.median:,.0f} rec/s",
                f"{loop.median:,.0f} rec/s",
                paired["ratio"],
                ">= 0.8x",
                paired["ratio"] >= 0.8,
                paired["per_round"],
            )
        )
    for variant in ("ordered", "unordered"):
        series = throughput[f"async_map {variant}"]
        ratio = series.median / plain.median
        headline.append(
            _row(
                f"async_map ({variant}) vs plain map(async_fn), 10 ms service",
                f"{series.median:,.0f} rec/s",
                f"{plain.median:,.0f} rec/s",
                ratio,
                ">= 50x",
                ratio >= 50,
            )
        )
    http_loop = http["httpx loop"]
    for variant in ("ordered", "unordered"):
        series = http[f"async_map {variant}"]
        paired = paired_ratios(series, http_loop)
        headline.append(
            _row(
                f"async_map ({variant}) vs httpx loop, loopback uvicorn 5 ms, "
                f"{HTTP_CAPACITY} in flight",
                f"{series.median:,.0f} req/s",
                f"{http_loop.median:,.0f} req/s",
                paired["ratio"],
                ">= 0.7x",
                paired["ratio"] >= 0.7,
                paired["per_round"],
            )
        )
    for variant, figures in latency.items():
        headline.append(
            _row(
                f"p99 source -> sink ({variant}), 10 ms service at {figures['rate']:,.0f} rec/s "
                "(half saturating), buffer_timeout 10 ms",
                _ms(figures["p99"]),
                "",
                None,
                "< 50 ms",
                figures["p99"] < 0.050,
            )
        )
    unaligned = checkpoints["unaligned"]["duration"]["median"]
    aligned = checkpoints["aligned"]["duration"]["median"]
    headline.append(
        _row(
            f"unaligned checkpoint, {CAPACITY} calls in flight under backpressure (ordered); "
            "baseline: aligned",
            _ms(unaligned),
            _ms(aligned),
            aligned / unaligned if unaligned and unaligned == unaligned else None,
            "<= 50 ms",
            unaligned <= 0.050 if unaligned == unaligned else None,
        )
    )

    report = {
        "benchmark": "async_io",
        "parameters": {
            "service_latency": SERVICE_LATENCY,
            "http_latency": HTTP_LATENCY,
            "capacity": CAPACITY,
            "http_capacity": HTTP_CAPACITY,
            "records": args.records,
            "map_records": args.map_records,
            "http_records": args.http_records,
            "http_repeats": args.http_repeats,
            "latency_records": args.latency_records,
            "checkpoint_seconds": args.checkpoint_seconds,
            "interval": args.interval,
            "repeats": args.repeats,
            "parallelism": 1,
        },
        "machine": info,
        "throughput": {name: s.summary() for name, s in throughput.items()},
        "http": {name: s.summary() for name, s in http.items()},
        "latency": latency,
        "checkpoints": checkpoints,
        "headline": headline,
    }
    lines = [
        f"Async I/O, parallelism 1, capacity {CAPACITY} (HTTP: {HTTP_CAPACITY}), medians of "
        f"{args.repeats} rounds (HTTP: {args.http_repeats}); "
        f"{machine_line(info)}",
        "",
        "| figure | value | baseline | ratio | goal |",
        "|---|---:|---:|---:|---|",
    ]
    for row in headline:
        ratio_text = "" if row["ratio"] is None else f"{row['ratio']:.2f}x"
        lines.append(
            f"| {row['figure']} | {row['value']} | {row['baseline']} | {ratio_text} | "
            f"{row['goal']} {'met' if row['met'] else 'NOT met'} |"
        )
    lines += [
        "",
        "| checkpoints (ordered) | count | duration median | min | max | state bytes |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, figures in checkpoints.items():
        d = figures["duration"]
        lines.append(
            f"| {name} | {figures['checkpoints']} | {_ms(d['median'])} | {_ms(d['min'])} | "
            f"{_ms(d['max'])} | {figures['state_bytes_median']:,.0f} |"
        )
    markdown = "\n".join(lines)
    if not args.quick:
        write_report("async_io", report, markdown)
    print(markdown)
    report["markdown"] = markdown
    return report


if __name__ == "__main__":
    main()
