"""``weir`` itself: version, help, ``weir run``'s options and the errors of bad usage."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_driver import Outcome

from runtime.cli.targets import SavepointTargets, TargetRejected

SHOW_OVERRIDES = """
import asyncio
import sys
from runtime import StreamEnvironment
from runtime.api.overrides import OVERRIDES

env = StreamEnvironment()
env.enable_checkpointing(1.0)
print("argv", sys.argv[1:])
print("parallelism", env.parallelism)
print("storage", env.checkpoint_config.storage)
print("restore", OVERRIDES.restore_from, OVERRIDES.allow_non_restored_state)
sys.exit(int(sys.argv[-1]) if sys.argv[-1].isdigit() else 0)
"""


def test_version_and_help(weir: Callable[..., Outcome]) -> None:
    version = weir("--version")
    assert version.returncode == 0 and version.stdout.startswith("weir ")
    help_text = weir("--help")
    assert help_text.returncode == 0
    for command in ("run", "list", "savepoint", "stop", "cancel", "checkpoints", "info", "advise"):
        assert command in help_text.stdout


def test_console_script_is_weir() -> None:
    script = Path(sys.executable).parent / "weir"
    if not script.exists():
        pytest.skip("no weir console script next to this Python")
    done = subprocess.run(
        [str(script), "version"], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0 and done.stdout.startswith("weir ")


def test_run_passes_overrides_arguments_and_exit_status(
    weir: Callable[..., Outcome], tmp_path: Path
) -> None:
    (tmp_path / "show.py").write_text(SHOW_OVERRIDES)
    (tmp_path / "sp").mkdir()
    outcome = weir(
        "run", "--no-rest", "-p", "3", "--checkpoint-dir", "ck", "-s", "sp", "-n",
        "show.py", "-p", "9", "--flag", "7",
    )  # fmt: skip
    assert outcome.returncode == 7, outcome.stderr
    lines = dict(line.split(" ", 1) for line in outcome.stdout.splitlines())
    assert lines["argv"] == "['-p', '9', '--flag', '7']"  # after JOB.py: the script's
    assert lines["parallelism"] == "3"
    assert lines["storage"] == f"file://{tmp_path / 'ck'}"
    assert lines["restore"] == f"{tmp_path / 'sp'} True"


def test_run_usage_errors(weir: Callable[..., Outcome], tmp_path: Path) -> None:
    missing = weir("run", "nothing.py")
    assert missing.returncode == 2 and "no such job file: nothing.py" in missing.stderr
    (tmp_path / "show.py").write_text(SHOW_OVERRIDES)
    no_savepoint = weir("run", "-s", "gone", "show.py")
    assert (
        no_savepoint.returncode == 2 and "no savepoint or checkpoint at gone" in no_savepoint.stderr
    )
    alone = weir("run", "-n", "show.py")
    assert alone.returncode == 2 and "needs --from-savepoint" in alone.stderr


def test_run_a_failing_script(weir: Callable[..., Outcome], tmp_path: Path) -> None:
    (tmp_path / "fails.py").write_text("raise RuntimeError('boom')\n")
    outcome = weir("run", "--rest-port", "0", "fails.py")
    assert outcome.returncode == 1
    assert "RuntimeError: boom" in outcome.stderr


def test_run_on_a_busy_port_fails(weir: Callable[..., Outcome], tmp_path: Path) -> None:
    (tmp_path / "show.py").write_text(SHOW_OVERRIDES)
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        outcome = weir("run", "--rest-port", str(port), "show.py")
    assert outcome.returncode == 1
    assert f"cannot serve the HTTP API on 127.0.0.1:{port}" in outcome.stderr
    assert "--rest-port 0" in outcome.stderr


def test_client_without_a_server(weir: Callable[..., Outcome]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]  # closed below: nothing listens there
    outcome = weir("list", "--address", f"127.0.0.1:{port}")
    assert outcome.returncode == 1
    assert f"no job server at http://127.0.0.1:{port}: is `weir run` running?" in outcome.stderr
    bad = weir("list", "--address", "ftp://somewhere")
    assert bad.returncode == 2 and "--address must be an http:// URL" in bad.stderr


# -- where savepoints may go (pure) ---------------------------------------------------------


def test_targets_inside_the_allowed_folders(tmp_path: Path) -> None:
    targets = SavepointTargets.from_options(["allowed"], cwd=str(tmp_path))
    allowed = (tmp_path / "allowed").resolve()
    assert targets.default == allowed
    assert targets.resolve(None) == allowed
    assert targets.resolve(str(allowed)) == allowed
    assert targets.resolve(f"{allowed}/a/../b") == allowed / "b"
    assert targets.resolve(f"file://{allowed}/c") == allowed / "c"


@pytest.mark.parametrize(
    ("raw", "status", "message"),
    [
        ("relative", 400, "is relative"),
        ("", 400, "non-empty"),
        (["a"], 400, "non-empty"),
        ("/x\0y", 400, "NUL"),
        ("http://host/x", 400, "not a local path"),
        ("/", 403, "outside the folders"),
        ("{root}/allowed-not", 403, "outside the folders"),
        ("{root}/allowed/../elsewhere", 403, "outside the folders"),
        ("{root}/allowed/link/escaped", 403, "outside the folders"),
        ("{root}/allowed/a-file", 400, "not a folder"),
    ],
)
def test_targets_rejected(tmp_path: Path, raw: object, status: int, message: str) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "link").symlink_to(tmp_path, target_is_directory=True)
    (allowed / "a-file").write_text("")
    targets = SavepointTargets.from_options([str(allowed)])
    if isinstance(raw, str):
        raw = raw.format(root=tmp_path)
    with pytest.raises(TargetRejected, match=message) as rejected:
        targets.resolve(raw)
    assert rejected.value.status == status


def test_targets_default_to_the_current_folder_without_a_default(tmp_path: Path) -> None:
    targets = SavepointTargets.from_options([], cwd=str(tmp_path))
    assert targets.roots == (Path(os.path.realpath(tmp_path)),)
    with pytest.raises(TargetRejected, match="no target directory given") as rejected:
        targets.resolve(None)
    assert rejected.value.status == 400
