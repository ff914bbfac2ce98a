"""Reading a savepoint's state as Python objects: Flink's ``SavepointReader``, in Python.

A person or a script opens a savepoint (or a retained checkpoint) with
:func:`load_savepoint` and reads, per operator ``uid``, its keyed state
(``{key: value}`` per state name), its operator list state (the elements of every
subtask, in subtask order) and a source's splits, with no job, no event loop and no
user code. It wraps :func:`storage.checkpoint.read_checkpoint`, which verifies every
file and decodes without pickle unless asked (``allow_pickle=True``, for native
savepoints you trust).

Values come back as the untyped decoder sees them: values of a state that declared a
msgspec type come back as plain msgpack values (a ``msgspec.Struct`` as a dict, a tuple
as a list); pass ``type=`` to :meth:`OperatorStateReader.keyed_state` to convert them
back. Source splits that are ``msgspec.Struct`` s come back as
``{"type": "module:QualName", **fields}``, without importing their type; the
:class:`~storage.processor.SavepointWriter` takes them back as they are.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import msgspec

from storage.checkpoint.metadata import CheckpointMetadata
from storage.checkpoint.reader import CheckpointContents, OperatorContents, read_checkpoint
from storage.descriptors import StateKind
from storage.errors import SerializationError, StateError
from storage.operator_state import DistributionMode, OperatorStateSnapshot
from storage.processor.frames import read_frames

__all__ = ["OperatorStateReader", "SavepointReader", "load_savepoint"]

_operator_state_decoder: Final = msgspec.msgpack.Decoder(OperatorStateSnapshot)


def _convert(value: Any, tp: Any, what: str) -> Any:
    try:
        return msgspec.convert(value, tp)
    except msgspec.ValidationError as error:
        raise SerializationError(f"{what} is not a {tp!r}: {error}") from error


@dataclass(frozen=True, slots=True)
class OperatorStateReader:
    """The state of one operator of a savepoint, decoded.

    Attributes:
        contents: What every subtask holds, as the checkpoint reader decoded it.
        savepoint: The savepoint it belongs to (for distribution modes and messages).
    """

    contents: OperatorContents
    savepoint: SavepointReader = field(repr=False)

    @property
    def uid(self) -> str:
        """The operator's uid."""
        return self.contents.uid

    @property
    def name(self) -> str:
        """The operator's name."""
        return self.contents.name

    @property
    def parallelism(self) -> int:
        """Its parallelism when the savepoint was taken."""
        return self.contents.parallelism

    @property
    def max_parallelism(self) -> int:
        """Its max parallelism (number of key groups)."""
        return self.contents.max_parallelism

    @property
    def keyed_state_names(self) -> list[str]:
        """The names of its keyed states that hold at least one key, sorted."""
        return sorted({n for s in self.contents.subtasks.values() for n in s.keyed})

    def state_kind(self, name: str) -> StateKind:
        """The kind (value, list, map, reducing) of keyed state ``name``.

        Raises:
            StateError: No key holds state ``name``.
        """
        for subtask in self.contents.subtasks.values():
            if name in subtask.state_kinds:
                return subtask.state_kinds[name]
        raise StateError(
            f"operator {self.uid!r} of savepoint {self.savepoint.path} has no keyed state "
            f"{name!r}; it has {self.keyed_state_names}"
        )

    def keyed_state(self, name: str, *, type: Any = None) -> dict[Any, Any]:
        """Keyed state ``name``: ``{key: stored value}`` over every subtask.

        A value state gives its value, a list state its list, a map state its dict, a
        reducing state its reduced value. A state no key holds (or no such state: a
        savepoint does not record empty states) gives ``{}``.

        Args:
            name: The state's name.
            type: Convert each stored value to this type with ``msgspec.convert`` (for
                declared types: a Struct, a tuple, ``list[T]`` for a list state...).

        Raises:
            SerializationError: A value that does not convert to ``type``.
        """
        merged = self.contents.keyed_state(name)
        if type is None:
            return merged
        what = f"keyed state {name!r} of operator {self.uid!r}"
        return {key: _convert(v, type, f"{what}, key {key!r},") for key, v in merged.items()}

    @property
    def operator_state_names(self) -> list[str]:
        """The names of its operator list states (split and union), sorted."""
        return sorted({n for s in self.contents.subtasks.values() for n in s.operator})

    def operator_state(self, name: str, *, type: Any = None) -> list[Any]:
        """Operator list state ``name``: every subtask's elements, in subtask order.

        That is what a restore deals out: split list state is cut into parts, union
        list state is given whole to every subtask.

        Args:
            name: The state's name.
            type: Convert each element with ``msgspec.convert`` (for declared types).

        Raises:
            StateError: The operator has no operator state ``name``.
            SerializationError: An element that does not convert to ``type``.
        """
        return [e for part in self.operator_state_by_subtask(name, type=type) for e in part]

    def operator_state_by_subtask(self, name: str, *, type: Any = None) -> list[list[Any]]:
        """Operator list state ``name`` as each subtask wrote it, in subtask order.

        Raises:
            StateError: The operator has no operator state ``name``.
            SerializationError: An element that does not convert to ``type``.
        """
        if name not in self.operator_state_names:
            raise StateError(
                f"operator {self.uid!r} of savepoint {self.savepoint.path} has no operator "
                f"list state {name!r}; it has {self.operator_state_names}"
            )
        what = f"operator list state {name!r} of operator {self.uid!r}"
        parts = []
        for index in sorted(self.contents.subtasks):
            elements = self.contents.subtasks[index].operator.get(name, [])
            if type is not None:
                elements = [_convert(e, type, f"an element of {what}") for e in elements]
            parts.append(list(elements))
        return parts

    def distribution(self, name: str) -> DistributionMode:
        """Whether operator list state ``name`` is split or union list state.

        Reads the operator's state frames again (the first call for a savepoint).

        Raises:
            StateError: The operator has no operator state ``name``.
        """
        modes = self.savepoint.distribution_modes(self.uid)
        if name not in modes:
            raise StateError(
                f"operator {self.uid!r} of savepoint {self.savepoint.path} has no operator "
                f"list state {name!r}; it has {sorted(modes)}"
            )
        return modes[name]

    def splits(self) -> list[Any] | None:
        """A source's splits with their positions, every subtask's in subtask order.

        Splits that are ``msgspec.Struct`` s come back as ``{"type": "module:QualName",
        **fields}``; None if the operator stored no splits (it is not a source).
        """
        found = [s.splits for _, s in sorted(self.contents.subtasks.items())]
        if all(splits is None for splits in found):
            return None
        return [split for splits in found for split in splits or []]


