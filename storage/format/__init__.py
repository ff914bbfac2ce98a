"""The keyed state format on disk, shared by every backend.

* ``serializers.py``: how keys and values become bytes (msgspec, or pickle when the user
  allows it).
* ``entry_columns.py``: a state's entries of one key group as columns.
* ``keyed_format.py``: the key-group blocks of a state file (``KeyedStateEntries``,
  ``KeyGroupSnapshotData``).
* ``key_group_writer.py``: writes a snapshot's key groups in that format.

Import the public names from ``storage``.
"""
