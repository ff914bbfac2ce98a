"""A Redis -> keyed count -> PostgreSQL job that kills itself (SIGKILL) at a named point.

Run as a script in its own process by ``tests/connectors/test_crash_postgres.py``::

    python tests/connectors/crash_redis_pg_job.py CKPT REDIS_URL DSN TABLE STREAM... \
        [--kill-at POINT] [--restore-from JOB_FOLDER]

It reads the streams to their end (``until="now"``), counts each key's entries in keyed
state and writes ``(key, i, count)`` through ``PostgresSink(sink_id=--sink-id)``, with
checkpoints in ``file://CKPT`` every 50 ms, retained on cancellation.

Kill points (``K`` counts within the run; nothing depends on timing): a run with
``--kill-at`` reads at most ``--budget`` entries and then holds its input open (a
``GatedSource`` whose gate is never opened), so its checkpoints go on until the point
comes:

* ``prepared:K``: right after the first ``PREPARE TRANSACTION`` of the K-th checkpoint
  of the run that prepared one (a transaction prepared whose checkpoint has not
  completed; with ``prepared:1`` no checkpoint of the run has completed);
* ``commit:K``: inside the run's K-th commit (of a transaction with rows), right after
  its ``COMMIT PREPARED``,
  before the notification finished (mid-commit: the other subtask's transaction of
  the same checkpoint may still be prepared, and the checkpoint's state lists both as
  pending).

It prints ``{"event": "started", "job_id": ...}`` and, at the kill,
``{"event": "kill", ...}``, each flushed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).absolute().parents[2]))

from runtime import (
    ExternalizedCheckpointRetention,
    KeyedProcessFunction,
    NoRestart,
    RuntimeContext,
    StreamEnvironment,
    ValueStateDescriptor,
)
from runtime.connectors.postgres import PostgresSink, PostgresTransaction
from runtime.connectors.redis_streams import RedisStreamSource
from runtime.testing.gates import GatedSource, SourceGate


def say(**event: Any) -> None:
    print(json.dumps(event), flush=True)


class KillSwitch:
    def __init__(self, spec: str) -> None:
        kind, _, arg = spec.partition(":")
        if kind not in ("prepared", "commit") or not arg.isdigit():
            raise SystemExit(f"--kill-at: unknown kill point {spec!r}; prepared:K or commit:K")
        self.spec, self.kind, self.arg = spec, kind, int(arg)
        self.count = 0
        self.checkpoints: list[int] = []
        self.lock = threading.Lock()

    def reached_checkpoint(self, kind: str, checkpoint_id: int) -> bool:
        if kind != self.kind:
            return False
        with self.lock:
            if checkpoint_id not in self.checkpoints:
                self.checkpoints.append(checkpoint_id)
            return self.checkpoints.index(checkpoint_id) + 1 == self.arg

    def reached(self, kind: str) -> bool:
        if kind != self.kind:
            return False
        with self.lock:
            self.count += 1
            return self.count == self.arg

    def kill(self, **details: Any) -> None:
        say(event="kill", point=self.spec, **details)
        os.kill(os.getpid(), signal.SIGKILL)


def install(switch: KillSwitch) -> None:
    pre_commit, commit = PostgresSink.pre_commit, PostgresSink.commit

    def killing_pre_commit(self: PostgresSink, transaction: PostgresTransaction) -> None:
        pre_commit(self, transaction)
        if transaction.gid and switch.reached_checkpoint("prepared", transaction.checkpoint_id):
            switch.kill(gid=transaction.gid)

    def killing_commit(self: PostgresSink, transaction: PostgresTransaction) -> None:
        commit(self, transaction)
        if transaction.gid and switch.reached("commit"):
            switch.kill(gid=transaction.gid)

    PostgresSink.pre_commit = killing_pre_commit  # type: ignore[method-assign]
    PostgresSink.commit = killing_commit  # type: ignore[method-assign]


class CountPerKey(KeyedProcessFunction):
    def open(self, ctx: RuntimeContext) -> None:
        self.count = ctx.get_state(ValueStateDescriptor("count", default=0, type=int))

    def process_element(self, entry: Any, ctx: RuntimeContext) -> list[Any]:
        n = self.count.value() + 1
        self.count.update(n)
        return [(entry.fields["key"], int(entry.fields["i"]), n)]


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoints")
    parser.add_argument("redis_url")
    parser.add_argument("dsn")
    parser.add_argument("table")
    parser.add_argument("streams", nargs="+")
    parser.add_argument("--kill-at", default=None)
    parser.add_argument("--restore-from", default=None)
    parser.add_argument("--budget", type=int, default=1500)
    parser.add_argument("--rate", type=float, default=4000.0)
    parser.add_argument("--unaligned", action="store_true", help="unaligned checkpoints")
    parser.add_argument("--sink-id", default="crash")
    args = parser.parse_args()

    switch = None
    if args.kill_at:
        switch = KillSwitch(args.kill_at)
        install(switch)
    env = StreamEnvironment(parallelism=2)
    storage = Path(args.checkpoints).absolute().as_uri()  # noqa: ASYNC240 - once, at start
    env.enable_checkpointing(
        0.05,
        storage=storage,
        retention=ExternalizedCheckpointRetention.RETAIN_ON_CANCELLATION,
        retained=2,
        unaligned=args.unaligned,
    )
    env.set_restart_strategy(NoRestart())
    source: Any = RedisStreamSource(args.redis_url, args.streams, until="now")
    if switch is not None:
        source.records_per_second = args.rate
        source = GatedSource(source, SourceGate(hold_after=args.budget, hold_at_end=True))
    (
        env.from_source(source, name="events", uid="events")
        .key_by(lambda entry: entry.fields["key"])
        .process(CountPerKey(), name="count", uid="count")
        .sink_to(
            PostgresSink(
                args.dsn, args.table, ["k", "i", "n"], sink_id=args.sink_id, batch_size=200
            ),
            name="pg",
            uid="pg",
        )
    )
    client = await env.start("crash postgres", restore_from=args.restore_from)
    say(event="started", job_id=client.job_id)
    result = await client.wait()
    say(event="finished", status=result.status.value)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
