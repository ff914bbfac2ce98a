"""Shared factories of the runtime's tests."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest


class EventLog:
    """A log that every per-subtask copy of a function object shares.

    The runtime deep-copies function objects once per subtask (as Flink does), so a
    counter kept on the object would be split over the copies. ``__deepcopy__`` returns
    the log itself, so every copy appends to the one list the test reads.
    """

    def __init__(self) -> None:
        self.items: list[Any] = []

    def __deepcopy__(self, memo: dict[int, Any]) -> EventLog:
        return self

    def append(self, item: Any) -> None:
        self.items.append(item)

    def counts(self) -> Counter[Any]:
        return Counter(self.items)


@pytest.fixture
def log() -> EventLog:
    """A fresh ``EventLog`` shared by every copy of the functions that hold it."""
    return EventLog()
