"""Throwaway PostgreSQL and Redis servers for tests and benchmarks of the connectors.

``PostgresServer`` runs ``initdb`` and ``pg_ctl`` (Debian's ``postgresql`` package, found
under ``/usr/lib/postgresql/<version>/bin`` or on ``PATH``) in a temporary directory and
listens on ``127.0.0.1`` on a free port, with ``max_prepared_transactions`` set so that
two-phase commit works. PostgreSQL refuses to run as root: as root, the directory is
given to the ``postgres`` system user (created by the Debian package) and the binaries
run as that user (``runuser``). ``RedisServer`` runs ``redis-server`` the same way
(without persistence). Both are context managers that stop the server and remove the
directory on exit.

A binary that cannot be found raises :class:`ServerUnavailableError`, naming what is
missing and the package that provides it: tests that need a server fail with it
rather than skip.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

__all__ = ["PostgresServer", "RedisServer", "ServerUnavailableError"]

POSTGRES_USER = "weir"
POSTGRES_PASSWORD = "weir"
POSTGRES_DATABASE = "weir"


class ServerUnavailableError(RuntimeError):
    """A server binary (or the system user it must run as) is missing."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _find_postgres_bin() -> Path:
    # Debian's own binaries first: /usr/bin/pg_ctl and friends may be wrappers.
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    if candidates:
        return Path(candidates[0]).parent
    on_path = shutil.which("initdb")
    if on_path and (Path(on_path).parent / "pg_ctl").exists():
        return Path(on_path).parent
    raise ServerUnavailableError(
        "PostgreSQL is not installed: no pg_ctl on PATH or under /usr/lib/postgresql/*/bin; "
        "install it with `apt-get update && apt-get install -y postgresql` (.ci/run does)"
    )


def _wait_port(port: int, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        if time.monotonic() > deadline:
            raise ServerUnavailableError(f"{what} did not listen on 127.0.0.1:{port}")
        time.sleep(0.05)


class PostgresServer:
    """A PostgreSQL cluster in a temporary directory, on ``127.0.0.1:<port>``.

    Args:
        max_prepared_transactions: the server setting (0 turns two-phase commit off).
        durable: keep ``fsync`` on (benchmarks); tests turn it off for speed.

    Attributes:
        port: where it listens, once started.
        dsn: a libpq connection string for the superuser ``weir`` (password ``weir``)
            and the database ``weir``.
    """

    def __init__(self, *, max_prepared_transactions: int = 64, durable: bool = False) -> None:
        self.max_prepared_transactions = max_prepared_transactions
        self.durable = durable
        self.port = 0
        self.dsn = ""
        self._dir: Path | None = None
        self._as: list[str] = []

    def _run(self, *args: str) -> None:
        result = subprocess.run(
            [*self._as, *args], capture_output=True, text=True, check=False, timeout=120
        )
        if result.returncode != 0:
            raise ServerUnavailableError(
                f"PostgreSQL: {' '.join(args[:2])} failed ({result.returncode}): "
                f"{result.stderr.strip() or result.stdout.strip()}"
            )

    def start(self) -> PostgresServer:
        """Create the cluster and start the server (blocks until it accepts connections)."""
        bin_dir = _find_postgres_bin()
        self._dir = Path(tempfile.mkdtemp(prefix="weir-pg-"))
        data = self._dir / "data"
        pwfile = self._dir / "pw"
        pwfile.write_text(POSTGRES_PASSWORD + "\n")
        if os.geteuid() == 0:
            # PostgreSQL refuses to run as root: hand the folder to the postgres user.
            try:
                account = pwd.getpwnam("postgres")
            except KeyError:
                raise ServerUnavailableError(
                    "PostgreSQL cannot run as root and there is no 'postgres' system user; "
                    "install Debian's postgresql package (it creates the user)"
                ) from None
            for path in (self._dir, pwfile):
                os.chown(path, account.pw_uid, account.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self._run(
            str(bin_dir / "initdb"),
            "-D",
            str(data),
            "-U",
            POSTGRES_USER,
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--no-sync",
        )
        self.port = free_port()
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self._dir} "
            f"-c max_prepared_transactions={self.max_prepared_transactions} "
            "-c max_connections=100 -c shared_buffers=64MB"
        )
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(self._dir / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        )
        _wait_port(self.port, "PostgreSQL")
        self._run(
            str(bin_dir / "createdb"),
            "-h",
            str(self._dir),
            "-p",
            str(self.port),
            "-U",
            POSTGRES_USER,
            POSTGRES_DATABASE,
        )
        self.dsn = (
            f"host=127.0.0.1 port={self.port} user={POSTGRES_USER} "
            f"password={POSTGRES_PASSWORD} dbname={POSTGRES_DATABASE}"
        )
        return self

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its directory."""
        if self._dir is None:
            return
        with contextlib.suppress(ServerUnavailableError, subprocess.TimeoutExpired):
            self._run(
                str(_find_postgres_bin() / "pg_ctl"),
                "-D",
                str(self._dir / "data"),
                "-m",
                "fast",
                "-w",
                "stop",
            )
        shutil.rmtree(self._dir, ignore_errors=True)
        self._dir = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class RedisServer:
    """A ``redis-server`` without persistence on ``127.0.0.1:<port>``.

    Attributes:
        port: where it listens, once started.
        url: ``redis://127.0.0.1:<port>/0``.
    """

    def __init__(self) -> None:
        self.port = 0
        self.url = ""
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        """Start the server (blocks until it accepts connections)."""
        binary = shutil.which("redis-server") or (
            "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
        )
        if binary is None:
            raise ServerUnavailableError(
                "Redis is not installed: no redis-server on PATH; install it with "
                "`apt-get update && apt-get install -y redis-server` (.ci/run does)"
            )
        self._dir = Path(tempfile.mkdtemp(prefix="weir-redis-"))
        self.port = free_port()
        self._process = subprocess.Popen(
            [
                binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self._dir),
                "--daemonize",
                "no",
                "--logfile",
                str(self._dir / "redis.log"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_port(self.port, "Redis")
        self.url = f"redis://127.0.0.1:{self.port}/0"
        return self

    def stop(self) -> None:
        """Stop the server and remove its directory."""
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
