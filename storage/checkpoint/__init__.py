"""Checkpoint storage: where completed checkpoints and savepoints live, and their formats.

The checkpoint-facing half of ``storage``; it knows files and bytes, not actors. The job
master resolves a :class:`CheckpointStorage` from the job's ``storage`` option
(:func:`resolve_storage`) and initializes it; subtasks write their state files into a
pending checkpoint (:meth:`~CheckpointStorage.write_state`, framed by
:func:`encode_frame`); the checkpoint coordinator completes it by writing its
:class:`CheckpointMetadata` last and atomically (:meth:`~CheckpointStorage.commit`),
keeps the newest ones (:class:`CompletedCheckpointStore`) and discards the rest; recovery
chooses the checkpoint to restore (:class:`RecoveryPlanner`, :func:`verify_checkpoint`;
:func:`find_latest_valid` on disk), loads its
metadata and reads the state back (:meth:`~CheckpointStorage.read_state`,
:func:`iter_frames`). Offline, without a job, :func:`read_checkpoint` verifies a completed
checkpoint or savepoint and decodes its state for people and tests to inspect. Errors are
drawn in :mod:`storage.checkpoint.errors`.
"""

from __future__ import annotations

from storage.checkpoint.completed_store import CompletedCheckpointStore, RetainedCheckpoint
from storage.checkpoint.errors import (
    CheckpointNotFoundError,
    CorruptCheckpointError,
    StorageError,
    StorageNotWritableError,
)
from storage.checkpoint.filesystem import WRITE_BATCH_BYTES, FileCheckpointStorage
from storage.checkpoint.layout import (
    CHECKPOINT_DIR_PREFIX,
    METADATA_FILE,
    METADATA_TMP_FILE,
    SHARED_DIR,
    TASK_OWNED_DIR,
    checkpoint_folder,
)
from storage.checkpoint.memory import MemoryCheckpointStorage
from storage.checkpoint.metadata import (
    METADATA_VERSION,
    SUPPORTED_METADATA_VERSIONS,
    CheckpointMetadata,
    OperatorStateHandle,
    StateHandle,
    SubtaskStateHandle,
    crc32_hex,
    decode_metadata,
    encode_metadata,
)
from storage.checkpoint.reader import (
    ChannelKey,
    CheckpointContents,
    OperatorContents,
    SubtaskContents,
    read_checkpoint,
)
from storage.checkpoint.recovery import (
    Candidate,
    CheckpointScan,
    NoValidCheckpointError,
    RecoveryDecision,
    RecoveryPlanner,
    RestoreRefusedError,
    completed_checkpoint_ids,
    find_latest_valid,
    load_metadata_file,
)
from storage.checkpoint.resolve import resolve_storage
from storage.checkpoint.savepoint import (
    SAVEPOINT_PREFIX,
    SavepointStorage,
    dispose_savepoint,
    new_savepoint_folder,
)
from storage.checkpoint.state_file import NO_KEY_GROUP, StateFrame, encode_frame, iter_frames
from storage.checkpoint.storage import CheckpointStorage
from storage.checkpoint.verification import CheckpointVerificationError, verify_checkpoint

__all__ = [
    "CHECKPOINT_DIR_PREFIX",
    "METADATA_FILE",
    "METADATA_TMP_FILE",
    "METADATA_VERSION",
    "NO_KEY_GROUP",
    "SAVEPOINT_PREFIX",
    "SHARED_DIR",
    "SUPPORTED_METADATA_VERSIONS",
    "TASK_OWNED_DIR",
    "WRITE_BATCH_BYTES",
    "Candidate",
    "ChannelKey",
    "CheckpointContents",
    "CheckpointMetadata",
    "CheckpointNotFoundError",
    "CheckpointScan",
    "CheckpointStorage",
    "CheckpointVerificationError",
    "CompletedCheckpointStore",
    "CorruptCheckpointError",
    "FileCheckpointStorage",
    "MemoryCheckpointStorage",
    "NoValidCheckpointError",
    "OperatorContents",
    "OperatorStateHandle",
    "RecoveryDecision",
    "RecoveryPlanner",
    "RestoreRefusedError",
    "RetainedCheckpoint",
    "SavepointStorage",
    "StateFrame",
    "StateHandle",
    "StorageError",
    "StorageNotWritableError",
    "SubtaskContents",
    "SubtaskStateHandle",
    "checkpoint_folder",
    "completed_checkpoint_ids",
    "crc32_hex",
    "decode_metadata",
    "dispose_savepoint",
    "encode_frame",
    "encode_metadata",
    "find_latest_valid",
    "iter_frames",
    "load_metadata_file",
    "new_savepoint_folder",
    "read_checkpoint",
    "resolve_storage",
    "verify_checkpoint",
]
