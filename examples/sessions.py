"""Session windows over a generated click stream, with late clicks to a side output.

Each user clicks in bursts: a few clicks close together, then a pause longer than the
session gap. Clicks arrive slightly out of order (up to ``--disorder`` seconds late in
event time), and every ``--late-every``-th click is a straggler far behind: too late
for its session even with the allowed lateness, so it goes to the ``late`` side output
instead of being lost. The job counts clicks and pages per session, with checkpoints
on, and prints a summary. Run it with ``python examples/sessions.py``.

Event time here is seconds (floats). Every click is accounted for, in a session or in
the side output; how many stragglers are late varies a little from run to run, since
watermarks are emitted every 0.2 s of processing time (as in Flink), and a straggler
read before the first watermark still finds its session open.
"""

from __future__ import annotations

import argparse
import asyncio
import random
from typing import Any, NamedTuple

from runtime import StreamEnvironment
from runtime.time import OutputTag, WatermarkStrategy
from runtime.windows import (
    AggregateFunction,
    EventTimeSessionWindows,
    ProcessWindowFunction,
    WindowContext,
)


class Click(NamedTuple):
    """One click: who, when (event time, seconds), which page."""

    user: str
    time: float
    page: str


def click(i: int, users: int, disorder: float, late_every: int) -> Click:
    """The ``i``-th click (deterministic): bursts of 5 clicks 1 s apart, 60 s pauses."""
    rng = random.Random(i)
    user = i % users
    n = i // users  # this user's click number
    burst, within = divmod(n, 5)
    time = burst * 64.0 + within * 1.0 + rng.uniform(0, disorder)
    if late_every and i % late_every == late_every - 1 and time > 600:
        time -= 600.0  # a straggler: ten minutes behind
    return Click(f"user-{user}", time, f"/page/{rng.randrange(8)}")


class Summary(AggregateFunction):
    """(clicks, distinct pages) per session, merged when sessions merge.

    The accumulator is a tuple of an int and a sorted tuple of str: state that
    checkpoints without pickle.
    """

    def create_accumulator(self) -> tuple[int, tuple[str, ...]]:
        return 0, ()

    def add(self, value: Click, acc: tuple[int, tuple[str, ...]]) -> tuple[int, tuple[str, ...]]:
        pages = acc[1] if value.page in acc[1] else tuple(sorted((*acc[1], value.page)))
        return acc[0] + 1, pages

    def get_result(self, acc: tuple[int, tuple[str, ...]]) -> tuple[int, int]:
        return acc[0], len(acc[1])

    def merge(
        self, a: tuple[int, tuple[str, ...]], b: tuple[int, tuple[str, ...]]
    ) -> tuple[int, tuple[str, ...]]:
        return a[0] + b[0], tuple(sorted(set(a[1]) | set(b[1])))


class Session(ProcessWindowFunction):
    """Names the session's user and its bounds."""

    def process(self, key: Any, context: WindowContext, elements: list[Any]) -> list[Any]:
        (clicks, pages) = elements[0]
        start, end = context.window
        return [{"user": key, "start": start, "end": end, "clicks": clicks, "pages": pages}]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    env = StreamEnvironment(parallelism=args.parallelism, allow_pickle=False)
    env.enable_checkpointing(0.2)
    late = OutputTag("late-clicks")
    strategy = (
        WatermarkStrategy.for_bounded_out_of_orderness(args.disorder)
        .with_timestamp_assigner(lambda c: c.time)
        .with_idleness(1.0)
    )
    sessions = (
        env.generate(
            lambda i: click(i, args.users, args.disorder, args.late_every),
            args.clicks,
            uid="clicks",
        )
        .assign_timestamps_and_watermarks(strategy, uid="click-times")
        .key_by(lambda c: c.user)
        .window(EventTimeSessionWindows.with_gap(args.gap))
        .allowed_lateness(args.lateness)
        .side_output_late_data(late)
        .aggregate(Summary(), Session(), name="sessions", uid="sessions")
    )
    sessions.collect(name="session-results")
    sessions.get_side_output(late).collect(name="late")
    result = await env.execute("sessions")
    found = result.collected["session-results"]
    stragglers = result.collected["late"]
    clicks = sum(s["clicks"] for s in found)
    print(f"sessions: {len(found)}, clicks in sessions: {clicks}, late clicks: {len(stragglers)}")
    print(f"clicks accounted for: {clicks + len(stragglers)} of {args.clicks}")
    for session in sorted(found, key=lambda s: (s["user"], s["start"]))[:5]:
        print(session)
    completed = result.checkpoints.counts.completed if result.checkpoints else 0
    print(f"checkpoints: {completed}")
    return {"sessions": found, "late": stragglers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clicks", type=int, default=20_000)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--gap", type=float, default=30.0, help="session gap (seconds)")
    parser.add_argument("--disorder", type=float, default=2.0, help="max out-of-orderness")
    parser.add_argument("--lateness", type=float, default=5.0, help="allowed lateness")
    parser.add_argument("--late-every", type=int, default=97, help="every n-th click straggles")
    parser.add_argument("--parallelism", type=int, default=2)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
