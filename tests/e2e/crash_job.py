"""A job to be killed: the subject of ``tests/e2e/test_crash_consistency.py``.

Run as a script in its own process (``python tests/e2e/crash_job.py CKPT OUT ...``). It
reads a rate-limited, deterministic generator of the integers ``0..count-1``, tags each
with its key (``i % keys``), counts the records of each key in keyed state (with a
padding blob per key, so that every checkpoint writes a few MB and a kill often lands
in the middle of a write) and writes one line ``"<key> <i> <count>"`` per record through
an exactly-once ``FileSink(OUT)``. Checkpoints go to ``file://CKPT`` every
``--interval`` seconds and are retained (``RETAIN_ON_CANCELLATION``, ``retained=2``).

With ``--restore-from JOB_FOLDER`` it resumes from the newest valid checkpoint in that
folder (a killed run's; each run has a new job id, hence a new folder).

It prints one JSON line when the job has started (``{"event": "started", "job_id":
..., "restored_from": ...}``) and one when it has finished (``{"event": "finished",
...}``), each flushed, so that a driver knows what a killed run was doing.

Exactly-once, stated on the output: for every key ``k`` the committed lines of ``k``
carry the counts ``1..n_k`` once each, and every ``i`` appears once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

# Run as a script, the repository root is not on sys.path.
sys.path.insert(0, str(Path(__file__).absolute().parents[2]))

from runtime import (
    ExternalizedCheckpointRetention,
    FileSink,
    KeyedProcessFunction,
    NoRestart,
    RuntimeContext,
    StreamEnvironment,
    ValueStateDescriptor,
)

SOURCE_UID = "numbers"
TAG_UID = "tag"
COUNT_UID = "count"
SINK_UID = "files"


class CountPerKey(KeyedProcessFunction):
    """Counts the records of each key; keeps a padding blob per key to weigh the state."""

    def __init__(self, padding: int) -> None:
        self.padding = padding

    def open(self, ctx: RuntimeContext) -> None:
        self.count = ctx.get_state(ValueStateDescriptor("count", default=0))
        self.blob = ctx.get_state(ValueStateDescriptor("blob", default=b""))

    def process_element(self, value: tuple[int, int], ctx: RuntimeContext) -> list[str]:
        n = self.count.value() + 1
        self.count.update(n)
        if n == 1 and self.padding:
            self.blob.update(b"x" * self.padding)
        key, i = value
        return [f"{key} {i} {n}"]


def make_env(args: argparse.Namespace) -> StreamEnvironment:
    """The job (the same graph in every run, so that uids match)."""
    env = StreamEnvironment(parallelism=args.parallelism, max_parallelism=128)
    env.enable_checkpointing(
        args.interval,
        storage=Path(args.checkpoints).absolute().as_uri(),
        retention=ExternalizedCheckpointRetention.RETAIN_ON_CANCELLATION,
        retained=2,
        unaligned=args.unaligned,
    )
    # A failure inside the process is a bug, not an injected fault: surface it.
    env.set_restart_strategy(NoRestart())
    keys = args.keys
    (
        env.generate(lambda i: i, args.count, records_per_second=args.rate, uid=SOURCE_UID)
        .map(lambda i: (i % keys, i), name="tag", uid=TAG_UID)
        .key_by(lambda pair: pair[0])
        .process(CountPerKey(args.padding), name="count", uid=COUNT_UID)
        .sink_to(FileSink(args.out), name="files", uid=SINK_UID)
    )
    return env


def _say(**event: Any) -> None:
    print(json.dumps(event), flush=True)


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoints", help="the checkpoint directory")
    parser.add_argument("out", help="the FileSink folder")
    parser.add_argument("--restore-from", default=None, help="a job's checkpoint folder")
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=10_000.0, help="records/s, all subtasks")
    parser.add_argument("--keys", type=int, default=1_000)
    parser.add_argument("--padding", type=int, default=2_000, help="state bytes per key")
    parser.add_argument("--interval", type=float, default=0.05, help="checkpoint interval")
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--unaligned", action="store_true", help="unaligned checkpoints")
    args = parser.parse_args(argv)
    env = make_env(args)
    client = await env.start("crash consistency", restore_from=args.restore_from)
    stats = client.checkpoint_stats()
    _say(
        event="started",
        job_id=client.job_id,
        restored_from=None if stats is None else stats.restored_from,
    )
    result = await client.wait()
    checkpoints = result.checkpoints
    _say(
        event="finished",
        job_id=result.job_id,
        status=result.status.value,
        completed=0 if checkpoints is None else checkpoints.counts.completed,
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
