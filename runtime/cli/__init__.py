"""The ``weir`` command line.

    weir run JOB.py [ARGS...]   run a job script (as ``python JOB.py ARGS...`` would)
    weir version                print the installed version

A job script builds a ``StreamEnvironment`` and runs it, usually under
``if __name__ == "__main__": asyncio.run(main())``.
"""

from __future__ import annotations

import argparse
import runpy
import sys
from importlib import metadata
from pathlib import Path


def _version() -> str:
    try:
        return metadata.version("weir")
    except metadata.PackageNotFoundError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``weir`` console script; returns the exit status."""
    parser = argparse.ArgumentParser(prog="weir", description="Weir stream jobs")
    parser.add_argument("--version", action="version", version=f"weir {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a job script")
    run.add_argument("job", help="path of the job's Python file")
    run.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the job")
    commands.add_parser("version", help="print the installed version")
    options = parser.parse_args(argv)
    if options.command == "version":
        print(f"weir {_version()}")
        return 0
    path = Path(options.job)
    if not path.is_file():
        print(f"weir run: no such job file: {path}", file=sys.stderr)
        return 2
    saved = sys.argv
    sys.argv = [str(path), *options.args]
    try:
        runpy.run_path(str(path), run_name="__main__")
    finally:
        sys.argv = saved
    return 0


if __name__ == "__main__":
    sys.exit(main())
