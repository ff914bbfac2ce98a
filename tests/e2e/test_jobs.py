"""Whole jobs: word count, multi-stage pipelines at the tightest buffer settings, size."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import pytest

from runtime import JobStatus, RuntimeContext, StreamEnvironment, ValueStateDescriptor

each_parallelism = pytest.mark.parametrize("p", [1, 2, 4], ids=lambda p: f"p{p}")

_rng = random.Random(20240601)
VOCABULARY = [f"w{i}" for i in range(300)] + ["the", "a", "of", "stream", "weir"]
LINES = [
    " ".join(_rng.choice(VOCABULARY) for _ in range(_rng.randrange(0, 15))) for _ in range(2000)
]
WORD_COUNTS = Counter(word for line in LINES for word in line.split())


def final_counts(running: list[tuple[str, int]]) -> Counter[str]:
    """The last (largest) running count of every word."""
    counts: Counter[str] = Counter()
    for word, n in running:
        counts[word] = max(counts[word], n)
    return counts


@each_parallelism
@pytest.mark.parametrize("source", ["collection", "parallel"])
@pytest.mark.parametrize("chaining", [True, False], ids=["chained", "unchained"])
async def test_word_count(p: int, source: str, chaining: bool) -> None:
    env = StreamEnvironment(parallelism=p, chaining=chaining)
    lines = (
        env.from_collection(LINES)
        if source == "collection"
        else env.generate(LINES.__getitem__, len(LINES))
    )
    (
        lines.flat_map(str.split)
        .map(lambda word: (word, 1))
        .key_by(lambda pair: pair[0])
        .sum(1, name="count", uid="count")
        .collect(name="counts")
    )

    result = await env.execute("word count")

    running = result.collected["counts"]
    assert final_counts(running) == WORD_COUNTS
    assert len(running) == WORD_COUNTS.total()
    # Every word's running count goes 1, 2, ..., n in arrival order.
    seen: Counter[str] = Counter()
    for word, n in running:
        seen[word] += 1
        assert n == seen[word], word
    assert result.records_in("count") == WORD_COUNTS.total()


def three_stage_job(env: StreamEnvironment, count: int) -> None:
    """map -> rebalance -> filter -> key_by -> process with state -> collect."""

    def count_per_key(value: int, ctx: RuntimeContext) -> list[tuple[int, int, int]]:
        seen = ctx.get_state(ValueStateDescriptor("seen", default=0))
        seen.update(seen.value() + 1)
        return [(ctx.current_key, value, seen.value())]

    (
        env.generate(lambda i: i, count)
        .map(lambda x: x * 3, name="triple")
        .rebalance()
        .filter(lambda x: x % 2 == 0, name="even")
        .key_by(lambda x: x % 10)
        .process(count_per_key, name="per-key")
        .collect(name="out")
    )


def check_three_stage_output(out: list[Any], count: int) -> None:
    expected = [x * 3 for x in range(count) if x * 3 % 2 == 0]
    assert Counter(value for _, value, _ in out) == Counter(expected)
    assert all(key == value % 10 for key, value, _ in out)
    per_key = Counter(value % 10 for value in expected)
    for key, n in per_key.items():
        assert sorted(seen for k, _, seen in out if k == key) == list(range(1, n + 1))


@pytest.mark.parametrize("p", [1, 2], ids=lambda p: f"p{p}")
async def test_tightest_buffers_still_give_exact_output(p: int) -> None:
    """One record per buffer, one buffer per channel, every operator its own task."""
    env = StreamEnvironment(parallelism=p, buffer_size=1, channel_capacity=1, chaining=False)
    three_stage_job(env, 3000)

    result = await env.execute("tight")

    check_three_stage_output(result.collected["out"], 3000)
    for name, stats in result.channels.items():
        assert stats.max_queued <= 1, name


@pytest.mark.parametrize("p", [1, 2, 4], ids=lambda p: f"p{p}")
async def test_buffer_timeout_zero(p: int) -> None:
    env = StreamEnvironment(parallelism=p, buffer_timeout=0)
    three_stage_job(env, 10_000)

    result = await env.execute("no timeout")

    check_three_stage_output(result.collected["out"], 10_000)


async def test_an_idle_task_sends_its_partial_buffers_whatever_the_buffer_timeout() -> None:
    """A trickle of records reaches the sink long before buffers fill or time out."""
    arrived: list[int] = []
    three = asyncio.Event()

    def sink(value: int) -> None:
        arrived.append(value)
        if len(arrived) == 3:
            three.set()

    env = StreamEnvironment(parallelism=2, buffer_size=1000, buffer_timeout=3600)
    env.generate(lambda i: i, records_per_second=200).rebalance().map(lambda x: x).sink_to(sink)
    client = await env.start("trickle")
    try:
        await three.wait()
    finally:
        client.cancel()
        result = await client.wait()

    assert result.status is JobStatus.CANCELED
    assert len(arrived) >= 3


async def test_a_job_of_200k_records() -> None:
    count = 200_000
    totals: Counter[int] = Counter()
    for x in range(1, count + 1):
        totals[x % 100] += x * 2

    env = StreamEnvironment(parallelism=2)
    (
        env.from_sequence(1, count)
        .map(lambda x: (x % 100, x * 2))
        .key_by(lambda t: t[0])
        .sum(1, name="total")
        .collect(name="sums")
    )

    result = await env.execute("big")

    out = result.collected["sums"]
    assert len(out) == count
    finals: dict[int, int] = {}
    for key, total in out:
        assert total > finals.get(key, 0)
        finals[key] = total
    assert finals == dict(totals)
    assert result.records_in("total") == result.records_out("total") == count
