"""State descriptors: the name, kind and value type by which an operator declares state.

A user function creates a descriptor and asks a state backend for the state it names
(``backend.get_state(ValueStateDescriptor("count", default=0, type=int))``). The name is
the state's identity in checkpoints and savepoints; the kind (value, list, map, reducing)
fixes its operations; the optional types choose the serializer (msgspec when given, else
the untyped serializer that may need pickle, see :mod:`storage.format.serializers`).
Descriptors are immutable and compare by value.
"""

from __future__ import annotations

import builtins
import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

__all__ = [
    "ListStateDescriptor",
    "MapStateDescriptor",
    "ReducingStateDescriptor",
    "StateDescriptor",
    "StateKind",
    "ValueStateDescriptor",
]


class StateKind(enum.StrEnum):
    """The kinds of state; the value is how checkpoints record the kind."""

    VALUE = "value"
    LIST = "list"
    MAP = "map"
    REDUCING = "reducing"


@dataclass(frozen=True, slots=True)
class StateDescriptor:
    """Base of all state descriptors.

    Attributes:
        name: The state's name, unique within its operator.
        kind: The kind of state the descriptor declares (a class attribute).

    Raises:
        ValueError: If ``name`` is not a non-empty str.
    """

    name: str
    kind: ClassVar[StateKind]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(
                f"{type(self).__name__} needs a non-empty str name, got {self.name!r}; "
                "name the state, e.g. ValueStateDescriptor('count')"
            )


@dataclass(frozen=True, slots=True)
class ValueStateDescriptor(StateDescriptor):
    """Declares a :class:`~storage.state.ValueState`: one value per key.

    Attributes:
        default: Returned by ``value()`` for a key without a value (copied if mutable).
        type: The value type, for msgspec serialization; None means untyped.
    """

    kind: ClassVar[StateKind] = StateKind.VALUE
    default: Any = None
    type: builtins.type[Any] | Any | None = None


@dataclass(frozen=True, slots=True)
class ListStateDescriptor(StateDescriptor):
    """Declares a :class:`~storage.state.ListState`: a list of elements per key.

    Attributes:
        type: The element type, for msgspec serialization; None means untyped.
    """

    kind: ClassVar[StateKind] = StateKind.LIST
    type: builtins.type[Any] | Any | None = None


@dataclass(frozen=True, slots=True)
class MapStateDescriptor(StateDescriptor):
    """Declares a :class:`~storage.state.MapState`: a dict per key.

    Attributes:
        key_type: The type of the map's keys; None means untyped.
        value_type: The type of the map's values; None means untyped.
    """

    kind: ClassVar[StateKind] = StateKind.MAP
    key_type: builtins.type[Any] | Any | None = None
    value_type: builtins.type[Any] | Any | None = None


@dataclass(frozen=True, slots=True)
class ReducingStateDescriptor(StateDescriptor):
    """Declares a :class:`~storage.state.ReducingState`: one value per key, folded on add.

    Attributes:
        reduce_function: Combines the current value and an added one into the new value.
        type: The value type, for msgspec serialization; None means untyped.
    """

    kind: ClassVar[StateKind] = StateKind.REDUCING
    reduce_function: Callable[[Any, Any], Any]
    type: builtins.type[Any] | Any | None = None

    def __post_init__(self) -> None:
        StateDescriptor.__post_init__(self)
        if not callable(self.reduce_function):
            raise ValueError(
                f"ReducingStateDescriptor {self.name!r} needs a callable reduce_function, "
                f"got {self.reduce_function!r}"
            )
