"""Offline state access: read, transform, write and bootstrap savepoints without a job.

Flink's State Processor API, in Python. Nothing here runs a job, an actor or user code
from the savepoint: a script (or a test, or an operator's laptop) opens a savepoint,
reads each operator's state as Python objects, changes it, and writes a new savepoint
that a job restores with ``restore_from=`` like one it took itself, at any parallelism.

* :func:`load_savepoint` returns a :class:`SavepointReader`: per operator ``uid``,
  ``keyed_state(name)`` (``{key: value}``), ``operator_state(name)`` (a list) and
  ``splits()``. It wraps :func:`storage.checkpoint.read_checkpoint`: every file is
  verified, and nothing is unpickled unless ``allow_pickle=True``.
* :class:`SavepointWriter` starts from a savepoint (:meth:`SavepointWriter.from_savepoint`)
  or from nothing (:meth:`SavepointWriter.new`); ``with_operator_state(uid, ...)`` gives
  an operator keyed state, operator list and union list state and source splits,
  ``transform_keyed(uid, state, fn)`` rewrites one keyed state key by key (return
  :data:`REMOVE` to drop a key), ``remove_operator(uid)`` drops an operator, and
  ``write(directory)`` writes ``<directory>/savepoint-<id>-<random>/`` in the runtime's
  format (real heap backends encode the keyed state; ``_metadata`` last and atomic).
  Canonical (no pickle) unless ``allow_pickle=True``.
* :func:`bootstrap_keyed` folds records into ``{key: value}``: bootstrapping a job's
  state from data is building those dicts and giving them to ``with_operator_state``.

Bootstrap the running sums of a job from historical data, then start the job from them::

    from storage.processor import SavepointWriter, bootstrap_keyed, load_savepoint

    history = [("alice", 3), ("bob", 5), ("alice", 4)]
    totals = bootstrap_keyed(history, lambda r: r[0], lambda total, r: total + r[1], 0)
    path = (SavepointWriter.new(max_parallelism=128)
            .with_operator_state("sum", parallelism=2, keyed={"total": totals})
            .write("/savepoints"))
    # the job: ...key_by(lambda r: r[0]).process(RunningSum(), uid="sum")..., where
    # RunningSum keeps ctx.get_state(ValueStateDescriptor("total", default=0))
    await env.execute("sums", restore_from=path)

Read a savepoint a job took, fix one state, drop an operator, write a new one::

    reader = load_savepoint("/savepoints/savepoint-3f2a1c-0123456789ab")
    reader["sum"].keyed_state("total")            # {"alice": 7, "bob": 5}
    reader["numbers"].splits()                    # [{"type": "...:RangeSplit", ...}]
    path = (SavepointWriter.from_savepoint(reader.path)
            .transform_keyed("sum", "total", lambda key, total: total * 100)
            .remove_operator("old-dedup")
            .write("/savepoints"))
"""

from __future__ import annotations

from storage.processor.bootstrap import bootstrap_keyed
from storage.processor.encoding import REMOVE
from storage.processor.reader import OperatorStateReader, SavepointReader, load_savepoint
from storage.processor.writer import SavepointWriter

__all__ = [
    "REMOVE",
    "OperatorStateReader",
    "SavepointReader",
    "SavepointWriter",
    "bootstrap_keyed",
    "load_savepoint",
]
