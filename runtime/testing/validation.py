"""``Validation``: what a validating sink's output says about delivery guarantees.

``validate(records, expected)`` reads the committed output of a job, as
``(sink subtask, record)`` pairs in commit order, and compares it with the multiset of
record ids (``(split, seq, copy)``) the job should have delivered (a source's
``expected()``, or the output of a run without failures). It reports:

* **lost**: ids delivered fewer times than expected;
* **duplicated**: ids delivered more times than expected;
* **unexpected**: ids that were never expected at all;
* **out of order**: within one sink subtask, a record whose sequence number is not
  greater than the one before it of the same split (``order="split"``) or of the same
  split and key (``order="key"``: for jobs that reorder across keys, such as two
  exchanges in a row); ``order="none"`` skips the check;
* **corrupt**: records whose payload does not match ``(split, seq)``, and records that
  are not ``Tagged`` at all;
* **anomalies** of the output itself (a transaction committed that was never staged).

``assert_exactly_once()`` requires all of them empty; ``assert_at_least_once()``
allows duplicates and reordering (replayed records come again), nothing else. Their
``AssertionError`` lists the first few offending records.

State is checked by comparing two runs (``compare_values``): the values the job
attached to its records (``Tagged.value``), as a multiset of ``(key, value)`` and as the
last value of each key.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from runtime.testing.tagged import RecordId, Tagged

SHOW = 5
"""How many offending records an error message lists per kind."""

Order = Literal["split", "key", "none"]


class ValidationError(AssertionError):
    """A delivery guarantee or a state check does not hold; the message says how."""


@dataclass(frozen=True, slots=True)
class OrderViolation:
    """A record that came after a record it should have preceded.

    Attributes:
        subtask: the sink subtask that committed both.
        split: their split.
        key: their key (``order="key"``), else None.
        previous: the sequence number committed before.
        seq: the sequence number that came after it, not greater.
    """

    subtask: int
    split: str
    key: int | None
    previous: int
    seq: int

    def __str__(self) -> str:
        key = "" if self.key is None else f" key {self.key}"
        return f"subtask {self.subtask} split {self.split}{key}: {self.seq} after {self.previous}"


@dataclass(slots=True)
class Validation:
    """The findings of ``validate``; see the module docstring for each kind.

    Attributes:
        records: committed records read.
        expected: records expected.
        lost: ids delivered fewer times than expected, with how many are missing.
        duplicated: ids delivered more times than expected, with how many extra.
        unexpected: ids never expected, with how often they came.
        out_of_order: order violations, in commit order.
        corrupt: records with a wrong payload, or that are not ``Tagged``.
        anomalies: problems the output itself recorded.
    """

    records: int = 0
    expected: int = 0
    lost: dict[RecordId, int] = field(default_factory=dict)
    duplicated: dict[RecordId, int] = field(default_factory=dict)
    unexpected: dict[RecordId, int] = field(default_factory=dict)
    out_of_order: list[OrderViolation] = field(default_factory=list)
    corrupt: list[Any] = field(default_factory=list)
    anomalies: list[str] = field(default_factory=list)

    @property
    def exactly_once(self) -> bool:
        """Whether every expected record was delivered once, in order, intact."""
        return not (
            self.lost
            or self.duplicated
            or self.unexpected
            or self.out_of_order
            or self.corrupt
            or self.anomalies
        )

    @property
    def at_least_once(self) -> bool:
        """Whether every expected record was delivered, intact (repeats allowed)."""
        return not (self.lost or self.unexpected or self.corrupt or self.anomalies)

    def summary(self) -> str:
        """One line: the counts of each kind of finding."""
        return (
            f"{self.records} records committed, {self.expected} expected: "
            f"{sum(self.lost.values())} lost, {sum(self.duplicated.values())} duplicated, "
            f"{sum(self.unexpected.values())} unexpected, {len(self.out_of_order)} out of "
            f"order, {len(self.corrupt)} corrupt, {len(self.anomalies)} anomalies"
        )

    def _details(self, kinds: Sequence[str]) -> str:
        lines = [self.summary()]
        for kind in kinds:
            found: Any = getattr(self, kind)
            if not found:
                continue
            if isinstance(found, dict):
                items = [f"{rid} x{n}" for rid, n in sorted(found.items())[:SHOW]]
            else:
                items = [str(item) for item in found[:SHOW]]
            more = len(found) - len(items)
            suffix = f" (and {more} more)" if more > 0 else ""
            lines.append(f"  first {kind.replace('_', ' ')}: {', '.join(items)}{suffix}")
        return "\n".join(lines)

    def assert_exactly_once(self) -> None:
        """Raise ``ValidationError`` unless the output is exactly-once.

        Raises:
            ValidationError: names each kind of finding and its first records.
        """
        if not self.exactly_once:
            kinds = ("lost", "duplicated", "unexpected", "out_of_order", "corrupt", "anomalies")
            raise ValidationError("exactly-once violated: " + self._details(kinds))

    def assert_at_least_once(self) -> None:
        """Raise ``ValidationError`` if a record was lost (repeats are allowed).

        Raises:
            ValidationError: names each kind of finding and its first records.
        """
        if not self.at_least_once:
            kinds = ("lost", "unexpected", "corrupt", "anomalies")
            raise ValidationError("at-least-once violated: " + self._details(kinds))


def validate(
    records: Iterable[tuple[int, Any]],
    expected: Counter[RecordId],
    *,
    order: Order = "split",
    anomalies: Iterable[str] = (),
) -> Validation:
    """Compare committed records with the expected record ids.

    Args:
        records: ``(sink subtask, record)`` in commit order.
        expected: how many times each record id should be delivered.
        order: the scope of the order check: ``"split"``, ``"key"`` or ``"none"``.
        anomalies: problems recorded by the output itself.

    Returns:
        The findings; nothing is raised here.
    """
    if order not in ("split", "key", "none"):
        raise ValueError(f"validate: order must be 'split', 'key' or 'none', got {order!r}")
    result = Validation(expected=sum(expected.values()), anomalies=list(anomalies))
    seen: Counter[RecordId] = Counter()
    last: dict[tuple[int, str, int | None], int] = {}
    for subtask, record in records:
        result.records += 1
        if not isinstance(record, Tagged) or not record.intact:
            result.corrupt.append(record)
            continue
        seen[record.record_id] += 1
        if order != "none":
            scope = (subtask, record.split, record.key if order == "key" else None)
            previous = last.get(scope)
            if previous is not None and record.seq <= previous:
                result.out_of_order.append(
                    OrderViolation(subtask, record.split, scope[2], previous, record.seq)
                )
            last[scope] = record.seq
    for rid, want in expected.items():
        got = seen.get(rid, 0)
        if got < want:
            result.lost[rid] = want - got
        elif got > want:
            result.duplicated[rid] = got - want
    for rid, got in seen.items():
        if rid not in expected:
            result.unexpected[rid] = got
    return result


def expected_from(records: Iterable[Any]) -> Counter[RecordId]:
    """The record ids of a run's output (a reference run without failures)."""
    return Counter(r.record_id for r in records if isinstance(r, Tagged))


