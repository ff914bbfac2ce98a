"""Writing a savepoint from Python objects: Flink's ``SavepointWriter``, in Python.

A script builds a :class:`SavepointWriter` from nothing (:meth:`SavepointWriter.new`,
to bootstrap a job's state from data) or from an existing savepoint
(:meth:`SavepointWriter.from_savepoint`, to change one), says what each operator
``uid`` holds, and :meth:`~SavepointWriter.write` s a new savepoint folder that a job
restores with ``restore_from=`` like any savepoint, at any parallelism.

The folder is the runtime's format, made with the runtime's parts
(:mod:`storage.processor.encoding`): one state file per operator subtask, with one
``keyed`` frame per key-group blob (from real heap backends, one per subtask's key-group
range), an ``operator`` frame (an ``OperatorStateSnapshot``) and a ``splits`` frame; the
metadata names the files by relative paths, so the folder can be moved. It is written
through :class:`~storage.checkpoint.SavepointStorage`: state files first, fsynced, then
``_metadata`` last and atomically. The source savepoint is never modified.

Operators of the source savepoint that are not touched are written again byte for byte
(their state needs no decoding, so no pickle either). ``allow_pickle=False`` (the
default) makes what the writer encodes canonical (no pickle); ``allow_pickle=True`` lets
it unpickle state of a native savepoint it transforms, and encode values msgspec cannot
carry with pickle (the native format).

The metadata declares the format (property ``format``): ``canonical`` when nothing was
encoded with pickle allowed and every operator carried over came from a savepoint that
declared ``canonical`` itself, else ``native``. A job never unpickles state of a
savepoint that declares ``canonical`` (see ``StreamEnvironment(allow_pickle=...)``).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import anyio

from storage.checkpoint.metadata import (
    CANONICAL_FORMAT,
    FORMAT_PROPERTY,
    METADATA_VERSION,
    NATIVE_FORMAT,
    CheckpointMetadata,
    OperatorStateHandle,
    SubtaskStateHandle,
    declares_canonical,
)
from storage.checkpoint.savepoint import SavepointStorage, new_savepoint_folder
from storage.checkpoint.state_file import NO_KEY_GROUP, StateFrame, encode_frame
from storage.descriptors import ListStateDescriptor, StateDescriptor
from storage.errors import StateError
from storage.keygroups import (
    DEFAULT_MAX_PARALLELISM,
    KeyGroupRange,
    validate_max_parallelism,
    validate_parallelism,
)
from storage.processor.encoding import (
    descriptor_for_kind,
    encode_keyed,
    encode_operator_state,
    encode_splits_for,
    keyed_state_kinds,
    transform_keyed_blobs,
)
from storage.processor.frames import read_frames

__all__ = ["SavepointWriter"]

WRITER_PROPERTY: Final = "written_by"
"""The metadata property that marks a savepoint written by the state processor."""


@dataclass(slots=True)
class _Operator:
    """What the writer will write for one operator: its state, encoded.

    Attributes:
        uid: The operator's uid.
        name: Its name, for messages.
        parallelism: Its number of subtasks.
        is_keyed: Whether its subtasks get key-group ranges in the metadata.
        keyed: Per key group, its blobs.
        frames: Per subtask, its other frames (operator state, splits).
        canonical: Whether its state is known to hold no pickle (encoded without
            pickle, or carried over from a savepoint that declares the canonical format).
    """

    uid: str
    name: str
    parallelism: int
    is_keyed: bool
    keyed: dict[int, list[bytes]] = field(default_factory=dict)
    frames: dict[int, list[StateFrame]] = field(default_factory=dict)
    canonical: bool = True


def _check_uid(uid: object) -> str:
    if not isinstance(uid, str) or not uid:
        raise ValueError(f"an operator uid must be a non-empty str, got {uid!r}")
    return uid


def _file_name(position: int, uid: str, subtask: int) -> str:
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in uid)[:80]
    return f"op{position}-{safe}-{subtask}.state"


class SavepointWriter:
    """Builds a new savepoint from operator state given as Python objects.

    Not thread safe. The ``with_*`` methods and ``remove_operator`` encode at once (so
    a bad value fails there, naming the state) and return the writer, for chaining;
    :meth:`write` writes the folder and may be called more than once.

    Use :meth:`new` or :meth:`from_savepoint` rather than the constructor.

    Args:
        max_parallelism: The number of key groups of every operator.
        allow_pickle: Whether pickle may be read and written (see the module docstring).
        job_id: The job id recorded in the metadata.
        checkpoint_id: The checkpoint id recorded in the metadata (a restored job's next
            checkpoint has the next id).
    """

    def __init__(
        self,
        max_parallelism: int,
        *,
        allow_pickle: bool = False,
        job_id: str | None = None,
        checkpoint_id: int = 0,
    ) -> None:
        self.max_parallelism = validate_max_parallelism(max_parallelism)
        self.allow_pickle = allow_pickle
        self.job_id = job_id or uuid.uuid4().hex
        self.checkpoint_id = checkpoint_id
        self._operators: dict[str, _Operator] = {}

    @classmethod
    def new(
        cls, max_parallelism: int = DEFAULT_MAX_PARALLELISM, *, allow_pickle: bool = False
    ) -> SavepointWriter:
        """A writer of a savepoint with no operator yet (to bootstrap state from data).

        Args:
            max_parallelism: The max parallelism of the job that will restore it (a
                restore refuses another one).
            allow_pickle: Whether values msgspec cannot carry may be pickled.

        Raises:
            ValueError: A max parallelism out of range.
        """
        return cls(max_parallelism, allow_pickle=allow_pickle)

    @classmethod
    def from_savepoint(
        cls, path: str | os.PathLike[str], *, allow_pickle: bool = False
    ) -> SavepointWriter:
        """A writer that starts with every operator of an existing savepoint. Blocks on I/O.

        Its state is taken as written (verified, not decoded), with the savepoint's job
        id, checkpoint id and max parallelism.

        Args:
            path: The savepoint's folder (or a retained aligned checkpoint's), its
                ``_metadata`` file, or either as a ``file://`` URI.
            allow_pickle: Whether state written with pickle may be unpickled (by
                :meth:`transform_keyed`) and new values pickled.

        Raises:
            CheckpointNotFoundError: No savepoint there, or a missing state file.
            CorruptCheckpointError: A file that fails to verify or decode; names it.
            ValueError: A checkpoint with channel state (an unaligned checkpoint), or
                operators with different max parallelisms.
        """
        source = read_frames(path)
        if source.in_flight_frames:
            raise ValueError(
                f"cannot start a savepoint from {source.folder}: it holds in-flight records "
                f"(channel state of an unaligned checkpoint), which a written savepoint "
                f"cannot carry; start from a savepoint or an aligned checkpoint"
            )
        max_parallelisms = {op.handle.max_parallelism for op in source.operators.values()}
        if len(max_parallelisms) > 1:
            raise ValueError(
                f"cannot start a savepoint from {source.folder}: its operators have max "
                f"parallelisms {sorted(max_parallelisms)}; a job has one"
            )
        max_parallelism = max_parallelisms.pop() if max_parallelisms else DEFAULT_MAX_PARALLELISM
        writer = cls(
            max_parallelism,
            allow_pickle=allow_pickle,
            job_id=source.metadata.job_id,
            checkpoint_id=source.metadata.checkpoint_id,
        )
        canonical = declares_canonical(source.metadata)
        for uid, operator in source.operators.items():
            writer._operators[uid] = _Operator(
                uid,
                operator.handle.name,
                operator.handle.parallelism,
                operator.is_keyed,
                operator.keyed,
                operator.frames,
                canonical=canonical,
            )
        return writer

    @property
    def uids(self) -> list[str]:
        """The uids of the operators it will write, in order."""
        return list(self._operators)

    def parallelism(self, uid: str) -> int:
        """The parallelism operator ``uid`` will be written with.

        Raises:
            StateError: No operator ``uid``.
        """
        return self._operator(uid).parallelism

    def _operator(self, uid: str) -> _Operator:
        operator = self._operators.get(uid)
        if operator is None:
            raise StateError(
                f"the savepoint being written has no operator with uid {uid!r}; its "
                f"operators are {self.uids}"
            )
        return operator

    def with_operator_state(
        self,
        uid: str,
        *,
        parallelism: int = 1,
        name: str | None = None,
        keyed: Mapping[str, Mapping[Hashable, Any]] | None = None,
        descriptors: Iterable[StateDescriptor] = (),
        operator: Mapping[str, Sequence[Any]] | None = None,
        union: Mapping[str, Sequence[Any]] | None = None,
        operator_descriptors: Iterable[ListStateDescriptor] = (),
        splits: Sequence[Any] | None = None,
    ) -> SavepointWriter:
        """Give operator ``uid`` this state, replacing whatever it had.

        This is how a job's state is bootstrapped from data: build the dicts from the
        data (see :func:`~storage.processor.bootstrap_keyed`) and pass them here.

        Args:
            uid: The operator's uid (as set with ``uid=`` in the job).
            parallelism: The number of subtasks to write; a job restores it at any
                parallelism (keyed state by key group, list state split, union state
                to all, splits round robin).
            name: The operator's name in the metadata (messages only); its uid if None.
            keyed: Keyed state: per state name, each key's stored value (a value
                state's value, a list state's list, a map state's dict, a reducing
                state's value). Makes the operator a keyed one (even if empty).
            descriptors: The descriptors of the keyed states that are not untyped value
                states: their kind, and the types to encode their values as (msgspec,
                validated on restore by the job's descriptors).
            operator: Operator list state split among subtasks on restore: per state
                name, its elements.
            union: Operator union list state, given whole to every subtask on restore:
                per state name, its elements.
            operator_descriptors: The descriptors of operator list states that the job
                declares with an element type (``ListStateDescriptor(name, type=T)``):
                their elements are encoded as that type, as the job will decode them.
            splits: A source's splits (``msgspec.Struct`` s, or splits as the reader
                returns them), dealt round robin to the subtasks; an empty list makes
                the restored source read nothing. None: the source's enumerator assigns
                splits anew on restore (it reads from the start).

        Returns:
            This writer.

        Raises:
            ValueError: A bad uid or a parallelism out of ``[1, max_parallelism]``.
            StateError: A descriptor of a state not given, a key of None, a value that
                does not fit its state's kind, a state both split and union.
            KeyEncodingError: A key the stable hash cannot encode.
            SerializationError: A value that does not encode; PickleForbiddenError if it
                needs pickle and pickle is not allowed. The message names the state.
        """
        _check_uid(uid)
        validate_parallelism(parallelism, self.max_parallelism)
        given = list(descriptors)
        what = f"operator {uid!r}"
        new = _Operator(
            uid,
            name or uid,
            parallelism,
            is_keyed=keyed is not None,
            canonical=not self.allow_pickle,
        )
        if keyed is not None:
            new.keyed = encode_keyed(
                keyed,
                given,
                self.max_parallelism,
                parallelism,
                allow_pickle=self.allow_pickle,
                what=what,
            )
        elif given:
            raise StateError(f"{what}: descriptors were given without keyed= state")
        operator_given = list(operator_descriptors)
        if operator is not None or union is not None or operator_given:
            encoded = encode_operator_state(
                operator or {},
                union or {},
                operator_given,
                parallelism,
                allow_pickle=self.allow_pickle,
                what=what,
            )
            for index, data in encoded.items():
                new.frames.setdefault(index, []).append(
                    StateFrame("operator", uid, NO_KEY_GROUP, data)
                )
        if splits is not None:
            for index, data in encode_splits_for(
                splits, parallelism, allow_pickle=self.allow_pickle
            ).items():
                new.frames.setdefault(index, []).append(
                    StateFrame("splits", uid, NO_KEY_GROUP, data)
                )
        self._operators[uid] = new
        return self

    def remove_operator(self, uid: str) -> SavepointWriter:
        """Leave operator ``uid`` out of the new savepoint.

        Raises:
            StateError: No operator ``uid``.
        """
        self._operator(uid)
        del self._operators[uid]
        return self

    def transform_keyed(
        self,
        uid: str,
        state_name: str,
        function: Callable[[Any, Any], Any],
        *,
        descriptor: StateDescriptor | None = None,
    ) -> SavepointWriter:
        """Replace each key's value of keyed state ``state_name`` by ``function(key, value)``.

        ``function`` gets the stored value (a list state's list, a map state's dict)
        and returns the new one, or :data:`~storage.processor.REMOVE` to drop the key.
        The operator's other states are kept as they are, undecoded.

        Args:
            uid: The operator's uid.
            state_name: The keyed state to transform.
            function: The transformation.
            descriptor: The state's descriptor, to decode (and encode) its values as
                their declared type; an untyped one of the state's kind if None.

        Returns:
            This writer.

        Raises:
            StateError: No operator ``uid``, no keyed state ``state_name`` in it, or a
                descriptor of another kind or name.
            SerializationError: A value that does not decode or encode (see
                :meth:`with_operator_state`).
        """
        operator = self._operator(uid)
        kinds = keyed_state_kinds(operator.keyed)
        kind = kinds.get(state_name)
        if kind is None:
            raise StateError(
                f"operator {uid!r} has no keyed state {state_name!r} (with any key); its "
                f"keyed states are {sorted(kinds)}"
            )
        if descriptor is None:
            descriptor = descriptor_for_kind(state_name, kind)
        elif descriptor.name != state_name:
            raise StateError(
                f"the descriptor given to transform keyed state {state_name!r} of operator "
                f"{uid!r} names state {descriptor.name!r}"
            )
        operator.keyed = transform_keyed_blobs(
            operator.keyed,
            descriptor,
            function,
            self.max_parallelism,
            operator.parallelism,
            allow_pickle=self.allow_pickle,
        )
        operator.canonical = operator.canonical and not self.allow_pickle
        return self

    def _files(self) -> list[tuple[str, _Operator, int, list[bytes], int]]:
        """Every subtask's state file: (file name, operator, subtask, frames, state size).

        A subtask's file holds the keyed frames of its key-group range, in key-group
        order, then its other frames; a subtask with no frame gets no file.
        """
        files = []
        for position, operator in enumerate(self._operators.values()):
            p = operator.parallelism
            for index in range(p):
                key_groups = KeyGroupRange.for_operator(self.max_parallelism, p, index)
                frames: list[bytes] = []
                size = 0
                for key_group in key_groups:
                    for blob in operator.keyed.get(key_group, ()):
                        frames.append(
                            encode_frame(StateFrame("keyed", operator.uid, key_group, blob))
                        )
                        size += len(blob)
                for frame in operator.frames.get(index, ()):
                    frames.append(encode_frame(frame))
                    size += len(frame.data)
                files.append(
                    (_file_name(position, operator.uid, index), operator, index, frames, size)
                )
        return files

    async def write_async(self, directory: str | os.PathLike[str]) -> Path:
        """Write the savepoint into a new folder under ``directory``; return the folder.

        The folder is ``savepoint-<first 6 of the job id>-<12 hex>``. State files are
        written first, then ``_metadata`` last and atomically; if anything fails the
        folder is deleted. Encoding was done by the ``with_*`` calls, so this only
        frames and writes bytes.

        Raises:
            StorageNotWritableError: The folder cannot be created or written; names it.
        """
        folder = new_savepoint_folder(directory, self.job_id)
        storage = SavepointStorage(folder, self.job_id)
        await storage.initialize()
        try:
            handles: dict[tuple[str, int], SubtaskStateHandle] = {}
            for name, operator, index, frames, size in self._files():
                handle = None
                if frames:
                    handle = await storage.write_state(self.checkpoint_id, name, frames)
                key_groups = KeyGroupRange.for_operator(
                    self.max_parallelism, operator.parallelism, index
                )
                handles[operator.uid, index] = SubtaskStateHandle(
                    subtask_index=index,
                    handle=handle,
                    state_size=size,
                    in_flight_bytes=0,
                    key_group_start=key_groups.start if operator.is_keyed else None,
                    key_group_end=key_groups.end if operator.is_keyed else None,
                )
            metadata = CheckpointMetadata(
                version=METADATA_VERSION,
                job_id=self.job_id,
                checkpoint_id=self.checkpoint_id,
                timestamp=time.time(),
                is_savepoint=True,
                operators=[
                    OperatorStateHandle(
                        uid=op.uid,
                        name=op.name,
                        parallelism=op.parallelism,
                        max_parallelism=self.max_parallelism,
                        subtasks=[handles[op.uid, i] for i in range(op.parallelism)],
                    )
                    for op in self._operators.values()
                ],
                properties={
                    WRITER_PROPERTY: "storage.processor.SavepointWriter",
                    FORMAT_PROPERTY: CANONICAL_FORMAT
                    if all(op.canonical for op in self._operators.values())
                    else NATIVE_FORMAT,
                },
            )
            await storage.commit(metadata)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await storage.discard(self.checkpoint_id)
            raise
        return folder

    def write(self, directory: str | os.PathLike[str]) -> Path:
        """Write the savepoint (see :meth:`write_async`); blocks on file I/O.

        Runs its own event loop: from async code, ``await write_async(directory)``, or
        call this in a worker thread (``anyio.to_thread.run_sync``).

        Raises:
            StorageNotWritableError: The folder cannot be created or written; names it.
            RuntimeError: Called on a thread that runs an asyncio event loop.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return anyio.run(self.write_async, directory)
        raise RuntimeError(
            "SavepointWriter.write() blocks and runs its own event loop; in async code, "
            "await writer.write_async(directory) instead"
        )
