"""SIGKILL of the whole job process mid-commit, then restore: PostgreSQL still exactly once.

Drives ``crash_redis_pg_job.py`` (see its docstring) in its own processes: the first
run kills itself right after its first ``PREPARE TRANSACTION``, before any checkpoint
completed (so there is nothing to restore: the second run starts afresh, and must roll
back what the first left prepared); the second kills itself in the middle of its
first commit (after ``COMMIT PREPARED`` of one subtask's transaction, before the
notification finished); the third, restored from the second's checkpoint, commits
what is still prepared, skips what was committed, and reads to the end. Then the
table holds each entry once with per-key counts ``1..n``, and no prepared transaction
is left on the server. Kill points are counts, not times.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from runtime.connectors.postgres import sink_key
from runtime.testing.servers import PostgresServer, RedisServer
from tests.connectors.conftest import prepared_transactions

JOB = Path(__file__).with_name("crash_redis_pg_job.py")
REPO = Path(__file__).absolute().parents[2]
N = 4000
KEYS = 7
RUN_TIMEOUT = 120


def run(args: list[str], workdir: Path, index: int) -> tuple[int, list[dict[str, Any]], str]:
    out, err = workdir / f"run-{index}.out", workdir / f"run-{index}.err"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, str(JOB), *args], stdout=stdout, stderr=stderr, cwd=REPO
        )
        try:
            code = process.wait(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise AssertionError(
                f"run {index} did not exit in {RUN_TIMEOUT} s: {err.read_text()}"
            ) from None
    events = [json.loads(line) for line in out.read_text().splitlines() if line.endswith("}")]
    return code, events, err.read_text(errors="replace")


@pytest.mark.parametrize("mode", ["aligned", "unaligned"])
def test_sigkill_after_prepare_and_mid_commit_then_restore(
    tmp_path: Path, redis_server: RedisServer, postgres_server: PostgresServer, pg: Any, mode: str
) -> None:
    import redis

    table = f"crash_{uuid.uuid4().hex[:8]}"
    pg.execute(f"CREATE TABLE {table} (k text NOT NULL, i bigint NOT NULL, n bigint NOT NULL)")
    streams = [f"crash-{uuid.uuid4().hex[:8]}-{j}" for j in range(2)]
    with redis.Redis.from_url(redis_server.url) as client:
        pipe = client.pipeline(transaction=False)
        for i in range(N):
            pipe.xadd(streams[i % 2], {"i": i, "key": f"k{i % KEYS}"})
        pipe.execute()
    checkpoints = tmp_path / "checkpoints"
    base = [str(checkpoints), redis_server.url, postgres_server.dsn, table, *streams]
    sink_id = f"crash-{table}"
    base.append(f"--sink-id={sink_id}")
    if mode == "unaligned":
        base.append("--unaligned")

    restore: list[str] = []
    for index, point in enumerate(["prepared:1", "commit:1"]):
        code, events, err = run([*base, *restore, f"--kill-at={point}"], tmp_path, index)
        assert code == -signal.SIGKILL, (
            f"run {index} exited with {code}, not killed at {point}:\n{err}"
        )
        kill = next(e for e in events if e["event"] == "kill")
        started = next(e for e in events if e["event"] == "started")
        assert kill["point"] == point
        if point.startswith("prepared"):
            # The killed run left its transaction prepared on the server.
            assert kill["gid"] in prepared_transactions(pg)
        else:
            # Its commit went through: not prepared any more, recorded as committed.
            assert kill["gid"] not in prepared_transactions(pg)
            assert pg.execute(
                "SELECT 1 FROM weir_sink_commits WHERE transaction_id = %s", (kill["gid"],)
            ).fetchone()
        if point.startswith("commit"):
            restore = [f"--restore-from={checkpoints / started['job_id']}"]

    code, events, err = run([*base, *restore], tmp_path, 2)
    assert code == 0, err
    assert any(e["event"] == "finished" and e["status"] == "finished" for e in events), err

    written = pg.execute(f"SELECT k, i, n FROM {table}").fetchall()
    numbers = sorted(i for _, i, _ in written)
    assert numbers == list(range(N)), (
        f"not exactly once: {len(numbers) - len(set(numbers))} duplicated, "
        f"{len(set(range(N)) - set(numbers))} missing"
    )
    counts: dict[str, list[int]] = defaultdict(list)
    for k, _, n in written:
        counts[k].append(n)
    for k, ns in counts.items():
        assert sorted(ns) == list(range(1, len(ns) + 1)), k
    prefix = f"weir:{sink_key(sink_id)}:"
    assert [g for g in prepared_transactions(pg) if g.startswith(prefix)] == []
