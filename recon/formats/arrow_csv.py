"""CSV read by Arrow (the fast path): a body of rows of one width parsed in parallel, the
rows it cannot take handed to the general path, line numbers kept.
"""

from __future__ import annotations

import codecs
import functools
import logging
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from recon.core.errors import FileRejected
from recon.core.schemas import arrow_text, one_chunk, value_offsets
from recon.formats.declaration import DEFAULT_LIMITS, FileFormat, ReadLimits
from recon.formats.delimited import check_spanning_row, first_line_of
from recon.formats.grid import (
    NO_ROWS,
    PROGRESS_EVERY,
    WHOLE,
    Grid,
    Piece,
    RawTable,
    Trailer,
    count_bytes,
    find_header,
    fitted_row,
    is_blank,
    is_trailer,
    lone_cr,
    map_header,
    parse_trailer,
    split_cells,
    too_wide_text,
)

log = logging.getLogger(__name__)


@dataclass
class _ArrowRead:
    """What `fast_csv_parse` read, for `fast_csv_grid`: no longer the file's bytes."""

    table: pa.Table | None  # the rows' cells as Arrow read them (let go by the grid)
    width: int  # the header's
    lines: np.ndarray
    odd: list[tuple[int, str]]  # rows of another width: (row number, text)
    trailer: Trailer | None
    positions: dict[str, int]
    delimiter: str


def fast_csv_parse(name: str, data: bytes, delimiter: str, fmt: FileFormat,
                   piece: Piece = WHOLE, limits: ReadLimits = DEFAULT_LIMITS
                   ) -> _ArrowRead | None:
    """Arrow's CSV reader for the common file: LF or CRLF line ends (the last line's may
    be missing), data rows as wide as the first (as wide as the header, or wider with empty
    cells past it: a delimiter at the end of each row), and a few rows of other widths, set
    aside (`_arrow_csv`). Empty lines and rows of empty cells are skipped, before the header
    too, and rows keep their physical line numbers. Quoted fields may span lines in a file
    without empty lines or rows of other widths (`_spanned_lines`).
    Anything else returns None and takes the general path, so line numbers and row-level
    findings are the same.

    `data` is the file's bytes. Arrow reads them in place and checks that they are UTF-8;
    the file is not decoded or copied as a whole (at 10M rows it is 1.5 GB), and once this
    returns, the caller lets the bytes go before `fast_csv_grid` makes the columns."""
    # A CR only as part of CRLF, which ends a line for both readers (a lone CR would
    # end one for Arrow alone).
    if lone_cr(data):
        return None
    start, limit = _text_bounds(data)
    found = find_header(data, start, limit, delimiter)
    if found is None:
        return None
    start, header_end, header, skipped = found
    quoted = data.find(b'"', start, limit) >= 0  # only a quoted field can span lines
    trailer: Trailer | None = None
    last_start = max(data.rfind(b"\n", start, limit) + 1, start)
    try:
        last_text = data[last_start:limit].decode("utf-8")
    except UnicodeDecodeError:
        return None  # the general path reports where
    table = RawTable(header, skipped + 1, [], [], f"csv ({delimiter})")
    positions = map_header(name, table, fmt)
    # The header alone: any further line is a trailer, a row, or a file Arrow refuses.
    if last_start == start:
        if piece.whole:
            raise FileRejected(name, NO_ROWS)
        return None  # a piece without rows: the general path reads none
    found_last = _last_line(data, start, last_start, split_cells(last_text, delimiter), delimiter,
                            quoted)
    if found_last is None:
        return None
    last_start, last = found_last
    if quoted and count_bytes(data, b'"', start, last_start) % 2 and _ends_a_trailer(
            data, start, last_start, fmt):
        return None  # a trailer with a quoted line break: the general path reads it
    # The trailer is read once Arrow has read the rows: a file with bytes that are not
    # UTF-8 goes to the general path, which says so before any other fault.
    end, body_lines, trailer_line = _body(data, start, last_start, limit, piece, skipped,
                                          is_trailer(last, fmt))
    if quoted and count_bytes(data, b'"', start, end) % 2:
        return None  # a quote the body may leave open (Arrow would close it at the end)
    width = len(header)
    odd: list[tuple[int, str]] = []  # rows of another width: (row number, text)
    parsed = _arrow_rows(data, start, end, delimiter, width, quoted, header_end, odd)
    if parsed is None:
        return None  # many rows of other widths
    lines = _row_lines(name, data, (start, end), parsed, odd, body_lines, skipped, quoted,
                       piece, limits, fmt)
    if lines is None:
        return None
    if trailer_line:
        trailer = parse_trailer(name, trailer_line, last, fmt)
    return _ArrowRead(parsed, width, lines + piece.line_base, odd, trailer, positions,
                      delimiter)


