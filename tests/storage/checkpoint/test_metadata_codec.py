"""The ``_metadata`` envelope: round trip, and every kind of corruption names the file."""

from __future__ import annotations

import pickle
import re
import struct
import zlib
from collections.abc import Callable

import msgspec
import pytest

from storage.checkpoint import (
    METADATA_VERSION,
    CheckpointMetadata,
    CorruptCheckpointError,
    StateHandle,
    crc32_hex,
    decode_metadata,
    encode_metadata,
)
from storage.checkpoint.metadata import METADATA_MAGIC

MakeMetadata = Callable[..., CheckpointMetadata]

PATH = "/x/chk-3/_metadata"
HEADER = 16


def corrupt(match: str) -> pytest.RaisesExc[CorruptCheckpointError]:
    return pytest.raises(
        CorruptCheckpointError,
        match=rf"^checkpoint metadata {re.escape(PATH)} is corrupt: {match}.*; "
        r"it will not be used$",
    )


def test_round_trip(make_metadata: MakeMetadata) -> None:
    meta = make_metadata()
    data = encode_metadata(meta)
    assert data.startswith(METADATA_MAGIC + struct.pack(">I", METADATA_VERSION))
    assert decode_metadata(data, PATH) == meta


def test_round_trip_of_a_stateless_savepoint(make_metadata: MakeMetadata) -> None:
    meta = make_metadata(checkpoint_id=0, handles=[None], is_savepoint=True)
    assert decode_metadata(encode_metadata(meta), PATH) == meta


def test_properties_default_to_empty() -> None:
    meta = msgspec.msgpack.decode(
        msgspec.msgpack.encode(
            {
                "version": 1,
                "job_id": "j",
                "checkpoint_id": 1,
                "timestamp": 0.0,
                "is_savepoint": False,
                "operators": [],
            }
        )
    )
    body = msgspec.msgpack.encode(meta)
    data = struct.pack(">8sII", METADATA_MAGIC, 1, zlib.crc32(body)) + body
    assert decode_metadata(data, PATH).properties == {}


def test_a_flipped_byte_in_the_body_is_a_checksum_mismatch(make_metadata: MakeMetadata) -> None:
    data = bytearray(encode_metadata(make_metadata()))
    data[HEADER + 5] ^= 0x40
    with corrupt("checksum mismatch"):
        decode_metadata(bytes(data), PATH)


def test_a_flipped_byte_in_the_checksum_is_a_checksum_mismatch(
    make_metadata: MakeMetadata,
) -> None:
    data = bytearray(encode_metadata(make_metadata()))
    data[HEADER - 1] ^= 0x01
    with corrupt("checksum mismatch"):
        decode_metadata(bytes(data), PATH)


@pytest.mark.parametrize("keep", [0, 1, 8, 15, 16, 17, -1])
def test_a_truncated_file_is_corrupt(make_metadata: MakeMetadata, keep: int) -> None:
    data = encode_metadata(make_metadata())
    with corrupt("(truncated|checksum mismatch)"):
        decode_metadata(data[:keep], PATH)


def test_an_empty_file_says_it_is_empty() -> None:
    with corrupt("truncated: it is empty"):
        decode_metadata(b"", PATH)


def test_wrong_magic(make_metadata: MakeMetadata) -> None:
    data = b"NOTWEIRM" + encode_metadata(make_metadata())[8:]
    with corrupt("wrong magic bytes b'NOTWEIRM', expected b'WEIRMETA'"):
        decode_metadata(data, PATH)


def test_an_unknown_version_names_the_supported_ones(make_metadata: MakeMetadata) -> None:
    data = bytearray(encode_metadata(make_metadata()))
    data[8:12] = struct.pack(">I", 7)
    with corrupt("unsupported format version 7; this version of weir reads format versions 1"):
        decode_metadata(bytes(data), PATH)


def envelope(body: bytes, version: int = METADATA_VERSION) -> bytes:
    return struct.pack(">8sII", METADATA_MAGIC, version, zlib.crc32(body)) + body


def test_a_body_that_is_not_msgpack_is_corrupt() -> None:
    with corrupt("body does not decode"):
        decode_metadata(envelope(b"\xc1\xc1\xc1"), PATH)


def test_a_body_of_the_wrong_shape_is_corrupt(make_metadata: MakeMetadata) -> None:
    raw = msgspec.to_builtins(make_metadata())
    raw["checkpoint_id"] = "three"
    with corrupt(r"body does not decode: Expected `int`, got `str` - at `\$.checkpoint_id`"):
        decode_metadata(envelope(msgspec.msgpack.encode(raw)), PATH)


def test_a_checksum_that_is_not_hex_is_corrupt(make_metadata: MakeMetadata) -> None:
    meta = make_metadata(handles=[StateHandle(path="a", size=1, checksum="not-hex!")])
    with corrupt("body does not decode"):
        decode_metadata(envelope(msgspec.msgpack.encode(meta)), PATH)


def test_a_body_version_that_disagrees_with_the_header_is_corrupt(
    make_metadata: MakeMetadata,
) -> None:
    body = msgspec.msgpack.encode(msgspec.structs.replace(make_metadata(), version=2))
    with corrupt("body says format version 2, header says 1"):
        decode_metadata(envelope(body), PATH)


def test_encode_refuses_another_version(make_metadata: MakeMetadata) -> None:
    meta = msgspec.structs.replace(make_metadata(), version=2)
    with pytest.raises(ValueError, match="metadata version is 2, this code writes version 1"):
        encode_metadata(meta)


def test_decoding_never_uses_pickle(
    make_metadata: MakeMetadata, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("pickle was used")

    for name in ("loads", "load", "Unpickler", "dumps", "dump", "Pickler"):
        monkeypatch.setattr(pickle, name, refuse)
    meta = make_metadata()
    assert decode_metadata(encode_metadata(meta), PATH) == meta


def test_the_error_keeps_path_and_reason_and_pickles() -> None:
    with pytest.raises(CorruptCheckpointError) as info:
        decode_metadata(b"", PATH)
    assert info.value.path == PATH
    assert info.value.reason.startswith("truncated")
    copy = pickle.loads(pickle.dumps(info.value))
    assert (copy.path, copy.reason, str(copy)) == (PATH, info.value.reason, str(info.value))


def test_crc32_hex_continues_a_running_checksum() -> None:
    assert crc32_hex(b"hello world") == f"{zlib.crc32(b'hello world'):08x}"
    assert crc32_hex(b" world", crc32_hex(b"hello")) == crc32_hex(b"hello world")
    assert crc32_hex(b"") == "00000000"
