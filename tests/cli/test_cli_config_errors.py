"""A job script's configuration errors are one ``weir: error:`` line, exit status 2.

The messages name ``weir run``'s flags, not Python keyword arguments; ``--verbose`` shows
the traceback instead. The case: restoring a checkpoint (made by hand) that holds state
for uid ``gone``, which the script's job no longer has (a renamed uid).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cli_driver import Outcome

from storage.checkpoint import METADATA_VERSION, CheckpointMetadata, encode_metadata
from storage.checkpoint.metadata import OperatorStateHandle

SCRIPT = """
import asyncio
from runtime import StreamEnvironment

env = StreamEnvironment(parallelism=1)
env.from_collection([1, 2, 3], uid="numbers").sink_to(lambda x: None, uid="drop")
result = asyncio.run(env.execute("renamed"))
print(result.status.value)
"""


def _checkpoint_with_uid(root: Path, uid: str) -> Path:
    chk = root / "old" / "chk-1"
    chk.mkdir(parents=True)
    operator = OperatorStateHandle(uid, "old name", 1, 128, [])
    metadata = CheckpointMetadata(METADATA_VERSION, "old", 1, 0.0, False, [operator])
    (chk / "_metadata").write_bytes(encode_metadata(metadata))
    return chk


def test_a_renamed_uid_is_one_line_naming_the_flag(
    weir: Callable[..., Outcome], tmp_path: Path
) -> None:
    (tmp_path / "job.py").write_text(SCRIPT)
    chk = _checkpoint_with_uid(tmp_path, "gone")
    outcome = weir("run", "--no-rest", "-s", str(chk), "job.py")
    assert outcome.returncode == 2, outcome
    assert "Traceback" not in outcome.stderr
    lines = outcome.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("weir: error: "), lines
    assert "state for uid 'gone'" in lines[0]
    assert "pass --allow-non-restored-state (-n) to skip it" in lines[0]
    assert "allow_non_restored_state=True" not in lines[0]
    assert lines[0].endswith("(--verbose: the traceback)")

    verbose = weir("run", "--no-rest", "--verbose", "-s", str(chk), "job.py")
    assert verbose.returncode == 1
    assert "Traceback" in verbose.stderr and "ConfigError" in verbose.stderr

    skipped = weir("run", "--no-rest", "-n", "-s", str(chk), "job.py")
    assert skipped.returncode == 0, skipped.stderr
    assert skipped.stdout.strip().splitlines()[-1] == "finished"
