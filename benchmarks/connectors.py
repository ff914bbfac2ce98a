"""Connectors: PostgreSQL sinks, the Redis Streams source, FileSource of JSON Lines (issue 18).

Real servers, started by the script in temporary directories (``runtime.testing.servers``:
PostgreSQL with ``fsync`` on, as a database would run; Redis without persistence).

* **PostgreSQL sink**: ``--rows`` small rows ``(text, bigint)`` from a generator at
  parallelism 1 into a table, checkpoints every ``--interval`` s (1 s), to the job's
  end: ``PostgresSink`` (exactly-once, two-phase commit) against ``PostgresBatchSink``
  (at-least-once, ``COPY`` flushed on checkpoints). Goal: exactly-once >= 0.7x the
  batched mode, and >= 50,000 rows/s.
* **Redis Streams source**: ``--entries`` entries of two small fields in one stream,
  read to the end (``until="now"``) at parallelism 1 by a whole job into a sink that
  drops them (checkpoints every ``--interval`` s), and by the reader alone; the baseline
  is a bare redis-py loop of the same ``XREAD`` calls that keeps the raw replies. Goal:
  the job >= 200,000 entries/s.
* **FileSource of JSON Lines**: a file of ``--lines`` small JSON objects, read by a whole
  job into a dropping sink, and by the reader alone, against the plain synchronous
  ``for line in f: msgspec.json.decode(line)``. Goal: >= 0.7x that loop.

Variants of each part run interleaved (ABBA) over ``--repeats`` rounds after a warm-up;
medians, per-round ratios, the machine. Nothing asserts on time.

    python -m benchmarks.connectors            # full run
    python -m benchmarks.connectors --quick    # a smoke run of a few seconds
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec

from benchmarks.harness import interleave, machine, machine_line, paired_ratios, write_report
from runtime import StreamEnvironment
from runtime.connectors import (
    FileSource,
    JsonLines,
    PostgresBatchSink,
    PostgresSink,
    RedisStreamSource,
)
from runtime.connectors.file_reader import FileReader
from runtime.connectors.redis_stream_reader import RedisStreamReader
from runtime.connectors.redis_streams import FETCH_COUNT
from runtime.tasks import SinkFunction
from runtime.testing.servers import PostgresServer, RedisServer


class Drop(SinkFunction[Any]):
    """A sink that drops every record (the cost measured is the source's)."""

    def write_batch(self, values: list[Any]) -> None:
        """Nothing."""


def _row(i: int) -> tuple[str, int]:
    return (f"k{i % 1000}", i)


# -- PostgreSQL -----------------------------------------------------------------------------


def postgres_part(args: argparse.Namespace) -> dict[str, Any]:
    """Rows/s of the exactly-once sink and of the at-least-once batched sink."""
    import psycopg

    with (
        PostgresServer(durable=True) as server,
        psycopg.connect(server.dsn, autocommit=True) as admin,
    ):
        admin.execute("CREATE TABLE rows_eo (k text NOT NULL, v bigint NOT NULL)")
        admin.execute("CREATE TABLE rows_alo (k text NOT NULL, v bigint NOT NULL)")

        def run(table: str, make_sink: Any) -> float:
            admin.execute(f"TRUNCATE {table}")
            env = StreamEnvironment(parallelism=1)
            env.enable_checkpointing(args.interval)
            env.generate(_row, args.rows).sink_to(make_sink(server.dsn, table), name="pg")
            started = time.perf_counter()
            asyncio.run(env.execute(f"bench {table} {uuid.uuid4().hex[:6]}"))
            seconds = time.perf_counter() - started
            written = admin.execute(f"SELECT count(*) FROM {table}").fetchone()
            assert written is not None and written[0] == args.rows, written
            return args.rows / seconds

        series = interleave(
            {
                "exactly_once": lambda: run(
                    "rows_eo", lambda dsn, t: PostgresSink(dsn, t, ["k", "v"])
                ),
                "at_least_once_batched": lambda: run(
                    "rows_alo", lambda dsn, t: PostgresBatchSink(dsn, t, ["k", "v"])
                ),
            },
            args.repeats,
        )
    return {
        "rows": args.rows,
        "interval": args.interval,
        "exactly_once_rows_per_s": series["exactly_once"].summary(),
        "at_least_once_rows_per_s": series["at_least_once_batched"].summary(),
        "exactly_once_over_at_least_once": paired_ratios(
            series["exactly_once"], series["at_least_once_batched"]
        ),
    }


# -- Redis ----------------------------------------------------------------------------------


def redis_part(args: argparse.Namespace) -> dict[str, Any]:
    """Entries/s of the source in a job, of its reader, and of a bare redis-py loop."""
    import redis

    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        stream = "bench"
        pipe = client.pipeline(transaction=False)
        for i in range(args.entries):
            pipe.xadd(stream, {"key": f"k{i % 1000}", "value": str(i)})
            if len(pipe) >= 10_000:
                pipe.execute()
        pipe.execute()

        def job() -> float:
            env = StreamEnvironment(parallelism=1)
            env.enable_checkpointing(args.interval)
            env.from_source(RedisStreamSource(server.url, stream, until="now")).sink_to(Drop())
            started = time.perf_counter()
            asyncio.run(env.execute("bench redis"))
            return args.entries / (time.perf_counter() - started)

        def reader() -> float:
            source = RedisStreamSource(server.url, stream, until="now")
            splits = source.create_enumerator().assign_splits(1)[0]

            async def go() -> int:
                reader = RedisStreamReader(source, 0)
                reader.add_splits(splits)
                n = 0
                while (batch := await reader.read(1024)) is not None:
                    n += len(batch)
                reader.close()
                return n

            started = time.perf_counter()
            n = asyncio.run(go())
            assert n == args.entries, n
            return n / (time.perf_counter() - started)

        def bare() -> float:
            raw = redis.Redis.from_url(server.url)
            raw.set_response_callback("XREAD", lambda response, **_: response)
            position, n = "0-0", 0
            started = time.perf_counter()
            while True:
                reply = raw.execute_command(
                    "XREAD", "COUNT", FETCH_COUNT, "STREAMS", stream, position
                )
                if not reply:
                    break
                pairs = reply.items() if isinstance(reply, dict) else reply
                for _, entries in pairs:
                    n += len(entries)
                    position = entries[-1][0]
            seconds = time.perf_counter() - started
            raw.close()
            assert n == args.entries, n
            return n / seconds

        series = interleave({"job": job, "reader": reader, "bare_xread": bare}, args.repeats)
        client.close()
    return {
        "entries": args.entries,
        "job_entries_per_s": series["job"].summary(),
        "reader_entries_per_s": series["reader"].summary(),
        "bare_xread_entries_per_s": series["bare_xread"].summary(),
        "job_over_bare": paired_ratios(series["job"], series["bare_xread"]),
        "reader_over_bare": paired_ratios(series["reader"], series["bare_xread"]),
    }


# -- files ----------------------------------------------------------------------------------


def files_part(args: argparse.Namespace) -> dict[str, Any]:
    """Lines/s of FileSource (job and reader) against a plain synchronous loop."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "events.jsonl"
        with open(path, "w", encoding="utf-8") as f:
            for i in range(args.lines):
                f.write(json.dumps({"user": f"u{i % 1000}", "n": i, "ok": i % 2 == 0}) + "\n")

        def plain() -> float:
            started = time.perf_counter()
            n = 0
            with open(path, "rb") as f:
                for line in f:
                    msgspec.json.decode(line)
                    n += 1
            assert n == args.lines
            return n / (time.perf_counter() - started)

        def reader() -> float:
            source = FileSource(path, format=JsonLines())
            splits = source.create_enumerator().assign_splits(1)[0]

            async def go() -> int:
                reader = FileReader(source, 0)
                reader.add_splits(splits)
                n = 0
                while (batch := await reader.read(1024)) is not None:
                    n += len(batch)
                return n

            started = time.perf_counter()
            n = asyncio.run(go())
            assert n == args.lines, n
            return n / (time.perf_counter() - started)

        def job() -> float:
            env = StreamEnvironment(parallelism=1)
            env.enable_checkpointing(args.interval)
            env.from_source(FileSource(path, format=JsonLines())).sink_to(Drop())
            started = time.perf_counter()
            asyncio.run(env.execute("bench files"))
            return args.lines / (time.perf_counter() - started)

        series = interleave({"plain_loop": plain, "reader": reader, "job": job}, args.repeats)
    return {
        "lines": args.lines,
        "plain_loop_lines_per_s": series["plain_loop"].summary(),
        "reader_lines_per_s": series["reader"].summary(),
        "job_lines_per_s": series["job"].summary(),
        "reader_over_plain": paired_ratios(series["reader"], series["plain_loop"]),
        "job_over_plain": paired_ratios(series["job"], series["plain_loop"]),
    }


def _rate(summary: dict[str, Any]) -> str:
    return f"{summary['median']:,.0f}/s"


def markdown(report: dict[str, Any]) -> str:
    """The part's table."""
    pg, rd, fl = report["postgres"], report["redis"], report["files"]
    args = report["parameters"]
    return "\n".join(
        [
            f"Connectors: {args['repeats']} round(s), checkpoints every {args['interval']:g} s, "
            f"parallelism 1; {machine_line(report['machine'])}",
            "",
            "| figure | value | baseline | ratio | goal |",
            "|---|---:|---:|---:|---|",
            f"| PostgresSink exactly-once, {pg['rows']:,} rows | "
            f"{_rate(pg['exactly_once_rows_per_s'])} | at-least-once batched "
            f"{_rate(pg['at_least_once_rows_per_s'])} | "
            f"{pg['exactly_once_over_at_least_once']['ratio']:.2f}x | >= 0.7x, >= 50,000/s |",
            f"| RedisStreamSource job, {rd['entries']:,} entries | "
            f"{_rate(rd['job_entries_per_s'])} | "
            f"bare XREAD {_rate(rd['bare_xread_entries_per_s'])} | "
            f"{rd['job_over_bare']['ratio']:.2f}x | >= 200,000/s |",
            f"| RedisStreamSource reader alone | {_rate(rd['reader_entries_per_s'])} | "
            "bare XREAD | "
            f"{rd['reader_over_bare']['ratio']:.2f}x | |",
            f"| FileSource JSON Lines job, {fl['lines']:,} lines | {_rate(fl['job_lines_per_s'])} "
            f"| plain loop {_rate(fl['plain_loop_lines_per_s'])} | "
            f"{fl['job_over_plain']['ratio']:.2f}x | >= 0.7x |",
            f"| FileSource JSON Lines reader alone | {_rate(fl['reader_lines_per_s'])} | plain "
            f"loop | {fl['reader_over_plain']['ratio']:.2f}x | >= 0.7x |",
        ]
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--entries", type=int, default=500_000)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--interval", type=float, default=1.0, help="checkpoint interval")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default="postgres,redis,files")
    parser.add_argument("--quick", action="store_true", help="1 round, small inputs")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.entries, args.lines, args.repeats = 20_000, 50_000, 100_000, 1
        args.interval = 0.2
    only = set(args.only.split(","))
    report: dict[str, Any] = {
        "benchmark": "connectors",
        "machine": machine(),
        "parameters": vars(args),
        "postgres": postgres_part(args) if "postgres" in only else None,
        "redis": redis_part(args) if "redis" in only else None,
        "files": files_part(args) if "files" in only else None,
    }
    if None not in (report["postgres"], report["redis"], report["files"]):
        report["markdown"] = markdown(report)
        print(report["markdown"])
        if not args.quick:
            write_report("connectors", report, report["markdown"])
    else:
        print(
            json.dumps({k: v for k, v in report.items() if k != "machine"}, indent=1, default=str)
        )
    return report


if __name__ == "__main__":
    main()
