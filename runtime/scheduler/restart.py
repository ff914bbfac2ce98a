"""Restart strategies: whether and when a failed job restarts (Flink's, with its defaults).

Pure objects: the job master reports each failure with the time it happened
(``on_failure(now)``) and gets back a ``RestartDecision``: restart after ``delay``
seconds, or give up. Time is passed in, so tests need no clock.

=========================  =====================================================
strategy                   Flink's defaults
=========================  =====================================================
``NoRestart``              the job fails at its first failure (the default
                           without checkpointing)
``FixedDelayRestart``      ``attempts`` = 2**31 - 1, ``delay`` = 1 s
``ExponentialDelayRestart`` ``initial`` = 1 s, ``max_delay`` = 60 s,
                           ``multiplier`` = 1.5, ``reset_threshold`` = 3600 s,
                           ``jitter`` = 0.1 (the default with checkpointing)
``FailureRateRestart``     ``max_failures`` = 1 per ``interval`` = 60 s,
                           ``delay`` = 1 s
=========================  =====================================================
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from runtime.config import check_seconds
from runtime.errors import ConfigError

MAX_ATTEMPTS = 2**31 - 1


@dataclass(frozen=True, slots=True)
class RestartDecision:
    """Restart after ``delay`` seconds, or not (``restart`` False: the job fails)."""

    restart: bool
    delay: float = 0.0
    reason: str = ""


class RestartStrategy(Protocol):
    """Decides about restarts. One instance per job run; it remembers past failures."""

    def on_failure(self, now: float) -> RestartDecision:
        """A failure happened at ``now`` (monotonic seconds)."""
        ...

    def describe(self) -> str:
        """The strategy and its options, for messages."""
        ...


@dataclass(slots=True)
class NoRestart:
    """Never restart."""

    def on_failure(self, now: float) -> RestartDecision:
        """Give up at once."""
        return RestartDecision(False, reason="the restart strategy is 'none'")

    def describe(self) -> str:
        """``none``."""
        return "none"


@dataclass(slots=True)
class FixedDelayRestart:
    """Restart up to ``attempts`` times, ``delay`` seconds after each failure."""

    attempts: int = MAX_ATTEMPTS
    delay: float = 1.0
    used: int = 0

    def __post_init__(self) -> None:
        if (
            isinstance(self.attempts, bool)
            or not isinstance(self.attempts, int)
            or (self.attempts < 0)
        ):
            raise ConfigError(
                f"fixed-delay restart: attempts must be an int >= 0, got {self.attempts!r}"
            )
        check_seconds("fixed-delay restart: delay", self.delay)

    def on_failure(self, now: float) -> RestartDecision:
        """Restart while attempts remain."""
        if self.used >= self.attempts:
            return RestartDecision(
                False, reason=f"the fixed-delay restart strategy used all {self.attempts} attempts"
            )
        self.used += 1
        return RestartDecision(True, self.delay)

    def describe(self) -> str:
        """``fixed-delay(attempts, delay)``."""
        return f"fixed-delay(attempts={self.attempts}, delay={self.delay:g}s)"


@dataclass(slots=True)
class ExponentialDelayRestart:
    """Restart with a delay that grows by ``multiplier`` per failure, up to ``max_delay``.

    After ``reset_threshold`` seconds without a failure the delay starts again at
    ``initial``. ``jitter`` (a fraction) spreads each delay by up to +-jitter * delay.
    ``attempts`` bounds the restarts between two resets.
    """

    initial: float = 1.0
    max_delay: float = 60.0
    multiplier: float = 1.5
    reset_threshold: float = 3600.0
    jitter: float = 0.1
    attempts: int = MAX_ATTEMPTS
    seed: int | None = None
    current: float = 0.0
    used: int = 0
    last_failure: float | None = None
    _random: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        check_seconds("exponential-delay restart: initial", self.initial)
        check_seconds("exponential-delay restart: max_delay", self.max_delay)
        check_seconds("exponential-delay restart: reset_threshold", self.reset_threshold)
        if self.multiplier < 1:
            raise ConfigError(
                f"exponential-delay restart: multiplier must be >= 1, got {self.multiplier!r}"
            )
        if not 0 <= self.jitter <= 1:
            raise ConfigError(
                f"exponential-delay restart: jitter must be within [0, 1], got {self.jitter!r}"
            )
        if self.max_delay < self.initial:
            raise ConfigError("exponential-delay restart: max_delay must be >= initial")
        if self.seed is not None:
            self._random.seed(self.seed)

    def on_failure(self, now: float) -> RestartDecision:
        """Restart after the next delay of the sequence."""
        if self.last_failure is not None and now - self.last_failure >= self.reset_threshold:
            self.current = 0.0
            self.used = 0
        self.last_failure = now
        if self.used >= self.attempts:
            return RestartDecision(
                False,
                reason=f"the exponential-delay restart strategy used all "
                f"{self.attempts} attempts since its last reset",
            )
        self.used += 1
        base = (
            self.initial
            if self.current == 0
            else min(self.current * self.multiplier, self.max_delay)
        )
        self.current = base
        spread = base * self.jitter
        delay = base + self._random.uniform(-spread, spread) if spread else base
        return RestartDecision(True, max(0.0, min(delay, self.max_delay)))

    def describe(self) -> str:
        """``exponential-delay(...)``."""
        return (
            f"exponential-delay(initial={self.initial:g}s, max={self.max_delay:g}s, "
            f"multiplier={self.multiplier:g}, reset={self.reset_threshold:g}s, "
            f"jitter={self.jitter:g})"
        )


@dataclass(slots=True)
class FailureRateRestart:
    """Restart unless more than ``max_failures`` happened within ``interval`` seconds."""

    max_failures: int = 1
    interval: float = 60.0
    delay: float = 1.0
    failures: deque[float] = field(default_factory=deque)

    def __post_init__(self) -> None:
        if (
            isinstance(self.max_failures, bool)
            or not isinstance(self.max_failures, int)
            or (self.max_failures < 1)
        ):
            raise ConfigError(
                f"failure-rate restart: max_failures must be an int >= 1, got {self.max_failures!r}"
            )
        check_seconds("failure-rate restart: interval", self.interval, allow_zero=False)
        check_seconds("failure-rate restart: delay", self.delay)

    def on_failure(self, now: float) -> RestartDecision:
        """Restart while the failure rate stays within bounds."""
        self.failures.append(now)
        while self.failures and now - self.failures[0] > self.interval:
            self.failures.popleft()
        if len(self.failures) > self.max_failures:
            return RestartDecision(
                False,
                reason=f"more than {self.max_failures} failures within "
                f"{self.interval:g}s (failure-rate restart strategy)",
            )
        return RestartDecision(True, self.delay)

    def describe(self) -> str:
        """``failure-rate(...)``."""
        return (
            f"failure-rate(max_failures={self.max_failures}, interval={self.interval:g}s, "
            f"delay={self.delay:g}s)"
        )


def default_restart_strategy(checkpointing: bool) -> RestartStrategy:
    """Flink's default: exponential delay with checkpointing, else no restart."""
    return ExponentialDelayRestart() if checkpointing else NoRestart()
