"""A valid settlement file, mutated at random (bytes deleted or duplicated, quotes
inserted, lines cut, another encoding, fields lengthened): the reader either rejects it
as a whole (FileRejected, one line) or accounts for every data line in exactly one row;
it never fails otherwise. A sample goes through real `recon` processes: exit 0 or 5,
never 1, and nothing written on 5."""

from __future__ import annotations

import csv
import datetime as dt
import io
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recon.core.errors import FileRejected
from recon.formats.declaration import DEFAULT_LIMITS
from recon.formats.filegen import write_settlement_csv
from recon.formats.ovo_v1 import OVO_V1
from recon.formats.reader import read_settlement_file
from tests.test_hardening import DAY, NAME, Site, dump, one_line, rows

S = dt.date(2026, 11, 30)


def _valid(tmp: Path, trailer: bool) -> bytes:
    return write_settlement_csv(rows(), tmp / "valid.csv", trailer=trailer).read_bytes()


def _mutate(data: bytes, draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["delete", "duplicate", "quote", "cut", "latin1", "lengthen",
                                 "nul"]))
    at = draw(st.integers(0, len(data) - 1))
    if kind == "delete":
        return data[:at] + data[at + draw(st.integers(1, 200)):]
    if kind == "duplicate":
        size = draw(st.integers(1, 200))
        return data[:at] + data[at:at + size] * 2 + data[at + size:]
    if kind == "quote":  # at a field's start, where a quote opens a quoted field
        commas = [i + 1 for i, byte in enumerate(data) if byte == ord(",")] or [at]
        at = commas[draw(st.integers(0, len(commas) - 1))]
        return data[:at] + b'"' + data[at:]
    if kind == "cut":
        return data[:at]
    if kind == "latin1":
        return data.replace(b"OVO Cash", "OVO Casé".encode("latin-1"), 1)
    if kind == "nul":
        return data[:at] + b"\x00" + data[at:]
    field = draw(st.sampled_from([b"INV-1,", b"OVO1,", b"10000.00,"]))
    return data.replace(field, field[:-1] * draw(st.integers(2, 40)) + b",", 1)


def _records(text: str) -> list[tuple[int, int, list[str]]]:
    """Python csv's records that are not blank: (first line, last line, cells)."""
    reader = csv.reader(io.StringIO(text, newline=""))
    found, end = [], 0
    for cells in reader:
        start, end = end + 1, reader.line_num
        if any(cell.strip() for cell in cells):
            found.append((start, end, cells))
    return found


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_mutated_file_is_rejected_whole_or_every_line_is_a_row(tmp_path: Path,
                                                                 data: st.DataObject) -> None:
    mutated = _valid(tmp_path, data.draw(st.booleans()))
    for _ in range(data.draw(st.integers(1, 3))):
        mutated = _mutate(mutated, data.draw) or b"\n"
    path = tmp_path / "mutated.csv"
    path.write_bytes(mutated)
    try:
        read = read_settlement_file(path, OVO_V1, S)
    except FileRejected as exc:
        assert "\n" not in exc.one_line()
        return
    records = _records(mutated.decode("utf-8-sig"))
    body = records[1:-1] if read.trailer is not None else records[1:]
    # Every record after the header is one row, its lines within the quoted-field limit,
    # and the rows start where the records do.
    assert read.data_rows == len(body)
    assert list(read.rows["line_no"]) == [start for start, _, _ in body]
    assert all(end - start < DEFAULT_LIMITS.max_quoted_lines for start, end, _ in body)


MUTATIONS = {
    "a quote inserted mid-file": lambda d: d.replace(b",INV-12,", b',"INV-12,', 1),
    "the last bytes cut": lambda d: d[:-17],
    "a line duplicated": lambda d: d.replace(b"\n2026-11-30,", b"\n2026-11-30,", 1).replace(
        d.splitlines(keepends=True)[4], d.splitlines(keepends=True)[4] * 2, 1),
    "latin-1 bytes": lambda d: d.replace(b"OVO Cash", "OVO Casé".encode("latin-1"), 1),
}


@pytest.mark.parametrize("case", sorted(MUTATIONS))
def test_a_mutated_file_through_recon_ends_with_0_or_5(tmp_path: Path, prefect_api: str,
                                                       case: str) -> None:
    site = Site(tmp_path, f"sqlite:///{tmp_path / 'recon.db'}", prefect_api)
    path = write_settlement_csv(rows(), site.inbox / f"{NAME}.csv")
    path.write_bytes(MUTATIONS[case](path.read_bytes()))
    before = dump(site.url)
    done = site.run()
    assert done.returncode in {0, 5}, done.stderr[-2000:]
    if done.returncode == 5:
        assert one_line(done).startswith("recon: FILE_REJECTED: ")
        assert dump(site.url) == before
        assert not (site.out / "reports/M001" / DAY).exists()
    else:
        counts = site.summary()["counts"]
        assert isinstance(counts, dict)
        file_rows = site.summary()["file"]
        assert isinstance(file_rows, dict)
        assert sum(v for k, v in counts.items() if k != "MISSING_IN_SETTLEMENT") == file_rows[
            "rows"]


@pytest.mark.parametrize(("store_id", "said"), [
    ("a\nb\nc\nd\ne", None),
    ("a\nb\nc\nd\ne\nf", "line 5: a quoted field opens here and runs over 6 lines"),
    ("note\nTOTAL,30,1.00,1.00", "line 5: a quoted field opens here and takes in a TOTAL line"),
])
@pytest.mark.parametrize("line_end", ["\n", "\r\n"])
def test_a_closed_quoted_field_across_lines_is_held_to_the_same_limits(
        tmp_path: Path, store_id: str, said: str | None, line_end: str) -> None:
    """Well-formed quotes (the Arrow path reads such a file) meet the checks a stray one
    meets on the general path: at most max_quoted_lines lines, no trailer taken in."""
    made = rows(i3={"StoreID": store_id.replace("\n", line_end)})
    path = write_settlement_csv(made, tmp_path / "f.csv")
    path.write_bytes(path.read_bytes().replace(b"\n", line_end.encode()).replace(
        b"\r\r\n", b"\r\n"))
    if said is None:
        assert read_settlement_file(path, OVO_V1, S).data_rows == len(made)
        return
    with pytest.raises(FileRejected) as caught:
        read_settlement_file(path, OVO_V1, S)
    assert caught.value.fault.startswith(said)
