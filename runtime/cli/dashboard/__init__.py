"""The web dashboard's files: one HTML page, a script and a style sheet, no build step.

``GET /`` of the HTTP API (:mod:`runtime.cli.api`) answers ``index.html``, and
``GET /dashboard/<file>`` the other files of this folder. The page polls the API's JSON
(``/jobs``, ``/jobs/{id}``, ``/jobs/{id}/checkpoints``, ``/jobs/{id}/exceptions``) every
``refresh-interval`` of ``/config`` and draws the job graph, the checkpoint tab and the
failures; its buttons trigger a checkpoint, a savepoint or stop the job, after asking.
It sends its requests from the API's own origin as JSON, so :mod:`runtime.cli.guard`
lets them through. The files ship in the wheel (``package-data`` in ``pyproject.toml``).
"""

from __future__ import annotations

from functools import cache
from importlib import resources

__all__ = ["ASSETS", "dashboard_asset"]

ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
"""The files served, with their media types (nothing else of this folder is)."""


@cache
def dashboard_asset(name: str) -> tuple[bytes, str] | None:
    """The bytes and media type of the dashboard file ``name``, None if there is none."""
    media_type = ASSETS.get(name)
    if media_type is None:
        return None
    return resources.files(__name__).joinpath(name).read_bytes(), media_type
