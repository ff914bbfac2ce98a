"""The changelog state backend (FLIP-158): keyed state writes logged to a durable changelog.

See :mod:`storage.changelog.backend` for the design; :class:`ChangelogOptions` holds its
options. Modules: ``log`` (the in-memory changelog and its file format), ``uploader``
(files of ``shared/``), ``materializer``, ``handle`` (what ``_metadata`` stores),
``states`` (the logged state handles), ``restore``.
"""

from storage.changelog.backend import (
    ChangelogKeyedStateBackend,
    ChangelogSnapshot,
    ChangelogStorageError,
)
from storage.changelog.handle import CHANGELOG_MAGIC, KeyGroupHandle, is_changelog
from storage.changelog.options import ChangelogOptions

__all__ = [
    "CHANGELOG_MAGIC",
    "ChangelogKeyedStateBackend",
    "ChangelogOptions",
    "ChangelogSnapshot",
    "ChangelogStorageError",
    "KeyGroupHandle",
    "is_changelog",
]
