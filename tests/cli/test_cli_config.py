"""``weir run -D key=value`` and its shorthands: parsing, precedence, warnings, errors.

The command line's values are defaults of every environment the script makes; what the
script sets itself wins, and a warning on ``weir.config`` names both values.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cli_driver import Outcome

from runtime import CheckpointingMode, ConfigError, StreamEnvironment
from runtime.api.config_keys import KEYS, parse_assignment, parse_duration
from runtime.api.overrides import OVERRIDES


@pytest.fixture
def cli_config() -> Iterator[Callable[..., None]]:
    def define(*assignments: str) -> None:
        OVERRIDES.config = dict(parse_assignment(a) for a in assignments)

    yield define
    OVERRIDES.clear()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("10s", 10.0), ("10", 10.0), ("5min", 300.0), ("1h", 3600.0), ("0", 0.0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration("execution.checkpointing.interval", text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nope", "write -D key=value"),
        ("execution.checkpointing.intervall=1s", "unknown key; the keys are: .*interval"),
        ("execution.checkpointing.interval=soon", "interval=soon: not a duration"),
        ("execution.checkpointing.mode=twice", "mode=twice: must be one of EXACTLY_ONCE"),
        ("execution.checkpointing.unaligned=maybe", "unaligned=maybe: must be true or false"),
        ("parallelism.default=0", "parallelism.default=0: must be a whole number of 1"),
    ],
)
def test_bad_assignments_name_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_assignment(text)


def test_every_key_parses_a_good_value() -> None:
    good = {
        "parallelism.default": "3",
        "execution.checkpointing.mode": "at_least_once",
        "execution.checkpointing.unaligned": "true",
        "execution.checkpointing.max-concurrent-checkpoints": "2",
        "execution.checkpointing.tolerable-failed-checkpoints": "0",
        "state.checkpoints.num-retained": "3",
        "state.checkpoints.dir": "/tmp/weir-checkpoints",
    }
    for key in KEYS:
        option, _ = parse_assignment(f"{key}={good.get(key, '2s')}")
        assert option == KEYS[key].option


def test_cli_values_are_defaults_of_every_environment(cli_config: Callable[..., None]) -> None:
    cli_config(
        "execution.checkpointing.interval=250ms",
        "execution.checkpointing.unaligned=true",
        "parallelism.default=3",
    )
    env = StreamEnvironment()  # the script enables nothing: the command line does
    assert env.parallelism == 3
    assert env.checkpoint_config.interval == 0.25 and env.checkpoint_config.unaligned
    env.enable_checkpointing(1.0)  # sets the interval only: unaligned stays on
    assert env.checkpoint_config.interval == 1.0 and env.checkpoint_config.unaligned


def test_script_wins_with_a_warning(
    cli_config: Callable[..., None], caplog: pytest.LogCaptureFixture
) -> None:
    cli_config(
        "execution.checkpointing.interval=250ms", "execution.checkpointing.mode=AT_LEAST_ONCE"
    )
    env = StreamEnvironment()
    assert env.checkpoint_config.mode is CheckpointingMode.AT_LEAST_ONCE
    with caplog.at_level(logging.WARNING, logger="weir.config"):
        env.enable_checkpointing(5.0, CheckpointingMode.EXACTLY_ONCE)
    assert env.checkpoint_config.interval == 5.0
    assert env.checkpoint_config.mode is CheckpointingMode.EXACTLY_ONCE
    text = caplog.text
    assert "interval=5.0, which wins over -D execution.checkpointing.interval=0.25" in text
    assert "-D execution.checkpointing.mode" in text


def test_same_value_in_the_script_warns_nothing(
    cli_config: Callable[..., None], caplog: pytest.LogCaptureFixture
) -> None:
    cli_config("execution.checkpointing.interval=2s")
    with caplog.at_level(logging.WARNING, logger="weir.config"):
        StreamEnvironment().enable_checkpointing(2.0)
    assert caplog.records == []


def test_values_that_do_not_go_together_name_the_keys(cli_config: Callable[..., None]) -> None:
    cli_config(
        "execution.checkpointing.interval=1s",
        "execution.checkpointing.unaligned=true",
        "execution.checkpointing.mode=AT_LEAST_ONCE",
    )
    with pytest.raises(ConfigError, match=r"set with -D .*execution\.checkpointing\.mode"):
        StreamEnvironment()


SHOW_CHECKPOINTING = """
from runtime import StreamEnvironment
env = StreamEnvironment()
config = env.checkpoint_config
print("checkpointing", config.interval, config.mode.name, config.unaligned, env.parallelism)
"""


def test_weir_run_passes_definitions_and_shorthands(
    weir: Callable[..., Outcome], tmp_path: Path
) -> None:
    script = tmp_path / "show.py"
    script.write_text(SHOW_CHECKPOINTING)
    outcome = weir(
        "run",
        "--no-rest",
        "--checkpoint-interval",
        "50ms",
        "--unaligned",
        "-D",
        "parallelism.default=2",
        str(script),
    )
    assert outcome.returncode == 0, outcome.stderr
    assert "checkpointing 0.05 EXACTLY_ONCE True 2" in outcome.stdout


def test_weir_run_bad_definition_is_one_line(weir: Callable[..., Outcome], tmp_path: Path) -> None:
    script = tmp_path / "show.py"
    script.write_text(SHOW_CHECKPOINTING)
    outcome = weir("run", "--no-rest", "-D", "execution.checkpointing.intervall=1s", str(script))
    assert outcome.returncode == 2
    lines = outcome.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown key" in lines[0], outcome.stderr
    assert "Traceback" not in outcome.stderr