def final_values(records: Iterable[tuple[int, Any]]) -> dict[Any, Any]:
    """The last value each key carried, per sink subtask in commit order.

    Keys committed by more than one sink subtask have no single last value and are left
    out. Records without a value (None) are skipped.
    """
    last: dict[Any, Any] = {}
    owner: dict[Any, int] = {}
    shared: set[Any] = set()
    for subtask, record in records:
        if not isinstance(record, Tagged) or record.value is None:
            continue
        key = record.key
        if owner.setdefault(key, subtask) != subtask:
            shared.add(key)
        last[key] = record.value
    return {key: value for key, value in last.items() if key not in shared}


def compare_values(
    reference: Sequence[tuple[int, Any]], actual: Sequence[tuple[int, Any]]
) -> list[str]:
    """The differences in state between a reference run and another run of a job.

    Compares the multisets of ``(key, value)`` the jobs attached to their records, and
    the last value of each key (``final_values``). Both are independent of how records
    of different splits interleave when the values are (a running count per key, say).

    Returns:
        Lines describing each difference; empty if none.
    """
    problems: list[str] = []

    def pairs(run: Sequence[tuple[int, Any]]) -> Counter[tuple[Any, str]]:
        return Counter(
            (r.key, repr(r.value)) for _, r in run if isinstance(r, Tagged) and r.value is not None
        )

    want, got = pairs(reference), pairs(actual)
    if want != got:
        missing = sorted((want - got).items())[:SHOW]
        extra = sorted((got - want).items())[:SHOW]
        problems.append(
            f"the (key, value) pairs differ from the run without failures: "
            f"missing {missing}, extra {extra}"
        )
    final_want, final_got = final_values(reference), final_values(actual)
    differing = sorted(
        (key, final_want.get(key), final_got.get(key))
        for key in set(final_want) | set(final_got)
        if final_want.get(key) != final_got.get(key)
    )
    if differing:
        shown = ", ".join(f"key {k}: {w!r} != {g!r}" for k, w, g in differing[:SHOW])
        problems.append(f"the final value per key differs from the run without failures: {shown}")
    return problems