def _text_bounds(data: bytes) -> tuple[int, int]:
    """Where a CSV file's text begins (past a BOM) and ends (the end of its last line that
    is not empty, without its line end)."""
    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    limit = len(data)
    while limit > start and data[limit - 1] in b"\r\n":
        limit -= 1
    return start, limit


def _body(data: bytes, start: int, last_start: int, limit: int, piece: Piece, skipped: int,
          last_is_trailer: bool) -> tuple[int, int, int]:
    """Where the body ends (before a trailer, else at the last line's end), its lines from
    the header's (the rows' physical line numbers: every line after the header but the
    empty ones, which Arrow skips), and the trailer's line number (0 without one). The
    line ends are counted once."""
    body_lines = count_bytes(data, b"\n", start, last_start)
    if piece.last and last_start > start and last_is_trailer:
        return last_start, body_lines, skipped + body_lines + 1 + piece.line_base
    body_lines += count_bytes(data, b"\n", last_start, limit) + 1  # the last line's end is missing
    return limit, body_lines, 0


def _row_lines(name: str, data: bytes, body: tuple[int, int], parsed: pa.Table,
               odd: list[tuple[int, str]], body_lines: int, skipped: int, quoted: bool,
               piece: Piece, limits: ReadLimits, fmt: FileFormat) -> np.ndarray | None:
    """The physical line number of each row Arrow read or set aside (within the piece):
    every line of the body but the empty ones, or, where quoted fields span lines in a
    body without empty lines, as far apart as the line ends inside them (refused where
    they go past the limits, as the general path refuses them). None where rows and lines
    do not agree: the general path reads the file."""
    start, end = body
    # Each row Arrow read, or set aside, took one line at least, and an empty line none:
    # as many rows as lines leave no empty line to look for (a scan of the whole file).
    blank_lines = (np.zeros(0, dtype=np.int64) if parsed.num_rows + len(odd) == body_lines - 1
                   else _blank_lines(data, start, end))
    lines = skipped + np.delete(np.arange(2, body_lines + 1, dtype=np.int64), blank_lines - 2)
    if quoted and not odd and not len(blank_lines) and parsed.num_rows != len(lines):
        spanned = _spanned_lines(parsed, len(lines), skipped)
        if spanned is None:
            return None
        _check_spanning_rows(name, parsed, spanned + piece.line_base, limits,
                             fmt.trailer_marker)
        lines = spanned
    placed = parsed.num_rows + len(odd) == len(lines) and all(
        2 <= number < 2 + len(lines) for number, _ in odd)
    return lines if placed else None


def _last_line(data: bytes, start: int, last_start: int, last: list[str], delimiter: str,
               quoted: bool) -> tuple[int, list[str]] | None:
    """Where the last line that is not blank begins, and its cells, from the file's last
    line (`last_start`, `last`): blank lines at the end are skipped, as the general path
    skips them, so a trailer is the last line that is not blank. None where the general
    path is to read the file: a line beginning inside a quoted field (an odd number of
    quotes before it), bytes that are not UTF-8, a thousand blank lines."""
    for _ in range(1000):
        if not is_blank(last) or last_start == start:
            return last_start, last
        if quoted and count_bytes(data, b'"', start, last_start) % 2:
            return None
        line_end = last_start - 1
        last_start = max(data.rfind(b"\n", start, line_end) + 1, start)
        try:
            last = split_cells(data[last_start:line_end].decode("utf-8").removesuffix("\r"),
                               delimiter)
        except UnicodeDecodeError:
            return None
    return None


