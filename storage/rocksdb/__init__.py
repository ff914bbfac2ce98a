"""The RocksDB keyed state backend (rocksdict): incremental checkpoints, local recovery.

See :mod:`storage.rocksdb.backend` for the backend, :mod:`storage.rocksdb.snapshot`
for its checkpoints and :mod:`storage.rocksdb.restore` for restore and rescaling.
"""

from __future__ import annotations

from storage.rocksdb.backend import RocksDBKeyedStateBackend, default_state_dir
from storage.rocksdb.handle import RocksDBFile, RocksDBStateHandle, is_native
from storage.rocksdb.snapshot import RocksDBSnapshot

__all__ = [
    "RocksDBFile",
    "RocksDBKeyedStateBackend",
    "RocksDBSnapshot",
    "RocksDBStateHandle",
    "default_state_dir",
    "is_native",
]
