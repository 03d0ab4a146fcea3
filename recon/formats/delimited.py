"""CSV text read by Python's csv module (the general path): the encoding, the delimiter,
the rows with their physical lines, and quoted fields held to the format's limits.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
from collections.abc import Iterator

from recon.core.errors import FileRejected
from recon.formats.declaration import DEFAULT_LIMITS, FileFormat, ReadLimits
from recon.formats.grid import RawTable, split_rows


def detect_delimiter(first_line: str, allowed: tuple[str, ...]) -> str:
    counts = {sep: first_line.count(sep) for sep in allowed}
    return max(allowed, key=lambda sep: counts[sep])


def decode_csv(name: str, data: bytes, fmt: FileFormat, byte_base: int = 0
               ) -> tuple[str, str]:
    """The text of a CSV file and its delimiter; FileRejected when empty or not UTF-8 (at
    an offset in the file `byte_base` past the one in `data`)."""
    if not data or data.isspace():  # without a stripped copy of the whole file
        raise FileRejected(name, "file is empty")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        # The decoder's offsets are past the BOM it takes off.
        at = exc.start + (len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0)
        raise FileRejected(
            name, f"not UTF-8 text (byte 0x{data[at]:02x} at offset {at + byte_base})"
        ) from exc
    line = first_line_of(data)
    if line is None:  # nothing but blank lines at the start: split the whole text
        line = next((line for line in text.splitlines() if line.strip()), "")
    return text, detect_delimiter(line, fmt.delimiters)


def first_line_of(data: bytes, look: int = 1 << 16, start: int = 0) -> str | None:
    """The first line that is not blank within the `look` bytes of a file from `start`;
    None when there is none there (a line `look` cuts does not count). Splitting a whole
    large file into lines only for this took most of a second. Bytes that are not UTF-8
    are left to the readers to report."""
    lines = data[start:start + look].decode("utf-8-sig", errors="ignore").splitlines()
    if len(data) > start + look:
        lines = lines[:-1]  # the last line of the head may go on past it
    return next((line for line in lines if line.strip()), None)


def sniff_delimiter(data: bytes, fmt: FileFormat) -> str | None:
    """The delimiter as `decode_csv` finds it, from the file's first bytes alone; None
    when they hold no line (the general path then decodes the whole file)."""
    line = first_line_of(data)
    return None if line is None else detect_delimiter(line, fmt.delimiters)


def read_csv_table(name: str, text: str, delimiter: str, line_base: int = 0,
                   limits: ReadLimits = DEFAULT_LIMITS, marker: str = "TOTAL") -> RawTable:
    """Every row with its physical line number (blank lines and quoted line breaks kept
    in the count), `line_base` past the line's in `text`. A row across lines is checked
    for a stray quote (`check_spanning_row`), the last one also for a quote never closed."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)

    def numbered() -> Iterator[tuple[int, list[str]]]:
        previous_end = last_start = 0
        try:
            for row in reader:
                start = previous_end + 1
                previous_end = reader.line_num
                if previous_end > start:
                    check_spanning_row(name, start + line_base, previous_end - start + 1,
                                       row, limits, marker)
                if row:
                    last_start = start
                yield start + line_base, row
        except csv.Error as exc:
            raise FileRejected(name, f"line {reader.line_num + line_base}: unreadable CSV "
                                     f"({exc})") from exc
        if last_start and '"' in text and _open_at_end(text, last_start, delimiter):
            raise FileRejected(name, f"line {last_start + line_base}: a quoted field opens "
                                     "here and is never closed (a stray quote?)")

    return split_rows(name, numbered(), f"csv ({delimiter})")


def check_spanning_row(name: str, line_no: int, span: int, cells: list[str],
                       limits: ReadLimits, marker: str) -> None:
    """A row whose quoted fields take `span` physical lines from `line_no`: refused when
    it spans more than `limits.max_quoted_lines` or swallows a line that looks like the
    trailer, the marks of a stray quote that hides the rows after it."""
    if span > limits.max_quoted_lines:
        raise FileRejected(name, f"line {line_no}: a quoted field opens here and runs over "
                                 f"{span} lines (max_quoted_lines {limits.max_quoted_lines}; "
                                 "a stray quote?)")
    if any(_swallows_trailer(cell, marker) for cell in cells if "\n" in cell or "\r" in cell):
        raise FileRejected(name, f"line {line_no}: a quoted field opens here and takes in a "
                                 f"{marker} line (a stray quote?)")


def _swallows_trailer(cell: str, marker: str) -> bool:
    lines = cell.replace("\r\n", "\n").replace("\r", "\n").split("\n")[1:]
    return any(line.lstrip().lstrip('"').upper().startswith(marker.upper()) for line in lines)


def _open_at_end(text: str, first_line: int, delimiter: str) -> bool:
    """Whether the row from line `first_line` of `text` to its end ends inside a quoted
    field (Python's csv, not strict, takes such a field to the end of the file)."""
    tail = "".join(itertools.islice(io.StringIO(text, newline=""), first_line - 1, None))
    try:
        for _ in csv.reader(io.StringIO(tail, newline=""), delimiter=delimiter, strict=True):
            pass
    except csv.Error as exc:
        return "unexpected end of data" in str(exc)
    return False
