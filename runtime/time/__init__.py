"""Event time: watermarks, the watermark valve, timers, and the operators around them."""

from runtime.time.operators import OutputTag
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
