"""The client side of the HTTP API: what ``weir list``, ``savepoint``, ``stop``...  send.

One :class:`RestClient` per command, over the standard library's ``http.client`` (a
command makes one or two requests; a new connection each). Every failure becomes a
:class:`~runtime.cli.errors.CliError` that says what to do: no server at the address,
no answer in time, or the API's own ``{"errors": [...]}`` with its status. Folders are
sent as absolute paths, made so on this side, because the server runs in another
folder (it resolves symlinks itself). Bodies are sent as ``application/json``, and the
bearer token of ``WEIR_REST_TOKEN``, if set, with every request (see
:mod:`runtime.cli.guard`).
"""

from __future__ import annotations

import os
import urllib.parse
from typing import TYPE_CHECKING, Any

from runtime.cli.errors import CliError, UsageError

if TYPE_CHECKING:
    import http.client

__all__ = ["DEFAULT_ADDRESS", "ApiFailure", "RestClient"]

DEFAULT_ADDRESS = "http://127.0.0.1:8081"

_CONNECT_SECONDS = 5.0


class ApiFailure(CliError):
    """The API answered with an error status; ``status`` is it."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{message} (HTTP {status})")
        self.status = status


def _normalize(address: str) -> str:
    if "://" not in address:
        address = f"http://{address}"
    if not address.startswith(("http://", "https://")):
        raise UsageError(f"--address must be an http:// URL, got {address!r}")
    return address.rstrip("/")


def _absolute(folder: str | None) -> str | None:
    if folder is None or "://" in folder:
        return folder
    return os.path.abspath(folder)


class RestClient:
    """Talks to the HTTP API of ``weir run`` at ``address``.

    Args:
        address: the API's URL, e.g. ``http://127.0.0.1:8081``.
        timeout: seconds to wait for an answer (a savepoint may take long).
        token: the API's bearer token; None reads ``WEIR_REST_TOKEN`` (unset: none).
    """

    def __init__(
        self, address: str = DEFAULT_ADDRESS, timeout: float = 600.0, token: str | None = None
    ) -> None:
        self.address = _normalize(address)
        self._timeout_seconds = timeout
        token = token if token is not None else os.environ.get("WEIR_REST_TOKEN") or None
        self._headers = {} if token is None else {"Authorization": f"Bearer {token}"}

    def _connect(self) -> http.client.HTTPConnection:
        """A connection to the server, connected within ``_CONNECT_SECONDS``.

        The standard library's ``http.client``: a command makes one or two requests, and
        httpx's import alone took 117 ms of ``weir status``'s time. A plain ``http://``
        address loads no certificates. Imported here: ``weir --help`` needs none of it.
        """
        import http.client
        import ssl

        url = urllib.parse.urlsplit(self.address)
        connect = min(self._timeout_seconds, _CONNECT_SECONDS)
        connection: http.client.HTTPConnection
        if url.scheme == "https":
            connection = http.client.HTTPSConnection(
                url.hostname or "", url.port, timeout=connect, context=ssl.create_default_context()
            )
        else:
            connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=connect)
        connection.connect()
        assert connection.sock is not None
        connection.sock.settimeout(self._timeout_seconds)
        return connection

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        import http.client
        import json as jsonlib
        import socket

        prefix = urllib.parse.urlsplit(self.address).path
        target = prefix + path + (f"?{urllib.parse.urlencode(params)}" if params else "")
        headers = dict(self._headers)
        body = None
        if json is not None:
            body = jsonlib.dumps(json).encode()
            headers["Content-Type"] = "application/json"
        try:
            connection = self._connect()
        except (ConnectionError, socket.gaierror):
            raise CliError(f"no job server at {self.address}: is `weir run` running?") from None
        except TimeoutError:
            raise CliError(
                f"no job server answered at {self.address} within "
                f"{min(self._timeout_seconds, _CONNECT_SECONDS):g} s: "
                f"is `weir run` running?"
            ) from None
        except OSError as error:
            raise CliError(f"talking to {self.address} failed: {error}") from None
        try:
            connection.request(method, target, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
        except TimeoutError:
            raise CliError(
                f"the job server at {self.address} did not answer {method} {path} in time "
                f"(--timeout)"
            ) from None
        except (OSError, http.client.HTTPException) as error:
            raise CliError(f"talking to {self.address} failed: {error!r}") from None
        finally:
            connection.close()
        try:
            answer = jsonlib.loads(data)
        except ValueError:
            answer = None
        if response.status >= 400:
            errors = answer.get("errors") if isinstance(answer, dict) else None
            message = (
                "; ".join(map(str, errors))
                if errors
                else data.decode("utf-8", "replace") or response.reason
            )
            raise ApiFailure(response.status, message)
        if answer is None:
            raise CliError(f"{self.address} answered {method} {path} with something not JSON")
        return answer

    def list_jobs(self) -> list[dict[str, Any]]:
        """The jobs of the server's process."""
        jobs: list[dict[str, Any]] = self._request("GET", "/jobs")["jobs"]
        return jobs

    def job(self, job_id: str) -> dict[str, Any]:
        """One job's details."""
        details: dict[str, Any] = self._request("GET", f"/jobs/{job_id}")
        return details

    def checkpoints(self, job_id: str) -> dict[str, Any]:
        """One job's checkpoint statistics."""
        stats: dict[str, Any] = self._request("GET", f"/jobs/{job_id}/checkpoints")
        return stats

    def trigger_checkpoint(self, job_id: str) -> dict[str, Any]:
        """Take a checkpoint; return the completed operation (id and location)."""
        result: dict[str, Any] = self._request("POST", f"/jobs/{job_id}/checkpoints")
        return result["operation"]  # type: ignore[no-any-return]

    def trigger_savepoint(
        self, job_id: str, target: str | None, savepoint_format: str
    ) -> dict[str, Any]:
        """Take a savepoint under ``target`` (None: the job's default folder)."""
        body: dict[str, Any] = {"format": savepoint_format}
        if target is not None:
            body["target-directory"] = _absolute(target)
        result = self._request("POST", f"/jobs/{job_id}/savepoints", json=body)
        return result["operation"]  # type: ignore[no-any-return]

    def stop(
        self, job_id: str, target: str | None, drain: bool, savepoint_format: str
    ) -> dict[str, Any]:
        """Stop the job with a savepoint under ``target``; drain its input first if asked."""
        body: dict[str, Any] = {"drain": drain, "format": savepoint_format}
        if target is not None:
            body["targetDirectory"] = _absolute(target)
        result = self._request("POST", f"/jobs/{job_id}/stop", json=body)
        return result["operation"]  # type: ignore[no-any-return]

    def cancel(self, job_id: str) -> None:
        """Cancel the job (returns when the job was told, not when it ended)."""
        self._request("PATCH", f"/jobs/{job_id}", params={"mode": "cancel"})
