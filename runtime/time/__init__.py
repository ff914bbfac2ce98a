"""Event time: watermarks, the watermark valve, timers and side-output tags.

The operators of event time (timestamp assignment, timers) are tasks:
``runtime.tasks.time_operators``.
"""

from runtime.time.side_output import OutputTag
from runtime.time.watermarks import (
    MAX_WATERMARK,
    MIN_WATERMARK,
    Watermark,
    WatermarkGenerator,
    WatermarkStatus,
    WatermarkStrategy,
)

__all__ = [
    "MAX_WATERMARK",
    "MIN_WATERMARK",
    "OutputTag",
    "Watermark",
    "WatermarkGenerator",
    "WatermarkStatus",
    "WatermarkStrategy",
]
