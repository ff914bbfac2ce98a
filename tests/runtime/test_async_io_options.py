"""``async_map`` rejects bad options when the job is built, naming the option."""

from __future__ import annotations

from typing import Any

import pytest

from runtime import (
    AsyncFunction,
    ConfigError,
    ExponentialBackoffRetry,
    FixedDelayRetry,
    RetryStrategy,
    StreamEnvironment,
)


async def call(x: int) -> int:
    return x


def stream() -> Any:
    return StreamEnvironment(parallelism=1).from_sequence(0, 9)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"capacity": 0}, r"operator 'async_map': capacity must be an int >= 1"),
        ({"capacity": 2.5}, "capacity must be an int"),
        ({"capacity": True}, "capacity must be an int"),
        ({"ordered": "yes"}, "ordered must be True or False"),
        ({"timeout": -1}, "timeout must be a positive number of seconds"),
        ({"timeout": 0}, "timeout must be a positive number of seconds"),
        ({"retry": 3}, "retry must be a FixedDelayRetry or an ExponentialBackoffRetry"),
        ({"retry": RetryStrategy()}, "retry must be a FixedDelayRetry"),
        ({"retry": FixedDelayRetry(max_attempts=0)}, "retry max_attempts must be an int >= 1"),
        ({"retry": FixedDelayRetry(backoff=-1)}, "retry backoff must be a number of seconds"),
        (
            {"retry": ExponentialBackoffRetry(initial_backoff=1.0, max_backoff=0.5)},
            "retry max_backoff",
        ),
        ({"retry": ExponentialBackoffRetry(multiplier=0.5)}, "retry multiplier"),
        ({"retry": FixedDelayRetry(retry_on_result=1)}, "retry retry_on_result must be"),  # type: ignore[arg-type]
    ],
)
def test_bad_options_are_config_errors_naming_the_option(
    options: dict[str, Any], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        stream().async_map(call, **options)


def test_a_plain_function_is_refused() -> None:
    def plain(x: int) -> int:
        return x

    with pytest.raises(
        ConfigError,
        match=r"operator 'enrich': the async_map function .*plain "
        r"is not asynchronous; make it async def",
    ):
        stream().async_map(plain, name="enrich")


def test_a_function_class_must_implement_async_invoke() -> None:
    class Nothing(AsyncFunction[int, int]):
        pass

    with pytest.raises(ConfigError, match="Nothing must implement async_invoke"):
        stream().async_map(Nothing())


def test_async_map_runs_alone_in_its_chain() -> None:
    env = StreamEnvironment(parallelism=2)
    env.from_sequence(0, 9).map(lambda x: x).async_map(call).map(lambda x: x).collect()
    chains = [[node.name for node in vertex.nodes] for vertex in env.get_job_graph().vertices]
    assert chains == [["sequence", "map"], ["async_map"], ["map-2", "collect"]]
