"""sample_reports/ must be what the code produces today; the demo must show every category."""

from __future__ import annotations

import json
from pathlib import Path

from openpyxl import load_workbook

from recon.app.demo import DEMO_DATES, run_demo
from recon.app.samples import SAMPLE_DATE, STEM, build_samples
from recon.core import categories as cat
from recon.formats.ovo_v1 import OVO_V1
from recon.formats.reader import read_settlement_file

SAMPLES = Path(__file__).parent.parent / "sample_reports"
STALE = "sample_reports/ is stale: regenerate with `make samples` and review the diff"


def _cells(path: Path) -> dict[str, list[list[object]]]:
    """Every cell value, but the time the run happened."""
    book = load_workbook(path)
    return {s.title: [[c.value for c in row] for row in s.iter_rows()
                      if row[0].value != "Run at (WIB)"] for s in book.worksheets}


def test_sample_reports_are_fresh(tmp_path: Path, prefect_api: str) -> None:
    build_samples(tmp_path)
    assert (tmp_path / f"{STEM}.csv").read_bytes() == (SAMPLES / f"{STEM}.csv").read_bytes(), STALE
    for name in ("ovo_payments.csv", "ovo_refunds.csv"):
        assert (tmp_path / name).read_text() == (SAMPLES / name).read_text(), STALE
    report = Path("M001") / SAMPLE_DATE.isoformat()
    assert json.loads((tmp_path / report / "summary.json").read_text()) == json.loads(
        (SAMPLES / report / "summary.json").read_text()), STALE
    workbook = report / f"recon_M001_{SAMPLE_DATE:%Y%m%d}.xlsx"
    assert _cells(tmp_path / workbook) == _cells(SAMPLES / workbook), STALE
    assert _cells(tmp_path / f"{STEM}.xlsx") == _cells(SAMPLES / f"{STEM}.xlsx"), STALE


def test_sample_xlsx_reads_like_the_sample_csv() -> None:
    as_csv = read_settlement_file(SAMPLES / f"{STEM}.csv", OVO_V1, SAMPLE_DATE)
    as_xlsx = read_settlement_file(SAMPLES / f"{STEM}.xlsx", OVO_V1, SAMPLE_DATE)
    assert as_csv.rows.equals(as_xlsx.rows)


def test_demo_runs_three_dates_with_every_category(tmp_path: Path, prefect_api: str,
                                                   capsys) -> None:
    assert run_demo(str(tmp_path / "demo")) == 0
    printed = capsys.readouterr().out
    totals = dict.fromkeys(cat.ALL_CATEGORIES, 0)
    summaries = []
    for day in DEMO_DATES:
        folder = tmp_path / "demo" / "reports" / "M001" / day.isoformat()
        summary = json.loads((folder / "summary.json").read_text())
        summaries.append(summary)
        assert (folder / f"recon_M001_{day:%Y%m%d}.xlsx").exists()
        for name, count in summary["counts"].items():
            totals[name] += count
    assert all(totals[name] > 0 for name in cat.ALL_CATEGORIES), totals
    # Carry-over: open items appear on later dates and later files close some of them.
    assert summaries[1]["open_items"] > 0 and summaries[1]["closed_items"] > 0
    assert summaries[2]["open_items"] > summaries[1]["open_items"]
    assert summaries[2]["file"]["format"] == "xlsx"
    assert len(list((tmp_path / "demo" / "outbox").glob("*.eml"))) == 3
    assert "workbook" in printed and "demo finished" in printed
