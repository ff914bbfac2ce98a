"""Bootstrapping keyed state from data: Flink's ``KeyedStateBootstrapFunction``, in Python.

A job's keyed state is bootstrapped by folding data into ``{key: value}`` per state and
giving those dicts to :meth:`SavepointWriter.with_operator_state
<storage.processor.SavepointWriter.with_operator_state>`. :func:`bootstrap_keyed` is
the fold: it groups records by the same kind of key selector a job passes to
``key_by`` and folds each key's records, in order, into the value its state holds.
Plain Python, no job and no event loop: for a large data set, fold it however suits
(a database query, pandas) and pass the dict.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Hashable, Iterable
from typing import TypeVar

from storage.errors import StateError
from storage.key_hash import stable_hash

__all__ = ["bootstrap_keyed"]

T = TypeVar("T")
V = TypeVar("V")


def bootstrap_keyed(
    records: Iterable[T],
    key_selector: Callable[[T], Hashable],
    function: Callable[[V, T], V],
    initial: V,
) -> dict[Hashable, V]:
    """Fold ``records`` per key into the value of one keyed state.

    For each record, in order: ``value[key] = function(value.get(key, initial), record)``
    with ``key = key_selector(record)``; ``initial`` is deep-copied for each new key
    (so a list or a dict can be mutated in place), as a state descriptor's default is.

    Args:
        records: The data.
        key_selector: The record's key, as the job's ``key_by`` computes it.
        function: The new value of the key's state, given its value so far and a record.
        initial: The value of a key before its first record.

    Returns:
        ``{key: value}``, for ``keyed={state name: ...}`` of the savepoint writer.

    Raises:
        StateError: A key of None (not a key).
        KeyEncodingError: A key the stable hash cannot encode (no job could route it).
    """
    values: dict[Hashable, V] = {}
    missing = object()
    for record in records:
        key = key_selector(record)
        current = values.get(key, missing)
        if current is missing:
            if key is None:
                raise StateError(
                    f"the key selector gave None for record {record!r}; None is not a key"
                )
            stable_hash(key)  # fails now, naming the type, rather than when written
            current = copy.deepcopy(initial)
        values[key] = function(current, record)  # type: ignore[arg-type]
    return values
