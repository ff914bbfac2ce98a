"""Where the HTTP API lets a savepoint be written: the allowed folders and the check.

``weir run --savepoint-dir DIR`` (repeatable) names the folders under which the job's
HTTP API writes savepoints; without it, the current folder is the only one. A request's
``target-directory`` (``POST /jobs/{id}/savepoints``, ``targetDirectory`` of
``POST /jobs/{id}/stop``) is checked by :meth:`SavepointTargets.resolve` before anything
is written: it must be an absolute path (or a local ``file://`` URI), and once symlinks
and ``..`` are resolved it must lie within one of the allowed folders. The savepoint is
then written under the *resolved* path, so the path that was checked is the one used.

The check is pure path arithmetic plus ``os.path.realpath``; the API turns its
:class:`TargetRejected` into HTTP 400 (a malformed path) or 403 (outside the folders).
It defends against a client that names a folder it should not, not against someone who
can already change the folders' symlinks between the check and the write.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

__all__ = ["SavepointTargets", "TargetRejected"]


class TargetRejected(Exception):
    """A savepoint target that the API refuses; ``status`` is the HTTP status (400, 403)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _local_path(raw: str) -> str:
    """The path of ``raw``: a path, or a ``file://`` URI without a host."""
    if "://" not in raw:
        return raw
    parts = urlsplit(raw)
    if parts.scheme != "file" or parts.netloc not in {"", "localhost"}:
        raise TargetRejected(
            400, f"target directory {raw!r} is not a local path; give an absolute path"
        )
    return unquote(parts.path)


@dataclass(frozen=True, slots=True)
class SavepointTargets:
    """The folders savepoints may be written under, and the default target.

    Attributes:
        roots: the allowed folders, absolute and with symlinks resolved.
        default: where a savepoint goes when a request names no folder (the first
            ``--savepoint-dir``), or None: then a request must name one.
    """

    roots: tuple[Path, ...]
    default: Path | None = None

    @classmethod
    def from_options(cls, folders: list[str] | None, cwd: str | None = None) -> SavepointTargets:
        """The policy for ``--savepoint-dir`` values (none: the current folder only).

        Args:
            folders: the ``--savepoint-dir`` values, relative to ``cwd``.
            cwd: the folder relative paths start from (the current one if None).
        """
        base = Path(cwd if cwd is not None else os.getcwd())
        if not folders:
            return cls((Path(os.path.realpath(base)),), None)
        roots = tuple(Path(os.path.realpath(base / folder)) for folder in folders)
        return cls(roots, roots[0])

    def resolve(self, raw: object) -> Path:
        """Check a request's target folder; return the resolved path to write under.

        Args:
            raw: the value of the request's target field (None if it had none).

        Returns:
            The target, absolute, with symlinks and ``..`` resolved.

        Raises:
            TargetRejected: 400 if it is missing (and there is no default), not a
                string, empty, relative, not local, or an existing non-folder; 403 if it
                lies outside every allowed folder.
        """
        if raw is None:
            if self.default is None:
                raise TargetRejected(
                    400,
                    "no target directory given, and the job has no default savepoint "
                    "folder (start it with `weir run --savepoint-dir DIR`)",
                )
            return self.default
        if not isinstance(raw, str) or not raw.strip():
            raise TargetRejected(400, f"target directory must be a non-empty path, got {raw!r}")
        if "\0" in raw:
            raise TargetRejected(400, "target directory contains a NUL character")
        text = _local_path(raw)
        if not os.path.isabs(text):
            raise TargetRejected(
                400, f"target directory {raw!r} is relative; give an absolute path"
            )
        resolved = Path(os.path.realpath(text))
        if not any(resolved.is_relative_to(root) for root in self.roots):
            allowed = ", ".join(str(root) for root in self.roots)
            raise TargetRejected(
                403,
                f"target directory {raw!r} (resolved: {resolved}) is outside the folders "
                f"savepoints may be written to: {allowed} (weir run --savepoint-dir)",
            )
        if resolved.exists() and not resolved.is_dir():
            raise TargetRejected(400, f"target directory {raw!r} exists and is not a folder")
        return resolved
