"""Every transformation at parallelism 1, 2 and 4, checked against a plain-Python oracle.

Outputs are compared as exact multisets. Keyed operators are also checked for per-key
order: fed from one source subtask, every key's outputs must come out in the order of
that key's inputs (one producer, FIFO channels, one consumer per key); fed from several
source subtasks, a running sum per key must still increase in arrival order.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from runtime import (
    ConfigError,
    FilterFunction,
    FlatMapFunction,
    JobFailedError,
    KeyedProcessFunction,
    ListStateDescriptor,
    MapFunction,
    MapStateDescriptor,
    OperatorError,
    ReduceFunction,
    ReducingStateDescriptor,
    RuntimeContext,
    StreamEnvironment,
    ValueStateDescriptor,
)
from storage import KeyEncodingError

each_parallelism = pytest.mark.parametrize("p", [1, 2, 4], ids=lambda p: f"p{p}")

N = 240
NUMBERS = range(1, N + 1)
# Keyed tests: words whose key is their first letter, with repeats and uneven key sizes.
WORDS = [f"{'abcdefg'[i * i % 7]}{i % 11}" for i in range(N)]


def first_letter(word: str) -> str:
    return word[0]


def by_key(records: Iterable[Any], key: Callable[[Any], Any]) -> dict[Any, list[Any]]:
    """Records grouped by key, each group in arrival order."""
    groups: dict[Any, list[Any]] = defaultdict(list)
    for record in records:
        groups[key(record)].append(record)
    return dict(groups)


def assert_increasing_per_key(
    records: list[Any], key: Callable[[Any], Any], value: Callable[[Any], Any]
) -> None:
    for k, group in by_key(records, key).items():
        values = [value(r) for r in group]
        assert values == sorted(values) and len(set(values)) == len(values), (k, values)


def assert_lifecycle(log: Any, p: int) -> None:
    """``open`` and ``close`` ran exactly once per subtask, open first."""
    expected = Counter({("open", i): 1 for i in range(p)} | {("close", i): 1 for i in range(p)})
    assert log.counts() == expected
    for i in range(p):
        assert log.items.index(("open", i)) < log.items.index(("close", i))


class Lifecycle:
    """Mixin of function classes that log ``open`` / ``close`` per subtask."""

    def __init__(self, log: Any) -> None:
        self.log = log
        self.subtask: int | None = None

    def open(self, ctx: RuntimeContext) -> None:
        assert self.subtask is None, "open() called twice on one copy"
        self.subtask = ctx.subtask_index
        self.log.append(("open", ctx.subtask_index))

    def close(self) -> None:
        self.log.append(("close", self.subtask))

    def check_open(self) -> None:
        if self.subtask is None:
            raise AssertionError("a record arrived before open()")


# -- map --------------------------------------------------------------------------------


class Triple(Lifecycle, MapFunction[int, int]):
    def map(self, value: int) -> int:
        self.check_open()
        return value * 3


async def async_triple(value: int) -> int:
    await asyncio.sleep(0)
    return value * 3


@each_parallelism
@pytest.mark.parametrize("shape", ["plain", "async", "class"])
async def test_map(p: int, shape: str, log: Any) -> None:
    fn = {"plain": lambda x: x * 3, "async": async_triple, "class": Triple(log)}[shape]
    env = StreamEnvironment(parallelism=p)
    env.from_sequence(1, N).map(fn, name="triple").collect()

    result = await env.execute()

    assert Counter(result.collected["collect"]) == Counter(x * 3 for x in NUMBERS)
    assert result.records_in("triple") == result.records_out("triple") == N
    if shape == "class":
        assert_lifecycle(log, p)


# -- filter -----------------------------------------------------------------------------


class KeepMultiplesOf3(Lifecycle, FilterFunction[int]):
    def filter(self, value: int) -> bool:
        self.check_open()
        return value % 3 == 0


async def async_multiple_of_3(value: int) -> bool:
    await asyncio.sleep(0)
    return value % 3 == 0


@each_parallelism
@pytest.mark.parametrize("shape", ["plain", "async", "class"])
async def test_filter(p: int, shape: str, log: Any) -> None:
    fn = {
        "plain": lambda x: x % 3 == 0,
        "async": async_multiple_of_3,
        "class": KeepMultiplesOf3(log),
    }[shape]
    env = StreamEnvironment(parallelism=p)
    env.from_sequence(1, N).filter(fn, name="keep").collect()

    result = await env.execute()

    expected = [x for x in NUMBERS if x % 3 == 0]
    assert Counter(result.collected["collect"]) == Counter(expected)
    assert result.records_in("keep") == N
    assert result.records_out("keep") == len(expected)


# -- flat_map ---------------------------------------------------------------------------


def explode(value: int) -> list[int] | None:
    """0, 1 or 2 records per input; None counts as none."""
    if value % 3 == 0:
        return None
    return [value] * (value % 3)


def explode_lazily(value: int) -> Iterable[int]:
    yield from explode(value) or ()


async def explode_async(value: int) -> list[int] | None:
    await asyncio.sleep(0)
    return explode(value)


class Explode(Lifecycle, FlatMapFunction[int, int]):
    """With async open and close: both shapes of the hooks are accepted."""

    async def open(self, ctx: RuntimeContext) -> None:  # type: ignore[override]
        await asyncio.sleep(0)
        super().open(ctx)

    async def close(self) -> None:  # type: ignore[override]
        await asyncio.sleep(0)
        super().close()

    def flat_map(self, value: int) -> list[int] | None:
        self.check_open()
        return explode(value)


@each_parallelism
@pytest.mark.parametrize("shape", ["plain", "generator", "async", "class"])
async def test_flat_map(p: int, shape: str, log: Any) -> None:
    fn = {
        "plain": explode,
        "generator": explode_lazily,
        "async": explode_async,
        "class": Explode(log),
    }[shape]
    env = StreamEnvironment(parallelism=p)
    env.from_sequence(1, N).flat_map(fn, name="explode").collect()

    result = await env.execute()

    expected = [y for x in NUMBERS for y in explode(x) or ()]
    assert Counter(result.collected["collect"]) == Counter(expected)
    assert result.records_out("explode") == len(expected)
    if shape == "class":
        assert_lifecycle(log, p)


@each_parallelism
async def test_words_split_by_str_split(p: int) -> None:
    """A builtin method whose signature Python cannot inspect is accepted."""
    lines = [" ".join(WORDS[i : i + 5]) for i in range(0, N, 5)]
    env = StreamEnvironment(parallelism=p)
    env.from_collection(lines).flat_map(str.split).collect()

    result = await env.execute()

    assert Counter(result.collected["collect"]) == Counter(WORDS)


# -- key_by + process with keyed state ------------------------------------------------


class CountPerKey(Lifecycle, KeyedProcessFunction[str, tuple[str, str, int]]):
    """ValueState: the number of records of the key so far."""

    def open(self, ctx: RuntimeContext) -> None:
        super().open(ctx)
        self.count = ctx.get_state(ValueStateDescriptor("count", default=0))

    def process_element(self, value: str, ctx: RuntimeContext) -> list[tuple[str, str, int]]:
        assert ctx.current_key == first_letter(value)
        n = self.count.value() + 1
        self.count.update(n)
        return [(ctx.current_key, value, n)]


class HistoryPerKey(KeyedProcessFunction[str, tuple[str, tuple[str, ...]]]):
    """ListState: the key's records so far, in arrival order."""

    def process_element(self, value: str, ctx: RuntimeContext) -> list[Any]:
        history = ctx.get_state(ListStateDescriptor("history"))
        history.add(value)
        return [(ctx.current_key, tuple(history.get()))]


