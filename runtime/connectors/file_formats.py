r"""File formats of ``FileSource`` (and ``FileSink``): text lines, JSON Lines, CSV.

A format turns lines (``bytes`` without the newline) into records, and records into
lines. Decoding is batched (a list of lines at a time) and raises
:class:`LineError` naming the index of the first line it could not decode; the source
turns that into an error naming the file, the line number and the byte offset.

* ``TextLines(encoding="utf-8")``: each line as a ``str`` (a trailing ``\\r`` is dropped).
* ``JsonLines(type=None)``: each line decoded by msgspec's JSON decoder (into ``type``
  if given: a ``msgspec.Struct``, ``dict``...); empty lines are skipped.
* ``Csv(header=True, fieldnames=None, delimiter=",", ...)``: the standard library's
  ``csv``; records are dicts (with a header or ``fieldnames``) or lists of strings.
  A file with a header is one split (a header belongs to its file).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

import msgspec

from runtime.errors import ConfigError

__all__ = ["Csv", "FileFormat", "JsonLines", "LineError", "TextLines"]


class LineError(ValueError):
    """Line ``index`` of a batch could not be decoded (``reason`` says why)."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(reason)
        self.index = index
        self.reason = reason


class FileFormat:
    """Decodes lines into records and encodes records into lines.

    Attributes:
        name: for messages.
        splittable: whether a file may be split by byte range (else one split per file).
    """

    name = "format"
    splittable = True

    def header_lines(self) -> int:
        """Lines at the start of every file that are not records (CSV's header)."""
        return 0

    def set_header(self, line: bytes) -> None:
        """Take the file's header line (formats with ``header_lines() == 1``)."""

    def decode(self, lines: Sequence[bytes]) -> list[Any]:
        """One record per line (blank lines may be skipped).

        Raises:
            LineError: a line does not decode.
        """
        raise NotImplementedError

    def encode(self, records: Sequence[Any]) -> str:
        """The lines of ``records``, each ending with a newline."""
        raise NotImplementedError


class TextLines(FileFormat):
    """Each line as a string."""

    name = "text"

    def __init__(self, encoding: str = "utf-8") -> None:
        self.encoding = encoding

    def decode(self, lines: Sequence[bytes]) -> list[Any]:
        """Decode each line; drop a trailing carriage return."""
        encoding = self.encoding
        try:
            return [line.decode(encoding).removesuffix("\r") for line in lines]
        except UnicodeDecodeError:
            for index, line in enumerate(lines):
                try:
                    line.decode(encoding)
                except UnicodeDecodeError as error:
                    raise LineError(index, f"not {encoding} text: {error}") from None
            raise

    def encode(self, records: Sequence[Any]) -> str:
        """``str(record)`` per line."""
        return "".join(f"{record}\n" for record in records)


class JsonLines(FileFormat):
    """One JSON value per line (msgspec's decoder, into ``type`` if given).

    Empty lines are skipped; a line of only spaces is an error.
    """

    name = "json lines"

    def __init__(self, type: Any = Any) -> None:
        self.type = type
        self._decoder = msgspec.json.Decoder(type)
        self._encoder = msgspec.json.Encoder()

    def __deepcopy__(self, memo: dict[int, Any]) -> JsonLines:
        return JsonLines(self.type)

    def decode(self, lines: Sequence[bytes]) -> list[Any]:
        """Decode each line; skip blank lines."""
        decode = self._decoder.decode
        try:
            return [decode(line) for line in lines if line]
        except msgspec.DecodeError:
            for index, line in enumerate(lines):
                if not line:
                    continue
                try:
                    decode(line)
                except msgspec.DecodeError as error:
                    raise LineError(index, f"not valid JSON: {error}") from None
            raise

    def encode(self, records: Sequence[Any]) -> str:
        """One JSON document per line."""
        encode = self._encoder.encode
        return "".join(f"{encode(record).decode()}\n" for record in records)


class Csv(FileFormat):
    """Comma-separated values (the standard library's ``csv``).

    Args:
        header: the first line of each file names the fields (records are dicts).
        fieldnames: the fields, for files without a header (records are dicts); with
            neither, records are lists of strings.
        delimiter: the field separator.
        encoding: the files' text encoding.
        **dialect: more ``csv`` formatting parameters (``quotechar``...).
    """

    name = "csv"

    def __init__(
        self,
        *,
        header: bool = True,
        fieldnames: Sequence[str] | None = None,
        delimiter: str = ",",
        encoding: str = "utf-8",
        **dialect: Any,
    ) -> None:
        if header and fieldnames is not None:
            raise ConfigError("Csv: give header=True or fieldnames, not both")
        self.header = header
        self.fieldnames = list(fieldnames) if fieldnames is not None else None
        self.delimiter = delimiter
        self.encoding = encoding
        self.dialect = dialect
        self.splittable = not header
        self._names: list[str] | None = self.fieldnames

    def header_lines(self) -> int:
        """One if the files have a header."""
        return 1 if self.header else 0

    def set_header(self, line: bytes) -> None:
        """Read the field names from the header line."""
        text = line.decode(self.encoding).removesuffix("\r")
        self._names = next(csv.reader([text], delimiter=self.delimiter, **self.dialect), [])

    def decode(self, lines: Sequence[bytes]) -> list[Any]:
        """Parse the lines (a quoted field may not span lines)."""
        encoding = self.encoding
        try:
            texts = [line.decode(encoding).removesuffix("\r") for line in lines]
        except UnicodeDecodeError:
            for index, line in enumerate(lines):
                try:
                    line.decode(encoding)
                except UnicodeDecodeError as error:
                    raise LineError(index, f"not {encoding} text: {error}") from None
            raise
        reader = csv.reader(texts, delimiter=self.delimiter, strict=True, **self.dialect)
        names = self._names
        records: list[Any] = []
        index = 0
        try:
            for index, row in enumerate(reader):
                if not row:
                    continue
                if names is None:
                    records.append(row)
                elif len(row) != len(names):
                    raise LineError(index, f"{len(row)} fields where the header has {len(names)}")
                else:
                    records.append(dict(zip(names, row, strict=True)))
        except csv.Error as error:
            raise LineError(index, f"not valid CSV: {error}") from None
        return records

    def encode(self, records: Sequence[Any]) -> str:
        """One CSV row per record (dicts in ``fieldnames`` order)."""
        out = io.StringIO()
        writer = csv.writer(out, delimiter=self.delimiter, lineterminator="\n", **self.dialect)
        names = self._names
        for record in records:
            if isinstance(record, dict):
                writer.writerow(record.values() if names is None else [record[n] for n in names])
            else:
                writer.writerow(record)
        return out.getvalue()