def _arrow_rows(data: bytes, start: int, end: int, delimiter: str, width: int, quoted: bool,
                header_end: int, odd: list[tuple[int, str]]) -> pa.Table | None:
    """The body's rows as Arrow reads them: as wide as the header; else, where each row
    ends in empty cells (a delimiter at the end of each), as wide as the first row; else
    with the few rows of other widths set aside into `odd`. None when none of these reads."""
    parsed = _arrow_csv(data, start, end, delimiter, width, quoted)
    read_width = width
    if parsed is None:  # rows of another width: wider ones may end in empty cells
        read_width = max(width, _first_row_width(data, header_end + 1, delimiter))
        if read_width > width:
            parsed = _arrow_csv(data, start, end, delimiter, read_width, quoted)
    if parsed is None:  # a few rows of other widths: set aside, read as the general path does
        parsed = _arrow_csv(data, start, end, delimiter, read_width, quoted, odd)
    return parsed


def _ends_a_trailer(data: bytes, start: int, line_start: int, fmt: FileFormat) -> bool:
    """Whether the row that the line at `line_start` ends (it begins inside a quoted
    field) may be a trailer: its first cell, as its first line (the nearest before with
    an even number of quotes before it) shows it, may be the trailer's marker. Also when
    that line is not found within a thousand lines."""
    marker = fmt.trailer_marker.upper()
    inside = True
    for _ in range(1000):
        line_end = line_start - 1
        line_start = max(data.rfind(b"\n", start, line_end) + 1, start)
        inside ^= data.count(b'"', line_start, line_end) % 2 == 1
        if not inside:
            first = data[line_start:line_end].decode("utf-8", errors="replace").lstrip()
            if not first.startswith('"'):
                return first.upper().startswith(marker)
            cell = first[1:].split('"', 1)[0].strip().upper()  # as far as this line has it
            return marker.startswith(cell) or cell.startswith(marker)
        if line_start == start:
            return True
    return True


def fast_csv_grid(name: str, read: _ArrowRead, fmt: FileFormat, piece: Piece = WHOLE
                  ) -> Grid:
    """The columns of what `fast_csv_parse` read: cells trimmed, rows too wide found, rows
    of another width put back in their place, rows of empty cells skipped."""
    if read.table is None:
        raise RuntimeError("this read was made a grid already")
    width, lines, odd, trailer = read.width, read.lines, read.odd, read.trailer
    delimiter, positions = read.delimiter, read.positions
    rows = read.table.num_rows
    columns_read: list[pa.ChunkedArray | None] = list(read.table.columns)
    read.table = None
    trimmed = []
    for i in range(len(columns_read)):  # each untrimmed column is let go once trimmed
        trimmed.append(trimmed_column(columns_read[i]))
        columns_read[i] = None
    shape_errors, wide = _cells_past_the_header(trimmed, width, rows)
    del trimmed[width:]
    if odd:
        trimmed, shape_errors, wide = _with_odd_rows(odd, delimiter, width, trimmed,
                                                     shape_errors, wide)
        rows = len(wide)
    blank = functools.reduce(pc.and_, (pc.equal(column, "") for column in trimmed))
    blank_rows = np.asarray(blank.to_numpy(zero_copy_only=False), dtype=bool) & ~wide
    if blank_rows.any():  # a row of empty cells: skipped like an empty line
        keep = ~blank_rows
        trimmed = [column.filter(pa.array(keep)) for column in trimmed]
        lines, shape_errors = lines[keep], shape_errors[keep]
        rows = len(lines)
        if rows == 0 and trailer is None and piece.whole:
            raise FileRejected(name, NO_ROWS)
    columns = {}
    joined: dict[int, pa.Array] = {}  # each column in one chunk, its blocks let go
    for col in fmt.columns:
        index = positions.get(col.field)
        if index is None:
            columns[col.field] = pd.Series([""] * rows, dtype="str")
        else:
            if index not in joined:
                joined[index], trimmed[index] = one_chunk(trimmed[index]), None
            columns[col.field] = arrow_text(joined[index])
    if rows and rows % PROGRESS_EVERY == 0:
        log.info("%s: %d rows read", name, rows)
    return Grid(pd.DataFrame(columns), lines, pd.Series(shape_errors, dtype="str"), trailer,
                f"csv ({delimiter})")


