"""``TriggerRules``: when the coordinator may trigger the next periodic checkpoint.

Pure: given the clock and the coordinator's bookkeeping, say "trigger now", or the time
to look again. Flink's rules (``CheckpointRequestDecider``): at most ``max_concurrent``
checkpoints in flight; at least ``min_pause`` seconds from the last completion to the
next trigger; one trigger per ``interval``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class TriggerRules:
    """The periodic trigger's rules and memory.

    Args:
        interval: seconds between periodic triggers.
        min_pause: seconds from a completion (or failure) to the next trigger.
        max_concurrent: checkpoints in flight at once.
    """

    interval: float
    min_pause: float = 0.0
    max_concurrent: int = 1
    next_due: float = 0.0
    last_finished: float | None = None

    def start(self, now: float) -> None:
        """The job started at ``now``: the first checkpoint is due one interval later."""
        self.next_due = now + self.interval

    def next_trigger_time(self, now: float, pending: int) -> float | None:
        """When the next periodic trigger may happen (<= now: trigger now).

        Returns:
            A time, or None while ``max_concurrent`` checkpoints are pending (a completion
            or abort will free a slot).
        """
        if pending >= self.max_concurrent:
            return None
        due = self.next_due
        if self.last_finished is not None and self.min_pause > 0:
            due = max(due, self.last_finished + self.min_pause)
        return due

    def should_trigger(self, now: float, pending: int) -> bool:
        """Whether a periodic checkpoint should be triggered at ``now``."""
        due = self.next_trigger_time(now, pending)
        return due is not None and now >= due

    def triggered(self, now: float) -> None:
        """A checkpoint was triggered at ``now``; the next is due one interval later."""
        self.next_due = now + self.interval

    def finished(self, now: float) -> None:
        """A checkpoint completed or failed at ``now`` (starts the minimum pause)."""
        self.last_finished = now