class SuffixCounts(KeyedProcessFunction[str, Any]):
    """MapState: per key, how often each suffix was seen."""

    def open(self, ctx: RuntimeContext) -> None:
        self.seen = ctx.get_state(MapStateDescriptor("seen"))

    def process_element(self, value: str, ctx: RuntimeContext) -> list[Any]:
        suffix = value[1:]
        self.seen.put(suffix, self.seen.get(suffix, 0) + 1)
        return [(ctx.current_key, tuple(sorted(self.seen.items())))]


class LongestPerKey(KeyedProcessFunction[str, tuple[str, str]]):
    """ReducingState: the longest (then greatest) word of the key so far."""

    def open(self, ctx: RuntimeContext) -> None:
        self.longest = ctx.get_state(
            ReducingStateDescriptor("longest", reduce_function=lambda a, b: max(a, b, key=_rank))
        )

    async def process_element(self, value: str, ctx: RuntimeContext) -> list[tuple[str, str]]:
        await asyncio.sleep(0)
        self.longest.add(value)
        return [(ctx.current_key, self.longest.get())]


def _rank(word: str) -> tuple[int, str]:
    return len(word), word


def oracle_per_key(step: Callable[[Any, str], tuple[Any, Any]]) -> list[Any]:
    """Run ``step(state_of_key, word) -> (new_state, output)`` over WORDS per key."""
    states: dict[str, Any] = {}
    out = []
    for word in WORDS:
        key = first_letter(word)
        states[key], emitted = step(states.get(key), word)
        out.append(emitted)
    return out


