"""Serving the HTTP API (``runtime.cli.api``) from inside a job script's event loop.

A job script runs its own ``asyncio.run(main())``, so ``weir run`` has no event loop to
start a server in before the script runs. It binds the listening socket first (so that
a busy port is an error before the job starts, and ``--rest-port 0`` can print the port
it got), registers :meth:`JobServer.on_job_registered` with
``runtime.api.overrides.JOBS``, and runs the script. When the script's first job
registers, in the script's loop, the listener starts uvicorn there as a background task
on a duplicate of the socket. Requests that arrive before that wait in the socket's
backlog.

The server stops with the loop: ``asyncio.run`` cancels the task when ``main()``
returns, and the task then closes its connections before it ends. A script that runs
several loops one after another (``asyncio.run`` twice) gets a server in each, on the
same port. ``weir run`` closes the socket when the script ends.

The server binds to 127.0.0.1 unless ``--rest-address`` says otherwise. Every request
passes :class:`~runtime.cli.guard.RequestGuard` first (its Host must be the address the
API listens on, a changing request may not come from another origin, bodies are JSON);
an address that is not loopback needs a bearer token (``--rest-token`` or
``WEIR_REST_TOKEN``), which every request must then carry.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING

import uvicorn

from runtime.cli.api import create_app
from runtime.cli.guard import RequestGuard
from runtime.cli.targets import SavepointTargets

if TYPE_CHECKING:
    from runtime.scheduler.executor import JobExecution

__all__ = ["LOOPBACK", "JobServer", "bind_listener", "is_loopback"]

LOOPBACK = "127.0.0.1"
"""The default address: the API is reachable from this machine only."""

_GRACEFUL_SHUTDOWN_SECONDS = 2


def is_loopback(address: str) -> bool:
    """Whether ``address`` (an IP address or ``localhost``) is on this machine only."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def bind_listener(address: str, port: int) -> socket.socket:
    """Bind and listen on ``address:port`` (port 0: a free one).

    Raises:
        OSError: the address cannot be bound (in use, not an address of this machine).
    """
    family = socket.AF_INET
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(address).version == 6:
            family = socket.AF_INET6
    if address == "localhost":
        address = LOOPBACK
    listener = socket.create_server((address, port), family=family)
    # uvicorn writes a response's head and body separately. asyncio sets TCP_NODELAY
    # only on sockets whose proto is IPPROTO_TCP, and create_server's (and the
    # connections accepted from it) have proto 0: Nagle then held each body back until
    # the client's delayed ACK, 40 ms per request. Accepted sockets inherit it on Linux.
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return listener


class _Uvicorn(uvicorn.Server):
    """uvicorn without its signal handlers: the job script owns Ctrl+C and SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class JobServer:
    """The HTTP API of the process's jobs, started lazily in the job script's loop.

    Args:
        listener: the bound, listening socket (``bind_listener``); this object closes it.
        targets: where savepoints may be written.
        token: the bearer token every request must carry (None: none).
    """

    def __init__(
        self, listener: socket.socket, targets: SavepointTargets, token: str | None = None
    ) -> None:
        self.listener = listener
        self.app = RequestGuard(create_app(targets), self.address, self.port, token)
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def port(self) -> int:
        """The port the API listens on."""
        port: int = self.listener.getsockname()[1]
        return port

    @property
    def address(self) -> str:
        """The address the API listens on."""
        host: str = self.listener.getsockname()[0]
        return host

    def on_job_registered(self, execution: JobExecution) -> None:
        """Start serving in the running loop, unless already serving there. Never blocks."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # registered outside a loop: nothing can serve it there
        if self._loop is loop and self._task is not None and not self._task.done():
            return
        config = uvicorn.Config(
            self.app,
            http="h11",
            ws="none",
            lifespan="off",
            log_config=None,
            log_level="warning",
            access_log=False,
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_SECONDS,
        )
        self._loop = loop
        self._task = loop.create_task(self._serve(_Uvicorn(config)), name="weir HTTP API")

    async def _serve(self, server: uvicorn.Server) -> None:
        # uvicorn closes the sockets it serves; the listener must outlive this loop.
        sockets = [self.listener.dup()]
        try:
            await server.serve(sockets=sockets)
        except asyncio.CancelledError:
            # The script's main() returned and asyncio.run cancels what is left: close
            # the connections (bounded by the graceful timeout) before the loop closes.
            if getattr(server, "servers", None):
                server.should_exit = True
                await server.shutdown(sockets=sockets)
            raise
        finally:
            for sock in sockets:
                sock.close()

    def close(self) -> None:
        """Close the listening socket (the script has ended)."""
        self.listener.close()
