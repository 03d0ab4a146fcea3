import codecs
import csv
import datetime as dt
import io
import re
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recon.core.errors import FileRejected
from recon.core.schemas import SETTLEMENT_ROWS, conform
from recon.formats import grid, values
from recon.formats.arrow_csv import fast_csv_grid, fast_csv_parse, plain_ends, trimmed_column
from recon.formats.declaration import FileFormat
from recon.formats.delimited import decode_csv, detect_delimiter, first_line_of, read_csv_table
from recon.formats.filegen import HEADER, write_settlement_csv, write_settlement_xlsx
from recon.formats.grid import Grid, count_bytes, grid_from_table, lone_cr
from recon.formats.ovo_v1 import OVO_V1
from recon.formats.reader import read_settlement_file
from recon.formats.values import (
    parse_date,
    parse_datetime,
    parse_money,
    parse_pay_option,
    parse_times,
    per_distinct,
)

S = dt.date(2026, 11, 30)


def _arrow_path(name: str, data: bytes, delimiter: str, fmt: FileFormat) -> Grid | None:
    """The grid Arrow's path makes of `data`, or None where the file takes the general path."""
    read = fast_csv_parse(name, data, delimiter, fmt)
    return None if read is None else fast_csv_grid(name, read, fmt)


def row(**changes: str) -> dict[str, str]:
    base = {"SettlementDate": "2026-11-30", "TransactionDateTime": "2026-11-27 10:00:00",
            "MerchantID": "M001", "StoreID": "ST01", "MerchantInvoice": "INV-1",
            "RefundInvoice": "", "OVOReferenceNo": "OVO1", "TransactionType": "PAYMENT",
            "PaymentSource": "OVO Cash", "GrossAmount": "10000.00", "MDRAmount": "70.00",
            "TaxAmount": "7.70", "NetAmount": "9922.30"}
    base.update(changes)
    return base


def read(path: Path, day: dt.date = S):
    return read_settlement_file(path, OVO_V1, day)


@pytest.mark.parametrize(
    ("text", "minor"),
    [
        ("10000.00", 1_000_000), ("10000", 1_000_000), ("10000.5", 1_000_050),
        ("-500.50", -50_050), ("+1.01", 101), ("0", 0), (" 12.30 ", 1230),
        ("1.000", 100), ("1.230", 123),
        ("", None), ("abc", None), ("1,000.00", None), ("1.001", None), ("12.500,00", None),
        ("1e3", None), ("--1", None), (".5", None), ("Rp 100", None),
    ],
)
def test_parse_money(text: str, minor: int | None) -> None:
    values, bad = parse_money(pd.Series([text], dtype="str"))
    if minor is None:
        assert bool(bad.iloc[0])
        assert pd.isna(values.iloc[0])
    else:
        assert not bool(bad.iloc[0])
        assert int(values.iloc[0]) == minor


@pytest.mark.parametrize(
    ("text", "utc"),
    [
        ("2026-11-27 10:00:00", "2026-11-27T03:00:00+00:00"),  # naive is WIB
        ("2026-11-27T10:00:00", "2026-11-27T03:00:00+00:00"),
        ("2026-11-27T10:00:00+07:00", "2026-11-27T03:00:00+00:00"),
        ("2026-11-27T03:00:00Z", "2026-11-27T03:00:00+00:00"),
        ("2026-11-27T10:00:00+0700", "2026-11-27T03:00:00+00:00"),
        ("2026-11-30 00:00:00", "2026-11-29T17:00:00+00:00"),
        ("2026-11-27 10:00", "2026-11-27T03:00:00+00:00"),
        ("2026-11-27", None), ("27/11/2026 10:00", None), ("2026-13-01 10:00:00", None),
        ("", None), ("yesterday", None),
        ("2026-02-30 10:00:00", None), ("2023-02-29 00:00:00", None),
        ("2024-02-29 23:59:59", "2024-02-29T16:59:59+00:00"),
        ("2000-02-29 12:00:00", "2000-02-29T05:00:00+00:00"), ("2100-02-29 12:00:00", None),
        ("1970-01-01 06:59:59", "1969-12-31T23:59:59+00:00"),
        ("2199-12-31T23:59:59", "2199-12-31T16:59:59+00:00"),
        ("2026-11-27 24:00:00", None), ("2026-11-27 10:60:00", None),
        ("2026-11-27 10:00:60", None), ("2026-11-27/10:00:00", None),
        ("2026-11-27 10:00:0a", None), ("2026-00-10 10:00:00", None),
        ("1963-01-01 00:00:00", "1962-12-31T16:30:00+00:00"),  # Jakarta was +07:30 then
        ("3000-01-01 00:00:00", None),  # past what a timestamp holds
        ("2026-02-30T10:00:00+07:00", None), ("2026-11-27T10:00:00+07", None),
        ("2026-11-27 10:00:00-03:30", "2026-11-27T13:30:00+00:00"),
        ("2026-11-30T23:30:00+07:00", "2026-11-30T16:30:00+00:00"),
    ],
)
def test_parse_datetime(text: str, utc: str | None) -> None:
    values, bad = parse_datetime(pd.Series([text], dtype="str"))
    if utc is None:
        assert bool(bad.iloc[0])
    else:
        assert values.iloc[0].isoformat() == utc


_FIELD = st.integers(0, 99).map(lambda n: f"{n:02d}")


_OFFSET = st.one_of(st.just(""), st.just("Z"), st.builds(
    lambda sign, h, m, colon: f"{sign}{h:02d}{colon}{m:02d}", st.sampled_from("+-"),
    st.integers(0, 25), st.integers(0, 70), st.sampled_from(["", ":"])))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1960, 2300), st.integers(0, 13), st.integers(0, 32),
                          st.sampled_from(" T"), st.integers(0, 25), _FIELD, _FIELD, _OFFSET),
                min_size=1, max_size=20))