def _count(state: Any, word: str) -> tuple[Any, Any]:
    n = (state or 0) + 1
    return n, (word[0], word, n)


def _history(state: Any, word: str) -> tuple[Any, Any]:
    new = (*(state or ()), word)
    return new, (word[0], new)


def _suffixes(state: Any, word: str) -> tuple[Any, Any]:
    new = Counter(state or {})
    new[word[1:]] += 1
    return new, (word[0], tuple(sorted(new.items())))


def _longest(state: Any, word: str) -> tuple[Any, Any]:
    new = word if state is None else max(state, word, key=_rank)
    return new, (word[0], new)


@each_parallelism
@pytest.mark.parametrize(
    ("make", "step"),
    [
        (CountPerKey, _count),
        (lambda log: HistoryPerKey(), _history),
        (lambda log: SuffixCounts(), _suffixes),
        (lambda log: LongestPerKey(), _longest),
    ],
    ids=["value-state", "list-state", "map-state", "reducing-state-async"],
)
async def test_keyed_process_state(p: int, make: Any, step: Any, log: Any) -> None:
    env = StreamEnvironment(parallelism=p)
    (
        env.from_collection(WORDS)
        .key_by(first_letter)
        .process(make(log), name="stateful", uid="stateful")
        .collect()
    )

    result = await env.execute()

    out = result.collected["collect"]
    expected = oracle_per_key(step)
    assert Counter(out) == Counter(expected)
    # One source subtask: each key's outputs in exactly the key's input order.
    assert by_key(out, lambda r: r[0]) == by_key(expected, lambda r: r[0])
    if isinstance(make, type):
        assert_lifecycle(log, p)


@each_parallelism
async def test_keyed_process_plain_function(p: int) -> None:
    """A plain ``(value, ctx)`` function is a process function; ``ctx`` gives state."""
    descriptor = ValueStateDescriptor("total", default=0)

    def running_total(value: int, ctx: RuntimeContext) -> list[tuple[int, int, int]]:
        total = ctx.get_state(descriptor)
        total.update(total.value() + value)
        return [(ctx.current_key, ctx.subtask_index, total.value())]

    env = StreamEnvironment(parallelism=p)
    env.from_sequence(1, N).key_by(lambda x: x % 5).process(running_total).collect()

    result = await env.execute()

    out = result.collected["collect"]
    assert len(out) == N
    assert_increasing_per_key(out, key=lambda r: r[0], value=lambda r: r[2])
    finals = {k: max(r[2] for r in group) for k, group in by_key(out, lambda r: r[0]).items()}
    assert finals == {k: sum(x for x in NUMBERS if x % 5 == k) for k in range(5)}
    # Each key is processed by exactly one subtask, the same for all its records.
    assert all(len({r[1] for r in g}) == 1 for g in by_key(out, lambda r: r[0]).values())


@pytest.mark.parametrize("p", [1, 2], ids=lambda p: f"p{p}")
@pytest.mark.parametrize("operator", ["sum", "process"])
async def test_none_is_not_a_key(p: int, operator: str) -> None:
    """As in Flink: a None key fails the job with an error that names key_by."""
    env = StreamEnvironment(parallelism=p)
    keyed = env.from_collection([("a", 1), (None, 2)]).key_by(lambda t: t[0])
    (keyed.sum(1) if operator == "sum" else keyed.process(lambda v, ctx: [v])).collect()

    with pytest.raises(JobFailedError) as caught:
        await env.execute()

    cause = caught.value.__cause__
    assert isinstance(cause, OperatorError)
    assert isinstance(cause.__cause__, KeyEncodingError)
    assert "the key selector of key_by returned None, and None cannot be a key" in str(cause)
    assert cause.record == (None, 2)


def test_a_none_key_type_is_rejected_when_the_job_is_built() -> None:
    numbers = StreamEnvironment().from_collection([1])
    with pytest.raises(ConfigError, match="key_by: key_type NoneType cannot be keyed"):
        numbers.key_by(lambda x: None, key_type=type(None))


# -- reduce and sum ---------------------------------------------------------------------


class AddCounts(Lifecycle, ReduceFunction[tuple[str, int]]):
    def reduce(self, accumulated: tuple[str, int], value: tuple[str, int]) -> tuple[str, int]:
        self.check_open()
        return accumulated[0], accumulated[1] + value[1]


