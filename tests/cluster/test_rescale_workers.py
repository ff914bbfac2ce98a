"""Rescaling through savepoints with worker processes (``tests/e2e/test_rescaling.py``'s
jobs and oracles): stop a job half way with a savepoint, resume it at another
parallelism and another number of workers, and check placement and exactly-once."""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e_modules import load

from runtime import FileSink, SavepointFormat, StreamEnvironment

rescaling = load("test_rescaling")


def keyed_job(parallelism: int, workers: int, *, paused: bool) -> StreamEnvironment:
    env = StreamEnvironment(parallelism=parallelism, max_parallelism=128, workers=workers)
    (
        rescaling.source(env, lambda i: (rescaling.key_of(i), i), paused=paused)
        .key_by(lambda pair: pair[0])
        .process(rescaling.RunningSum(), name="sum", uid=rescaling.UIDS["sum"])
        .collect(name="out")
    )
    return env


@pytest.mark.parametrize(
    ("before", "workers_before", "after", "workers_after"),
    [(2, 2, 3, 2), (4, 2, 2, 1), (1, 1, 3, 2)],
    ids=["p2w2-p3w2", "p4w2-p2w1", "p1w1-p3w2"],
)
async def test_keyed_running_sums_survive_rescaling_across_processes(
    tmp_path: Path, before: int, workers_before: int, after: int, workers_after: int
) -> None:
    count = rescaling.COUNT
    expected = rescaling.first_part(count, before)
    env = keyed_job(before, workers_before, paused=True)
    path, first = await rescaling.stop_half_way(env, tmp_path, "sum", len(expected))
    second = await keyed_job(after, workers_after, paused=False).execute(
        "rescaled", restore_from=path
    )
    assert second.operators["sum"].parallelism == after
    one, two = first.collected["out"], second.collected["out"]
    assert sorted(i for *_, i in one) == expected
    for records, parallelism in ((one, before), (two, after)):
        misplaced = [
            (key, subtask)
            for key, subtask, *_ in records
            if subtask != rescaling.owner(key, 128, parallelism)
        ]
        assert misplaced == []
    finals = rescaling.check_running_sums(one + two)
    assert finals == {
        key: sum(i for i in range(count) if rescaling.key_of(i) == key)
        for key in {rescaling.key_of(i) for i in range(count)}
    }


def lines_job(parallelism: int, workers: int, *, paused: bool, out: Path) -> StreamEnvironment:
    env = StreamEnvironment(parallelism=parallelism, workers=workers)
    (
        rescaling.source(env, lambda i: (i % rescaling.KEYS, i), paused=paused)
        .key_by(lambda pair: pair[0])
        .process(rescaling.SumLines(), name="sum", uid=rescaling.UIDS["sum"])
        .sink_to(FileSink(out), name="files", uid="files")
    )
    return env


@pytest.mark.parametrize("drain", [False, True], ids=["no-drain", "drain"])
async def test_stop_with_savepoint_then_resume_across_processes_is_exactly_once(
    tmp_path: Path, drain: bool
) -> None:
    out = tmp_path / "out"
    expected = rescaling.first_part(rescaling.COUNT, 2)
    path, _ = await rescaling.stop_half_way(
        lines_job(2, 2, paused=True, out=out),
        tmp_path / "savepoints",
        "sum",
        len(expected),
        drain=drain,
        format=SavepointFormat.NATIVE,
    )
    committed = rescaling.read_committed(out)
    assert sorted(int(line.split()[1]) for line in committed) == expected
    second = await lines_job(3, 2, paused=False, out=out).execute("resumed", restore_from=path)
    assert second.records_in("sum") == rescaling.COUNT - len(expected)
    rescaling.check_lines(rescaling.read_committed(out))
