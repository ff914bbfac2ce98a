from __future__ import annotations

import json
import os
import subprocess
import sys
from enum import IntEnum, StrEnum
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage import KeyEncodingError, encode_key, stable_hash
from storage.key_hash import stable_hashes

# Pinned forever: checkpoints depend on these. A change here is a format change.
GOLDEN: list[tuple[Any, int]] = [
    (None, 2904199831),
    (True, 920564995),
    (False, 2462723854),
    (0, 2462723854),
    (1, 920564995),
    (-1, 3262916883),
    (2**63 - 1, 693644371),
    (-(2**63), 3172115818),
    (2**63, 1359252847),
    (2**70, 2944523598),
    (1.0, 920564995),
    (1.5, 2862464230),
    ("", 2783801655),
    ("1", 2570687803),
    (b"1", 1766024665),
    ((), 353932715),
    ((1, "a"), 3567859892),
]

# Keys whose hash is checked in a process with another PYTHONHASHSEED.
SUBPROCESS_KEYS: list[Any] = [
    "user-42",
    "ünïcødé ✓",
    b"\x00\xffbytes",
    ("nested", (1, 2.5, None), b"x"),
    123456789,
    -(2**80),
    -2.75,
    "\ud800",
]


@pytest.mark.parametrize(("key", "expected"), GOLDEN, ids=[repr(k) for k, _ in GOLDEN])
def test_golden_values(key: Any, expected: int) -> None:
    assert stable_hash(key) == expected


# Pinned too, computed once.
EXPECTED_SUBPROCESS = [
    553793484,
    3214740581,
    728568029,
    842563986,
    3077212414,
    1301732887,
    1829672485,
    2785752311,
]


def test_more_golden_values() -> None:
    assert [stable_hash(k) for k in SUBPROCESS_KEYS] == EXPECTED_SUBPROCESS


def test_same_in_a_process_with_another_hash_seed() -> None:
    code = (
        "import json, sys\n"
        "from storage import stable_hash\n"
        f"keys = {SUBPROCESS_KEYS!r}\n"
        "print(json.dumps([stable_hash(k) for k in keys]))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    )
    assert json.loads(out.stdout) == EXPECTED_SUBPROCESS


def test_types_are_distinguished() -> None:
    hashes = {stable_hash(k) for k in (1, "1", b"1", 1.5, None, (1,), ((1,),), "", b"", ())}
    assert len(hashes) == 10


def test_equal_keys_hash_equally() -> None:
    # Dicts (state, key group caches) merge equal keys, so their hashes must agree.
    assert stable_hash(1) == stable_hash(True) == stable_hash(1.0)
    assert stable_hash(0) == stable_hash(False) == stable_hash(-0.0) == stable_hash(0.0)
    assert stable_hash((1, "a")) == stable_hash((True, "a")) == stable_hash((1.0, "a"))
    assert stable_hash(2**70) == stable_hash(float(2**70))


@pytest.mark.parametrize(
    "key", [float("nan"), -float("nan"), ("a", float("nan")), (1, (float("nan"),))]
)
def test_nan_keys_are_refused(key: Any) -> None:
    # NaN != NaN: heap state kept one entry per NaN object, RocksDB one for all of them.
    with pytest.raises(KeyEncodingError, match="cannot use NaN as a key"):
        stable_hash(key)
    with pytest.raises(KeyEncodingError, match="cannot use NaN as a key"):
        stable_hashes([key] * 20)


def test_subclasses_hash_as_their_base() -> None:
    class Color(IntEnum):
        RED = 7

    class Name(StrEnum):
        ALICE = "alice"

    assert stable_hash(Color.RED) == stable_hash(7)
    assert stable_hash(Name.ALICE) == stable_hash("alice")


def test_tuple_encoding_is_unambiguous() -> None:
    assert stable_hash(("ab", "c")) != stable_hash(("a", "bc"))
    assert stable_hash((("a",), "b")) != stable_hash(("a", ("b",)))
    assert encode_key(("a",)) == b"\x05\x00\x00\x00\x02\x03a"


def test_encode_key_layout() -> None:
    assert encode_key(None) == b"\x00"
    assert encode_key(0) == b"\x01\x00"
    assert encode_key(-1) == b"\x01\xff"
    assert encode_key(255) == b"\x01\x00\xff"
    assert encode_key(True) == b"\x01\x01"
    assert encode_key(0.5) == b"\x02" + bytes.fromhex("3fe0000000000000")
    assert encode_key("é") == b"\x03\xc3\xa9"
    assert encode_key(b"x") == b"\x04x"


@pytest.mark.parametrize("key", [object(), [1], {"a": 1}, {1}, ("ok", [1]), 1j])
def test_unsupported_key_names_type(key: Any) -> None:
    with pytest.raises(KeyEncodingError, match=r"cannot hash key .* of type '.*': supported"):
        stable_hash(key)


def test_key_encoding_error_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="None, bool, int, float, str, bytes and tuples"):
        stable_hash(object())


keys = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(),
    lambda children: st.tuples(children) | st.lists(children, max_size=3).map(tuple),
    max_leaves=8,
)


@given(keys)
def test_hash_is_32_bit_unsigned(key: Any) -> None:
    assert 0 <= stable_hash(key) < 2**32


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_int_fast_path_matches_reference(key: int) -> None:
    from storage.key_hash import _hash_int64

    assert stable_hash(key) == _hash_int64(key)
    assert stable_hash(float(key)) == stable_hash(key) or float(key) != key


def test_small_ints_spread() -> None:
    assert len({stable_hash(k) for k in range(-50_000, 50_000)}) == 100_000


# Homogeneous lists take the bulk paths (int, str, bytes); others fall back per key.
BULK_KEYS = st.one_of(
    st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), min_size=16),
    st.lists(st.integers(), min_size=16),  # beyond 64 bits: the per-key fallback
    st.lists(st.booleans() | st.integers(-3, 3), min_size=16),
    st.lists(st.text(), min_size=16),  # lone surrogates included
    st.lists(st.binary(), min_size=16),
    st.lists(keys, min_size=16),
    st.lists(keys),
)


@given(BULK_KEYS, st.sampled_from([None, 1, 7, 100, 128, 4096, 32768]))
def test_bulk_hashes_equal_one_by_one(many: list[Any], modulus: int | None) -> None:
    expected = [stable_hash(k) if modulus is None else stable_hash(k) % modulus for k in many]
    assert stable_hashes(many, modulus) == expected


def test_bulk_hashes_past_one_slice_and_errors() -> None:
    many = list(range(-10_000, 10_000))
    assert stable_hashes(many, 128) == [stable_hash(k) % 128 for k in many]
    with pytest.raises(KeyEncodingError, match="cannot hash key"):
        stable_hashes([*range(20), object()], 128)
