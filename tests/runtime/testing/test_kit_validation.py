"""``validate`` and ``Validation``: planted losses, duplicates, reorders and corruption."""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec
import pytest

from runtime.testing import Tagged, ValidationError, compare_values, validate
from runtime.testing.tagged import RecordId, make_tagged

KEYS = 3


def records(split: str, seqs: list[int], subtask: int = 0) -> list[tuple[int, Tagged]]:
    return [(subtask, make_tagged(split, seq, KEYS)) for seq in seqs]


def expected(split: str, n: int) -> Counter[RecordId]:
    return Counter({(split, seq, 0): 1 for seq in range(n)})


def test_a_clean_output_is_exactly_once() -> None:
    found = validate(records("a", list(range(10))), expected("a", 10))
    assert found.exactly_once and found.at_least_once
    found.assert_exactly_once()
    assert found.summary().startswith("10 records committed, 10 expected: 0 lost")


def test_a_lost_record_is_reported_and_fails_both_guarantees() -> None:
    found = validate(records("a", [0, 1, 3, 4]), expected("a", 5))
    assert found.lost == {("a", 2, 0): 1}
    with pytest.raises(ValidationError, match=r"1 lost.*\n  first lost: \('a', 2, 0\) x1"):
        found.assert_exactly_once()
    with pytest.raises(ValidationError, match="at-least-once violated"):
        found.assert_at_least_once()


def test_a_duplicate_fails_exactly_once_only() -> None:
    found = validate(records("a", [0, 1, 2]) + records("a", [2], subtask=1), expected("a", 3))
    assert found.duplicated == {("a", 2, 0): 1}
    assert found.out_of_order == []  # another subtask: no order between them
    found.assert_at_least_once()
    with pytest.raises(ValidationError, match=r"first duplicated: \('a', 2, 0\) x1"):
        found.assert_exactly_once()


def test_a_replay_is_a_duplicate_and_out_of_order() -> None:
    found = validate(records("a", [0, 1, 2, 3, 2, 3, 4]), expected("a", 5))
    assert found.duplicated == {("a", 2, 0): 1, ("a", 3, 0): 1}
    assert [(v.previous, v.seq) for v in found.out_of_order] == [(3, 2)]
    found.assert_at_least_once()
    with pytest.raises(ValidationError, match="first out of order: subtask 0 split a: 2 after 3"):
        found.assert_exactly_once()


def keyed(split: str, seq_keys: list[tuple[int, int]], subtask: int = 0) -> list[tuple[int, Any]]:
    return [
        (subtask, msgspec.structs.replace(make_tagged(split, seq, KEYS), key=key))
        for seq, key in seq_keys
    ]


def test_order_is_per_subtask_and_split_or_per_key() -> None:
    # Split a: keys 0 and 1 interleave, each key in order; split b: reversed on subtask 1.
    swapped = keyed("a", [(0, 0), (2, 1), (1, 0), (3, 1)]) + keyed("b", [(1, 0), (0, 0)], 1)
    want = expected("a", 4) + expected("b", 2)
    by_split = validate(swapped, want)
    assert [str(v) for v in by_split.out_of_order] == [
        "subtask 0 split a: 1 after 2",
        "subtask 1 split b: 0 after 1",
    ]
    by_key = validate(swapped, want, order="key")
    assert [str(v) for v in by_key.out_of_order] == ["subtask 1 split b key 0: 0 after 1"]
    assert validate(swapped, want, order="none").exactly_once
    with pytest.raises(ValueError, match="order must be"):
        validate(swapped, Counter(), order="sideways")  # type: ignore[arg-type]


def test_corrupt_and_foreign_records_are_reported() -> None:
    good = make_tagged("a", 0, KEYS)
    bad = msgspec.structs.replace(make_tagged("a", 1, KEYS), seq=2)
    found = validate([(0, good), (0, bad), (0, "not a record")], expected("a", 2))
    assert found.corrupt == [bad, "not a record"]
    assert found.lost == {("a", 1, 0): 1}
    with pytest.raises(ValidationError, match="2 corrupt"):
        found.assert_at_least_once()


def test_unexpected_records_and_anomalies_fail_both() -> None:
    found = validate(records("z", [0]), expected("a", 0), anomalies=["something broke"])
    assert found.unexpected == {("z", 0, 0): 1}
    assert found.anomalies == ["something broke"]
    with pytest.raises(ValidationError, match="first anomalies: something broke"):
        found.assert_at_least_once()


def test_messages_list_only_the_first_few() -> None:
    found = validate([], expected("a", 50))
    with pytest.raises(ValidationError, match=r"\(and 45 more\)"):
        found.assert_exactly_once()


def test_copies_count_as_their_own_records() -> None:
    copies = [(s, make_tagged("a", 0, KEYS).with_copy(s)) for s in range(3)]
    want = Counter({("a", 0, c): 1 for c in range(3)})
    assert validate(copies, want).exactly_once
    assert validate(copies[:2], want).lost == {("a", 0, 2): 1}


def valued(split: str, values: list[tuple[int, Any]], subtask: int = 0) -> list[tuple[int, Any]]:
    return [
        (subtask, msgspec.structs.replace(make_tagged(split, i, KEYS), key=k, value=v))
        for i, (k, v) in enumerate(values)
    ]


def test_compare_values_sees_wrong_counts_and_final_values() -> None:
    reference = valued("a", [(1, 1), (1, 2), (2, 1), (1, 3)])
    assert compare_values(reference, list(reversed(reference))[::-1]) == []
    # A count that restarted from zero after a failure (state lost).
    lost_state = valued("a", [(1, 1), (1, 2), (2, 1), (1, 1)])
    problems = compare_values(reference, lost_state)
    assert len(problems) == 2
    assert "missing [((1, '3'), 1)], extra [((1, '1'), 1)]" in problems[0]
    assert "key 1: 3 != 1" in problems[1]


def test_final_values_skip_keys_seen_by_several_subtasks() -> None:
    reference = valued("a", [(1, 1)]) + valued("b", [(1, 1)], subtask=1)
    other = valued("a", [(1, 1)], subtask=1) + valued("b", [(1, 1)])
    assert compare_values(reference, other) == []
