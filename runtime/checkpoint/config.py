"""``CheckpointConfig``: Flink's checkpointing options, with Flink's defaults.

``env.enable_checkpointing(interval, ...)`` sets them; ``env.checkpoint_config`` holds
them. They are validated when set and again when the job is built; combinations that
Flink rejects are rejected with the reason.

=============================  ===================  ==========================================
option                         default              meaning
=============================  ===================  ==========================================
``interval``                   None (off)           seconds between periodic checkpoints
``mode``                       ``EXACTLY_ONCE``     ``AT_LEAST_ONCE`` skips alignment
``timeout``                    600.0                a checkpoint not complete by then fails
``min_pause``                  0.0                  seconds from one completion to next trigger
``max_concurrent``             1                    checkpoints in flight at once
``tolerable_failures``         0                    consecutive failures before the job fails
``unaligned``                  False                barriers overtake in-flight data
``aligned_timeout``            0.0                  with ``unaligned``: start aligned, switch to
                                                    unaligned after this many seconds (0:
                                                    unaligned from the start)
``retention``                  ``DELETE_ON_CANCEL``  what happens to checkpoints on cancel
``retained``                   1                    completed checkpoints kept
``storage``                    ``"memory"``         ``"memory"`` or ``"file:///dir"``
=============================  ===================  ==========================================
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from runtime.errors import ConfigError


class CheckpointingMode(enum.Enum):
    """The guarantee a checkpoint gives for state (Flink's ``CheckpointingMode``)."""

    EXACTLY_ONCE = "exactly_once"
    AT_LEAST_ONCE = "at_least_once"


class ExternalizedCheckpointRetention(enum.Enum):
    """What happens to completed checkpoints when the job is cancelled."""

    DELETE_ON_CANCELLATION = "delete_on_cancellation"
    RETAIN_ON_CANCELLATION = "retain_on_cancellation"
    NO_EXTERNALIZED_CHECKPOINTS = "no_externalized_checkpoints"


DEFAULT_TIMEOUT = 600.0


def _seconds(option: str, value: object, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"checkpointing: {option} must be a number of seconds, got {value!r}")
    if value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise ConfigError(f"checkpointing: {option} must be {bound} seconds, got {value!r}")
    return float(value)


def _count(option: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"checkpointing: {option} must be an int >= {minimum}, got {value!r}")
    return value


@dataclass(slots=True)
class CheckpointConfig:
    """The checkpointing options of a job; see the module docstring for each."""

    interval: float | None = None
    mode: CheckpointingMode = CheckpointingMode.EXACTLY_ONCE
    timeout: float = DEFAULT_TIMEOUT
    min_pause: float = 0.0
    max_concurrent: int = 1
    tolerable_failures: int = 0
    unaligned: bool = False
    aligned_timeout: float = 0.0
    retention: ExternalizedCheckpointRetention = (
        ExternalizedCheckpointRetention.DELETE_ON_CANCELLATION
    )
    retained: int = 1
    storage: str = "memory"

    @property
    def enabled(self) -> bool:
        """Whether periodic checkpoints are on."""
        return self.interval is not None

    @property
    def uses_timeout(self) -> bool:
        """Whether checkpoints start aligned and may switch to unaligned."""
        return self.unaligned and self.aligned_timeout > 0

    def validate(self) -> None:
        """Check every option and the combinations Flink rejects.

        Raises:
            ConfigError: names the option and why.
        """
        if self.interval is not None:
            _seconds("interval", self.interval, positive=True)
        if not isinstance(self.mode, CheckpointingMode):
            raise ConfigError(f"checkpointing: mode must be a CheckpointingMode, got {self.mode!r}")
        _seconds("timeout", self.timeout, positive=True)
        _seconds("min_pause", self.min_pause)
        _count("max_concurrent", self.max_concurrent, 1)
        _count("tolerable_failures", self.tolerable_failures, 0)
        _seconds("aligned_timeout", self.aligned_timeout)
        if not isinstance(self.unaligned, bool):
            raise ConfigError(
                f"checkpointing: unaligned must be True or False, got {self.unaligned!r}"
            )
        _count("retained", self.retained, 1)
        if not isinstance(self.retention, ExternalizedCheckpointRetention):
            raise ConfigError(
                f"checkpointing: retention must be an ExternalizedCheckpointRetention, "
                f"got {self.retention!r}"
            )
        if not isinstance(self.storage, str) or not self.storage:
            raise ConfigError(
                f"checkpointing: storage must be 'memory' or 'file:///dir', got {self.storage!r}"
            )
        if self.unaligned and self.mode is CheckpointingMode.AT_LEAST_ONCE:
            raise ConfigError(
                "checkpointing: unaligned checkpoints need mode EXACTLY_ONCE (at-least-once "
                "never aligns, so there is nothing to skip); drop unaligned=True or use "
                "EXACTLY_ONCE"
            )
        if self.unaligned and self.max_concurrent > 1:
            raise ConfigError(
                "checkpointing: unaligned checkpoints need max_concurrent=1 (Flink forbids "
                "concurrent unaligned checkpoints: each would persist the same in-flight "
                "data); set max_concurrent=1"
            )
        if self.aligned_timeout > 0 and not self.unaligned:
            raise ConfigError(
                "checkpointing: aligned_timeout only applies to unaligned checkpoints; "
                "pass unaligned=True as well, or drop aligned_timeout"
            )
