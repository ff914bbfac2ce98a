"""Redis Streams -> keyed state -> PostgreSQL, exactly once.

Reads page views from the Redis stream ``views`` (entries ``{"user": ..., "page": ...}``)
to its end, counts the views of each user in keyed state, and writes one row
``(user, page, views_so_far)`` per view into the PostgreSQL table ``views`` through
``PostgresSink``: each checkpoint's rows are one prepared transaction, committed when
the checkpoint completes, so after any failure the table holds every view once.

    pip install '.[postgres,redis]'
    python examples/redis_to_postgres.py                        # throwaway servers
    python examples/redis_to_postgres.py --redis redis://127.0.0.1:6379/0 \\
        --dsn "host=127.0.0.1 user=me password=... dbname=me"   # yours

Without ``--redis`` and ``--dsn`` it starts its own Redis and PostgreSQL (Debian's
``redis-server`` and ``postgresql`` packages) in temporary directories, fills the
stream with ``--views`` entries, runs the job and prints the busiest users. Your
PostgreSQL needs ``max_prepared_transactions`` > 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

from runtime import KeyedProcessFunction, RuntimeContext, StreamEnvironment, ValueStateDescriptor
from runtime.connectors.postgres import PostgresSink
from runtime.connectors.redis_streams import RedisStreamEntry, RedisStreamSource


class CountViews(KeyedProcessFunction):
    """Counts each user's views; emits ``(user, page, count)`` per view."""

    def open(self, ctx: RuntimeContext) -> None:
        self.views = ctx.get_state(ValueStateDescriptor("views", default=0, type=int))

    def process_element(self, entry: RedisStreamEntry, ctx: RuntimeContext) -> list[Any]:
        n = self.views.value() + 1
        self.views.update(n)
        return [(entry.fields["user"], entry.fields["page"], n)]


@contextlib.contextmanager
def servers(args: argparse.Namespace) -> Iterator[tuple[str, str]]:
    """The given servers, or throwaway ones filled with example data."""
    if args.redis and args.dsn:
        yield args.redis, args.dsn
        return
    import redis

    from runtime.testing.servers import PostgresServer, RedisServer

    with RedisServer() as r, PostgresServer() as pg:
        with redis.Redis.from_url(r.url) as client:
            pipe = client.pipeline(transaction=False)
            for i in range(args.views):
                pipe.xadd("views", {"user": f"user{i * 7 % 50}", "page": f"/p/{i % 13}"})
            pipe.execute()
        yield r.url, pg.dsn


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis", help="redis://host:port/db of a server with a 'views' stream")
    parser.add_argument("--dsn", help="a PostgreSQL connection string")
    parser.add_argument("--views", type=int, default=20_000, help="entries of the demo stream")
    args = parser.parse_args()
    import psycopg

    with servers(args) as (redis_url, dsn):
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS views "
                "(usr text NOT NULL, page text NOT NULL, n bigint NOT NULL)"
            )
        env = StreamEnvironment(parallelism=2)
        env.enable_checkpointing(0.5)
        (
            env.from_source(RedisStreamSource(redis_url, "views", until="now"), uid="views")
            .key_by(lambda entry: entry.fields["user"])
            .process(CountViews(), name="count", uid="count")
            .sink_to(PostgresSink(dsn, "views", ["usr", "page", "n"]), name="pg", uid="pg")
        )
        result = await env.execute("redis to postgres")
        print(result.summary())
        with psycopg.connect(dsn) as conn:
            top = conn.execute(
                "SELECT usr, max(n), count(*) FROM views GROUP BY usr ORDER BY 2 DESC LIMIT 5"
            ).fetchall()
        for user, views, rows in top:
            print(f"{user}: {views} views ({rows} rows)")


if __name__ == "__main__":
    asyncio.run(main())
