"""The heap keyed state backend: state in Python dicts, snapshots by copy-on-write.

* ``backend.py``: ``HeapKeyedStateBackend`` (Flink's ``HeapKeyedStateBackend``).
* ``state.py``: the state handles it hands out (value, list, map, reducing).
* ``state_table.py``: one state's copy-on-write table per key group; ``overlay.py``:
  the overlay that keeps a snapshot's view while records keep changing the table.
* ``restoring.py``: lazy restore, key group by key group.

Its snapshots (``storage.keyed_snapshot.HeapSnapshot``) are written in the keyed format
of ``storage.format``. Import the public names from ``storage``.
"""
