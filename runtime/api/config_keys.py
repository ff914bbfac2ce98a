"""Configuration keys the command line may set for every job of a script (``weir run -D``).

``weir run -D key=value`` (and its shorthands ``--checkpoint-interval``,
``--checkpointing-mode``, ``--unaligned``) cannot reach into the job script, so the
values become *defaults* of every ``StreamEnvironment`` the script makes
(``runtime.api.overrides.OVERRIDES.config``). Precedence, as in Flink: what the script
sets explicitly wins; the command line fills in what the script leaves unset; and when
the script overrides a value the command line gave, a warning on the ``weir.config``
logger says so, naming both values.

The keys are Flink's where Flink has one (``execution.checkpointing.interval``...);
durations take units (``500ms``, ``10s``, ``5min``, ``1h``; a bare number is seconds).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from runtime.checkpoint.config import CheckpointingMode
from runtime.errors import ConfigError

_UNITS = {"ms": 0.001, "s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0}


def parse_duration(key: str, text: str) -> float:
    """Seconds from ``"500ms"``, ``"10s"``, ``"5min"``, ``"1h"`` or a bare number.

    Raises:
        ConfigError: not a duration of zero or more (names ``key``).
    """
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*", text.lower())
    if match is None or match.group(2) not in ("", *_UNITS):
        raise ConfigError(f"-D {key}={text}: not a duration; write e.g. 500ms, 10s, 5min or 1h")
    return float(match.group(1)) * _UNITS.get(match.group(2), 1.0)


def _positive_int(key: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"-D {key}={text}: must be a whole number of 1 or more")
    return value


def _count(key: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ConfigError(f"-D {key}={text}: must be a whole number of 0 or more")
    return value


def _bool(key: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ConfigError(f"-D {key}={text}: must be true or false")


def _mode(key: str, text: str) -> CheckpointingMode:
    lowered = text.strip().lower().replace("-", "_")
    for mode in CheckpointingMode:
        if lowered in (mode.value.lower(), mode.name.lower()):
            return mode
    choices = ", ".join(m.name for m in CheckpointingMode)
    raise ConfigError(f"-D {key}={text}: must be one of {choices}")


def _storage(key: str, text: str) -> str:
    return text if "://" in text else f"file://{os.path.abspath(text)}"


@dataclass(frozen=True, slots=True)
class ConfigKey:
    """One key: the option it sets (a ``StreamEnvironment`` or checkpoint option)."""

    key: str
    option: str
    parse: Callable[[str, str], Any]
    help: str


KEYS: dict[str, ConfigKey] = {
    k.key: k
    for k in (
        ConfigKey("parallelism.default", "parallelism", _positive_int, "default parallelism"),
        ConfigKey(
            "execution.checkpointing.interval", "interval", parse_duration, "checkpoint interval"
        ),
        ConfigKey("execution.checkpointing.mode", "mode", _mode, "EXACTLY_ONCE or AT_LEAST_ONCE"),
        ConfigKey("execution.checkpointing.unaligned", "unaligned", _bool, "unaligned checkpoints"),
        ConfigKey(
            "execution.checkpointing.aligned-checkpoint-timeout",
            "aligned_timeout",
            parse_duration,
            "switch an aligned checkpoint to unaligned after this long",
        ),
        ConfigKey(
            "execution.checkpointing.timeout", "timeout", parse_duration, "checkpoint timeout"
        ),
        ConfigKey(
            "execution.checkpointing.min-pause",
            "min_pause",
            parse_duration,
            "least time between two checkpoints",
        ),
        ConfigKey(
            "execution.checkpointing.max-concurrent-checkpoints",
            "max_concurrent",
            _positive_int,
            "checkpoints pending at once",
        ),
        ConfigKey(
            "execution.checkpointing.tolerable-failed-checkpoints",
            "tolerable_failures",
            _count,
            "failed checkpoints in a row before the job fails",
        ),
        ConfigKey("state.checkpoints.num-retained", "retained", _positive_int, "checkpoints kept"),
        ConfigKey(
            "state.checkpoints.dir", "storage", _storage, "checkpoint storage (a folder or URI)"
        ),
    )
}
"""Every key ``-D`` accepts, by name."""

CHECKPOINT_OPTIONS = frozenset(k.option for k in KEYS.values() if k.option not in ("parallelism",))
"""The options of ``enable_checkpointing`` that keys set."""


def parse_assignment(text: str) -> tuple[str, Any]:
    """``"key=value"`` -> ``(option, parsed value)``.

    Raises:
        ConfigError: no ``=``, an unknown key (the message lists the keys), or a bad value.
    """
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep:
        raise ConfigError(f"-D {text}: write -D key=value")
    known = KEYS.get(key)
    if known is None:
        raise ConfigError(f"-D {key}: unknown key; the keys are: {', '.join(sorted(KEYS))}")
    return known.option, known.parse(key, value.strip())


def key_of(option: str) -> str:
    """The ``-D`` key that sets ``option`` (for messages)."""
    for key in KEYS.values():
        if key.option == option:
            return key.key
    return option
