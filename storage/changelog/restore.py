"""Restore of the changelog backend: the materialized snapshot, then the changelog, per key group.

:meth:`ChangelogKeyedStateBackend.prepare
<storage.changelog.backend.ChangelogKeyedStateBackend.prepare>` runs
:func:`restore_changelog` before the subtask opens its operators. The blobs of the
subtask's key groups are changelog handles (:mod:`storage.changelog.handle`), or, when
the job switches the changelog on, the wrapped backend's own blobs (passed through).
Each file the handles name is read from ``<job dir>/shared/`` and checked against the
size and crc32 the handle gives, one worker-thread hop per file (a missing or corrupt
file is an error naming it: the recovery planner verified the same files before it chose
the checkpoint, so this fails only for a file damaged since); then the wrapped backend
is restored from the materialized parts (a heap backend indexes them, RocksDB loads them
in a worker thread), and the changelog batches are decoded and kept, in order, per state,
for :meth:`~storage.changelog.backend.ChangelogKeyedStateBackend.get_state` to replay
once the operator registers the state (its descriptor gives the value types).

The handles restored become the backend's *base*: later checkpoints refer to the same
files until the first materialization. :func:`adopt_base`, at the first checkpoint,
pins them in the storage's registry, copying them first if the restore came from
another job's folder (``weir run --from-checkpoint``).
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import msgspec

from storage.changelog.handle import KeyGroupHandle, decode_handle, is_changelog
from storage.changelog.log import decode_batch
from storage.checkpoint.errors import CheckpointNotFoundError, CorruptCheckpointError
from storage.checkpoint.layout import SHARED_DIR
from storage.checkpoint.shared_files import copy_with_crc

if TYPE_CHECKING:
    from storage.changelog.backend import ChangelogKeyedStateBackend

__all__ = ["adopt_base", "read_verified", "restore_changelog"]


def read_verified(path: Path, size: int, checksum: str) -> bytes:
    """Read a file of ``shared/`` and check its size and crc32. Blocks.

    Raises:
        CheckpointNotFoundError: It does not exist; names it.
        CorruptCheckpointError: Its size or crc32 differs from the handle's; names it.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointNotFoundError(str(path), "changelog state file") from None
    if len(data) != size:
        raise CorruptCheckpointError(
            str(path),
            f"size mismatch: it has {len(data)} bytes, the handle says {size}",
            "changelog state file",
        )
    actual = f"{zlib.crc32(data):08x}"
    if actual != checksum:
        raise CorruptCheckpointError(
            str(path),
            f"checksum mismatch: crc32 is {actual}, the handle says {checksum}",
            "changelog state file",
        )
    return data


async def restore_changelog(
    backend: ChangelogKeyedStateBackend,
    blobs: list[tuple[int, bytes | memoryview]],
    pointer: str | None,
    **options: Any,
) -> None:
    """Restore ``backend`` from the blobs of its key groups; see the module docstring.

    Raises:
        CheckpointNotFoundError, CorruptCheckpointError: A file is missing or damaged.
        SerializationError: The wrapped backend's restore failed.
    """
    from storage.backend import prepare_keyed_backend, restore_keyed_backend

    in_range = backend.key_group_range
    handles: dict[int, KeyGroupHandle] = {}
    passthrough: list[tuple[int, bytes | memoryview]] = []
    for key_group, blob in blobs:
        if key_group not in in_range:
            continue
        if is_changelog(blob):
            handles[key_group] = decode_handle(blob, f"{pointer} (key group {key_group})")
        else:
            passthrough.append((key_group, blob))
    job_dir = Path(pointer).parent if pointer is not None else None
    files: dict[str, tuple[int, str]] = {}
    for handle in handles.values():
        for part in (*handle.materialized, *handle.changelog):
            files[part.name] = (part.size, part.checksum)
    data: dict[str, bytes] = {}
    if files:
        assert job_dir is not None, "changelog handles come from a checkpoint folder"
        shared = job_dir / SHARED_DIR
        for name, (size, checksum) in files.items():
            data[name] = await anyio.to_thread.run_sync(
                read_verified, shared / name, size, checksum
            )
    materialized: list[tuple[int, bytes | memoryview]] = list(passthrough)
    for key_group, handle in handles.items():
        for part in handle.materialized:
            view = memoryview(data[part.name])[part.offset : part.offset + part.length]
            materialized.append((key_group, view))
    restore_keyed_backend(backend.inner, materialized, pointer, deferred=True, **options)
    await prepare_keyed_backend(backend.inner)
    replay = backend.replay
    decode_key = backend.key_serializer.decode
    for key_group in sorted(handles):
        for part in handles[key_group].changelog:
            view = memoryview(data[part.name])[part.offset : part.offset + part.length]
            try:
                batch = decode_batch(view)
            except msgspec.DecodeError as error:
                raise CorruptCheckpointError(
                    str(job_dir / SHARED_DIR / part.name if job_dir else part.name),
                    f"changelog batch of key group {key_group} does not decode: {error}",
                    "changelog state file",
                ) from error
            for name, op, key, map_key, value in batch.entries:
                replay.setdefault(name, []).append((decode_key(key), op, map_key, value))
    backend.base = handles
    backend.base_dir = job_dir
    # States registered before the restore (a runtime operator's, in its setup).
    backend.replay_registered()


async def adopt_base(backend: ChangelogKeyedStateBackend, storage: Any) -> None:
    """Pin the restored files in ``storage``'s registry (once); copy them if foreign.

    Restored from another job's folder, the files are copied into this job's ``shared/``
    under the same names (unique), one worker-thread hop each, so that this job's
    checkpoints never depend on another job's retention.
    """
    pins = backend.pins
    source = backend.base_dir
    if pins is None or source is None:
        return
    backend.base_dir = None
    names: dict[str, None] = {}
    for handle in backend.base.values():
        for part in (*handle.materialized, *handle.changelog):
            names[part.name] = None
    foreign = source.absolute() != pins.shared.folder.parent.absolute()
    for name in names:
        if foreign:
            await anyio.to_thread.run_sync(
                _copy, source / SHARED_DIR / name, pins.shared.folder / name
            )
        pins.add(name, new=True)


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    copy_with_crc(source, target)