def test_times_in_the_files_shape_parse_as_the_general_path_parses_them(
        fields: list[tuple[int, int, int, str, int, str, str, str]]) -> None:
    """Arrow's parse of 'YYYY-MM-DD HH:MM:SS', with a T or an offset or both (days past
    the month's end, hours, minutes, seconds and offsets out of range, years outside
    1970-2199 included) gives what pandas does."""
    texts = pd.Series([f"{y:04d}-{mo:02d}-{d:02d}{t}{h:02d}:{mi}:{s}{offset}"
                       for y, mo, d, t, h, mi, s, offset in fields], dtype="str")
    values, bad = parse_datetime(texts)
    expected, expected_bad = parse_times(texts)
    pd.testing.assert_series_equal(values, expected, check_exact=True)
    assert bad.tolist() == expected_bad.tolist()


@pytest.mark.parametrize("delimiter", [",", ";"])
@pytest.mark.parametrize("bom", [False, True])
@pytest.mark.parametrize("crlf", [False, True])
def test_csv_variants_read_the_same(tmp_path: Path, delimiter: str, bom: bool,
                                    crlf: bool) -> None:
    path = write_settlement_csv([row(), row(MerchantInvoice="INV-2")], tmp_path / "f.csv",
                                delimiter=delimiter, bom=bom)
    if crlf:  # as a Windows program writes it
        path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    parsed = read(path)
    assert parsed.rows["merchant_invoice"].tolist() == ["INV-1", "INV-2"]
    assert parsed.rows["gross"].tolist() == [1_000_000, 1_000_000]
    assert parsed.rows["line_no"].tolist() == [2, 3]
    assert parsed.trailer is not None and parsed.trailer.rows == 2
    assert (parsed.rows["invalid_reason"] == "").all()


def test_a_few_distinct_texts_are_read_as_categoricals(tmp_path: Path) -> None:
    """The merchant, store and payment source hold a few values over millions of rows: the
    reader keeps them as categoricals, which the match and `conform` keep as they are."""
    path = write_settlement_csv([row(), row(MerchantInvoice="INV-2", StoreID="",
                                            PaymentSource="OVO Points"),
                                 row(MerchantInvoice="INV-3", PaymentSource="Gopay")],
                                tmp_path / "f.csv")
    rows = read(path).rows
    for field in ("merchant_id", "store_id", "payment_source"):
        assert isinstance(rows[field].dtype, pd.CategoricalDtype), field
    assert rows["store_id"].tolist() == ["ST01", "", "ST01"]
    assert rows["payment_source"].tolist() == ["OVO_CASH", "OVO_POINTS", ""]
    assert rows["invalid_reason"].iloc[2].startswith("PaymentSource")
    kept = conform(rows.assign(store_id=rows["store_id"].cat.set_categories(["ST01"])),
                   SETTLEMENT_ROWS, "test")
    assert isinstance(kept["store_id"].dtype, pd.CategoricalDtype)
    assert kept["store_id"].tolist() == ["ST01", "", "ST01"]


def test_headers_match_loosely_and_in_any_order(tmp_path: Path) -> None:
    headers = ["net_amount", "GROSS AMOUNT", "mdr_amount", "Tax Amount", "settlement_date",
               "transaction date time", "merchant id", "merchant_invoice", "ovo reference no",
               "transaction_type", "payment source", "Extra Column"]
    values = ["9922.30", "10000.00", "70.00", "7.70", "2026-11-30", "2026-11-27 10:00:00",
              "M001", "INV-1", "OVO1", "payment", "ovo_cash", "ignored"]
    path = tmp_path / "f.csv"
    path.write_text(",".join(headers) + "\n" + ",".join(values) + "\n")
    parsed = read(path)
    first = parsed.rows.iloc[0]
    assert first["transaction_type"] == "PAYMENT"
    assert first["payment_source"] == "OVO_CASH"
    assert first["net"] == 992_230
    assert first["store_id"] == "" and first["refund_invoice"] == ""


def test_xlsx_reads_like_csv(tmp_path: Path) -> None:
    rows = [row(), row(MerchantInvoice="007", GrossAmount="-500.5", TransactionType="REFUND",
                       RefundInvoice="RF-1")]
    csv_rows = read(write_settlement_csv(rows, tmp_path / "f.csv")).rows
    xlsx = read(write_settlement_xlsx(rows, tmp_path / "f.xlsx"))
    assert xlsx.sheet_format == "xlsx"
    pd.testing.assert_frame_equal(csv_rows, xlsx.rows)


