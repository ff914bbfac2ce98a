"""Side outputs: ``OutputTag`` names one, ``SideRecord`` carries a value to it.

Below the tasks: the operator chain (``runtime.tasks.chain_time``) routes side records to
the writers of their tag.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runtime.errors import ConfigError

__all__ = ["OutputTag", "SideRecord"]


@dataclass(frozen=True, slots=True)
class OutputTag:
    """Names a side output (``ctx.output(tag, value)``, ``stream.get_side_output(tag)``).

    Raises:
        ConfigError: ``name`` is not a non-empty str.
    """

    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"OutputTag needs a non-empty str name, got {self.name!r}")


class SideRecord:
    """A record of side output ``tag`` travelling in its operator's output list."""

    __slots__ = ("tag", "value")

    def __init__(self, tag: OutputTag, value: Any) -> None:
        self.tag = tag
        self.value = value

    def __repr__(self) -> str:
        return f"SideRecord({self.tag.name!r}, {self.value!r})"
