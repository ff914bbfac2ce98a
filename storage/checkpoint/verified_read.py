"""Verified reads: a whole file and its crc32, the checksum computed while the rest is read.

Restore reads every state file of a checkpoint once and checks it against the crc32 in
its handle. Read first and checksummed after, a file costs its read plus a pass of
``zlib.crc32`` over it (a third of the read again from a cold page cache on the 2-core
VM). :func:`read_with_crc32` overlaps the two: it reads the file in steps of
:data:`READ_STEP` into one buffer, and a helper thread checksums each step while the
next is read (``zlib.crc32`` releases the GIL on large buffers, and so does the read).

The buffer is an anonymous memory map, filled by the reads themselves (a ``bytearray``
would be zeroed first, which costs as much as a checksum), and returned as a read-only
``memoryview``: slices of it are views, not copies, and the memory is freed when the
last view of it is gone.

Blocking: call it in a worker thread (``FileCheckpointStorage.read_state`` does, in one
thread hop per file). Used by the file-system checkpoint storage.
"""

from __future__ import annotations

import mmap
import os
import queue
import threading
import zlib
from pathlib import Path
from typing import Final

__all__ = ["READ_STEP", "read_with_crc32"]

READ_STEP: Final = 4 << 20
"""Bytes read per system call, and checksummed per step of the helper thread."""

_EMPTY: Final = memoryview(b"")


def read_with_crc32(path: Path, step: int = READ_STEP) -> tuple[memoryview, int]:
    """Read the whole file at ``path`` and compute its crc32 meanwhile. Blocking.

    Args:
        path: The file.
        step: Bytes per read.

    Returns:
        The file's bytes (read-only, as long as the file was when it was opened, or
        shorter if it shrank meanwhile) and their crc32.

    Raises:
        OSError: If the file cannot be opened or read (FileNotFoundError if missing).
    """
    with open(path, "rb", buffering=0) as file:
        size = os.fstat(file.fileno()).st_size
        if size == 0:
            return _EMPTY, 0
        buffer = mmap.mmap(-1, size)
        view = memoryview(buffer)
        steps: queue.SimpleQueue[memoryview | None] = queue.SimpleQueue()
        crc = 0

        def checksum() -> None:
            nonlocal crc
            while (chunk := steps.get()) is not None:
                crc = zlib.crc32(chunk, crc)

        helper = threading.Thread(target=checksum, name=f"crc32 {path.name}", daemon=True)
        helper.start()
        offset = 0
        try:
            while offset < size:
                count = file.readinto(view[offset : offset + step])
                if not count:
                    break  # the file shrank since it was opened
                steps.put(view[offset : offset + count])
                offset += count
        finally:
            steps.put(None)
            helper.join()
    return view[:offset].toreadonly(), crc
