"""State files: length-prefixed msgpack frames, round trip and corruption."""

from __future__ import annotations

import pickle
import re
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage.checkpoint import NO_KEY_GROUP, CorruptCheckpointError, StateFrame, encode_frame
from storage.checkpoint import iter_frames as iter_frames_

PATH = "/x/chk-3/count-0"

frames_strategy = st.lists(
    st.builds(
        StateFrame,
        kind=st.sampled_from(["keyed", "operator", "input_channel", "output_channel"]),
        operator_uid=st.text(max_size=10),
        key_group=st.integers(min_value=-1, max_value=32767),
        data=st.binary(max_size=64),
    ),
    max_size=8,
)


def iter_frames(data: bytes) -> list[StateFrame]:
    return list(iter_frames_(data, PATH))


def corrupt(match: str) -> pytest.RaisesExc[CorruptCheckpointError]:
    return pytest.raises(
        CorruptCheckpointError,
        match=rf"^checkpoint state file {re.escape(PATH)} is corrupt: {match}",
    )


@given(frames_strategy)
def test_round_trip(frames: list[StateFrame]) -> None:
    assert iter_frames(b"".join(encode_frame(f) for f in frames)) == frames


def test_frame_layout_is_length_then_msgpack() -> None:
    frame = StateFrame("operator", "src", NO_KEY_GROUP, b"offsets")
    data = encode_frame(frame)
    (length,) = struct.unpack(">I", data[:4])
    assert length == len(data) - 4


def test_an_empty_file_has_no_frames() -> None:
    assert iter_frames(b"") == []


@given(frames_strategy.filter(bool), st.data())
def test_any_truncation_is_corrupt(frames: list[StateFrame], data: st.DataObject) -> None:
    blob = b"".join(encode_frame(f) for f in frames)
    boundaries = set()
    offset = 0
    for frame in frames:
        offset += len(encode_frame(frame))
        boundaries.add(offset)
    cut = data.draw(
        st.integers(min_value=1, max_value=len(blob) - 1).filter(lambda n: n not in boundaries)
    )
    with corrupt("truncated frame"):
        iter_frames(blob[:cut])


def test_truncation_inside_the_length() -> None:
    blob = encode_frame(StateFrame("keyed", "count", 3, b"x"))
    with corrupt(r"truncated frame length at byte \d+ \(2 of 4 bytes\)"):
        iter_frames(blob + blob[:2])


def test_good_frames_before_a_bad_one_are_yielded() -> None:
    good = StateFrame("keyed", "count", 3, b"x")
    frames = iter_frames_(encode_frame(good) + b"\x00\x00\x00\x02\xc1\xc1", PATH)
    assert next(frames) == good
    with corrupt(r"frame at byte \d+ does not decode"):
        next(frames)


def test_garbage_is_corrupt() -> None:
    with corrupt("frame at byte 0 does not decode"):
        iter_frames(b"\x00\x00\x00\x03abc")


def test_a_frame_of_the_wrong_shape_is_corrupt() -> None:
    body = b"\x93\xa1k\xa1u\x01"  # a 3-element array: one field short
    with corrupt("frame at byte 0 does not decode"):
        iter_frames(struct.pack(">I", len(body)) + body)


def test_decoding_never_uses_pickle(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("pickle was used")

    for name in ("loads", "load", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    frame = StateFrame("keyed", "count", 5, b"\x80\x04blob")
    assert iter_frames(encode_frame(frame)) == [frame]


def test_an_oversized_frame_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("storage.checkpoint.state_file.MAX_FRAME_SIZE", 10)
    with pytest.raises(ValueError, match=r"state frame of operator 'count' \(key group 4\)"):
        encode_frame(StateFrame("keyed", "count", 4, b"x" * 20))