def test_xlsx_numeric_and_date_cells(tmp_path: Path) -> None:
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.append(list(HEADER))
    sheet.append([dt.date(2026, 11, 30), dt.datetime(2026, 11, 27, 10, 0), "M001", "", "INV-1",
                  "", "OVO1", "PAYMENT", "OVO Cash", 10000.5, 70, 7.7, 9922.8])
    path = tmp_path / "f.xlsx"
    book.save(path)
    first = read(path).rows.iloc[0]
    assert first["invalid_reason"] == ""
    assert (first["gross"], first["mdr"], first["tax"], first["net"]) == (
        1_000_050, 7_000, 770, 992_280)
    assert first["transaction_time"].isoformat() == "2026-11-27T03:00:00+00:00"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"GrossAmount": "abc"}, "GrossAmount 'abc' is not a decimal amount"),
        ({"GrossAmount": ""}, "GrossAmount is empty"),
        ({"NetAmount": "1,5"}, "NetAmount '1,5' is not a decimal amount"),
        ({"TransactionDateTime": "27/11/2026"}, "TransactionDateTime '27/11/2026' is not"),
        ({"TransactionDateTime": "2026-02-30 10:00:00"},
         "TransactionDateTime '2026-02-30 10:00:00' is not a date and time"),
        ({"TransactionDateTime": "3000-01-01 10:00:00"},
         "TransactionDateTime '3000-01-01 10:00:00' is not a date and time"),
        ({"SettlementDate": "30-11-2026"}, "SettlementDate '30-11-2026' is not"),
        ({"MerchantInvoice": "  "}, "MerchantInvoice is empty"),
        ({"TransactionType": "VOID"}, "TransactionType 'VOID' is not PAYMENT or REFUND"),
        ({"PaymentSource": "GoPay"}, "PaymentSource 'GoPay' is not OVO Cash or OVO Points"),
    ],
)
def test_unreadable_rows_keep_line_and_reason(tmp_path: Path, changes: dict[str, str],
                                              reason: str) -> None:
    path = write_settlement_csv([row(), row(**changes)], tmp_path / "f.csv", trailer=False)
    parsed = read(path)
    assert parsed.rows["invalid_reason"].iloc[0] == ""
    bad = parsed.rows.iloc[1]
    assert bad["line_no"] == 3
    assert reason in bad["invalid_reason"]


#: Rows with each fault a field can have, one or more per row.
FAULTS = [{"GrossAmount": "abc"}, {"GrossAmount": "", "MDRAmount": "1.234"},
          {"NetAmount": "1,5", "TaxAmount": " "}, {"TransactionDateTime": "27/11/2026"},
          {"TransactionDateTime": "2026-02-30 10:00:00", "SettlementDate": "30-11-2026"},
          {"TransactionDateTime": "2026-11-27T10:00:00+08:00"},
          {"MerchantInvoice": "  ", "TransactionType": "VOID"},
          {"PaymentSource": "GoPay", "TransactionType": "refund"},
          {"PaymentSource": "ovo points", "SettlementDate": "2026-11-30 00:00"}]


#: `values.PARALLEL_ROWS` for a file's columns parsed one after another (as a file of
#: fewer rows has them), or two at a time on two threads (conftest's default for the tests).
PARSED = {"in turn": 10**12, "two at a time": 0}


