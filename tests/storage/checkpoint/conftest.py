"""Shared machinery of the checkpoint-storage tests.

Every async test here runs under a deadline (``anyio.fail_after`` inside the test's own
task, as in ``tests/actors``), so a hang fails instead of stalling CI, and must leave no
task behind. The factories build small but complete checkpoint metadata.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable, Coroutine, Generator
from typing import Any

import anyio
import pytest

from storage.checkpoint import (
    METADATA_VERSION,
    CheckpointMetadata,
    FileCheckpointStorage,
    MemoryCheckpointStorage,
    OperatorStateHandle,
    StateHandle,
    SubtaskStateHandle,
)

DEADLINE_SECONDS = 5.0
JOB_ID = "job-1"

AsyncTest = Callable[..., Coroutine[Any, Any, Any]]


def _under_deadline(test: AsyncTest) -> AsyncTest:
    @functools.wraps(test)
    async def run_under_deadline(*args: Any, **kwargs: Any) -> Any:
        with anyio.fail_after(DEADLINE_SECONDS):
            result = await test(*args, **kwargs)
        leftover = asyncio.all_tasks() - {asyncio.current_task()}
        assert not leftover, f"the test left tasks behind: {leftover!r}"
        return result

    return run_under_deadline


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    if not (isinstance(item, pytest.Function) and inspect.iscoroutinefunction(item.obj)):
        return (yield)
    original = item.obj
    item.obj = _under_deadline(original)
    try:
        return (yield)
    finally:
        item.obj = original


MakeMetadata = Callable[..., CheckpointMetadata]


def build_metadata(
    checkpoint_id: int = 3,
    handles: list[StateHandle | None] | None = None,
    *,
    job_id: str = JOB_ID,
    is_savepoint: bool = False,
) -> CheckpointMetadata:
    """Metadata of one keyed operator ``count`` with one subtask per handle."""
    if handles is None:
        handles = [StateHandle(path="count-0", size=3, checksum="0000abcd"), None]
    subtasks = [
        SubtaskStateHandle(
            subtask_index=index,
            handle=handle,
            state_size=handle.size if handle else 0,
            in_flight_bytes=0,
            key_group_start=index * 64,
            key_group_end=index * 64 + 63,
        )
        for index, handle in enumerate(handles)
    ]
    return CheckpointMetadata(
        version=METADATA_VERSION,
        job_id=job_id,
        checkpoint_id=checkpoint_id,
        timestamp=1_700_000_000.25,
        is_savepoint=is_savepoint,
        operators=[
            OperatorStateHandle(
                uid="count",
                name="Count",
                parallelism=len(handles),
                max_parallelism=128,
                subtasks=subtasks,
            )
        ],
        properties={"mode": "exactly_once"},
    )


@pytest.fixture
def make_metadata() -> MakeMetadata:
    """The :func:`build_metadata` factory."""
    return build_metadata


@pytest.fixture
def file_storage(tmp_path: Any) -> FileCheckpointStorage:
    """A file storage under ``tmp_path/checkpoints`` (not yet initialized)."""
    return FileCheckpointStorage(tmp_path / "checkpoints", JOB_ID)


@pytest.fixture
def memory_storage() -> MemoryCheckpointStorage:
    """A memory storage for :data:`JOB_ID`."""
    return MemoryCheckpointStorage(JOB_ID)
