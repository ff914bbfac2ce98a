"""``ConnectorError``: a source or sink could not talk to the outside system it serves.

Raised by the connectors of this package (PostgreSQL, Redis, files) for unreachable
servers, refused credentials, a missing table or stream, a record the system rejects, a
malformed line in a file. The message names the connector, the subtask and, where there
is one, the record (or the file, line and byte offset). Raised inside a subtask, the
runtime wraps it in an ``OperatorError`` that names the operator; the checkpoint that
covered the record is not completed.
"""

from __future__ import annotations

from runtime.errors import WeirError

__all__ = ["ConnectorError", "short_repr"]


def short_repr(value: object, limit: int = 200) -> str:
    """``repr(value)``, cut to ``limit`` characters for messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ConnectorError(WeirError):
    """A connector failed; the message says which, where, and what to do.

    Attributes:
        connector: e.g. ``"PostgresSink(table='events') (subtask 1/2)"``: connectors
            running in a subtask name it here, as operators do (1-based, of the
            parallelism).
        subtask: a subtask index (0-based) to add, or None.
    """

    def __init__(self, connector: str, subtask: int | None, message: str) -> None:
        where = connector if subtask is None else f"{connector} (subtask index {subtask})"
        super().__init__(f"{where}: {message}")
        self.connector = connector
        self.subtask = subtask
