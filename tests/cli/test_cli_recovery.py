"""``weir run`` tells restore refusals and warnings in one line each, without a traceback.

The job folders are made by hand: ``chk-1`` holds valid metadata of a job without state
(so any job can restore it) and ``chk-2`` a damaged ``_metadata``, so a restore from the
folder falls back to ``chk-1`` past a checkpoint that completed. The script's sink is a
two-phase-commit sink that cannot skip its committed output, so that fallback is refused
unless ``--allow-older-than-committed`` is given.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import msgspec
from cli_driver import Outcome

from storage.checkpoint import METADATA_VERSION, CheckpointMetadata, encode_metadata
from storage.checkpoint.job_record import JobRecord, write_job_record

SCRIPT = """
import asyncio
import sys
from runtime import FileSink, StreamEnvironment

class PlainSink(FileSink):
    skips_committed_on_restore = False

env = StreamEnvironment(parallelism=1)
env.from_collection([1, 2, 3]).sink_to(PlainSink("out"), uid="files")
result = asyncio.run(env.execute("cli restore", restore_from=sys.argv[1]))
print("status", result.status.value)
"""


def job_folder(root: Path, *, broken_newest: bool = True, broken_oldest: bool = False) -> Path:
    folder = root / "checkpoints" / "old-job"
    for checkpoint_id in (1, 2):
        chk = folder / f"chk-{checkpoint_id}"
        chk.mkdir(parents=True)
        metadata = CheckpointMetadata(METADATA_VERSION, "old-job", checkpoint_id, 0.0, False, [])
        data = encode_metadata(metadata)
        broken = broken_newest if checkpoint_id == 2 else broken_oldest
        (chk / "_metadata").write_bytes(data[:12] if broken else data)
    return folder


def one_line_error(outcome: Outcome) -> str:
    assert outcome.returncode == 1, outcome
    assert "Traceback" not in outcome.stderr, outcome.stderr
    lines = [line for line in outcome.stderr.splitlines() if "weir: error:" in line]
    assert len(lines) == 1, outcome.stderr
    return lines[0]


def test_a_refused_fallback_is_one_line_naming_both_checkpoints_and_the_flag(
    weir: Callable[..., Outcome], tmp_path: Path
) -> None:
    (tmp_path / "job.py").write_text(SCRIPT)
    folder = job_folder(tmp_path)
    line = one_line_error(weir("run", "--no-rest", "job.py", str(folder)))
    assert f"refusing restoring checkpoint 1 ({folder / 'chk-1'})" in line
    assert f"checkpoint 2 ({folder / 'chk-2'}) completed after it" in line
    assert "--allow-older-than-committed" in line

    forced = weir("run", "--no-rest", "--allow-older-than-committed", "job.py", str(folder))
    assert forced.returncode == 0, forced.stderr
    assert "status finished" in forced.stdout
    assert "forced with allow_older_than_committed" in " ".join(forced.stderr.split())
    assert "RestoreWarning" not in forced.stderr  # the log line only, once


def test_only_broken_checkpoints_are_one_line_naming_every_file(
    weir: Callable[..., Outcome], tmp_path: Path
) -> None:
    (tmp_path / "job.py").write_text(SCRIPT)
    folder = job_folder(tmp_path, broken_oldest=True)
    line = one_line_error(weir("run", "--no-rest", "job.py", str(folder)))
    assert "no valid checkpoint at" in line
    assert str(folder / "chk-1" / "_metadata") in line
    assert str(folder / "chk-2" / "_metadata") in line


def test_a_finished_jobs_folder_warns_in_one_line(
    weir: Callable[..., Outcome], tmp_path: Path
) -> None:
    (tmp_path / "job.py").write_text(SCRIPT)
    folder = job_folder(tmp_path, broken_newest=False)
    record = JobRecord(job_id="old-job", status="finished", notified=2, ended_at=time.time())
    write_job_record(folder, record)
    outcome = weir("run", "--no-rest", "job.py", str(folder))
    assert outcome.returncode == 0, outcome.stderr
    text = " ".join(outcome.stderr.split())
    assert "its job old-job finished" in text, outcome.stderr
    assert "RestoreWarning" not in outcome.stderr and "warnings.warn" not in outcome.stderr
    assert msgspec.json.decode((folder / "_restored_by").read_bytes())["restores"]
