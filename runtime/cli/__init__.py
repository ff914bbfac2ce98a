"""The ``weir`` command line.

    weir run JOB.py [ARGS...]     run a job script, serving its HTTP API
    weir list | status JOB_ID     the jobs of a ``weir run``
    weir checkpoint JOB_ID        trigger a checkpoint
    weir savepoint JOB_ID [DIR]   take a savepoint
    weir stop JOB_ID -p DIR       stop a job with a savepoint
    weir cancel JOB_ID            cancel a job
    weir checkpoints DIR          the checkpoints on disk, valid or not
    weir info PATH                what a checkpoint or savepoint holds
    weir dispose PATH             delete a savepoint
    weir advise --mtbf M ...      a checkpoint interval (Young, Daly)
    weir bench [--quick] ...      the benchmark kit (in a checkout: python -m benchmarks)
    weir version                  the installed version

The commands are in ``runtime.cli.app`` (typer); ``weir run`` in ``run`` with its HTTP
API in ``api`` (starlette) and ``server`` (uvicorn, inside the job script's event loop);
the client side in ``client`` (httpx); the offline commands in ``offline``; the interval
advice in ``advise``; tables and JSON in ``render``. ``python -m runtime.cli`` is
``weir``.
"""

from __future__ import annotations

from runtime.cli.app import app, main

__all__ = ["app", "main"]
