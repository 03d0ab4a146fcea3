"""XLSX settlement files: the size limits checked before openpyxl opens one, and its
first sheet as a raw table.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator

from recon.core.errors import FileRejected
from recon.formats.declaration import DEFAULT_LIMITS, ReadLimits
from recon.formats.grid import RawTable, cell_text, split_rows


def _check_xlsx_size(name: str, data: bytes, limits: ReadLimits) -> None:
    """Refuse an XLSX file whose parts would expand past the limits, before any is read
    (Python's zipfile stops each part at its declared size, so the declared sizes hold)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            parts = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise FileRejected(name, f"corrupt XLSX ({type(exc).__name__}: {exc})") from exc
    total = sum(part.file_size for part in parts)
    if total > limits.max_xlsx_uncompressed_bytes:
        raise FileRejected(name, f"XLSX expands to {total:,} bytes, over "
                                 f"max_xlsx_uncompressed_bytes "
                                 f"({limits.max_xlsx_uncompressed_bytes:,})")
    for part in parts:
        ratio = part.file_size / max(part.compress_size, 1)
        if part.file_size > 1 << 20 and ratio > limits.max_xlsx_ratio:
            raise FileRejected(name, f"XLSX part {part.filename!r} expands {ratio:,.0f} times "
                                     f"(max_xlsx_ratio {limits.max_xlsx_ratio}): not a sheet")


def read_xlsx_table(name: str, data: bytes, limits: ReadLimits = DEFAULT_LIMITS) -> RawTable:
    from openpyxl import load_workbook

    _check_xlsx_size(name, data, limits)
    try:
        workbook = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, TypeError) as exc:
        raise FileRejected(name, f"corrupt XLSX ({type(exc).__name__}: {exc})") from exc
    except Exception as exc:  # openpyxl raises assorted errors on damaged parts
        raise FileRejected(name, f"corrupt XLSX ({type(exc).__name__}: {exc})") from exc
    try:
        if not workbook.worksheets:
            raise FileRejected(name, "XLSX has no worksheet")
        sheet = workbook.worksheets[0]
        # The sheet's declared dimension is not trusted: A1:XFD1048576 would pad every
        # row to 16,384 cells and add rows up to the millionth. Rows are read as written.
        reset = getattr(sheet, "reset_dimensions", None)
        if reset is not None:
            reset()

        def numbered() -> Iterator[tuple[int, list[str]]]:
            try:
                for index, values in enumerate(sheet.iter_rows(values_only=True), start=1):
                    yield index, [cell_text(value) for value in values]
            except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
                raise FileRejected(name, f"corrupt XLSX ({exc})") from exc

        return split_rows(name, numbered(), "xlsx")
    finally:
        workbook.close()
