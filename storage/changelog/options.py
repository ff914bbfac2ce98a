"""The options of the changelog state backend, validated when the job is built.

:class:`ChangelogOptions` is what ``StreamEnvironment(changelog=...)`` holds (``True``
means the defaults). The runtime turns the ``ValueError`` of :meth:`validate` into a
``ConfigError``; the message names the option at fault.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

__all__ = ["ChangelogOptions"]

_DEFAULT_FILE_SIZE: Final = 4 << 20


def _seconds(option: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"changelog.{option} must be a number of seconds, got {value!r}")
    if value <= 0:
        raise ValueError(f"changelog.{option} must be > 0 seconds, got {value!r}")


def _bytes(option: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"changelog.{option} must be an int >= 1 (bytes), got {value!r}")


@dataclass(frozen=True, slots=True)
class ChangelogOptions:
    """How the changelog of a keyed state backend is uploaded and materialized.

    Attributes:
        upload_interval: Seconds after its first change that a changelog file is
            uploaded at the latest (Flink's ``dstl.dfs.batch.persist-delay``: 10 ms there;
            longer here, as each upload is one worker-thread hop).
        file_size: Bytes of changes after which a changelog file is uploaded at once.
        materialization_interval: Seconds between two materializations (a full
            snapshot of the wrapped backend in the background), as Flink's
            ``state.backend.changelog.periodic-materialize.interval`` (10 min).
        materialization_size: Bytes of changelog since the last materialization after
            which the next one starts, whatever the interval.
    """

    upload_interval: float = 0.5
    file_size: int = _DEFAULT_FILE_SIZE
    materialization_interval: float = 600.0
    materialization_size: int = 64 << 20

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid option."""
        _seconds("upload_interval", self.upload_interval)
        _bytes("file_size", self.file_size)
        _seconds("materialization_interval", self.materialization_interval)
        _bytes("materialization_size", self.materialization_size)
