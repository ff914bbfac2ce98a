"""Event time: watermarks, per-split watermarks, the watermark valve, timers and tags.

The operators of event time (timestamp assignment, timers) are tasks:
``runtime.tasks.time_operators``.
"""

from runtime.time.side_output import OutputTag
from runtime.time.split_watermarks import SplitWatermarkGenerator, WatermarkOutputMultiplexer
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
    "SplitWatermarkGenerator",
    "Watermark",
    "WatermarkGenerator",
    "WatermarkOutputMultiplexer",
    "WatermarkStatus",
    "WatermarkStrategy",
]
