"""The API's listening socket: responses are not held back by Nagle's algorithm.

uvicorn writes a response's head and body in two writes; without TCP_NODELAY the body
waited for the client's delayed ACK (40 ms a request, found by the ``rest`` benchmark).
asyncio sets it only on sockets whose proto is IPPROTO_TCP, which ``create_server``'s
are not, so ``bind_listener`` sets it and the connections it accepts inherit it.
"""

from __future__ import annotations

import socket

from runtime.cli.server import bind_listener


def test_listener_and_accepted_connections_have_tcp_nodelay() -> None:
    listener = bind_listener("127.0.0.1", 0)
    try:
        assert listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        with socket.create_connection(listener.getsockname()[:2], timeout=10) as client:
            accepted, _ = listener.accept()
            with accepted:
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
                assert client.fileno() >= 0
    finally:
        listener.close()
