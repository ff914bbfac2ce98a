"""``weir run -p`` against a script that sets its own parallelism: the script wins, loudly.

The script's settings win over the command line's, as in Flink; ``weir run`` says so on
standard error for each job where it happens (naming the vertices and both values), and
says nothing when the script keeps ``-p``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cli_driver import Outcome

SCRIPT = """
import asyncio
from runtime import StreamEnvironment

async def main():
    env = StreamEnvironment({parallelism})
    env.from_sequence(0, 9, uid="numbers").map(lambda x: x, uid="same").sink_to(
        lambda x: None, uid="drop"
    )
    result = await env.execute("precedence")
    print(result.status.value)

asyncio.run(main())
"""


def _script(tmp_path: Path, parallelism: str) -> Path:
    path = tmp_path / "job.py"
    path.write_text(SCRIPT.format(parallelism=parallelism))
    return path


def test_script_parallelism_wins_over_p_with_a_warning(
    weir: Callable[..., Outcome], tmp_path: Path
) -> None:
    outcome = weir("run", "--no-rest", "-p", "4", str(_script(tmp_path, "parallelism=2")))
    assert outcome.returncode == 0, outcome.stderr
    assert outcome.stdout.strip() == "finished"
    warning = " ".join(outcome.stderr.split())
    assert "job 'precedence': the script sets the parallelism of" in warning
    assert "(2), which wins over -p 4" in warning


def test_no_warning_when_the_script_keeps_p(weir: Callable[..., Outcome], tmp_path: Path) -> None:
    outcome = weir("run", "--no-rest", "-p", "3", str(_script(tmp_path, "")))
    assert outcome.returncode == 0, outcome.stderr
    assert outcome.stdout.strip() == "finished"
    assert "wins over -p" not in outcome.stderr
