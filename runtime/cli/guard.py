"""``RequestGuard``: which HTTP requests the job API answers at all.

An ASGI middleware in front of :func:`runtime.cli.api.create_app`. The API changes
things (it cancels and stops jobs, writes savepoints), and the browser of whoever runs
``weir run`` can reach a loopback port too: a web page could send it a cross-origin
``POST`` (a "simple" request needs no preflight) or, by DNS rebinding, make its own name
resolve to 127.0.0.1 and read the answers. So, before any handler runs:

1. ``Host`` must name the address the API listens on, with its port: for a loopback
   address ``127.0.0.1``, ``localhost`` and ``[::1]`` (a rebound name is refused: 421);
   for another address, that address (and any name, if it listens on all of them,
   ``0.0.0.0`` or ``::``: the token below then protects it).
2. A request that changes something (``POST``, ``PATCH``, ``PUT``, ``DELETE``) whose
   ``Origin`` is not ``http://<an allowed Host>`` is refused (403); requests without an
   ``Origin`` (not from a browser page) pass.
3. A request with a body must say ``Content-Type: application/json`` (415): a page can
   send ``text/plain`` without preflight, not JSON.
4. With a token (``weir run --rest-token`` or ``WEIR_REST_TOKEN``, required to listen on
   an address that is not loopback), every request needs ``Authorization: Bearer
   <token>`` (401; compared in constant time).

Refusals are ``{"errors": [message]}`` like every error of the API, and are logged on
the ``weir.cli`` logger.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["RequestGuard", "allowed_hosts"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

logger = logging.getLogger("weir.cli")

_CHANGING = frozenset({"POST", "PATCH", "PUT", "DELETE"})
_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def _is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts(address: str, port: int) -> frozenset[str] | None:
    """The ``Host`` values the API answers when it listens on ``address:port``.

    Returns:
        The allowed values (with the port, and without it for port 80), or None when
        it listens on every address (then any ``Host`` passes, and a token is required).
    """
    names: list[str]
    if address in ("0.0.0.0", "::", ""):
        return None
    if _is_loopback(address):
        names = list(_LOOPBACK_NAMES)
    else:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            names = [address.lower()]
        else:
            names = [f"[{ip}]" if ip.version == 6 else str(ip)]
    hosts = {f"{name}:{port}" for name in names}
    if port == 80:
        hosts.update(names)
    return frozenset(hosts)


class RequestGuard:
    """Refuses the requests the module docstring lists, before ``app`` sees them.

    Args:
        app: the API's ASGI application.
        address: the address the API listens on.
        port: the port it listens on.
        token: the bearer token every request must carry, or None.
    """

    def __init__(self, app: App, address: str, port: int, token: str | None = None) -> None:
        self.app = app
        self.hosts = allowed_hosts(address, port)
        self.origins = (
            None if self.hosts is None else frozenset(f"http://{host}" for host in self.hosts)
        )
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a refusal, or pass the request on to the application."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self.refusal(scope)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        status, message, extra = refusal
        logger.warning("refused %s %s: %s", scope.get("method"), scope.get("path"), message)
        body = json.dumps({"errors": [message]}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *extra,
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def refusal(self, scope: Scope) -> tuple[int, str, list[tuple[bytes, bytes]]] | None:
        """The status, message and extra headers of a refusal, or None to answer."""
        headers: dict[str, str] = {}
        for name, value in scope.get("headers", []):
            headers.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
        host = headers.get("host", "").lower()
        if self.hosts is not None and host not in self.hosts:
            return (
                421,
                f"the API answers requests for {', '.join(sorted(self.hosts))}, not for "
                f"host {host or '(none)'!r}; use the address `weir run` printed",
                [],
            )
        if self.token is not None:
            given = headers.get("authorization", "")
            scheme, _, credentials = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                credentials.strip().encode(), self.token.encode()
            ):
                what = "no bearer token" if not given else "a wrong bearer token"
                return (
                    401,
                    f"the request has {what}; send 'Authorization: Bearer <token>' with the "
                    "token given to `weir run --rest-token` (weir commands read it from "
                    "WEIR_REST_TOKEN)",
                    [(b"www-authenticate", b"Bearer")],
                )
        method = scope.get("method", "GET")
        origin = headers.get("origin")
        if (
            method in _CHANGING
            and origin is not None
            and (self.origins is None or origin.lower() not in self.origins)
        ):
            return (
                403,
                f"cross-origin {method} from {origin!r} refused: only requests from the "
                "API's own address, or without an Origin (not from a web page), may "
                "change jobs",
                [],
            )
        has_body = headers.get("content-length", "0") not in ("", "0") or (
            "transfer-encoding" in headers
        )
        if has_body:
            content_type = headers.get("content-type", "").split(";")[0].strip().lower()
            if content_type != "application/json":
                return (
                    415,
                    f"a request body must be sent as 'Content-Type: application/json', got "
                    f"{content_type or 'none'!r}",
                    [],
                )
        return None
