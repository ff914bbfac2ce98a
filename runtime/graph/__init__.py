"""The job graph: the user's transformations, chained into vertices joined by edges."""

from __future__ import annotations

from runtime.graph.job_graph import JobEdge, JobGraph, JobVertex, build_job_graph
from runtime.graph.transformations import NodeKind, Transformation

__all__ = ["JobEdge", "JobGraph", "JobVertex", "NodeKind", "Transformation", "build_job_graph"]
