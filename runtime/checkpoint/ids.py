"""Ids of the checkpoint path: ``NewType``s so that ids do not mix across modules."""

from __future__ import annotations

from typing import NewType

CheckpointId = NewType("CheckpointId", int)
"""A checkpoint's number: 1, 2, 3... within a job; savepoints share the sequence."""

TaskId = NewType("TaskId", str)
"""A subtask: ``"<vertex id>:<subtask index>"``."""

ChannelIndex = NewType("ChannelIndex", int)
"""An input channel's index in its subtask's ``InputGate``."""


def task_id(vertex: int, subtask: int) -> TaskId:
    """The id of subtask ``subtask`` of job vertex ``vertex``."""
    return TaskId(f"{vertex}:{subtask}")
