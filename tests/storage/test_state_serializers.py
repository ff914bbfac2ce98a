from __future__ import annotations

import datetime
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage import (
    MsgspecSerializer,
    PickleForbiddenError,
    PickleSerializer,
    SerializationError,
    UntypedSerializer,
    serializer_for,
)


class Event(msgspec.Struct, frozen=True):
    user: str
    count: int
    tags: tuple[str, ...] = ()


class Opaque:
    def __init__(self, x: int) -> None:
        self.x = x

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Opaque) and other.x == self.x

    __hash__ = None  # type: ignore[assignment]


scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() | st.binary()
)
hashables = st.recursive(scalars, lambda c: st.tuples(c, c) | st.tuples(c), max_leaves=4)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.lists(children, max_size=4).map(tuple)
        | st.dictionaries(hashables, children, max_size=4)
    ),
    max_leaves=20,
)


def same(a: Any, b: Any) -> bool:
    """Equality that also checks types all the way down (1 vs True, list vs tuple)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


@given(values)
def test_untyped_round_trip_is_exact_without_pickle(value: Any) -> None:
    serializer = serializer_for(None, allow_pickle=False)
    data = serializer.encode(value)
    assert data[:1] == b"M"
    assert same(serializer.decode(data), value)


def test_untyped_falls_back_to_pickle() -> None:
    serializer = serializer_for(None)
    for value in (Opaque(3), {1, 2}, [Event("a", 1)], datetime.date(2024, 1, 2)):
        data = serializer.encode(value)
        assert data[:1] == b"P"
        assert serializer.decode(data) == value


def test_pickle_forbidden_names_the_type() -> None:
    serializer = serializer_for(None, allow_pickle=False, what="value state 'seen'")
    with pytest.raises(
        PickleForbiddenError,
        match="value state 'seen' holds a set value, which needs pickle, and pickle is "
        "forbidden; declare a msgspec-encodable type on the state descriptor",
    ):
        serializer.encode({"ids": {1, 2}})
    with pytest.raises(PickleForbiddenError, match="declared as Opaque, which msgspec cannot"):
        serializer_for(Opaque, allow_pickle=False)
    pickled = serializer_for(None).encode(Opaque(1))
    with pytest.raises(PickleForbiddenError, match="was written with pickle"):
        serializer.decode(pickled)


def test_typed_serializers() -> None:
    event = Event("u", 3, ("a", "b"))
    serializer = serializer_for(Event)
    assert isinstance(serializer, MsgspecSerializer)
    assert serializer.decode(serializer.encode(event)) == event
    pairs = serializer_for(list[tuple[int, str]])
    assert pairs.decode(pairs.encode([(1, "a")])) == [(1, "a")]
    assert isinstance(serializer_for(Opaque), PickleSerializer)
    assert serializer_for(Opaque).decode(serializer_for(Opaque).encode(Opaque(2))) == Opaque(2)


def test_typed_errors_name_the_type() -> None:
    ints = serializer_for(int)
    with pytest.raises(SerializationError, match="cannot decode a int value: Expected `int`"):
        ints.decode(serializer_for(str).encode("x"))
    with pytest.raises(SerializationError, match="cannot encode object value as int"):
        ints.encode(object())


def test_untyped_rejects_unknown_envelope() -> None:
    with pytest.raises(SerializationError, match="unknown envelope tag"):
        UntypedSerializer().decode(b"Xjunk")
    with pytest.raises(SerializationError, match="cannot decode value"):
        UntypedSerializer().decode(b"M\xc1")
