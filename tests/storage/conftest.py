"""Shared factories of the storage tests."""

from __future__ import annotations

import sys
from pathlib import Path

# Same as tests/actors/conftest.py: make the repository importable without installing it.
_REPO_ROOT = str(Path(__file__).resolve().parents[2])
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

import pytest  # noqa: E402

from storage import HeapKeyedStateBackend, KeyGroupRange  # noqa: E402

MAX_PARALLELISM = 128


@pytest.fixture
def backend() -> HeapKeyedStateBackend:
    """A heap backend owning every key group."""
    return HeapKeyedStateBackend(MAX_PARALLELISM, KeyGroupRange.of(MAX_PARALLELISM))
