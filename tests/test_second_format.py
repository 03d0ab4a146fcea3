"""A second counterparty layout is a declaration, read by the same reader: renamed
columns, dd/mm/yyyy HH:MM times in WIB, ';' between fields and a decimal comma."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from recon.core.errors import FileRejected
from recon.formats.declaration import (
    DATE,
    DATETIME,
    MONEY,
    PAYMENT_SOURCE,
    TRANSACTION_TYPE,
    Column,
    FileFormat,
)
from recon.formats.reader import read_settlement_file

BANK_STYLE = FileFormat(
    name="test-bank-style",
    columns=(
        Column("Tgl Settlement", "settlement_date", DATE),
        Column("Waktu Transaksi", "transaction_time", DATETIME),
        Column("ID Merchant", "merchant_id", key_length=32),
        Column("Toko", "store_id", required=False),
        Column("No Invoice", "merchant_invoice", mandatory_value=True, key_length=64),
        Column("No Refund", "refund_invoice", required=False, key_length=64),
        Column("Ref OVO", "ovo_reference_no", key_length=64),
        Column("Jenis", "transaction_type", TRANSACTION_TYPE),
        Column("Sumber Dana", "payment_source", PAYMENT_SOURCE),
        Column("Bruto", "gross", MONEY),
        Column("MDR", "mdr", MONEY),
        Column("PPN", "tax", MONEY),
        Column("Neto", "net", MONEY),
    ),
    delimiters=(";",),
    trailer_marker="JUMLAH",
    date_format="%d/%m/%Y",
    time_format="%d/%m/%Y %H:%M",
    decimal_separator=",",
)
HEADER = ("Tgl Settlement;Waktu Transaksi;ID Merchant;Toko;No Invoice;No Refund;Ref OVO;"
          "Jenis;Sumber Dana;Bruto;MDR;PPN;Neto")
S = dt.date(2026, 11, 30)


def _file(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "settlement.csv"
    path.write_text("\n".join([HEADER, *lines]) + "\n", encoding="utf-8")
    return path


def test_a_bank_style_file_is_read_by_the_same_reader(tmp_path: Path) -> None:
    path = _file(tmp_path,
                 "30/11/2026;27/11/2026 23:59;M001;;INV-1;;OVO1;PAYMENT;OVO Cash;"
                 "10000,50;70,00;7,70;9922,80",
                 "30/11/2026;28/11/2026 08:05;M001;;INV-1;R-1;OVO2;refund;OVO Points;"
                 "-2500;0;0;-2500",
                 "30/11/2026;2026-11-28 08:05;M001;;INV-3;;OVO3;PAYMENT;OVO Cash;1.000,00;0;0;1000",
                 "JUMLAH;3;7500,50;8422,80")
    read = read_settlement_file(path, BANK_STYLE, S)
    rows = read.rows
    assert read.sheet_format == "csv (;)" and read.trailer is not None
    assert list(rows["gross"].iloc[:2]) == [1_000_050, -250_000]
    assert list(rows["net"].iloc[:2]) == [992_280, -250_000]
    assert rows["transaction_time"].iloc[0] == dt.datetime(2026, 11, 27, 16, 59, tzinfo=dt.UTC)
    assert rows["transaction_date"].iloc[0] == dt.date(2026, 11, 27)  # its WIB date
    assert list(rows["payment_source"].iloc[:2]) == ["OVO_CASH", "OVO_POINTS"]
    assert rows["invalid_reason"].iloc[2] == (
        "Waktu Transaksi '2026-11-28 08:05' is not a DD/MM/YYYY HH:mm date and time; "
        "Bruto '1.000,00' is not a decimal amount")


def test_its_trailer_and_settlement_date_are_checked_in_its_own_terms(tmp_path: Path) -> None:
    row = "30/11/2026;27/11/2026 10:00;M001;;INV-1;;OVO1;PAYMENT;OVO Cash;10,00;0;0;10,00"
    with pytest.raises(FileRejected, match=r"JUMLAH trailer \(line 3\) says 2 rows, the file"):
        read_settlement_file(_file(tmp_path, row, "JUMLAH;2;10,00;10,00"), BANK_STYLE, S)
    with pytest.raises(FileRejected, match=r"says Bruto sums to 10\.01, the rows sum to 10\.00"):
        read_settlement_file(_file(tmp_path, row, "JUMLAH;1;10,01;10,00"), BANK_STYLE, S)
    wrong_day = row.replace("30/11/2026;27", "01/12/2026;27")
    with pytest.raises(FileRejected, match="Tgl Settlement 2026-12-01 is not the settlement"):
        read_settlement_file(_file(tmp_path, wrong_day), BANK_STYLE, S)