@pytest.fixture(params=list(PARSED))
def parse_threads(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The columns of every file read parsed as `PARSED` says."""
    monkeypatch.setattr(values, "PARALLEL_ROWS", PARSED[request.param])
    return str(request.param)


def test_columns_parsed_two_at_a_time_read_as_those_parsed_in_turn(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cycle = [*FAULTS, {}]  # every tenth row fine
    rows = [row(**{"MerchantInvoice": f"INV-{i}", **cycle[i % len(cycle)]}) for i in range(300)]
    path = write_settlement_csv(rows, tmp_path / "f.csv", trailer=False)
    read_as = {}
    for way, threshold in PARSED.items():
        monkeypatch.setattr(values, "PARALLEL_ROWS", threshold)
        read_as[way] = read(path).rows
    said = " ".join(read_as["two at a time"]["invalid_reason"])
    for problem in ("is empty", "is not a decimal amount", "is not a date and time",
                    "is not a YYYY-MM-DD date", "is not PAYMENT or REFUND",
                    "is not OVO Cash or OVO Points"):
        assert problem in said
    pd.testing.assert_frame_equal(read_as["two at a time"], read_as["in turn"])


@pytest.mark.parametrize("write", [write_settlement_csv, write_settlement_xlsx])
def test_a_row_of_several_faults_lists_them_in_the_columns_order(
        tmp_path: Path, write: Callable[..., Path], parse_threads: str) -> None:
    """A row's reasons come in the order of the format's columns, on Arrow's path as on
    the general one (an XLSX), among thousands of rows that are fine, its columns parsed
    in turn or two at a time."""
    faults = {"TransactionDateTime": "yesterday", "MerchantInvoice": "",
              "TransactionType": "VOID", "PaymentSource": "Gopay", "GrossAmount": "",
              "NetAmount": "12.345"}
    many = [row(MerchantInvoice=f"INV-{i}") for i in range(2, 3000)]
    suffix = ".csv" if write is write_settlement_csv else ".xlsx"
    path = write([row(), row(**faults), *many], tmp_path / f"f{suffix}", trailer=False)
    rows = read(path).rows
    assert rows["invalid_reason"].iloc[1] == (
        "TransactionDateTime 'yesterday' is not a date and time; MerchantInvoice is empty; "
        "TransactionType 'VOID' is not PAYMENT or REFUND; "
        "PaymentSource 'Gopay' is not OVO Cash or OVO Points; GrossAmount is empty; "
        "NetAmount '12.345' is not a decimal amount")
    assert (rows["invalid_reason"].drop(index=1) == "").all()


_PADDING = [" ", "\t", "\x0b", "\x0c", "\r", "\n", "\x1c", "\x85", "\xa0", "\u1680", "\u2009",
            "\u2028", "\u3000"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.text(alphabet=st.sampled_from(
    ["a", "Z", "0", "-", "\x7f", "é", "字", *_PADDING]), max_size=6), max_size=6), max_size=4),
    st.integers(0, 3))
def test_a_column_is_trimmed_unless_no_cell_can_end_in_whitespace(
        chunks: list[list[str]], skip: int) -> None:
    """The read leaves a column untrimmed only where no cell begins or ends with a byte
    whitespace may be made of: what it returns is what Arrow's trim returns, whichever
    whitespace (ASCII, controls, non-breaking and ideographic spaces) pads the cells."""
    arrays = [pa.array(texts, pa.string()) for texts in chunks]
    column = pa.chunked_array([a.slice(min(skip, len(a))) for a in arrays], pa.string())
    expected = pc.utf8_trim_whitespace(column)
    assert trimmed_column(column).to_pylist() == expected.to_pylist()
    for chunk in column.chunks:
        if plain_ends(chunk):
            assert pc.utf8_trim_whitespace(chunk).to_pylist() == chunk.to_pylist()


def test_padded_cells_of_a_file_read_trimmed_and_others_as_they_are(tmp_path: Path) -> None:
    """On Arrow's path a column with a padded cell is trimmed; one without is read as it
    is, inner spaces kept."""
    path = write_settlement_csv(
        [row(MerchantInvoice=" INV-1\u3000", StoreID="Toko Ibu Ani"),
         row(MerchantInvoice="INV-2", StoreID="\xa0ST 2", PaymentSource="OVO Points\t")],
        tmp_path / "f.csv", trailer=False)
    rows = read(path).rows
    assert rows["merchant_invoice"].tolist() == ["INV-1", "INV-2"]
    assert rows["store_id"].tolist() == ["Toko Ibu Ani", "ST 2"]
    assert rows["payment_source"].tolist() == ["OVO_CASH", "OVO_POINTS"]
    assert (rows["invalid_reason"] == "").all()
    assert plain_ends(pa.array(["Toko Ibu Ani", "", "INV-2"]))
    assert not plain_ends(pa.array(["INV-2", "\xa0ST 2"]))


def test_blank_lines_keep_physical_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    lines = [",".join(HEADER), ",".join(row().values()), "", ",".join(row(MerchantInvoice="X",
             GrossAmount="bad").values())]
    path.write_text("\n".join(lines) + "\n")
    parsed = read(path)
    assert parsed.rows["line_no"].tolist() == [2, 4]


def test_too_many_fields_is_an_invalid_row(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_text(",".join(HEADER) + "\n" + ",".join([*row().values(), "surprise"]) + "\n")
    assert "14 fields, the header has 13" in read(path).rows["invalid_reason"].iloc[0]


def fault(path: Path, day: dt.date = S) -> str:
    with pytest.raises(FileRejected) as caught:
        read(path, day)
    message = caught.value.one_line()
    assert "\n" not in message
    assert path.name in message
    return message


def test_fault_empty_file(tmp_path: Path) -> None:
    (tmp_path / "f.csv").write_bytes(b"")
    assert "empty" in fault(tmp_path / "f.csv")
    (tmp_path / "g.csv").write_bytes(b"\n  \n")
    assert "empty" in fault(tmp_path / "g.csv")


def test_fault_header_only(tmp_path: Path) -> None:
    (tmp_path / "f.csv").write_text(",".join(HEADER) + "\n")
    assert "no data rows" in fault(tmp_path / "f.csv")


def test_header_with_zero_trailer_is_an_empty_day(tmp_path: Path) -> None:
    path = write_settlement_csv([], tmp_path / "f.csv", trailer=True)
    parsed = read(path)
    assert parsed.data_rows == 0 and parsed.trailer is not None


def test_fault_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_bytes(",".join(HEADER).encode() + b"\n2026-11-30,\xff\xfe\n")
    assert "not UTF-8" in fault(path)


@pytest.mark.parametrize(("trailer", "bom"), [(False, False), (True, False), (False, True)])
def test_a_bad_byte_inside_a_well_formed_row_is_found_where_it_is(tmp_path: Path,
                                                                  trailer: bool,
                                                                  bom: bool) -> None:
    """The fast path does not decode the file: Arrow's UTF-8 check sends it to the general
    path, which names the byte and its offset in the file, a BOM counted."""
    row = dict(zip(HEADER, ["2026-11-30", "2026-11-27 10:00:00", "M001", "STOREX", "INV-1",
                            "", "OVO-1", "PAYMENT", "OVO Cash", "10000.00", "70.00", "7.70",
                            "9922.30"], strict=True))
    path = write_settlement_csv([row], tmp_path / "f.csv", trailer=trailer)
    data = (codecs.BOM_UTF8 if bom else b"") + path.read_bytes()
    offset = data.index(b"STOREX") + 5
    path.write_bytes(data[:offset] + b"\xff" + data[offset + 1:])
    assert f"not UTF-8 text (byte 0xff at offset {offset})" in fault(path)


def test_a_bad_byte_in_a_row_of_another_width_is_said_without_a_trace(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A row too short among well-formed ones is set aside by Arrow's path, whose handler
    is given the row as text: a byte that is not UTF-8 there made pyarrow print a Python
    trace ("Exception ignored") beside the one-line rejection."""
    unraised: list[object] = []
    monkeypatch.setattr(sys, "unraisablehook", unraised.append)
    rows = (CELLS + "\n").encode() * 20
    short = CELLS.rsplit(",", 2)[0].encode().replace(b"ST01", b"\xff")
    data = ",".join(HEADER).encode() + b"\n" + rows + short + b"\n" + rows
    path = tmp_path / "f.csv"
    path.write_bytes(data)
    offset = data.index(b"\xff")
    assert f"not UTF-8 text (byte 0xff at offset {offset})" in fault(path)
    assert unraised == []


def test_a_bad_byte_is_said_before_a_trailer_that_cannot_be_read(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_bytes(",".join(HEADER).encode() + b"\n" + CELLS.encode().replace(b"ST01", b"\xff")
                     + b"\nTOTAL,one,two\n")
    assert "not UTF-8 text (byte 0xff" in fault(path)


SNIFF_TEXT = st.text(st.sampled_from(["\n", " ", "\t", "a", ",", ";", "é", "\u2028"]),
                     max_size=60)



@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40).map(lambda b: b.replace(b"\x00", b"\r").replace(b"\x01", b"\n")),
       st.integers(1, 7), st.integers(0, 45), st.integers(0, 45))
