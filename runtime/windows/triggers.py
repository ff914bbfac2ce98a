"""Triggers: when a window fires (Flink's ``Trigger``), as a closed set of options.

``EventTimeTrigger`` (the default of event-time assigners: the watermark reaches the
window's end), ``ProcessingTimeTrigger`` (the default of processing-time assigners),
``CountTrigger.of(n)`` (every ``n`` records of the window; the window's time no longer
fires it, and its state is dropped at ``end + allowed_lateness``) and
``PurgingTrigger.of(trigger)`` (the window's contents are cleared after each firing).
``GlobalWindows`` (one window per key, forever) need a count trigger:
``key_by(...).count_window(n)`` is ``window(GlobalWindows.create())`` with
``PurgingTrigger.of(CountTrigger.of(n))``, as in Flink. Custom triggers are not
supported: the window operator (``runtime.windows.operator``) implements these.
"""

from __future__ import annotations

from dataclasses import dataclass

from runtime.errors import ConfigError

__all__ = ["CountTrigger", "EventTimeTrigger", "ProcessingTimeTrigger", "PurgingTrigger", "Trigger"]


class Trigger:
    """Base of the triggers."""


@dataclass(frozen=True, slots=True)
class EventTimeTrigger(Trigger):
    """Fire when the watermark reaches the window's end."""

    @staticmethod
    def create() -> EventTimeTrigger:
        """The trigger."""
        return EventTimeTrigger()


@dataclass(frozen=True, slots=True)
class ProcessingTimeTrigger(Trigger):
    """Fire when the processing clock reaches the window's end."""

    @staticmethod
    def create() -> ProcessingTimeTrigger:
        """The trigger."""
        return ProcessingTimeTrigger()


@dataclass(frozen=True, slots=True)
class CountTrigger(Trigger):
    """Fire every ``count`` records of a window."""

    count: int

    @staticmethod
    def of(count: int) -> CountTrigger:
        """Fire every ``count`` records.

        Raises:
            ConfigError: ``count`` is not an int >= 1.
        """
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ConfigError(f"CountTrigger.of: count must be an int >= 1, got {count!r}")
        return CountTrigger(count)


@dataclass(frozen=True, slots=True)
class PurgingTrigger(Trigger):
    """``inner``, and the window's contents cleared after each firing."""

    inner: Trigger

    @staticmethod
    def of(inner: Trigger) -> PurgingTrigger:
        """Purge after each firing of ``inner``.

        Raises:
            ConfigError: ``inner`` is not a (non-purging) trigger.
        """
        if not isinstance(inner, Trigger) or isinstance(inner, PurgingTrigger):
            raise ConfigError(
                f"PurgingTrigger.of: expected a trigger such as CountTrigger.of(10), got {inner!r}"
            )
        return PurgingTrigger(inner)


def resolve(trigger: Trigger | None, event_time: bool, label: str) -> tuple[int | None, bool]:
    """``(count, purge)`` for the window operator; None count: fire on time.

    Raises:
        ConfigError: not a trigger, or a time trigger of the other time domain.
    """
    if trigger is None:
        return None, False
    if not isinstance(trigger, Trigger):
        raise ConfigError(f"{label}: expected a Trigger, got {type(trigger).__name__}")
    purge = isinstance(trigger, PurgingTrigger)
    inner = trigger.inner if isinstance(trigger, PurgingTrigger) else trigger
    if isinstance(inner, CountTrigger):
        return inner.count, purge
    if isinstance(inner, EventTimeTrigger) and not event_time:
        raise ConfigError(
            f"{label}: EventTimeTrigger on processing-time windows; use ProcessingTimeTrigger"
        )
    if isinstance(inner, ProcessingTimeTrigger) and event_time:
        raise ConfigError(
            f"{label}: ProcessingTimeTrigger on event-time windows; use EventTimeTrigger"
        )
    return None, purge