@dataclass(slots=True)
class SavepointReader:
    """A savepoint (or retained checkpoint), verified and decoded.

    Made by :func:`load_savepoint`. ``reader[uid]`` (or ``reader.operator(uid)``) is an
    operator's :class:`OperatorStateReader`.

    Attributes:
        contents: What the checkpoint reader decoded.
    """

    contents: CheckpointContents
    _modes: dict[str, dict[str, DistributionMode]] | None = field(default=None, repr=False)

    @property
    def path(self) -> Path:
        """The savepoint's folder."""
        return self.contents.path

    @property
    def metadata(self) -> CheckpointMetadata:
        """Its verified metadata."""
        return self.contents.metadata

    @property
    def checkpoint_id(self) -> int:
        """The id of the checkpoint it was taken as."""
        return self.contents.checkpoint_id

    @property
    def max_parallelism(self) -> int | None:
        """The max parallelism of its operators (None if it has none)."""
        values = {op.max_parallelism for op in self.contents.operators.values()}
        return max(values) if values else None

    @property
    def uids(self) -> list[str]:
        """The uids of its operators, in metadata order."""
        return list(self.contents.operators)

    def __contains__(self, uid: object) -> bool:
        return uid in self.contents.operators

    def __iter__(self) -> Iterator[OperatorStateReader]:
        return (self.operator(uid) for uid in self.contents.operators)

    def __getitem__(self, uid: str) -> OperatorStateReader:
        return self.operator(uid)

    def operator(self, uid: str) -> OperatorStateReader:
        """The state of operator ``uid``.

        Raises:
            StateError: The savepoint has no operator ``uid``; the message lists its uids.
        """
        contents = self.contents.operators.get(uid)
        if contents is None:
            raise StateError(
                f"savepoint {self.path} has no operator with uid {uid!r}; its operators are "
                f"{self.uids}"
            )
        return OperatorStateReader(contents, self)

    def keyed_state(self, uid: str, name: str, *, type: Any = None) -> dict[Any, Any]:
        """``reader[uid].keyed_state(name, type=type)``."""
        return self.operator(uid).keyed_state(name, type=type)

    def operator_state(self, uid: str, name: str, *, type: Any = None) -> list[Any]:
        """``reader[uid].operator_state(name, type=type)``."""
        return self.operator(uid).operator_state(name, type=type)

    def splits(self, uid: str) -> list[Any] | None:
        """``reader[uid].splits()``."""
        return self.operator(uid).splits()

    def distribution_modes(self, uid: str) -> dict[str, DistributionMode]:
        """The distribution mode of each operator list state of ``uid``. Blocks on I/O."""
        if self._modes is None:
            modes: dict[str, dict[str, DistributionMode]] = {}
            for op_uid, operator in read_frames(self.path).operators.items():
                found = modes.setdefault(op_uid, {})
                for frames in operator.frames.values():
                    for frame in frames:
                        if frame.kind == "operator":
                            snapshot = _operator_state_decoder.decode(frame.data)
                            for name, entry in snapshot.states.items():
                                found.setdefault(name, entry.mode)
            self._modes = modes
        return self._modes.get(uid, {})


def load_savepoint(path: str | os.PathLike[str], *, allow_pickle: bool = False) -> SavepointReader:
    """Open a savepoint (or a retained checkpoint) for reading. Blocks on file I/O.

    Call it from a worker thread (``anyio.to_thread.run_sync``) when an event loop runs.

    Args:
        path: The savepoint's folder, its ``_metadata`` file, or either as a
            ``file://`` URI; or a ``chk-<n>`` folder.
        allow_pickle: Whether values written with pickle (native savepoints) may be
            unpickled. Unpickling runs code the file names: only for files you trust.

    Returns:
        The reader.

    Raises:
        CheckpointNotFoundError: No savepoint there, or a missing state file.
        CorruptCheckpointError: A file that fails to verify or decode; names it.
        PickleForbiddenError: A value needs pickle and ``allow_pickle`` is False; names
            the state, the operator, the subtask and the file.
    """
    return SavepointReader(read_checkpoint(path, allow_pickle=allow_pickle))