def test_bytes_counted_a_step_at_a_time_are_bytes_counted(
        data: bytes, step: int, start: int, end: int) -> None:
    """The line ends, quotes and lone CRs the fast path counts in NumPy steps (here of a
    few bytes, so a CR and its LF fall in different steps) are those `bytes.count` finds."""
    old_step = grid.COUNT_STEP
    grid.COUNT_STEP = step
    try:
        for byte in (b"\n", b"\r", b'"'):
            assert count_bytes(data, byte) == data.count(byte)
            assert count_bytes(data, byte, start, end) == data.count(byte, start, end)
        assert lone_cr(data) == (data.count(b"\r") != data.count(b"\r\n"))
    finally:
        grid.COUNT_STEP = old_step

@settings(max_examples=200, deadline=None)
@given(SNIFF_TEXT, st.integers(1, 16), st.booleans())
def test_the_first_line_from_the_bytes_is_the_decoded_texts(text: str, look: int,
                                                            bom: bool) -> None:
    """Read off the first bytes (a BOM, a character the head cuts): the first line that a
    split of the whole decoded text finds, or None; the delimiter follows it."""
    data = (b"\xef\xbb\xbf" if bom else b"") + text.encode()
    expected = next((line for line in text.splitlines() if line.strip()), "")
    found = first_line_of(data, look)
    if found is not None:  # None: no line within `look`, the general path splits it all
        assert found == expected
    if len(data) <= look:
        assert found == (expected or None)
    if expected:
        assert decode_csv("f.csv", data, OVO_V1)[1] == detect_delimiter(
            expected, OVO_V1.delimiters)


def test_fault_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    header = [h for h in HEADER if h != "NetAmount"]
    path.write_text(",".join(header) + "\n" + ",".join("x" for _ in header) + "\n")
    assert "required column(s) missing: NetAmount" in fault(path)


def test_fault_trailer_disagrees(tmp_path: Path) -> None:
    path = write_settlement_csv([row(), row()], tmp_path / "f.csv", trailer=False)
    with path.open("a") as handle:
        handle.write("TOTAL,2,20000.00,19000.00\n")
    assert "NetAmount sums to 19000.00, the rows sum to 19844.60" in fault(path)
    path2 = write_settlement_csv([row()], tmp_path / "g.csv", trailer=False)
    with path2.open("a") as handle:
        handle.write("TOTAL,3,10000.00,9922.30\n")
    assert "says 3 rows, the file has 1" in fault(path2)


def test_fault_wrong_settlement_date(tmp_path: Path) -> None:
    path = write_settlement_csv([row(), row(SettlementDate="2026-11-27")], tmp_path / "f.csv")
    assert "line 3: SettlementDate 2026-11-27 is not the settlement date 2026-11-30" in fault(path)


def test_fault_corrupt_xlsx(tmp_path: Path) -> None:
    good = write_settlement_xlsx([row()], tmp_path / "good.xlsx")
    path = tmp_path / "f.xlsx"
    path.write_bytes(good.read_bytes()[:500])
    assert "corrupt XLSX" in fault(path)
    (tmp_path / "g.xlsx").write_bytes(b"this is not a spreadsheet")
    assert "corrupt XLSX" in fault(tmp_path / "g.xlsx")


# ------------------------------------------------------------ the fast path changes nothing

CELL = st.text(alphabet=st.sampled_from(list('AZaz09 .-+:_/@=",;')), max_size=12)


def _same_grid(text: str, delimiter: str, must_take: bool = True) -> None:
    """The Arrow path takes `text` and reads it as the general path does, or rejects it
    for the same fault. Unless it `must_take` the file, it may leave it to the general
    path instead (return None)."""
    try:
        general = grid_from_table("f.csv", read_csv_table("f.csv", text, delimiter), OVO_V1)
    except FileRejected as rejected:
        try:
            taken = _arrow_path("f.csv", text.encode(), delimiter, OVO_V1)
        except FileRejected as again:
            assert again.fault == rejected.fault
        else:
            assert taken is None and not must_take
        return
    fast = _arrow_path("f.csv", text.encode(), delimiter, OVO_V1)
    if fast is None and not must_take:
        return
    assert fast is not None
    pd.testing.assert_frame_equal(fast.raw.reset_index(drop=True),
                                  general.raw.reset_index(drop=True))
    assert list(fast.lines) == general.lines
    assert fast.shape_errors.tolist() == general.shape_errors.tolist()
    assert fast.trailer == general.trailer
    assert fast.layout == general.layout


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(CELL, min_size=13, max_size=13), max_size=8),
       st.sampled_from([",", ";"]), st.booleans(), st.booleans(), st.sampled_from(["\n", "\r\n"]),
       st.sampled_from(["no line end", "line end", "blank lines"]), st.integers(0, 2),
       st.lists(st.sampled_from(["", " ", "x", 'y"']), max_size=8),
       st.lists(st.tuples(st.integers(0, 8), st.sampled_from(["empty", "cells"])), max_size=3),
       st.lists(st.tuples(st.integers(0, 7), st.integers(1, 17), CELL), max_size=3),
       st.lists(st.sampled_from(["", " ", "\t "]), max_size=2))
