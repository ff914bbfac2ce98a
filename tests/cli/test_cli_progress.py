"""``weir run``'s live progress line: on a terminal only, never in a pipe.

The line itself is checked on the fake job of ``fake_job.py``; ``weir run`` is then run
once in a pseudo-terminal (the line is drawn, the script's output still arrives) and
once with pipes (nothing of the line: what the CLI prints elsewhere is unchanged).
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time
from pathlib import Path

from cli_driver import COMMAND_SECONDS, environment, run_weir, weir_command
from fake_job import fake_job

from runtime.cli.progress import progress_line
from runtime.metrics import LoadTracker

SCRIPT = """
import asyncio
from runtime import StreamEnvironment

async def main():
    env = StreamEnvironment(parallelism=1)
    env.enable_checkpointing(0.2)
    env.generate(lambda i: i, 300, records_per_second=1000, uid="n").sink_to(
        lambda x: None, uid="s"
    )
    result = await env.execute("progress")
    print(result.status.value, flush=True)

asyncio.run(main())
"""


def test_progress_line_names_rates_checkpoints_and_the_worst_backpressure() -> None:
    line = progress_line(fake_job(), LoadTracker(), (1234.4, 1200.0)).plain
    assert line == (
        "fake job running · sources 1,234 rec/s · sinks 1,200 rec/s · checkpoints 3 "
        "completed, 1 failed · 1 restarts · backpressure high at 'readings'"
    )
    assert "rec/s" not in progress_line(fake_job(), LoadTracker(), None).plain


def _run_in_terminal(script: Path) -> tuple[int, str]:
    controller, terminal = pty.openpty()
    env = environment()
    process = subprocess.Popen(
        weir_command("run", "--no-rest", str(script)),
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=terminal,
        env=env,
        cwd=script.parent,
    )
    os.close(terminal)
    output = b""
    deadline = time.monotonic() + COMMAND_SECONDS
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], deadline - time.monotonic())
            if not ready:
                break
            try:
                data = os.read(controller, 65536)
            except OSError:  # the terminal closed: the process ended
                break
            if not data:
                break
            output += data
        return process.wait(timeout=COMMAND_SECONDS), output.decode(errors="replace")
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()
            process.wait()


def test_weir_run_draws_the_line_on_a_terminal_only(tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    status, terminal = _run_in_terminal(script)
    assert status == 0, terminal
    assert "running · checkpoints 0 completed · backpressure" in terminal, terminal
    assert "finished" in terminal

    piped = run_weir("run", "--no-rest", str(script), cwd=tmp_path)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == "finished\n"
    assert "checkpoints" not in piped.stderr and "rec/s" not in piped.stderr

    off = run_weir("run", "--no-rest", "--no-progress", str(script), cwd=tmp_path)
    assert off.returncode == 0 and off.stdout == "finished\n"