@each_parallelism
@pytest.mark.parametrize("shape", ["plain", "class"])
async def test_reduce(p: int, shape: str, log: Any) -> None:
    fn = (lambda a, b: (a[0], a[1] + b[1])) if shape == "plain" else AddCounts(log)
    env = StreamEnvironment(parallelism=p)
    env.from_collection(WORDS).map(lambda w: (w, 1)).key_by(lambda t: t[0]).reduce(fn).collect()

    result = await env.execute()

    out = result.collected["collect"]
    seen: Counter[str] = Counter()
    expected = []
    for word in WORDS:
        seen[word] += 1
        expected.append((word, seen[word]))
    assert Counter(out) == Counter(expected)
    assert by_key(out, lambda r: r[0]) == by_key(expected, lambda r: r[0])
    if shape == "class":
        assert_lifecycle(log, p)


@each_parallelism
async def test_sum_of_plain_values(p: int) -> None:
    """One source subtask: each key's running sums are those of its inputs in order."""
    env = StreamEnvironment(parallelism=p)
    env.from_collection(NUMBERS).key_by(lambda x: x % 7).sum(name="total").collect()

    result = await env.execute()

    totals: Counter[int] = Counter()
    expected = []
    for x in NUMBERS:
        totals[x % 7] += x
        expected.append(totals[x % 7])
    assert Counter(result.collected["collect"]) == Counter(expected)
    assert result.records_in("total") == result.records_out("total") == N


@each_parallelism
async def test_sum_of_plain_values_from_parallel_sources(p: int) -> None:
    """Arrival order between source subtasks is free; the final sum of each key is not."""
    env = StreamEnvironment(parallelism=p)
    env.from_sequence(1, N).key_by(lambda x: x % 7).sum().collect()

    result = await env.execute()

    out = result.collected["collect"]
    assert len(out) == N
    totals = {sum(x for x in NUMBERS if x % 7 == k) for k in range(7)}
    assert totals <= set(out)
    assert max(out) == max(totals)


@each_parallelism
async def test_sum_of_a_tuple_field(p: int) -> None:
    """Field 1 is summed; the other fields come from the key's first record."""
    records = [(i % 6, i, f"tag{i}") for i in range(N)]
    env = StreamEnvironment(parallelism=p)
    env.from_sequence(0, N - 1).map(lambda i: (i % 6, i, f"tag{i}")).key_by(lambda t: t[0]).sum(
        1
    ).collect()

    result = await env.execute()

    out = result.collected["collect"]
    assert len(out) == N
    assert_increasing_per_key(out, key=lambda r: r[0], value=lambda r: r[1])
    for key, group in by_key(out, lambda r: r[0]).items():
        inputs = [r for r in records if r[0] == key]
        assert group[-1][1] == sum(r[1] for r in inputs)
        # Every output of the key carries the tag of the key's first record.
        assert len({r[2] for r in group}) == 1
        assert group[0] in inputs


@each_parallelism
async def test_sum_of_a_dict_field(p: int) -> None:
    env = StreamEnvironment(parallelism=p)
    (
        env.from_collection([{"word": w, "n": 1, "first": i} for i, w in enumerate(WORDS)])
        .key_by(lambda d: d["word"])
        .sum("n")
        .collect()
    )

    result = await env.execute()

    out = result.collected["collect"]
    seen: Counter[str] = Counter()
    first: dict[str, int] = {}
    expected = []
    for i, word in enumerate(WORDS):
        seen[word] += 1
        first.setdefault(word, i)
        expected.append({"word": word, "n": seen[word], "first": first[word]})
    assert sorted(out, key=repr) == sorted(expected, key=repr)
    assert by_key(out, lambda d: d["word"]) == by_key(expected, lambda d: d["word"])


# -- union ------------------------------------------------------------------------------


@each_parallelism
async def test_union_of_streams_with_different_parallelism(p: int) -> None:
    env = StreamEnvironment(parallelism=p)
    a = env.from_sequence(1, 100, name="a")
    b = env.from_sequence(101, 150, name="b", parallelism=1).map(lambda x: x, name="b-map")
    c = env.from_collection(range(1000, 1020), name="c")
    a.union(b, c).map(lambda x: -x, name="negate").collect()

    result = await env.execute()

    expected = [*range(1, 151), *range(1000, 1020)]
    assert Counter(result.collected["collect"]) == Counter(-x for x in expected)


