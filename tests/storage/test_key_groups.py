from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage import (
    DEFAULT_MAX_PARALLELISM,
    UPPER_BOUND_MAX_PARALLELISM,
    KeyEncodingError,
    KeyGroupAssigner,
    KeyGroupRange,
    assign_to_key_group,
    compute_operator_index_for_key_group,
    stable_hash,
    validate_max_parallelism,
)


@st.composite
def parallelisms(draw: st.DrawFn) -> tuple[int, int]:
    max_parallelism = draw(st.integers(1, UPPER_BOUND_MAX_PARALLELISM))
    parallelism = draw(st.integers(1, min(max_parallelism, 300)))
    return max_parallelism, parallelism


@given(parallelisms())
def test_ranges_partition_key_groups_and_agree_with_operator_index(
    setting: tuple[int, int],
) -> None:
    # After Flink's KeyGroupRangeAssignmentTest.
    max_parallelism, parallelism = setting
    expected_start = 0
    for index in range(parallelism):
        key_groups = KeyGroupRange.for_operator(max_parallelism, parallelism, index)
        assert key_groups.start == expected_start
        assert len(key_groups) >= 1
        for key_group in (key_groups.start, key_groups.end):
            assert (
                compute_operator_index_for_key_group(max_parallelism, parallelism, key_group)
                == index
            )
        expected_start = key_groups.end + 1
    assert expected_start == max_parallelism


@given(st.integers(1, 64), st.data())
def test_every_key_group_agrees_for_small_settings(
    max_parallelism: int, data: st.DataObject
) -> None:
    parallelism = data.draw(st.integers(1, max_parallelism))
    ranges = [
        KeyGroupRange.for_operator(max_parallelism, parallelism, i) for i in range(parallelism)
    ]
    for key_group in range(max_parallelism):
        owners = [i for i, r in enumerate(ranges) if key_group in r]
        assert owners == [
            compute_operator_index_for_key_group(max_parallelism, parallelism, key_group)
        ]


def test_flink_example() -> None:
    assert KeyGroupRange.for_operator(128, 3, 0) == KeyGroupRange(0, 42)
    assert KeyGroupRange.for_operator(128, 3, 1) == KeyGroupRange(43, 85)
    assert KeyGroupRange.for_operator(128, 3, 2) == KeyGroupRange(86, 127)


def test_range_protocol() -> None:
    key_groups = KeyGroupRange(3, 6)
    assert list(key_groups) == [3, 4, 5, 6]
    assert len(key_groups) == 4
    assert 3 in key_groups and 6 in key_groups
    assert 2 not in key_groups and 7 not in key_groups and "3" not in key_groups
    assert key_groups.intersection(KeyGroupRange(5, 10)) == KeyGroupRange(5, 6)
    assert key_groups.intersection(KeyGroupRange(7, 10)).is_empty
    empty = KeyGroupRange.empty()
    assert len(empty) == 0 and list(empty) == [] and 0 not in empty
    assert KeyGroupRange(5, 4).is_empty
    with pytest.raises(ValueError, match="invalid key group range"):
        KeyGroupRange(5, 3)
    with pytest.raises(ValueError, match="invalid key group range"):
        KeyGroupRange(-1, 3)


@pytest.mark.parametrize("bad", [0, -1, UPPER_BOUND_MAX_PARALLELISM + 1, 1.5, True, "128"])
def test_validate_max_parallelism(bad: object) -> None:
    with pytest.raises(ValueError, match="max_parallelism must be an int between 1 and 32768"):
        validate_max_parallelism(bad)  # type: ignore[arg-type]


def test_validate_max_parallelism_accepts_bounds() -> None:
    assert validate_max_parallelism(1) == 1
    assert validate_max_parallelism(UPPER_BOUND_MAX_PARALLELISM) == UPPER_BOUND_MAX_PARALLELISM
    assert DEFAULT_MAX_PARALLELISM == 128


def test_for_operator_validates() -> None:
    with pytest.raises(ValueError, match="parallelism must be an int between 1 and"):
        KeyGroupRange.for_operator(4, 5, 0)
    with pytest.raises(ValueError, match=r"operator_index must be in \[0, 2\)"):
        KeyGroupRange.for_operator(4, 2, 2)


keys = st.one_of(st.integers(), st.text(), st.binary(), st.tuples(st.text(), st.integers()))


@given(st.lists(keys, max_size=50), st.integers(1, 512), st.data())
def test_assigner_matches_formulas(
    key_list: list[object], max_parallelism: int, data: st.DataObject
) -> None:
    parallelism = data.draw(st.integers(1, max_parallelism))
    assigner = KeyGroupAssigner(max_parallelism, parallelism, cache_size=7)
    for key in key_list + key_list:  # second pass hits the cache (or a cleared one)
        key_group = assign_to_key_group(key, max_parallelism)
        assert key_group == stable_hash(key) % max_parallelism
        assert assigner.key_group(key) == key_group
        channel = assigner.channel(key)
        assert channel == compute_operator_index_for_key_group(
            max_parallelism, parallelism, key_group
        )
        assert key_group in KeyGroupRange.for_operator(max_parallelism, parallelism, channel)


def test_assigner_cache_is_bounded() -> None:
    assigner = KeyGroupAssigner(128, 4, cache_size=10)
    for key in range(1000):
        assigner.key_group(key)
        assigner.channel(key)
    assert len(assigner._key_groups) <= 10
    assert len(assigner._channels) <= 10


def test_assigner_rejects_unencodable_keys() -> None:
    assigner = KeyGroupAssigner(128, 4)
    with pytest.raises(KeyEncodingError, match="of type 'list'"):
        assigner.key_group([1, 2])
    with pytest.raises(KeyEncodingError, match="of type 'object'"):
        assigner.channel(object())
    with pytest.raises(ValueError, match="parallelism"):
        KeyGroupAssigner(4, 8)
