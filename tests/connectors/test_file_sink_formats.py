"""``FileSink`` with file formats and rolling part files (by size and by time)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from runtime import FileSink, FixedDelayRestart, StreamEnvironment
from runtime.connectors.file_formats import Csv, JsonLines
from runtime.connectors.file_sink import read_committed
from runtime.errors import ConfigError
from runtime.testing import FailingSink, FailureSchedule, InjectedFailure, Phase

N = 2000


def committed_parts(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("part-*"))


async def test_json_lines_rolled_by_size_exactly_once_after_failures(tmp_path: Path) -> None:
    out = tmp_path / "out"
    schedule = FailureSchedule(
        [
            InjectedFailure("sink", subtask=0, after_records=500),
            InjectedFailure("sink", subtask=0, phase=Phase.BEFORE_NOTIFY, checkpoint=2),
        ]
    )
    env = StreamEnvironment(parallelism=1)
    env.enable_checkpointing(0.02)
    env.set_restart_strategy(FixedDelayRestart(attempts=3, delay=0))
    sink = FileSink(out, format=JsonLines(), rolling_size=2_000)
    env.generate(lambda i: {"i": i}, N, records_per_second=20_000).sink_to(
        FailingSink(sink, schedule), uid="files"
    )
    result = await env.execute("rolled json")
    assert result.restarts == len(schedule.fired) == 2
    lines = read_committed(out)
    assert [json.loads(line)["i"] for line in lines] == list(range(N))
    parts = committed_parts(out)
    rolled = [p for p in parts if "." in p]
    assert rolled, parts  # some transactions rolled over to more than one part
    assert not list((out / ".pending").iterdir())
    assert not list((out / ".inprogress").iterdir())


async def test_csv_rolled_by_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A clock that moves 10 s per look: every write finds its part old enough to roll.
    ticks = iter(range(0, 10**9, 10))
    monkeypatch.setattr(
        "runtime.connectors.file_sink.time", SimpleNamespace(monotonic=lambda: next(ticks))
    )
    out = tmp_path / "out"
    env = StreamEnvironment(parallelism=1, buffer_size=10)
    env.from_collection([{"a": i, "b": f"x,{i}"} for i in range(30)]).sink_to(
        FileSink(out, format=Csv(header=False), rolling_interval=5.0)
    )
    await env.execute("rolled csv")
    assert read_committed(out) == [f'{i},"x,{i}"' for i in range(30)]
    assert len(committed_parts(out)) >= 3


def test_rolling_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="rolling_size must be a number > 0 or None, got 0"):
        FileSink("x", rolling_size=0)
    with pytest.raises(ConfigError, match="rolling_interval must be a number > 0"):
        FileSink("x", rolling_interval=-1.0)