@each_parallelism
async def test_union_of_a_stream_with_itself_duplicates_it(p: int) -> None:
    env = StreamEnvironment(parallelism=p)
    numbers = env.from_sequence(1, 50)
    numbers.union(numbers).collect()

    result = await env.execute()

    assert Counter(result.collected["collect"]) == Counter([*range(1, 51)] * 2)


# -- partitioners -----------------------------------------------------------------------


class TagSubtask(MapFunction[Any, tuple[Any, int]]):
    def open(self, ctx: RuntimeContext) -> None:
        self.subtask = ctx.subtask_index

    def map(self, value: Any) -> tuple[Any, int]:
        return value, self.subtask


@each_parallelism
async def test_rebalance_spreads_buffers_round_robin(p: int) -> None:
    """With one record per buffer, each of the p subtasks gets exactly N / p records."""
    env = StreamEnvironment(parallelism=p, buffer_size=1)
    env.from_collection(NUMBERS).rebalance().map(TagSubtask(), name="tag").collect()

    result = await env.execute()

    out = result.collected["collect"]
    assert Counter(v for v, _ in out) == Counter(NUMBERS)
    assert result.operators["tag"].subtasks == [(N // p, N // p)] * p
    assert Counter(s for _, s in out) == Counter({i: N // p for i in range(p)})


@each_parallelism
async def test_rebalance_between_equal_parallelism(p: int) -> None:
    env = StreamEnvironment(parallelism=p, buffer_size=16)
    env.from_sequence(1, N).rebalance().map(lambda x: x + 1).collect()

    result = await env.execute()

    assert Counter(result.collected["collect"]) == Counter(x + 1 for x in NUMBERS)


@each_parallelism
@pytest.mark.parametrize("source_parallelism", [1, 2])
async def test_broadcast_sends_every_record_to_every_subtask(
    p: int, source_parallelism: int
) -> None:
    env = StreamEnvironment(parallelism=p, buffer_size=7)
    (
        env.from_sequence(1, 100, parallelism=source_parallelism)
        .broadcast()
        .map(TagSubtask(), name="tag")
        .collect()
    )

    result = await env.execute()

    expected = [(x, i) for x in range(1, 101) for i in range(p)]
    assert Counter(result.collected["collect"]) == Counter(expected)
    assert result.operators["tag"].subtasks == [(100, 100)] * p


@each_parallelism
async def test_shuffle(p: int) -> None:
    env = StreamEnvironment(parallelism=p, buffer_size=4)
    env.from_sequence(1, N).shuffle().map(TagSubtask(), name="tag").collect()

    result = await env.execute()

    out = result.collected["collect"]
    assert Counter(v for v, _ in out) == Counter(NUMBERS)
    assert result.records_in("tag") == N


@each_parallelism
async def test_key_by_then_plain_operator_keeps_keys_together(p: int) -> None:
    """A non-keyed operator after key_by still gets every record of a key."""
    env = StreamEnvironment(parallelism=p)
    env.from_collection(WORDS).key_by(first_letter).map(TagSubtask()).collect()

    result = await env.execute()

    out = result.collected["collect"]
    assert Counter(w for w, _ in out) == Counter(WORDS)
    subtasks_of_key = {k: {s for _, s in g} for k, g in by_key(out, lambda r: r[0][0]).items()}
    assert all(len(s) == 1 for s in subtasks_of_key.values())


# -- chains -----------------------------------------------------------------------------


async def test_a_chain_opens_tail_first_and_closes_head_first(log: Any) -> None:
    class Step(MapFunction[int, int]):
        def __init__(self, name: str) -> None:
            self.name = name

        def open(self, ctx: RuntimeContext) -> None:
            log.append(("open", self.name))

        def map(self, value: int) -> int:
            return value

        def close(self) -> None:
            log.append(("close", self.name))

    env = StreamEnvironment()
    env.from_collection([1]).map(Step("first")).map(Step("second")).collect()
    assert len(env.get_job_graph().vertices) == 1

    await env.execute()

    assert log.items == [
        ("open", "second"),
        ("open", "first"),
        ("close", "first"),
        ("close", "second"),
    ]


async def test_an_environment_can_be_executed_twice() -> None:
    env = StreamEnvironment(parallelism=2)
    env.from_collection(WORDS).key_by(first_letter).process(HistoryPerKey()).collect()

    first = await env.execute()
    second = await env.execute()

    assert first.job_id != second.job_id
    assert Counter(first.collected["collect"]) == Counter(second.collected["collect"])
    assert Counter(second.collected["collect"]) == Counter(oracle_per_key(_history))