def test_the_arrow_path_reads_exactly_like_the_general_path(
        rows: list[list[str]], delimiter: str, trailer: bool, shuffle_header: bool,
        line_end: str, ending: str, extra: int, filled: list[str],
        gaps: list[tuple[int, str]], odd: list[tuple[int, int, str]],
        before: list[str]) -> None:
    """Files as a CSV writer makes them, with either line end, the last line's missing or
    blank lines after it, blank lines before the header, empty lines and rows of empty
    cells between the rows, a delimiter at the end of every row (`extra` more cells, the
    last of a few rows filled), and a few rows of another width: the Arrow path takes
    every one and reads it as the general path does."""
    header = list(HEADER)
    if shuffle_header:
        header = header[::-1]
    width = len(header) + extra
    lines: list[list[str] | None] = [
        row + [""] * (extra - 1) + [filled[i] if i < len(filled) else ""] if extra else row
        for i, row in enumerate(rows)]
    for at, cells, cell in odd:  # a row cut short, or longer with `cell` at its end
        if at < len(rows):
            line = lines[at]
            assert line is not None
            lines[at] = line[:cells] if cells <= len(line) else (
                line + [""] * (cells - len(line) - 1) + [cell])
    for at, kind in gaps:  # None: an empty line
        lines.insert(min(at, len(lines)), None if kind == "empty" else [""] * width)
    buffer = io.StringIO()
    buffer.write("".join(blank + line_end for blank in before))
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator=line_end)
    writer.writerow(header)
    for line in lines:
        if line is None:
            buffer.write(line_end)
        else:
            writer.writerow(line)
    if trailer:
        writer.writerow(["TOTAL", str(len(rows)), "0", "0"])
    text = buffer.getvalue()
    if ending == "no line end":
        text = text.removesuffix(line_end)
    elif ending == "blank lines":
        text += line_end * 2
    decoded, found = decode_csv("f.csv", text.encode(), OVO_V1)
    assert found == delimiter
    _same_grid(decoded, found)


CELLS = ",".join(row().values())
SPANNING = ",".join(row(StoreID='"A\nB\n"').values())  # its StoreID spans three lines


@pytest.mark.parametrize("body", [
    CELLS + "\n\n" + CELLS + "\n",  # an empty line between rows
    CELLS + "\r\n\r\n" + CELLS + "\r\n",  # the same with CRLF
    CELLS + "\n" + "," * 12 + "\n" + CELLS + "\n",  # a row of empty cells
    CELLS + "\n\n\nTOTAL,1,10000,9922.30\n",  # empty lines before the trailer
    CELLS + "\nTOTAL,1,10000,9922.30\n" + "," * 12 + "\n\n",  # blank rows after it
    CELLS + "\r\nTOTAL,1,10000,9922.30\r\n" + '"",,' + "\r\n",  # a quoted empty cell
    CELLS + ",\n" + CELLS + ",\n",  # a delimiter at the end of each row
    CELLS + ",,\n" + CELLS + ",,x\n" + CELLS + ",y,\n",  # some rows too wide
    CELLS + ",\n" + "," * 13 + "\n" + ",,,,,,,,,,,,,z\n",  # empty past the header, or not
    CELLS + "\n" + CELLS + ",\n",  # a wider row after one as wide as the header
    CELLS + "\r\na,b\r\n" + CELLS + ",x\r\n" + CELLS + "\r\n",  # rows too short, too wide
    CELLS + "\n\na,b\n\n" + CELLS + ",,,\n" + CELLS + "\n",  # with empty lines between
    CELLS + ",\n" + CELLS + "\na,b\n" + CELLS + ",\n",  # among rows that end in a delimiter
    'a,"b,c",d\n' + CELLS + "\n",  # a short row with a quoted delimiter
    ",,\n" + CELLS + "\n",  # a short row of empty cells
    "a,b\n\nc\n", "a,b", "x,y,z\n1,2\n",  # every row short
    CELLS + "\n   \n" + CELLS + "\n",  # a line of spaces
    '"a\r\nb"' + "," * 12 + "\r\n",  # a quoted CRLF
    SPANNING + "\n" + CELLS + "\n" + SPANNING + "\nTOTAL,3,0,0\n",  # quoted line breaks
    "," * 12 + "\n",  # rows of empty cells only: no data rows
    "," * 12 + "\r\n\r\n" + "," * 12 + "\r\n",
])
def test_these_layouts_take_the_arrow_path(body: str) -> None:
    """Each of these took the general path before: at 1M rows it read in 8-12 s and
    1.8-2.2 GB where Arrow's path takes 1-2 s and 0.6-0.7 GB. Rows of another width are set aside
    and read by Python's `csv`, each where it stands."""
    _same_grid(",".join(HEADER) + "\n" + body, ",")


@pytest.mark.parametrize("text", [
    'a,"b\nc"\n',  # a quoted line break in a row of another width
    SPANNING + "\n\n" + CELLS + "\n",  # a quoted line break and an empty line
    "," * 12 + "\r" + "," * 12 + "\n",  # a lone CR ends a line for Arrow alone
])
def test_other_layouts_take_the_general_path(text: str) -> None:
    header = ",".join(HEADER)
    assert _arrow_path("f.csv", (header + "\n" + text).encode(), ",", OVO_V1) is None