def _cells_past_the_header(trimmed: list[pa.ChunkedArray], width: int, rows: int
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Each row's finding ('' or `too_wide_text`) and whether it is too wide. The general path
    drops a row's empty cells past the header; what is left past it makes the row too
    wide, as wide as its last cell that is not empty."""
    shape_errors = np.full(rows, "", dtype=object)
    cells = np.zeros(rows, dtype=np.int64)
    for i in range(width, len(trimmed)):
        filled = np.asarray(pc.not_equal(trimmed[i], "").to_numpy(zero_copy_only=False),
                            dtype=bool)
        cells[filled] = i + 1
    wide = cells > 0
    if wide.any():
        shape_errors[wide] = [too_wide_text(n, width) for n in cells[wide].tolist()]
    return shape_errors, wide


def trimmed_column(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """`column` with its cells' leading and trailing whitespace trimmed; the column as it
    is when none of its cells begins or ends with a byte whitespace may be made of. Two
    bytes per cell are looked at, where a trim copies every cell (a file's thirteen
    columns at 1M rows: 0.05 s to look, 0.10-0.28 s to trim)."""
    if all(plain_ends(chunk) for chunk in column.chunks):
        return column
    return pc.utf8_trim_whitespace(column)


def plain_ends(texts: pa.Array) -> bool:
    """Whether every text of `texts` begins and ends with a printable ASCII byte (0x21 to
    0x7e), so that trimming whitespace leaves it as it is: a whitespace character is a
    byte up to 0x20 (a space or a control) or one of more than one byte, each 0x80 or
    above. Empty texts count as plain; a null does not."""
    if texts.null_count or not (pa.types.is_string(texts.type)
                                or pa.types.is_large_string(texts.type)):
        return False
    offsets = value_offsets(texts)
    filled = offsets[1:] > offsets[:-1]
    if not filled.any():
        return True
    data = np.frombuffer(texts.buffers()[2], dtype=np.uint8)
    ends = np.concatenate([data[offsets[:-1][filled]], data[offsets[1:][filled] - 1]])
    return bool(((ends > 0x20) & (ends < 0x7f)).all())


#: At most this many rows of another width are set aside on Arrow's path (each is read
#: by Python's `csv`); a file with more takes the general path.
ODD_ROWS = 100_000


def _arrow_csv(data: bytes, start: int, end: int, delimiter: str, width: int, quoted: bool,
               odd: list[tuple[int, str]] | None = None) -> pa.Table | None:
    """data[start:end] after its header line as `width` text columns; None when a row is
    of another width (or the bytes are not UTF-8: the general path says where).

    With `odd`, rows of another width are skipped and kept there instead, with their
    number among the lines that are not empty (the header is 1), up to ODD_ROWS of them.
    Arrow numbers rows only when it reads on one thread."""
    def set_aside(row: pacsv.InvalidRow) -> str:
        if odd is None or row.number is None or len(odd) >= ODD_ROWS:
            return "error"
        odd.append((row.number, row.text))
        return "skip"

    # The handler is given each row as text: pyarrow prints a Python trace for a row that
    # is not UTF-8, where Arrow's own check, without a handler, only fails the read.
    if odd is not None and not _is_utf8(data, start, end):
        return None
    try:
        return pacsv.read_csv(
            pa.BufferReader(pa.py_buffer(memoryview(data)[start:end])),
            read_options=pacsv.ReadOptions(column_names=[f"c{i}" for i in range(width)],
                                           skip_rows=1, block_size=1 << 24,
                                           use_threads=odd is None),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=quoted,
                                             invalid_row_handler=None if odd is None
                                             else set_aside),
            convert_options=pacsv.ConvertOptions(
                column_types={f"c{i}": pa.string() for i in range(width)},
                strings_can_be_null=False, quoted_strings_can_be_null=False))
    except pa.ArrowInvalid:
        return None


def _is_utf8(data: bytes, start: int, end: int) -> bool:
    """Whether data[start:end] is UTF-8 text, checked by Arrow in place (no copy, no
    decoded text)."""
    size = end - start
    text = pa.LargeStringArray.from_buffers(
        1, pa.py_buffer(np.array([0, size], dtype=np.int64)),
        pa.py_buffer(memoryview(data)[start:end]))
    try:
        text.validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def _with_odd_rows(odd: list[tuple[int, str]], delimiter: str, width: int,
                   trimmed: list[pa.ChunkedArray], shape_errors: np.ndarray, wide: np.ndarray
                   ) -> tuple[list[pa.ChunkedArray], np.ndarray, np.ndarray]:
    """The rows Arrow set aside (`_arrow_csv`) read as the general path reads a row (empty
    cells past the header dropped, a short row's missing cells empty), put back in their
    places among Arrow's rows."""
    cells: list[list[str]] = [[] for _ in range(width)]
    errors, too_wide = [], []
    for _, text in odd:
        row = fitted_row(split_cells(text, delimiter), width)
        too_wide.append(len(row) > width)
        errors.append(too_wide_text(len(row), width))
        for i in range(width):
            cells[i].append(row[i].strip() if i < len(row) else "")
    total = len(wide) + len(odd)
    at = np.array([number - 2 for number, _ in odd], dtype=np.int64)  # the header is 1
    order = np.empty(total, dtype=np.int64)  # Arrow's rows, then the odd ones, in line order
    order[np.setdiff1d(np.arange(total), at, assume_unique=True)] = np.arange(len(wide))
    order[at] = np.arange(len(wide), total)
    placed = pa.array(order)
    columns = [pa.chunked_array([*column.chunks, pa.array(cells[i], pa.string())],
                                pa.string()).take(placed)
               for i, column in enumerate(trimmed)]
    return (columns, np.concatenate([shape_errors, np.array(errors, dtype=object)])[order],
            np.concatenate([wide, np.array(too_wide, dtype=bool)])[order])


def _spanned_lines(parsed: pa.Table, data_lines: int, skipped: int) -> np.ndarray | None:
    """The physical line numbers of rows some of whose quoted fields span lines, in a body
    of `data_lines` lines after the header and no empty line: a row begins on the line
    after the previous row's last, which is as many lines further as the line ends inside
    its fields. Arrow keeps those line ends in the values. None when the lines do not add
    up (the general path then reads the file)."""
    inside = np.zeros(parsed.num_rows, dtype=np.int64)
    for column in parsed.columns:
        inside += np.asarray(pc.count_substring(column, "\n").to_numpy(), dtype=np.int64)
    if not parsed.num_rows or parsed.num_rows + int(inside.sum()) != data_lines:
        return None
    before = np.concatenate([[0], np.cumsum(inside)[:-1]])
    return skipped + 2 + np.arange(parsed.num_rows, dtype=np.int64) + before


def _check_spanning_rows(name: str, parsed: pa.Table, lines: np.ndarray, limits: ReadLimits,
                         marker: str) -> None:
    """`check_spanning_row` for the rows Arrow read across lines, numbered `lines`: the
    longest span and the first trailer taken in, found column-wise."""
    spans = np.ones(parsed.num_rows, dtype=np.int64)
    swallowed = np.zeros(parsed.num_rows, dtype=bool)
    pattern = "(?i)\\n\\s*\"?" + re.escape(marker)
    for column in parsed.columns:
        spans += np.asarray(pc.count_substring(column, "\n").to_numpy(), dtype=np.int64)
        swallowed |= np.asarray(pc.match_substring_regex(column, pattern).to_numpy(
            zero_copy_only=False), dtype=bool)
    found = np.flatnonzero((spans > limits.max_quoted_lines) | swallowed)
    if len(found):  # the first such row, refused as the general path refuses it
        at = int(found[0])
        row = [str(parsed.column(i)[at].as_py()) for i in range(parsed.num_columns)]
        check_spanning_row(name, int(lines[at]), int(spans[at]), row, limits, marker)


def _blank_lines(data: bytes, start: int, end: int) -> np.ndarray:
    """The physical line numbers of the empty lines (LF or CRLF) in data[start:end], whose
    first line is line 1 and not empty. Two `find` scans, and the line ends before each
    empty line counted once."""
    found = []
    for pattern in (b"\n\n", b"\n\r\n"):
        at = data.find(pattern, start, end)
        while at >= 0:
            found.append(at)
            at = data.find(pattern, at + 1, end)
    numbers = np.empty(len(found), dtype=np.int64)
    counted, before = start, 0
    for i, at in enumerate(sorted(found)):
        before += data.count(b"\n", counted, at + 1)
        counted = at + 1
        numbers[i] = before + 1  # the empty line follows the `before`-th line end
    return numbers


def _first_row_width(data: bytes, start: int, delimiter: str) -> int:
    """How many cells the first line from `start` that is not blank has (0 when there is
    none in the first bytes)."""
    line = first_line_of(data, start=start)
    return 0 if line is None else len(split_cells(line, delimiter))
