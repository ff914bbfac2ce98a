"""``CheckpointSetup``: the four ways a job can take checkpoints, as test parameters.

Each member gives the keyword arguments of ``env.enable_checkpointing`` that select it:

=====================  ===============================================================
member                 options
=====================  ===============================================================
``ALIGNED``            exactly-once, aligned barriers
``UNALIGNED``          exactly-once, unaligned from the start (``unaligned=True``)
``ALIGNED_TIMEOUT``    exactly-once, aligned, switching to unaligned after
                       ``aligned_timeout`` (``unaligned=True, aligned_timeout=0.001``)
``AT_LEAST_ONCE``      at-least-once: no alignment, records after a barrier may be in
                       the snapshot and are replayed after a restore
=====================  ===============================================================
"""

from __future__ import annotations

import enum
from typing import Any, assert_never

from runtime.checkpoint.config import CheckpointingMode

DEFAULT_ALIGNED_TIMEOUT = 0.001
"""Seconds of alignment before ``ALIGNED_TIMEOUT`` switches: short, so it does switch."""


class CheckpointSetup(enum.Enum):
    """A checkpointing mode to run a job under."""

    ALIGNED = "aligned"
    UNALIGNED = "unaligned"
    ALIGNED_TIMEOUT = "aligned_timeout"
    AT_LEAST_ONCE = "at_least_once"

    @property
    def exactly_once(self) -> bool:
        """Whether the mode gives exactly-once state."""
        return self is not CheckpointSetup.AT_LEAST_ONCE

    def options(self, aligned_timeout: float = DEFAULT_ALIGNED_TIMEOUT) -> dict[str, Any]:
        """The keyword arguments of ``env.enable_checkpointing`` for this mode."""
        match self:
            case CheckpointSetup.ALIGNED:
                return {"mode": CheckpointingMode.EXACTLY_ONCE, "unaligned": False}
            case CheckpointSetup.UNALIGNED:
                return {
                    "mode": CheckpointingMode.EXACTLY_ONCE,
                    "unaligned": True,
                    "aligned_timeout": 0.0,
                }
            case CheckpointSetup.ALIGNED_TIMEOUT:
                return {
                    "mode": CheckpointingMode.EXACTLY_ONCE,
                    "unaligned": True,
                    "aligned_timeout": aligned_timeout,
                }
            case CheckpointSetup.AT_LEAST_ONCE:
                return {"mode": CheckpointingMode.AT_LEAST_ONCE, "unaligned": False}
        assert_never(self)