def test_many_rows_of_another_width_take_the_general_path(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Past ODD_ROWS rows set aside, the file goes to the general path, which reads it
    the same."""
    text = ",".join(HEADER) + "\n" + (CELLS + "\na,b\n") * 3
    monkeypatch.setattr("recon.formats.arrow_csv.ODD_ROWS", 3)
    assert _arrow_path("f.csv", text.encode(), ",", OVO_V1) is not None
    monkeypatch.setattr("recon.formats.arrow_csv.ODD_ROWS", 2)
    assert _arrow_path("f.csv", text.encode(), ",", OVO_V1) is None


@pytest.mark.parametrize("before", ["   \n", "\n\n", "\r\n \r\n", ",,,\n", " , \t\n"])
def test_blank_lines_before_the_header_are_skipped(tmp_path: Path, before: str) -> None:
    """Empty lines, spaces or empty cells before the header: both paths skip those lines
    and number the rows after them. A first line of empty cells was read as the header on
    Arrow's path, and the file refused for missing columns."""
    text = before + ",".join(HEADER) + "\n" + CELLS + "\nTOTAL,1,10000,9922.30\n"
    _same_grid(text, ",")
    (tmp_path / "f.csv").write_text(text)
    parsed = read(tmp_path / "f.csv")
    assert parsed.rows["line_no"].tolist() == [before.count("\n") + 2]
    assert parsed.trailer is not None and parsed.trailer.line_no == before.count("\n") + 3


def test_a_missing_column_names_the_header_line_after_blank_lines() -> None:
    text = "\n\n" + ",".join(HEADER[:-1]) + "\n" + CELLS + "\n"
    with pytest.raises(FileRejected, match=r"NetAmount \(line 3\)"):
        _arrow_path("f.csv", text.encode(), ",", OVO_V1)
    _same_grid(text, ",")


LINE_TEXT = st.text(st.sampled_from(['"', "\n", "\r", " ", "a", ",", "é"]), max_size=40)


_PLAIN = st.text(alphabet=st.sampled_from(list("Aa0 ")), min_size=1, max_size=4)
_ODD = st.one_of(
    st.text(alphabet=st.sampled_from(list('Aa0 "')), min_size=1, max_size=6),  # stray quotes
    st.builds(lambda a, b: f'"{a}\n{b}"', _PLAIN, _PLAIN),  # a quoted line break
    st.builds(lambda a, b: f'"{a},{b}"', _PLAIN, _PLAIN),  # a quoted delimiter
    st.just(""),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(_PLAIN, min_size=13, max_size=13), min_size=1, max_size=5),
       st.lists(st.tuples(st.integers(0, 4), st.integers(0, 12), _ODD), max_size=3),
       st.sampled_from(["\n", "\r\n"]), st.booleans(),
       st.lists(st.integers(1, 6), max_size=2))
def test_stray_and_spanning_quotes_read_like_the_general_path(
        rows: list[list[str]], odd: list[tuple[int, int, str]], line_end: str,
        last_line_end: bool, empty_lines: list[int]) -> None:
    """Lines written by hand, not by a CSV writer: odd quotes, quotes inside fields,
    quoted line breaks and delimiters, and empty lines. Whenever the Arrow path takes such
    a file, it reads it exactly as the general path does (lines numbered the same)."""
    for row, column, cell in odd:
        if row < len(rows):
            rows[row][column] = cell
    lines = [",".join(HEADER), *(",".join(row) for row in rows)]
    for at in empty_lines:
        lines.insert(at, "")
    text = line_end.join(lines)
    text += line_end if last_line_end else ""
    _same_grid(text, ",", must_take=False)


@settings(max_examples=200, deadline=None)
@given(LINE_TEXT, st.integers(1, 12))
def test_first_line_looks_at_the_start_but_finds_what_a_full_split_finds(text: str,
                                                                          look: int) -> None:
    expected = next((line for line in text.splitlines() if line.strip()), "")
    found = first_line_of(text.encode(), look)
    assert found is None or found == expected
    if len(text.encode()) <= look:
        assert found == (expected or None)


MONEY_TEXT = st.text(st.sampled_from(list("0123456789.+- e,\t")), max_size=24) | st.builds(
    lambda whole, frac, zeros: f"{whole}.{frac}{'0' * zeros}",
    st.integers(-10**15, 10**15), st.text(st.sampled_from("0123456789"), max_size=3),
    st.integers(0, 60))


def _money_by_hand(text: str) -> int | None:
    """The amount rule written out in Python: digits, an optional sign and point, at most
    two decimals that are not zeros, surrounding blanks allowed."""
    shape = re.fullmatch(r"[ \t\n\f\r]*([+-]?)(\d{1,15})(?:\.(\d*))?[ \t\n\f\r]*", text)
    if shape is None or set((shape.group(3) or "")[2:]) - {"0"}:
        return None
    sign, whole, fraction = shape.group(1), shape.group(2), (shape.group(3) or "")[:2]
    minor = int(whole) * 100 + int(fraction.ljust(2, "0"))
    return -minor if sign == "-" else minor


@settings(max_examples=400, deadline=None)
@given(st.lists(MONEY_TEXT, min_size=1, max_size=20))
def test_parse_money_agrees_with_the_rule_written_out(texts: list[str]) -> None:
    """The cast to decimals reads every text as the rule, applied by hand, does."""
    values, bad = parse_money(pd.Series(texts, dtype="str"))
    expected = [_money_by_hand(text) for text in texts]
    assert (~bad).tolist() == [v is not None for v in expected]
    assert [None if pd.isna(v) else int(v) for v in values] == expected


_REPEATED = st.lists(st.sampled_from(
    ["10000.00", "1.5", "", "x", " 7 ", "2026-11-30", "2026-11-27 10:00:00",
     "2026-11-27T10:00:00+07:00", "2026-11-30 00:00", "OVO Cash", "ovo points", "GoPay"]),
    min_size=1, max_size=30)


