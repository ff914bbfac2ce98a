"""Every completed checkpoint is a consistent cut with ``workers=2`` too.

The job and the checker are ``tests/e2e/test_consistent_cut.py``'s; here the subtasks run
in two worker processes, so every shuffle channel with producer and consumer on
different workers is a network channel (credit-based, barriers overtaking on the sender
and on the receiver). The run ends once the coordinator's statistics show what the mode
must show, read in the master at each completed checkpoint's statistics (polled, with a
deadline: the job's functions run in other processes).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_modules import load

from runtime import ExternalizedCheckpointRetention, JobResult, JobStatus, StreamEnvironment

cut = load("test_consistent_cut")


def _noop(_: int) -> None:
    return None


async def run_job(mode, topology, p: int, q: int, directory: Path) -> JobResult:
    env = StreamEnvironment(
        parallelism=p,
        workers=2,
        buffer_size=cut.BUFFER_SIZE,
        channel_capacity=cut.CHANNEL_CAPACITY,
        allow_pickle=False,
    )
    env.enable_checkpointing(
        cut.INTERVAL,
        storage=f"file://{directory}",
        retention=ExternalizedCheckpointRetention.RETAIN_ON_CANCELLATION,
        retained=cut.RETAINED,
        **mode.options,
    )
    counted = (
        env.from_source(cut.SplitSource(), name=cut.SOURCE, uid=cut.SOURCE)
        .map(lambda record: record, name=cut.TAG, uid=cut.TAG)
        .key_by(lambda record: record[0])
        .process(cut.CountPerSplit(_noop), name=cut.COUNT, uid=cut.COUNT, parallelism=q)
    )
    if not topology.sink_chained:
        counted = counted.rebalance()
    counted.sink_to(cut.slow_sink, name=cut.SINK, uid=cut.SINK, parallelism=q)
    client = await env.start(f"consistent-cut-workers-{mode.name}")
    waiting = asyncio.get_running_loop().create_task(client.wait())
    deadline = asyncio.get_running_loop().time() + 40
    while not waiting.done() and not cut.enough(mode, client.checkpoint_stats()):
        if asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.wait({waiting}, timeout=0.05)  # poll the coordinator's statistics
    client.cancel()
    return await waiting


@pytest.fixture
def checkpoint_dir(tmp_path: Path) -> Iterator[Path]:
    """tmpfs if there is one (fsync is free there), else ``tmp_path``."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(dir=shm, prefix="weir-cut-workers-") as directory:
        yield Path(directory)


MODES = {mode.name: mode for mode in cut.MODES}
TOPOLOGIES = {t.name: t for t in cut.TOPOLOGIES}

DEFAULT = [("aligned", "chained"), ("unaligned", "rebalanced"), ("aligned_timeout", "chained")]
STRESS = [(m, t) for m in MODES for t in TOPOLOGIES if (m, t) not in DEFAULT]


async def _check(mode_name: str, topology_name: str, directory: Path) -> None:
    mode = MODES[mode_name]
    result = await run_job(mode, TOPOLOGIES[topology_name], 2, 3, directory)
    assert result.status is JobStatus.CANCELED
    cut.assert_consistent_cuts(mode, result, directory)


@pytest.mark.parametrize(("mode_name", "topology_name"), DEFAULT)
async def test_consistent_cuts_across_processes(
    mode_name: str, topology_name: str, checkpoint_dir: Path
) -> None:
    await _check(mode_name, topology_name, checkpoint_dir)


@pytest.mark.stress
@pytest.mark.parametrize(("mode_name", "topology_name"), STRESS)
async def test_consistent_cuts_across_processes_stress(
    mode_name: str, topology_name: str, checkpoint_dir: Path
) -> None:
    await _check(mode_name, topology_name, checkpoint_dir)
