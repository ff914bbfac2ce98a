"""``WatermarkValve``: a subtask's watermark from the watermarks of its input channels.

Flink's ``StatusWatermarkValve``, as a pure object owned by a ``StreamTask``: it takes
the ``Watermark`` and ``WatermarkStatus`` events of each input channel and returns what
the subtask emits, if anything. The subtask's watermark is the minimum over its active
channels, never goes back, and is emitted only when it advances. A channel marked idle
does not hold the others back; when every channel is idle the subtask is idle too (it
emits ``IDLE``), and the first channel to become active again makes it active. A
channel that becomes active again is aligned only once its watermark catches up with
the subtask's (its lower watermarks are ignored meanwhile), so the output never
regresses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from runtime.time.watermarks import ACTIVE, IDLE, MIN_WATERMARK, WatermarkStatus

__all__ = ["WatermarkValve"]


@dataclass(slots=True)
class _Channel:
    watermark: float = MIN_WATERMARK
    idle: bool = False
    aligned: bool = True


@dataclass(slots=True)
class WatermarkValve:
    """Per-channel watermarks and statuses; see the module docstring.

    Args:
        num_channels: the subtask's input channels.

    Attributes:
        watermark: the last watermark emitted (``MIN_WATERMARK`` at first).
        idle: whether the subtask's status is idle.
    """

    num_channels: int
    watermark: float = MIN_WATERMARK
    idle: bool = False
    _channels: list[_Channel] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._channels = [_Channel() for _ in range(self.num_channels)]

    def on_watermark(self, channel: int, timestamp: float) -> list[float | WatermarkStatus]:
        """Input ``channel`` delivered watermark ``timestamp``: what the subtask emits."""
        state = self._channels[channel]
        out: list[float | WatermarkStatus] = []
        if state.idle:
            # A watermark implies activity (Flink's sources send ACTIVE first; be lenient).
            out.extend(self.on_status(channel, ACTIVE))
        if timestamp <= state.watermark:
            return out
        state.watermark = timestamp
        if not state.aligned and timestamp >= self.watermark:
            state.aligned = True
        if state.aligned:
            out.extend(self._advance())
        return out

    def on_status(self, channel: int, status: WatermarkStatus) -> list[float | WatermarkStatus]:
        """Input ``channel`` became idle or active: what the subtask emits."""
        state = self._channels[channel]
        out: list[float | WatermarkStatus] = []
        if status.idle == state.idle:
            return out
        state.idle = status.idle
        if status.idle:
            state.aligned = False
            if all(c.idle for c in self._channels):
                # Flink: the highest watermark of the idle channels may be emitted first.
                highest = max(c.watermark for c in self._channels)
                if highest > self.watermark:
                    self.watermark = highest
                    out.append(highest)
                if not self.idle:
                    self.idle = True
                    out.append(IDLE)
            else:
                out.extend(self._advance())
            return out
        state.aligned = state.watermark >= self.watermark
        if self.idle:
            self.idle = False
            out.append(ACTIVE)
        if state.aligned:
            out.extend(self._advance())
        return out

    def _advance(self) -> list[float | WatermarkStatus]:
        aligned = [c.watermark for c in self._channels if c.aligned and not c.idle]
        if not aligned:
            return []
        low = min(aligned)
        if low > self.watermark:
            self.watermark = low
            return [low]
        return []
