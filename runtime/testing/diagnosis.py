"""What a failed check says about its job: per-key diffs and order dependence.

The harness (``runtime.testing.harness``) compares the values a run with failures
attached to its records with those of the run without failures. When they differ, two
things can be at fault, and this module tells them apart:

* the job's result depends on how its inputs interleave (a running maximum fed by two
  splits, say): runs **without** failures already differ from each other. The harness
  then runs the reference again (under other seeds in a simulation) and raises
  ``OrderDependenceError``, naming the keys that differ and what to do about it;
* exactly-once was lost: every reference agrees, and only the run with failures
  differs. ``value_diff`` then shows, per key, the values of both runs from the first
  that differs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from runtime.testing.tagged import Tagged
from runtime.testing.validation import ValidationError, compare_values

SHOW_KEYS = 5
"""Keys shown in a diff."""
SHOW_VALUES = 6
"""Values shown per key, from the first that differs."""


class OrderDependenceError(ValidationError):
    """The job's result depends on the interleaving of its inputs, not on failures."""


def values_by_key(records: Iterable[tuple[int, Any]]) -> dict[Any, list[str]]:
    """The values each key carried (their ``repr``), per key in commit order."""
    values: dict[Any, list[str]] = {}
    for _, record in records:
        if isinstance(record, Tagged) and record.value is not None:
            values.setdefault(record.key, []).append(repr(record.value))
    return values


def differing_keys(a: Sequence[tuple[int, Any]], b: Sequence[tuple[int, Any]]) -> list[Any]:
    """The keys whose multiset of values or last value differs between two runs."""
    va, vb = values_by_key(a), values_by_key(b)
    keys = []
    for key in set(va) | set(vb):
        x, y = va.get(key, []), vb.get(key, [])
        if sorted(x) != sorted(y) or x[-1:] != y[-1:]:
            keys.append(key)
    return sorted(keys, key=repr)


def value_diff(reference: Sequence[tuple[int, Any]], actual: Sequence[tuple[int, Any]]) -> str:
    """Lines ``key K: expected [...] / actual [...]`` from the first value that differs."""
    want, got = values_by_key(reference), values_by_key(actual)
    lines = []
    for key in differing_keys(reference, actual)[:SHOW_KEYS]:
        x, y = want.get(key, []), got.get(key, [])
        first = next((i for i, (p, q) in enumerate(zip(x, y, strict=False)) if p != q), None)
        if first is None:
            first = min(len(x), len(y))
        start = max(0, first - 1)

        def shown(values: list[str], start: int = start) -> str:
            more = ", ..." if len(values) > start + SHOW_VALUES else ""
            return f"[{', '.join(values[start : start + SHOW_VALUES])}{more}]"

        lines.append(
            f"  key {key!r} (from value #{start}): expected {shown(x)} / actual {shown(y)} "
            f"({len(x)} vs {len(y)} values)"
        )
    return "\n".join(lines)


def order_dependence(
    reference: Sequence[tuple[int, Any]], others: Iterable[Sequence[tuple[int, Any]]]
) -> OrderDependenceError | None:
    """An error if any other run without failures differs from ``reference``."""
    for other in others:
        if compare_values(reference, other):
            keys = differing_keys(reference, other)
            shown = ", ".join(repr(k) for k in keys[:SHOW_KEYS])
            more = f" and {len(keys) - SHOW_KEYS} more" if len(keys) > SHOW_KEYS else ""
            return OrderDependenceError(
                f"the job's result depends on how its inputs interleave, not on failures: "
                f"two runs without failures gave different values for keys {shown}{more}:\n"
                f"{value_diff(reference, other)}\n"
                f"make the result independent of the order (a commutative aggregate), read "
                f"ordered input (one split per source, or records keyed by split), or, if only "
                f"the records matter, leave their value None (values are then not compared)"
            )
    return None
