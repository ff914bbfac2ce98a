"""``weir checkpoints``, ``info``, ``dispose`` and ``advise --from`` on files a job left.

A bounded job run by ``weir run --no-rest`` leaves retained checkpoints and a savepoint
(the script takes it through its own ``JobClient``); the tests copy its job folder and
break the copies in the ways a crash or a bad disk would.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli_driver import Outcome, run_weir

BOUNDED_JOB = """
import asyncio
import sys
from runtime import ExternalizedCheckpointRetention, StreamEnvironment


async def main():
    env = StreamEnvironment(parallelism=2)
    env.enable_checkpointing(
        0.1, retention=ExternalizedCheckpointRetention.RETAIN_ON_CANCELLATION, retained=3
    )
    (
        env.generate(lambda i: (f"k{i % 5}", 1), 400, records_per_second=400, uid="readings")
        .key_by(lambda r: r[0])
        .sum(1, uid="sum")
        .sink_to(lambda value: None, uid="sink")
    )
    client = await env.start("bounded job")
    print(await client.trigger_savepoint(sys.argv[1]), flush=True)
    await client.wait()


asyncio.run(main())
"""


@dataclass
class Artifacts:
    root: Path
    job_folder: Path
    savepoint: Path


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    root = tmp_path_factory.mktemp("bounded")
    (root / "job.py").write_text(BOUNDED_JOB)
    outcome = run_weir(
        "run", "--no-rest", "--checkpoint-dir", "ck", "job.py", str(root / "sp"), cwd=root
    )
    assert outcome.returncode == 0, outcome.stderr
    assert "HTTP API" not in outcome.stderr
    (job_folder,) = (root / "ck").iterdir()
    assert len(list(job_folder.glob("chk-*"))) >= 2
    return Artifacts(root, job_folder, Path(outcome.stdout.strip().splitlines()[-1]))


@pytest.fixture
def weir_in(artifacts: Artifacts) -> Callable[..., Outcome]:
    def run(*args: str) -> Outcome:
        return run_weir(*args, cwd=artifacts.root)

    return run


def newest_checkpoints(job_folder: Path) -> list[Path]:
    return sorted(job_folder.glob("chk-*"), key=lambda p: int(p.name.removeprefix("chk-")))


def test_checkpoints_marks_corrupt_and_incomplete_ones(
    artifacts: Artifacts, weir_in: Callable[..., Outcome], tmp_path: Path
) -> None:
    broken = tmp_path / artifacts.job_folder.name
    shutil.copytree(artifacts.job_folder, broken)
    *older, newest = newest_checkpoints(broken)
    (newest / "_metadata").write_bytes(b"WEIRMETA\x00")  # torn, as a crash could leave it
    incomplete = broken / "chk-999"
    incomplete.mkdir()
    (incomplete / "_metadata.tmp").write_bytes(b"partial")

    outcome = weir_in("checkpoints", str(tmp_path), "--json")
    assert outcome.returncode == 0, outcome.stderr
    entries = {Path(e["path"]).name: e for e in outcome.json()["checkpoints"]}
    assert entries[newest.name]["status"] == "corrupt"
    assert "_metadata" in entries[newest.name]["reason"]
    assert "truncated" in entries[newest.name]["reason"]
    assert entries["chk-999"]["status"] == "incomplete"
    assert entries[older[-1].name]["latest"] and entries[older[-1].name]["valid"]
    assert sum(e["latest"] for e in entries.values()) == 1

    human = weir_in("checkpoints", str(broken))
    assert human.returncode == 0
    assert "corrupt" in human.stdout and "incomplete" in human.stdout
    assert "truncated" in human.stdout  # the reason, under the table


def test_checkpoints_verify_checks_the_state_files(
    artifacts: Artifacts, weir_in: Callable[..., Outcome], tmp_path: Path
) -> None:
    copy = tmp_path / "chk"
    shutil.copytree(newest_checkpoints(artifacts.job_folder)[-1], copy)
    state_file = max(
        (p for p in copy.iterdir() if p.name != "_metadata"), key=lambda p: p.stat().st_size
    )
    data = bytearray(state_file.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes
    state_file.write_bytes(bytes(data))

    quick = weir_in("checkpoints", str(copy), "--json").json()["checkpoints"]
    assert [e["status"] for e in quick] == ["valid"]  # sizes match
    verified = weir_in("checkpoints", str(copy), "--verify", "--json").json()["checkpoints"]
    assert [e["status"] for e in verified] == ["corrupt"]
    assert "crc32" in verified[0]["reason"] and state_file.name in verified[0]["reason"]

    info = weir_in("info", str(copy))
    assert info.returncode == 1
    assert state_file.name in info.stderr


def test_checkpoints_of_a_missing_folder_is_a_usage_error(
    weir_in: Callable[..., Outcome], tmp_path: Path
) -> None:
    outcome = weir_in("checkpoints", str(tmp_path / "nothing"))
    assert outcome.returncode == 2
    assert "no such folder" in outcome.stderr


def test_info_of_a_folder_without_checkpoints_fails(
    weir_in: Callable[..., Outcome], tmp_path: Path
) -> None:
    outcome = weir_in("info", str(tmp_path), "--json")
    assert outcome.returncode == 1
    assert "no checkpoint or savepoint at" in outcome.json()["error"]


def test_info_of_the_savepoint(artifacts: Artifacts, weir_in: Callable[..., Outcome]) -> None:
    outcome = weir_in("info", str(artifacts.savepoint), "--json")
    assert outcome.returncode == 0, outcome.stderr
    info = outcome.json()
    assert info["kind"] == "savepoint"
    assert {op["uid"] for op in info["operators"]} == {"readings", "sum", "sink"}
    assert info["size_on_disk"] >= info["state_size"] > 0


def test_dispose_of_nothing_fails(weir_in: Callable[..., Outcome], tmp_path: Path) -> None:
    outcome = weir_in("dispose", str(tmp_path / "savepoint-gone"), "--json")
    assert outcome.returncode == 1
    assert "no savepoint at" in outcome.json()["error"]


def test_advise_estimates_the_cost_from_checkpoint_files(
    artifacts: Artifacts, weir_in: Callable[..., Outcome], tmp_path: Path
) -> None:
    # File times are too coarse for these millisecond checkpoints: give each copy a
    # span of one second, from its state files' writes to its _metadata's.
    folder = tmp_path / "job"
    shutil.copytree(artifacts.job_folder, folder)
    for checkpoint in newest_checkpoints(folder):
        metadata = checkpoint / "_metadata"
        finished = metadata.stat().st_mtime
        for state_file in checkpoint.iterdir():
            if state_file != metadata:
                os.utime(state_file, (finished - 1.0, finished - 1.0))
    outcome = weir_in("advise", "--from", str(folder), "--mtbf", "6h", "--json")
    assert outcome.returncode == 0, outcome.stderr
    advice = outcome.json()
    assert advice["samples"] == len(newest_checkpoints(folder))
    assert advice["cost"] == pytest.approx(1.0, abs=0.01)
    assert advice["mtbf"] == 6 * 3600
    assert "lower bound" in advice["cost_source"]


def test_advise_without_measurable_files_says_so(
    weir_in: Callable[..., Outcome], tmp_path: Path
) -> None:
    outcome = weir_in("advise", "--from", str(tmp_path), "--mtbf", "6h")
    assert outcome.returncode == 1
    assert "give --cost or --job" in outcome.stderr
