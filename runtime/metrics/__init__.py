"""Metrics of running jobs: samples of the runtime's own counters, and Prometheus export.

``sampling`` reads what the runtime already counts (records per operator, busy / idle /
backpressured time per subtask actor, queued buffers per channel) when asked, and turns
cumulative times into Flink's per-second ratios and backpressure levels; ``prometheus``
serves them, with checkpoint statistics, in Prometheus's format (``GET /metrics`` of the
``weir run`` HTTP API). Nothing is added to the record path.
"""

from __future__ import annotations

from runtime.metrics.sampling import (
    BackpressureLevel,
    LoadTracker,
    SubtaskLoad,
    SubtaskSample,
    VertexSample,
    backpressure_level,
    sample_job,
)

__all__ = [
    "BackpressureLevel",
    "LoadTracker",
    "SubtaskLoad",
    "SubtaskSample",
    "VertexSample",
    "backpressure_level",
    "sample_job",
]
