"""Materialization: a full snapshot of the wrapped backend, taken and written in the background.

Started by :meth:`ChangelogKeyedStateBackend.maybe_materialize
<storage.changelog.backend.ChangelogKeyedStateBackend.maybe_materialize>` at a changelog
position ``seq`` (the open segment was just closed, so ``seq`` falls between segments):
the wrapped backend's snapshot is taken now, on the event loop (heap: copy-on-write,
O(states); RocksDB: a flush and hard links), and is the state after exactly the
changes before ``seq``. Then, as an ``asyncio`` task of the backend, it is encoded into
key-group blobs in bounded chunks with a yield to the event loop between them (records
keep flowing), released and folded back the same way, and written as one file of
``shared/`` in one worker-thread hop. Once durable, the backend drops the changelog
before ``seq`` (:meth:`~storage.changelog.backend.ChangelogKeyedStateBackend.materialized_at`).
A failure is logged and the next materialization is tried when due: checkpoints go on
with the changelog meanwhile.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Final

from storage.changelog.uploader import upload_blobs

if TYPE_CHECKING:
    from storage.changelog.backend import ChangelogKeyedStateBackend

__all__ = ["ENCODE_CHUNK", "materialize"]

ENCODE_CHUNK: Final = 2048
"""Entries encoded between two yields to the event loop."""


async def materialize(backend: ChangelogKeyedStateBackend, seq: int) -> None:
    """Snapshot ``backend``'s wrapped backend now and write it to ``shared/``; see above."""
    pins = backend.pins
    assert pins is not None
    snapshot = backend.inner.snapshot()
    try:
        blobs: list[tuple[int, bytes]] = []
        for chunk in snapshot.encode_chunks(ENCODE_CHUNK):
            blobs.extend(chunk)
            await asyncio.sleep(0)
        snapshot.release()
        await _fold_back(snapshot)
        file = await upload_blobs(pins, blobs)
    except asyncio.CancelledError:
        snapshot.release()
        raise
    except Exception as error:
        snapshot.release()
        await _fold_back(snapshot)
        backend.materialization_failed(error)
        return
    backend.materialized_at(file, seq)


async def _fold_back(snapshot: Any) -> None:
    # A bounded number of entries per step, with a yield between steps (see
    # runtime.tasks.snapshot): folding all at once would stall processing.
    while True:
        await asyncio.sleep(0)
        if snapshot.fold_step():
            return
