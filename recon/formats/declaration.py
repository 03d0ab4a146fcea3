"""Settlement file formats, declared rather than hand-parsed.

A counterparty format is a `FileFormat`: its columns (header text, field, kind, whether
required), the accepted delimiters, the trailer marker. The reader interprets it.
"""

from __future__ import annotations

from dataclasses import dataclass

# Field kinds the reader knows how to parse.
TEXT = "text"
MONEY = "money"
DATE = "date"
DATETIME = "datetime"
TRANSACTION_TYPE = "transaction_type"
PAYMENT_SOURCE = "payment_source"


@dataclass(frozen=True)
class Column:
    header: str
    field: str
    kind: str = TEXT
    required: bool = True
    #: A required column must be present in the header; a mandatory value must be
    #: non-empty on every row or the row is INVALID_ROW.
    mandatory_value: bool = False
    #: A key the database keeps (its column's width): a longer text, or one with a control
    #: character, makes the row INVALID_ROW on every database alike.
    key_length: int | None = None


PAY_OPTIONS = {"OVOCASH": "OVO_CASH", "OVOPOINTS": "OVO_POINTS"}


def normalise_pay_option(text: str) -> str | None:
    """'OVO Cash', 'ovo_cash', 'OVOCASH' -> 'OVO_CASH'; None when not an OVO source."""
    key = "".join(ch for ch in str(text).upper() if ch.isalnum())
    return PAY_OPTIONS.get(key)


#: Characters no text field may hold (C0 controls and DEL): a NUL aborts a statement on
#: PostgreSQL, a line feed in a key breaks a CSV or a mail header downstream.
CONTROL_CHARACTERS = r"[\x00-\x1f\x7f]"


@dataclass(frozen=True)
class ReadLimits:
    """How much of a file the reader will take before it refuses the file as a whole.

    The defaults hold a day of 10M rows (about 1.5 GB of CSV); an XLSX sheet holds at most
    1,048,576 rows, well under a GiB of XML."""

    max_file_bytes: int = 4 << 30
    max_xlsx_uncompressed_bytes: int = 1 << 30
    #: A part of an XLSX file that expands more than this many times is a zip bomb, not a
    #: sheet: real sheets' XML compresses 5-20 times.
    max_xlsx_ratio: int = 200
    #: A quoted field may span this many physical lines; more is a stray quote.
    max_quoted_lines: int = 5


DEFAULT_LIMITS = ReadLimits()


@dataclass(frozen=True)
class FileFormat:
    name: str
    columns: tuple[Column, ...]
    extensions: tuple[str, ...] = (".csv", ".xlsx")
    delimiters: tuple[str, ...] = (",", ";")
    trailer_marker: str = "TOTAL"
    payment_type: str = "PAYMENT"
    refund_type: str = "REFUND"
    #: How dates are written (strptime); a date and time with `time_format`, in WIB.
    #: Without a `time_format` the ISO 8601 shapes are read, with or without an offset.
    date_format: str = "%Y-%m-%d"
    time_format: str = ""
    #: The separator of an amount's decimals ("." or ","); there is no thousands separator.
    decimal_separator: str = "."

    def column(self, field: str) -> Column:
        for col in self.columns:
            if col.field == field:
                return col
        raise KeyError(field)


def shown_layout(layout: str) -> str:
    """A strptime layout as people write it: '%Y-%m-%d' is 'YYYY-MM-DD'."""
    for code, shown in (("%Y", "YYYY"), ("%m", "MM"), ("%d", "DD"), ("%H", "HH"),
                        ("%M", "mm"), ("%S", "ss")):
        layout = layout.replace(code, shown)
    return layout


def normalise_header(text: object) -> str:
    """Header names match case-insensitively, ignoring spaces, underscores and a BOM."""
    return "".join(
        ch for ch in str(text or "").replace("\ufeff", "").lower() if ch not in " _\t"
    )
