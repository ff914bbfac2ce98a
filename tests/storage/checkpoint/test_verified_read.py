"""Verified reads: the file's bytes and their crc32, computed while reading."""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest

from storage.checkpoint.verified_read import read_with_crc32


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 4097, 3 * 4096 + 5])
def test_bytes_and_crc32_match_a_plain_read(tmp_path: Path, size: int) -> None:
    path = tmp_path / "state"
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    path.write_bytes(data)
    view, crc = read_with_crc32(path, step=4096)
    assert bytes(view) == data
    assert crc == zlib.crc32(data)
    assert view.readonly


def test_slices_are_views_that_keep_the_bytes_alive(tmp_path: Path) -> None:
    path = tmp_path / "state"
    path.write_bytes(b"abcdef" * 1000)
    view, _ = read_with_crc32(path, step=1000)
    part = view[6:12]
    del view
    assert part.tobytes() == b"abcdef"


def test_a_missing_file_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_with_crc32(tmp_path / "absent")