@settings(max_examples=200, deadline=None)
@given(_REPEATED, st.sampled_from([parse_money, parse_datetime, parse_date, parse_pay_option]))
def test_parsing_each_distinct_text_once_gives_what_parsing_all_gives(
        texts: list[str], parse: Callable[[pd.Series], tuple[pd.Series, pd.Series]]) -> None:
    values = pd.Series(texts, dtype="str", index=range(5, 5 + len(texts)))
    parsed, bad = per_distinct(values, parse)
    expected, expected_bad = parse(values)
    pd.testing.assert_series_equal(parsed, expected, check_exact=True)
    pd.testing.assert_series_equal(bad, expected_bad, check_exact=True, check_names=False)


# ------------------------------------------------------------ a file read in batches

@st.composite
def settlement_texts(draw: st.DrawFn) -> bytes:  # noqa: C901 - every kind of line, drawn in one place
    """Settlement files in the layouts a file comes in: either line end, blank lines
    (some longer than a batch) and rows of empty cells anywhere, a BOM, quoted line
    breaks, lone CRs, rows of another width, bad cells, a byte that is not UTF-8, a wrong
    SettlementDate, rows that begin as a trailer does, a TOTAL trailer that agrees or not,
    blank lines and rows after it, no line end at the end."""
    end = draw(st.sampled_from(["\n", "\r\n"]))
    delimiter = draw(st.sampled_from([",", ";"]))
    lines = [draw(st.sampled_from(["", " ", delimiter * 3]))
             for _ in range(draw(st.integers(0, 2)))]
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator=end)
    writer.writerow(HEADER)
    # A lone CR after the header ends a line for the general path: a blank line follows.
    lines.append(buffer.getvalue().removesuffix(end)
                 + draw(st.sampled_from([""] * 10 + ["\r "])))
    gross = rows = 0
    bad_byte = draw(st.sampled_from([False] * 5 + [True]))
    for i in range(draw(st.integers(0, 25))):
        shape = draw(st.sampled_from(["ok"] * 6 + ["bad", "spans", "short", "wide", "empty",
                                                   "cells", "total", "cr"]))
        if shape == "empty":
            lines.append("")
            continue
        if shape == "cells":
            lines.append(draw(st.sampled_from([delimiter * 12, " " * 400])))
            continue
        amount = draw(st.integers(1, 99_999))
        changes = {"MerchantInvoice": f"INV-{i}", "GrossAmount": f"{amount}.00",
                   "MDRAmount": "0", "TaxAmount": "0", "NetAmount": f"{amount}.00"}
        if shape == "bad":
            changes["GrossAmount"] = "n/a"
        elif shape == "spans":
            changes["StoreID"] = "A\nB" if end == "\n" else "A\r\nB"
        elif shape == "total":  # a row, not the trailer, where it is not the last line
            changes["SettlementDate"] = "TOTAL"
            changes["StoreID"] = draw(st.sampled_from(["ST01", "A\nB"]))
        elif shape == "cr":  # a lone CR, quoted: a line end for the general path
            changes["StoreID"] = "A\rB"
        elif bad_byte:  # a byte that is not UTF-8: the file is rejected
            changes["StoreID"], bad_byte = "\x00", False
        if draw(st.sampled_from([False] * 40 + [True])):  # the file is of another date
            changes["SettlementDate"] = "2026-11-27"
        cells = list(row(**changes).values())
        if shape == "short":
            cells = cells[:draw(st.integers(1, 12))]
        elif shape == "wide":
            cells = [*cells, "x"]
        buffer = io.StringIO()
        csv.writer(buffer, delimiter=delimiter, lineterminator=end).writerow(cells)
        lines.append(buffer.getvalue().removesuffix(end))
        rows += 1
        gross += amount if shape != "bad" else 0
    if draw(st.booleans()):
        stated = rows + draw(st.sampled_from([0] * 8 + [1]))
        lines.append(delimiter.join(["TOTAL", str(stated), f"{gross}.00", f"{gross}.00"]))
    lines += draw(st.lists(st.sampled_from(["", " ", delimiter * 12, '""']), max_size=3))
    text = end.join(lines) + (end if draw(st.booleans()) else "")
    bom = "\ufeff" if draw(st.booleans()) else ""
    return (bom + text).encode().replace(b"\x00", b"\xff")


def _read_or_fault(read: Callable[[], tuple]) -> tuple:
    try:
        return read()
    except FileRejected as rejected:
        return ("rejected", rejected.fault)


@settings(max_examples=200, deadline=None)
@given(settlement_texts(), st.integers(min_value=180, max_value=1200))
def test_a_file_read_in_batches_is_the_file_read_whole(
        tmp_path_factory: pytest.TempPathFactory, data: bytes, batch_bytes: int) -> None:
    """Every row, line number, finding, the trailer and the layout; or the same fault."""
    from recon.formats.reader import SettlementBatches

    path = tmp_path_factory.mktemp("batches") / "f.csv"
    path.write_bytes(data)

    def whole() -> tuple:
        read = read_settlement_file(path, OVO_V1, S)
        return read.rows, read.trailer, read.sheet_format

    def in_batches() -> tuple:
        batches = SettlementBatches(path, OVO_V1, S, batch_bytes=batch_bytes)
        frames = list(batches)
        joined = pd.concat([frame.astype({"merchant_id": "str", "store_id": "str",
                                          "payment_source": "str"}) for frame in frames],
                           ignore_index=True)
        return joined, batches.trailer, batches.sheet_format

    expected, got = _read_or_fault(whole), _read_or_fault(in_batches)
    if isinstance(expected[0], str) or isinstance(got[0], str):  # a fault
        assert got[0] == expected[0] and got[1] == expected[1]
        return
    rows = expected[0].astype({"merchant_id": "str", "store_id": "str", "payment_source": "str"})
    pd.testing.assert_frame_equal(got[0], rows)
    assert got[1:] == expected[1:]
