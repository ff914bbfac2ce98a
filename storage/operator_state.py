"""Operator state: non-keyed list state of one subtask, and how it moves on rescale.

A subtask's operator (a source remembering its split offsets, a sink its pending
transactions) keeps lists in an :class:`OperatorStateBackend`. The checkpoint's
synchronous part takes :meth:`OperatorStateBackend.snapshot`, an
:class:`OperatorStateSnapshot` with the elements already encoded (operator state is small,
as in Flink). On recovery the job master collects the snapshots of all old subtasks,
:func:`redistribute` deals them out to the new subtasks, and each new subtask calls
:meth:`OperatorStateBackend.restore` before it runs. As in Flink:

* split list state (``get_list_state``) is the concatenation of all old subtasks' lists,
  cut into ``new_parallelism`` contiguous parts of sizes differing by at most one;
* union list state (``get_union_list_state``) is that concatenation, given whole to every
  new subtask.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Any, Final

import msgspec

from storage.descriptors import ListStateDescriptor
from storage.errors import PickleForbiddenError, SerializationError, StateError
from storage.format.serializers import Serializer, serializer_for
from storage.state import ListState

__all__ = [
    "OPERATOR_STATE_FORMAT_VERSION",
    "DistributionMode",
    "OperatorListState",
    "OperatorStateBackend",
    "OperatorStateEntry",
    "OperatorStateSnapshot",
    "redistribute",
]

OPERATOR_STATE_FORMAT_VERSION: Final = 1


class DistributionMode(enum.StrEnum):
    """How a list state is dealt out to subtasks on restore."""

    SPLIT = "split"
    UNION = "union"


class OperatorStateEntry(msgspec.Struct, frozen=True, array_like=True):
    """One list state in a snapshot.

    Attributes:
        mode: How it is redistributed.
        values: The elements, each encoded by the state's serializer.
    """

    mode: DistributionMode
    values: list[bytes]


class OperatorStateSnapshot(msgspec.Struct, frozen=True):
    """The operator state of one subtask at one checkpoint.

    Attributes:
        states: State name to its entry.
        version: The format version, :data:`OPERATOR_STATE_FORMAT_VERSION`.
    """

    states: dict[str, OperatorStateEntry] = msgspec.field(default_factory=dict)
    version: int = OPERATOR_STATE_FORMAT_VERSION


class OperatorListState(ListState):
    """:class:`~storage.state.ListState` of a subtask (not keyed); ``get`` returns a copy."""

    __slots__ = ("_elements", "descriptor", "mode")

    def __init__(
        self, descriptor: ListStateDescriptor, mode: DistributionMode, elements: list[Any]
    ) -> None:
        self.descriptor = descriptor
        self.mode = mode
        self._elements = elements

    def get(self) -> list[Any]:  # noqa: D102
        return list(self._elements)

    def add(self, value: Any) -> None:  # noqa: D102
        self._elements.append(value)

    def add_all(self, values: Iterable[Any]) -> None:  # noqa: D102
        self._elements.extend(values)

    def update(self, values: Iterable[Any]) -> None:  # noqa: D102
        self._elements[:] = list(values)

    def clear(self) -> None:  # noqa: D102
        self._elements.clear()


class OperatorStateBackend:
    """The operator (non-keyed) list states of one subtask.

    Used from the subtask's task only; no method blocks.

    Args:
        allow_pickle: Whether elements of undeclared types may be pickled.
    """

    __slots__ = ("_restored", "_serializers", "_states", "allow_pickle", "restored_pickle")

    def __init__(self, *, allow_pickle: bool = True) -> None:
        self.allow_pickle = allow_pickle
        # Whether restored elements may be unpickled (see ``restore``).
        self.restored_pickle = allow_pickle
        self._states: dict[str, OperatorListState] = {}
        self._serializers: dict[str, Serializer[Any]] = {}
        self._restored: dict[str, OperatorStateEntry] = {}

    def get_list_state(self, descriptor: ListStateDescriptor) -> ListState:
        """Return the split-redistributed list state ``descriptor`` names.

        Raises:
            StateError: If the name is registered, or was restored, as union state.
            SerializationError: If restored elements do not decode with the declared type.
        """
        return self._get(descriptor, DistributionMode.SPLIT)

    def get_union_list_state(self, descriptor: ListStateDescriptor) -> ListState:
        """Return the union-redistributed list state ``descriptor`` names.

        Raises:
            StateError: If the name is registered, or was restored, as split state.
            SerializationError: If restored elements do not decode with the declared type.
        """
        return self._get(descriptor, DistributionMode.UNION)

    def _get(self, descriptor: ListStateDescriptor, mode: DistributionMode) -> ListState:
        if not isinstance(descriptor, ListStateDescriptor):
            raise StateError(
                f"operator state {getattr(descriptor, 'name', descriptor)!r} needs a "
                f"ListStateDescriptor, got {type(descriptor).__name__}"
            )
        name = descriptor.name
        state = self._states.get(name)
        if state is not None:
            _check_mode(name, state.mode, mode, "registered")
            return state
        serializer = serializer_for(
            descriptor.type, self.allow_pickle, f"operator list state {name!r}"
        )
        elements: list[Any] = []
        restored = self._restored.pop(name, None)
        if restored is not None:
            _check_mode(name, restored.mode, mode, "restored")
            try:
                decode = self._restored_serializer(descriptor, serializer).decode
                elements = [decode(v) for v in restored.values]
            except SerializationError as exc:
                self._restored[name] = restored
                raise type(exc)(f"cannot restore operator list state {name!r}: {exc}") from exc
        state = OperatorListState(descriptor, mode, elements)
        self._states[name] = state
        self._serializers[name] = serializer
        return state

    @property
    def state_names(self) -> list[str]:
        """Names of registered states, then of restored states not registered yet."""
        return [*self._states, *self._restored]

    def snapshot(self, *, canonical: bool = False) -> OperatorStateSnapshot:
        """Encode every list state now (O(elements)); restored, unregistered ones carry over.

        Args:
            canonical: encode without pickle whatever ``allow_pickle`` says (canonical
                savepoints are readable without unpickling).

        Raises:
            SerializationError: If an element cannot be encoded; the message names the state.
        """
        states = dict(self._restored)
        for name, state in self._states.items():
            encode = (
                serializer_for(state.descriptor.type, False, f"operator list state {name!r}").encode
                if canonical
                else self._serializers[name].encode
            )
            try:
                values = [encode(v) for v in state._elements]
            except SerializationError as exc:
                raise type(exc)(f"cannot snapshot operator list state {name!r}: {exc}") from exc
            states[name] = OperatorStateEntry(state.mode, values)
        return OperatorStateSnapshot(states)

    def restore(self, snapshot: OperatorStateSnapshot, *, allow_pickle: bool | None = None) -> None:
        """Load a (redistributed) snapshot; call before the operator registers its states.

        States already registered get the restored elements appended.

        Args:
            snapshot: The snapshot.
            allow_pickle: Whether restored elements may be unpickled (None: as
                ``allow_pickle`` says for this backend). False for a savepoint that
                declares the canonical format: an element of an untyped state written
                with pickle is refused here, and a state declared with a type msgspec
                cannot encode is refused when it is registered.

        Raises:
            SerializationError: If the snapshot has an unknown format version.
            PickleForbiddenError: An element was pickled and ``allow_pickle`` is False.
            StateError: If a state comes back with another distribution mode.
        """
        if snapshot.version != OPERATOR_STATE_FORMAT_VERSION:
            raise SerializationError(
                f"operator state snapshot has format version {snapshot.version}, this weir "
                f"reads version {OPERATOR_STATE_FORMAT_VERSION}; restore with a matching weir"
            )
        if allow_pickle is not None:
            self.restored_pickle = allow_pickle
        if not self.restored_pickle:
            for name, entry in snapshot.states.items():
                # b"P" + pickle is the untyped envelope of a pickled element; a msgpack
                # value that starts with b"P" is the int 80, one byte long.
                if any(v[:1] == b"P" and len(v) > 1 for v in entry.values):
                    raise PickleForbiddenError(
                        f"operator list state {name!r} holds elements written with pickle, "
                        "and pickle may not be read here"
                    )
        for name, entry in snapshot.states.items():
            state = self._states.get(name)
            if state is not None:
                _check_mode(name, state.mode, entry.mode, "registered")
                decode = self._restored_serializer(state.descriptor, self._serializers[name]).decode
                state.add_all(decode(v) for v in entry.values)
                continue
            old = self._restored.get(name)
            if old is not None:
                _check_mode(name, old.mode, entry.mode, "restored")
                entry = OperatorStateEntry(entry.mode, [*old.values, *entry.values])
            self._restored[name] = entry

    def _restored_serializer(
        self, descriptor: ListStateDescriptor, serializer: Serializer[Any]
    ) -> Serializer[Any]:
        """The serializer that reads restored elements: never pickle if not allowed."""
        if self.restored_pickle or not self.allow_pickle:
            return serializer
        return serializer_for(descriptor.type, False, f"operator list state {descriptor.name!r}")


def _check_mode(name: str, have: DistributionMode, want: DistributionMode, how: str) -> None:
    if have != want:
        raise StateError(
            f"operator list state {name!r} is {how} as {have} list state and cannot be used "
            f"as {want} list state; use get_{'union_' if have is DistributionMode.UNION else ''}"
            "list_state, or give the new state another name"
        )


def redistribute(
    snapshots: list[OperatorStateSnapshot], new_parallelism: int
) -> list[OperatorStateSnapshot]:
    """Deal the operator state of the old subtasks out to ``new_parallelism`` new ones.

    Split list state: old lists concatenated in subtask order, then cut into contiguous
    parts whose sizes differ by at most one (the first parts get the extra elements).
    Union list state: the concatenation, to every new subtask. Every new snapshot names
    every state, possibly with an empty list.

    Args:
        snapshots: The old subtasks' snapshots, in subtask order.
        new_parallelism: The number of new subtasks.

    Returns:
        One snapshot per new subtask, in subtask order.

    Raises:
        ValueError: If ``new_parallelism`` is below 1.
        StateError: If old subtasks disagree on a state's distribution mode.
    """
    if new_parallelism < 1:
        raise ValueError(f"new_parallelism must be at least 1, got {new_parallelism}")
    merged: dict[str, OperatorStateEntry] = {}
    for snapshot in snapshots:
        for name, entry in snapshot.states.items():
            old = merged.get(name)
            if old is None:
                merged[name] = OperatorStateEntry(entry.mode, list(entry.values))
                continue
            if old.mode != entry.mode:
                raise StateError(
                    f"operator list state {name!r} is {old.mode} state in one subtask and "
                    f"{entry.mode} state in another; the snapshots come from different jobs"
                )
            old.values.extend(entry.values)
    result: list[dict[str, OperatorStateEntry]] = [{} for _ in range(new_parallelism)]
    for name, entry in merged.items():
        values = entry.values
        if entry.mode is DistributionMode.UNION:
            for states in result:
                states[name] = OperatorStateEntry(entry.mode, list(values))
            continue
        size, extra = divmod(len(values), new_parallelism)
        start = 0
        for index, states in enumerate(result):
            end = start + size + (1 if index < extra else 0)
            states[name] = OperatorStateEntry(entry.mode, values[start:end])
            start = end
    return [OperatorStateSnapshot(states) for states in result]
