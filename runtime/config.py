"""``ExecutionConfig``: the knobs of the record path, validated when the job is built.

* ``buffer_size``: records per buffer. Records travel between actors in buffers (lists);
  a writer sends a buffer when it is full.
* ``buffer_timeout``: seconds a partly filled buffer may wait before it is sent anyway
  (the latency bound). A subtask with no input sends its partial buffers at once.
  ``0`` sends after every input buffer.
* ``channel_capacity``: buffers a channel holds before its producer waits
  (backpressure). Records queued between two subtasks are at most
  ``channel_capacity * buffer_size`` per channel.
* ``allow_pickle``: whether records and state values with no declared type may be
  pickled when a checkpoint stores them, and unpickled when one is restored (see
  ``StreamEnvironment``: unpickling runs code, so restore only what you trust).
* ``state_backend``, ``state_dir``, ``incremental_checkpoints``, ``local_recovery``: the
  keyed state backend and its options (validated by the environment; see
  ``StreamEnvironment``).
* ``changelog``: the changelog state backend's options (``storage.changelog``), or None
  when it is off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from runtime.errors import ConfigError
from storage.changelog import ChangelogOptions

DEFAULT_BUFFER_SIZE = 512
DEFAULT_BUFFER_TIMEOUT = 0.1
DEFAULT_CHANNEL_CAPACITY = 8


def check_positive_int(option: str, value: object) -> int:
    """Return ``value`` if it is an int >= 1, else raise ``ConfigError`` naming ``option``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{option} must be an int >= 1, got {value!r}")
    return value


def check_seconds(option: str, value: object, *, allow_zero: bool = True) -> float:
    """Return ``value`` as float seconds if it is a finite number >= 0 (> 0 if not allowed)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{option} must be a number of seconds, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{option} must be {bound} seconds, got {value!r}")
    return float(value)


@dataclass(slots=True)
class ExecutionConfig:
    """Record-path options of a job; see the module docstring for each."""

    buffer_size: int = DEFAULT_BUFFER_SIZE
    buffer_timeout: float = DEFAULT_BUFFER_TIMEOUT
    channel_capacity: int = DEFAULT_CHANNEL_CAPACITY
    allow_pickle: bool = True
    state_backend: str = "heap"
    state_dir: str | None = None
    incremental_checkpoints: bool = True
    local_recovery: bool = False
    changelog: ChangelogOptions | None = None
    workers: int = 1

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the first invalid option."""
        check_positive_int("buffer_size", self.buffer_size)
        check_positive_int("workers", self.workers)
        check_seconds("buffer_timeout", self.buffer_timeout)
        check_positive_int("channel_capacity", self.channel_capacity)
        if not isinstance(self.allow_pickle, bool):
            raise ConfigError(f"allow_pickle must be True or False, got {self.allow_pickle!r}")
        if self.changelog is not None:
            try:
                self.changelog.validate()
            except ValueError as error:
                raise ConfigError(str(error)) from None
