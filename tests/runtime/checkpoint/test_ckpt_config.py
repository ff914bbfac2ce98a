"""``CheckpointConfig.validate``: every bad option named, Flink's rejections, Flink's defaults.

DESIGN.md: an invalid config fails when the job is built, with a clear error naming what
was wrong. Each option is tried alone with values it must refuse; the ``ConfigError``
message must name the option. The combinations Flink rejects come with the reason and
what to do.
"""

from __future__ import annotations

import dataclasses
import math

import pytest

from runtime.checkpoint.config import (
    CheckpointConfig,
    CheckpointingMode,
    ExternalizedCheckpointRetention,
)
from runtime.errors import ConfigError

INVALID = [
    ("interval", 0),
    ("interval", -1.0),
    ("interval", math.nan),
    ("interval", math.inf),
    ("interval", "1s"),
    ("interval", True),
    ("mode", "exactly_once"),
    ("mode", None),
    ("timeout", 0.0),
    ("timeout", -5),
    ("timeout", math.inf),
    ("timeout", "600"),
    ("min_pause", -0.1),
    ("min_pause", math.nan),
    ("min_pause", None),
    ("max_concurrent", 0),
    ("max_concurrent", 1.0),
    ("max_concurrent", True),
    ("max_concurrent", "2"),
    ("tolerable_failures", -1),
    ("tolerable_failures", 0.5),
    ("tolerable_failures", False),
    ("aligned_timeout", -1.0),
    ("aligned_timeout", math.inf),
    ("aligned_timeout", "fast"),
    ("retained", 0),
    ("retained", 2.0),
    ("retained", None),
    ("retention", "retain"),
    ("storage", ""),
    ("storage", None),
    ("storage", 42),
]


@pytest.mark.parametrize(("option", "value"), INVALID, ids=[f"{o}={v!r}" for o, v in INVALID])
def test_each_invalid_option_is_named(option: str, value: object) -> None:
    config = dataclasses.replace(CheckpointConfig(interval=1.0), **{option: value})
    with pytest.raises(ConfigError, match=rf"^checkpointing: {option} must be") as caught:
        config.validate()
    assert repr(value) in str(caught.value), "the message shows the value it refused"
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("value", ["false", 1, None])
def test_unaligned_must_be_a_bool(value: object) -> None:
    with pytest.raises(ConfigError, match="unaligned"):
        CheckpointConfig(interval=1.0, unaligned=value).validate()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "config",
    [
        CheckpointConfig(),
        CheckpointConfig(interval=0.001),
        CheckpointConfig(interval=1, timeout=1, min_pause=0, max_concurrent=5),
        CheckpointConfig(interval=1.0, unaligned=True),
        CheckpointConfig(interval=1.0, unaligned=True, aligned_timeout=0.05),
        CheckpointConfig(interval=1.0, mode=CheckpointingMode.AT_LEAST_ONCE, max_concurrent=3),
        CheckpointConfig(
            interval=1.0,
            retention=ExternalizedCheckpointRetention.RETAIN_ON_CANCELLATION,
            retained=3,
            tolerable_failures=10,
            storage="file:///tmp/weir",
        ),
    ],
)
def test_valid_configs_pass(config: CheckpointConfig) -> None:
    config.validate()


def test_unaligned_needs_exactly_once() -> None:
    config = CheckpointConfig(interval=1.0, unaligned=True, mode=CheckpointingMode.AT_LEAST_ONCE)
    with pytest.raises(
        ConfigError, match=r"unaligned checkpoints need mode EXACTLY_ONCE .*use EXACTLY_ONCE"
    ):
        config.validate()


def test_unaligned_needs_max_concurrent_one() -> None:
    config = CheckpointConfig(interval=1.0, unaligned=True, max_concurrent=2)
    with pytest.raises(
        ConfigError, match=r"unaligned checkpoints need max_concurrent=1 .*set max_concurrent=1"
    ):
        config.validate()


def test_aligned_timeout_needs_unaligned() -> None:
    config = CheckpointConfig(interval=1.0, aligned_timeout=0.5)
    with pytest.raises(
        ConfigError,
        match=r"aligned_timeout only applies to unaligned checkpoints; pass unaligned=True",
    ):
        config.validate()


def test_defaults_are_flinks() -> None:
    config = CheckpointConfig()
    assert not config.enabled and config.interval is None
    assert config.mode is CheckpointingMode.EXACTLY_ONCE
    assert config.timeout == 600.0  # execution.checkpointing.timeout: 10 min
    assert config.min_pause == 0.0  # execution.checkpointing.min-pause: 0
    assert config.max_concurrent == 1  # execution.checkpointing.max-concurrent-checkpoints
    assert config.tolerable_failures == 0  # execution.checkpointing.tolerable-failed-...
    assert config.retained == 1  # state.checkpoints.num-retained
    assert config.unaligned is False  # execution.checkpointing.unaligned
    assert config.aligned_timeout == 0.0  # execution.checkpointing.aligned-checkpoint-timeout
    assert config.retention is ExternalizedCheckpointRetention.DELETE_ON_CANCELLATION
    assert not config.uses_timeout


def test_uses_timeout_only_with_unaligned_and_a_timeout() -> None:
    assert CheckpointConfig(unaligned=True, aligned_timeout=0.1).uses_timeout
    assert not CheckpointConfig(unaligned=True).uses_timeout
