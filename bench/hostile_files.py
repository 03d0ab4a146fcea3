"""Time and peak memory of reading hostile settlement files, each in a process of its own:
what the reader does with a file built to exhaust it. `make bench` runs it after the main
benchmark; `python bench/hostile_files.py [--rows N]` alone."""

from __future__ import annotations

import argparse
import datetime as dt
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from recon.formats.filegen import write_settlement_csv, write_settlement_xlsx

S = dt.date(2026, 11, 30)
ROW = {"SettlementDate": S.isoformat(), "TransactionDateTime": "2026-11-27 10:00:00",
       "MerchantID": "M001", "OVOReferenceNo": "OVO1", "TransactionType": "PAYMENT",
       "PaymentSource": "OVO Cash", "GrossAmount": "10000.00", "MDRAmount": "70.00",
       "TaxAmount": "7.70", "NetAmount": "9922.30"}

#: Reads one file and prints its outcome, seconds and peak memory (MiB, this process's
#: own: VmHWM, which Prefect's import adds about 200 MiB to).
PROBE = """
import datetime as dt, sys, time
from pathlib import Path
from pipelines.flows import peak_memory_mib
from recon.core.errors import FileRejected
from recon.formats.ovo_v1 import OVO_V1
from recon.formats.reader import read_settlement_file
started = time.perf_counter()
try:
    read = read_settlement_file(Path(sys.argv[1]), OVO_V1, dt.date(2026, 11, 30))
    outcome = f"read, {read.data_rows:,} rows"
except FileRejected as exc:
    outcome = "rejected: " + exc.fault[:70]
print(f"{outcome}|{time.perf_counter() - started:.2f}|{peak_memory_mib():.0f}")
"""


def _rows(n: int) -> list[dict[str, str]]:
    return [{**ROW, "MerchantInvoice": f"INV-{i}"} for i in range(n)]


def _rewrite_sheet(path: Path, change: Callable[[bytes], bytes]) -> None:
    with zipfile.ZipFile(path) as source:
        parts = {info.filename: source.read(info) for info in source.infolist()}
    sheet = next(name for name in parts if name.startswith("xl/worksheets/sheet"))
    parts[sheet] = change(parts[sheet])
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as target:
        for name, data in parts.items():
            target.writestr(name, data)


def _whole_sheet_declared(path: Path, rows: int) -> None:
    write_settlement_xlsx(_rows(rows), path)
    empty = "".join(f'<row r="{r}"/>' for r in range(rows + 10, 1_048_577)).encode()
    _rewrite_sheet(path, lambda xml: re.sub(
        rb'<dimension ref="[^"]*"/>', b'<dimension ref="A1:XFD1048576"/>', xml).replace(
        b"</sheetData>", empty + b"</sheetData>"))


def _bomb(path: Path, rows: int) -> None:
    write_settlement_xlsx(_rows(rows), path)
    _rewrite_sheet(path, lambda xml: xml.replace(b"</sheetData>",
                                                 b" " * (2 << 30) + b"</sheetData>"))


def _stray_quote(path: Path, rows: int) -> None:
    write_settlement_csv(_rows(rows), path)
    data = path.read_bytes()
    path.write_bytes(data.replace(b",INV-5,", b',"INV-5,', 1))


def _long_field(path: Path, rows: int) -> None:
    made = _rows(rows)
    made[3] = {**made[3], "MerchantInvoice": "X" * (64 << 20)}
    write_settlement_csv(made, path)


CASES: dict[str, tuple[str, Callable[[Path, int], None]]] = {
    "XLSX declaring A1:XFD1048576, a million empty rows": ("xlsx", _whole_sheet_declared),
    "XLSX bomb (2 GiB of XML)": ("xlsx", _bomb),
    "CSV with a stray quote on line 7": ("csv", _stray_quote),
    "CSV with a 64 MiB MerchantInvoice": ("csv", _long_field),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1000, help="data rows of each file")
    rows = parser.parse_args().rows
    print(f"\nHostile files ({rows:,} data rows each), each read in a process of its own:")
    print(f"  {'file':<52} {'size':>10}  {'seconds':>7}  {'peak MiB':>8}  outcome")
    with tempfile.TemporaryDirectory() as folder:
        for label, (suffix, make) in CASES.items():
            path = Path(folder) / f"OVO_SETTLEMENT_M001_20261130.{suffix}"
            make(path, rows)
            done = subprocess.run([sys.executable, "-c", PROBE, str(path)],
                                  capture_output=True, text=True, timeout=900)
            if done.returncode:
                outcome, seconds, peak = f"FAILED (exit {done.returncode})", "-", "-"
            else:
                outcome, seconds, peak = done.stdout.strip().rsplit("\n", 1)[-1].split("|")
            print(f"  {label:<52} {path.stat().st_size:>10,}  {seconds:>7}  {peak:>8}  "
                  f"{outcome}", flush=True)
            path.unlink()


if __name__ == "__main__":
    main()
