"""Invalid jobs and options: a ``ConfigError`` naming what is wrong, before anything runs.

Errors of an API call are raised by the call itself; errors of the job as a whole (no
source, no sink, a parallelism a source cannot have) by ``get_job_graph``, ``explain``,
``execute`` and ``start``, before any source is asked for an enumerator or a reader.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable
from typing import Any

import pytest

from runtime import (
    CollectionSource,
    ConfigError,
    MapFunction,
    StreamEnvironment,
)


def message(text: str) -> str:
    """A ``match=`` pattern for a literal message fragment."""
    return re.escape(text)


class UntouchableSource:
    """A source that fails the test if the job ever gets as far as using it."""

    def __init__(self, max_source_parallelism: int | None = None) -> None:
        if max_source_parallelism is not None:
            self.max_source_parallelism = max_source_parallelism

    def create_enumerator(self) -> Any:
        raise AssertionError("the job started although it is invalid")

    def create_reader(self, subtask_index: int) -> Any:
        raise AssertionError("the job started although it is invalid")


async def assert_rejected_before_running(env: StreamEnvironment, pattern: str) -> None:
    """Every way to build or run the job raises the same ``ConfigError``; no task starts."""
    tasks_before = asyncio.all_tasks()
    with pytest.raises(ConfigError, match=pattern):
        env.get_job_graph()
    with pytest.raises(ConfigError, match=pattern):
        env.explain()
    with pytest.raises(ConfigError, match=pattern):
        await env.execute("invalid")
    with pytest.raises(ConfigError, match=pattern):
        await env.start("invalid")
    assert asyncio.all_tasks() == tasks_before


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


# -- environment options ----------------------------------------------------------------


def test_parallelism_none_means_the_default() -> None:
    assert StreamEnvironment(parallelism=None).parallelism == 1


@pytest.mark.parametrize("value", [0, -1, "2", True, 2.0])
def test_invalid_environment_parallelism(value: object) -> None:
    with pytest.raises(
        ConfigError, match=message(f"parallelism must be an int >= 1, got {value!r}")
    ):
        StreamEnvironment(parallelism=value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "max_parallelism must be an int >= 1, got 0"),
        (-5, "max_parallelism must be an int >= 1, got -5"),
        ("128", "max_parallelism must be an int >= 1, got '128'"),
        (40000, "max_parallelism must be <= 32768, got 40000"),
    ],
)
def test_invalid_environment_max_parallelism(value: object, text: str) -> None:
    with pytest.raises(ConfigError, match=message(text)):
        StreamEnvironment(max_parallelism=value)  # type: ignore[arg-type]


def test_environment_parallelism_greater_than_max_parallelism() -> None:
    with pytest.raises(
        ConfigError,
        match=message("parallelism 8 is greater than max_parallelism 4; raise max_parallelism"),
    ):
        StreamEnvironment(parallelism=8, max_parallelism=4)


@pytest.mark.parametrize(
    ("option", "value", "text"),
    [
        ("buffer_size", 0, "buffer_size must be an int >= 1, got 0"),
        ("buffer_size", 1.5, "buffer_size must be an int >= 1, got 1.5"),
        ("channel_capacity", 0, "channel_capacity must be an int >= 1, got 0"),
        ("channel_capacity", False, "channel_capacity must be an int >= 1, got False"),
        ("buffer_timeout", -0.1, "buffer_timeout must be >= 0 seconds, got -0.1"),
        ("buffer_timeout", float("nan"), "buffer_timeout must be a number of seconds, got nan"),
        ("buffer_timeout", "1", "buffer_timeout must be a number of seconds, got '1'"),
        ("allow_pickle", "yes", "allow_pickle must be True or False, got 'yes'"),
    ],
)
def test_invalid_record_path_options(option: str, value: object, text: str) -> None:
    with pytest.raises(ConfigError, match=message(text)):
        StreamEnvironment(**{option: value})


async def test_an_option_broken_after_construction_is_caught_when_the_job_is_built() -> None:
    env = StreamEnvironment()
    env.from_source(UntouchableSource()).collect()
    env.config.channel_capacity = 0

    await assert_rejected_before_running(
        env, message("channel_capacity must be an int >= 1, got 0")
    )


async def test_invalid_job_name() -> None:
    env = StreamEnvironment()
    env.from_source(UntouchableSource()).collect()

    with pytest.raises(ConfigError, match=message("job name must be a non-empty str, got ''")):
        await env.execute("")


# -- per-operator options ---------------------------------------------------------------


@pytest.mark.parametrize("value", [0, -1, "2", True])
def test_invalid_operator_parallelism(value: object) -> None:
    env = StreamEnvironment()
    numbers = env.from_sequence(1, 10)

    with pytest.raises(
        ConfigError,
        match=message(f"operator 'double': parallelism must be an int >= 1, got {value!r}"),
    ):
        numbers.map(lambda x: 2 * x, name="double", parallelism=value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [0, "2"])
def test_invalid_source_and_sink_parallelism(value: object) -> None:
    env = StreamEnvironment()
    with pytest.raises(ConfigError, match=message("operator 'sequence': parallelism must be")):
        env.from_sequence(1, 10, parallelism=value)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=message("operator 'collect': parallelism must be")):
        env.from_sequence(1, 10).collect(parallelism=value)  # type: ignore[arg-type]


def test_operator_parallelism_greater_than_max_parallelism() -> None:
    env = StreamEnvironment(parallelism=2, max_parallelism=4)
    keyed = env.from_sequence(1, 10).key_by(lambda x: x % 3)

    with pytest.raises(
        ConfigError,
        match=message(
            "operator 'count': parallelism 5 is greater than max_parallelism 4; "
            "raise max_parallelism"
        ),
    ):
        keyed.sum(name="count", parallelism=5)


@pytest.mark.parametrize(
    ("option", "value", "text"),
    [
        ("name", "", "operator name must be a non-empty str, got ''"),
        ("name", 7, "operator name must be a non-empty str, got 7"),
        ("uid", "", "operator 'map': uid must be a non-empty str"),
    ],
)
def test_invalid_name_or_uid(option: str, value: object, text: str) -> None:
    env = StreamEnvironment()
    with pytest.raises(ConfigError, match=message(text)):
        env.from_sequence(1, 10).map(lambda x: x, **{option: value})


# -- the job as a whole -----------------------------------------------------------------


async def test_job_with_no_source() -> None:
    await assert_rejected_before_running(
        StreamEnvironment(), message("the job has no source; start it with env.from_collection()")
    )


async def test_job_with_no_sink() -> None:
    env = StreamEnvironment()
    env.from_source(UntouchableSource()).map(lambda x: x)

    await assert_rejected_before_running(
        env, message("the job has no sink; end a stream with .sink_to(), .collect()")
    )


def test_uid_used_twice_names_both_operators() -> None:
    env = StreamEnvironment()
    numbers = env.from_sequence(1, 10).map(lambda x: x, name="parse", uid="step")

    with pytest.raises(
        ConfigError,
        match=message("uid 'step' is used twice (by 'parse' and 'count'); every operator"),
    ):
        numbers.key_by(lambda x: x).sum(name="count", uid="step")


def test_operator_name_used_twice() -> None:
    env = StreamEnvironment()
    numbers = env.from_sequence(1, 10).map(lambda x: x, name="step")

    with pytest.raises(
        ConfigError,
        match=message("operator name 'step' is used twice; give each operator its own name"),
    ):
        numbers.filter(bool, name="step")


@pytest.mark.parametrize("twice", ["from_collection", "from_sequence", "generate"])
async def test_unnamed_built_in_sources_get_unique_default_names(twice: str) -> None:
    env = StreamEnvironment()
    make = {
        "from_collection": lambda: env.from_collection([1, 2]),
        "from_sequence": lambda: env.from_sequence(1, 2),
        "generate": lambda: env.generate(lambda i: i + 1, 2),
    }[twice]
    make().union(make()).collect()

    result = await env.execute()

    default = {"from_collection": "collection", "from_sequence": "sequence"}.get(twice, "generator")
    assert [v.name for v in env.get_job_graph().vertices][:2] == [default, f"{default}-2"]
    assert sorted(result.collected["collect"]) == [1, 1, 2, 2]


@pytest.mark.parametrize("twice", ["collect", "print", "sink_to"])
async def test_unnamed_built_in_sinks_get_unique_default_names(
    twice: str, capsys: pytest.CaptureFixture[str]
) -> None:
    env = StreamEnvironment()
    numbers = env.from_collection([1, 2])
    attach = {
        "collect": lambda s: s.collect(),
        "print": lambda s: s.print(),
        "sink_to": lambda s: s.sink_to(lambda x: None),
    }[twice]
    attach(numbers)
    attach(numbers.map(lambda x: -x))

    result = await env.execute()

    default = "sink" if twice == "sink_to" else twice
    assert {default, f"{default}-2"} <= set(result.operators)
    if twice == "collect":
        assert result.collected == {"collect": [1, 2], "collect-2": [-1, -2]}
    if twice == "print":
        assert sorted(capsys.readouterr().out.split()) == ["-1", "-2", "1", "2"]


# -- user functions ---------------------------------------------------------------------


def test_map_function_with_two_required_arguments() -> None:
    env = StreamEnvironment()
    with pytest.raises(
        ConfigError,
        match=r"operator 'add': the map function .*\(a, b\) cannot take 1 positional "
        r"argument .*give it a signature like \(value\)",
    ):
        env.from_sequence(1, 10).map(lambda a, b: a + b, name="add")


def test_reduce_function_with_one_argument() -> None:
    keyed = StreamEnvironment().from_sequence(1, 10).key_by(lambda x: x % 2)
    with pytest.raises(
        ConfigError,
        match=r"operator 'reduce': the reduce function .*\(a\) cannot take 2 positional arguments",
    ):
        keyed.reduce(lambda a: a)


def test_key_selector_with_no_argument() -> None:
    numbers = StreamEnvironment().from_sequence(1, 10)
    with pytest.raises(
        ConfigError,
        match=r"operator 'key_by': the key selector .*\(\) cannot take 1 positional argument",
    ):
        numbers.key_by(lambda: 0)


def test_process_function_with_one_argument() -> None:
    keyed = StreamEnvironment().from_sequence(1, 10).key_by(lambda x: x % 2)
    with pytest.raises(ConfigError, match=r"process_element .* cannot take 2 positional"):
        keyed.process(lambda value: [value])


def test_sink_function_with_no_argument() -> None:
    numbers = StreamEnvironment().from_sequence(1, 10)
    with pytest.raises(ConfigError, match=r"operator 'sink': the sink function .* cannot take 1"):
        numbers.sink_to(lambda: None)


def test_write_text_formatter_with_two_arguments(tmp_path: Any) -> None:
    numbers = StreamEnvironment().from_sequence(1, 10)
    with pytest.raises(ConfigError, match=r"operator 'write_text': the formatter .* cannot take 1"):
        numbers.write_text(tmp_path / "out.txt", lambda a, b: "")


def test_function_class_that_does_not_implement_its_method() -> None:
    class Nothing(MapFunction[int, int]):
        pass

    with pytest.raises(ConfigError, match=message("operator 'map': Nothing must implement map()")):
        StreamEnvironment().from_sequence(1, 10).map(Nothing())


@pytest.mark.parametrize("fn", [42, "upper", None])
def test_not_a_function(fn: object) -> None:
    with pytest.raises(
        ConfigError,
        match=message(
            f"operator 'map': the map function must be a function or a MapFunction, "
            f"got {type(fn).__name__}"
        ),
    ):
        StreamEnvironment().from_sequence(1, 10).map(fn)  # type: ignore[arg-type]


def test_async_reduce_function() -> None:
    async def add(a: int, b: int) -> int:
        return a + b

    keyed = StreamEnvironment().from_sequence(1, 10).key_by(lambda x: x % 2)
    with pytest.raises(
        ConfigError, match=message("operator 'reduce': the reduce function must not be async")
    ):
        keyed.reduce(add)


def test_function_object_that_cannot_be_copied_per_subtask() -> None:
    class Locked(MapFunction[int, int]):
        def __init__(self) -> None:
            self.lock = threading.Lock()

        def map(self, value: int) -> int:
            return value

    with pytest.raises(
        ConfigError,
        match=r"operator 'locked': cannot copy Locked for each subtask \(TypeError: .*\); "
        r"create resources such as connections and locks in open\(\)",
    ):
        StreamEnvironment().from_sequence(1, 10).map(Locked(), name="locked")


# -- sources ----------------------------------------------------------------------------


async def test_collection_source_with_parallelism_greater_than_one() -> None:
    env = StreamEnvironment()
    env.from_source(CollectionSource([1, 2, 3]), name="items", parallelism=2).collect()

    await assert_rejected_before_running(
        env,
        message(
            "operator 'items': parallelism 2 is more than this source allows (1); "
            "drop the parallelism option or set it to 1"
        ),
    )


async def test_non_parallel_custom_source_with_parallelism() -> None:
    env = StreamEnvironment()
    env.from_source(UntouchableSource(max_source_parallelism=1), parallelism=3).collect()

    await assert_rejected_before_running(
        env, message("operator 'source': parallelism 3 is more than this source allows (1)")
    )


@pytest.mark.parametrize(
    ("source", "text"),
    [
        (42, "from_source: int is not a Source: it has no create_enumerator() method"),
        ([1, 2], "from_source: list is not a Source: it has no create_enumerator() method"),
    ],
)
def test_from_source_with_something_that_is_not_a_source(source: object, text: str) -> None:
    with pytest.raises(ConfigError, match=message(text)):
        StreamEnvironment().from_source(source)  # type: ignore[arg-type]


def test_from_source_with_a_source_that_cannot_read() -> None:
    class EnumeratorOnly:
        def create_enumerator(self) -> Any:
            raise AssertionError("not reached")

    with pytest.raises(
        ConfigError, match=message("EnumeratorOnly is not a Source: it has no create_reader()")
    ):
        StreamEnvironment().from_source(EnumeratorOnly())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("items", "kind"), [("abc", "str"), (b"abc", "bytes"), (42, "int"), (None, "NoneType")]
)
def test_from_collection_of_something_that_is_not_a_collection(items: object, kind: str) -> None:
    with pytest.raises(
        ConfigError,
        match=message(f"from_collection: items must be an iterable of records, got {kind}"),
    ):
        StreamEnvironment().from_collection(items)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("call", "text"),
    [
        (lambda env: env.from_sequence(5, 1), "from_sequence: end (1) must be >= start (5)"),
        (lambda env: env.from_sequence(1.0, 5), "from_sequence: start must be an int, got 1.0"),
        (lambda env: env.from_sequence(1, True), "from_sequence: end must be an int, got True"),
        (lambda env: env.generate(lambda i: i, -1), "generate: count must be an int >= 0"),
        (lambda env: env.generate(lambda i: i, 2.5), "generate: count must be an int >= 0"),
        (
            lambda env: env.generate(lambda i: i, 10, records_per_second=0),
            "generate: records_per_second must be a number > 0 or None, got 0",
        ),
        (lambda env: env.generate("abc", 10), "generate: generator must be callable"),
    ],
)
def test_invalid_generated_source(call: Callable[[StreamEnvironment], Any], text: str) -> None:
    with pytest.raises(ConfigError, match=message(text)):
        call(StreamEnvironment())


# -- keys and fields --------------------------------------------------------------------


@pytest.mark.parametrize("key_type", [object, list, dict, set])
def test_key_type_the_stable_hash_cannot_encode(key_type: type) -> None:
    numbers = StreamEnvironment().from_sequence(1, 10)
    with pytest.raises(
        ConfigError, match=message(f"key_by: key_type {key_type!r} cannot be keyed: ")
    ):
        numbers.key_by(lambda x: x, key_type=key_type)


@pytest.mark.parametrize("key_type", [int, str, bytes, float, bool, tuple])
def test_key_types_the_stable_hash_encodes(key_type: type) -> None:
    StreamEnvironment().from_sequence(1, 10).key_by(lambda x: x, key_type=key_type)


@pytest.mark.parametrize("field", [1.5, True, b"n", (1,)])
def test_sum_of_a_field_that_is_neither_a_position_nor_a_dict_key(field: object) -> None:
    keyed = StreamEnvironment().from_sequence(1, 10).key_by(lambda x: x)
    with pytest.raises(
        ConfigError,
        match=message(f"sum: field must be None, a tuple position or a dict key, got {field!r}"),
    ):
        keyed.sum(field)  # type: ignore[arg-type]


# -- union ------------------------------------------------------------------------------


def test_union_with_something_that_is_not_a_stream() -> None:
    numbers = StreamEnvironment().from_sequence(1, 10)
    with pytest.raises(ConfigError, match=message("union: expected DataStreams, got list")):
        numbers.union([1, 2])  # type: ignore[arg-type]


def test_union_of_streams_of_different_environments() -> None:
    a = StreamEnvironment().from_sequence(1, 10)
    b = StreamEnvironment().from_sequence(1, 10)
    with pytest.raises(
        ConfigError, match=message("union: streams of different environments cannot be merged")
    ):
        a.union(b)
