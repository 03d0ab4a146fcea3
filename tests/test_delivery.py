"""Email delivery against a real SMTP server on loopback (aiosmtpd)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import pytest
from openpyxl import load_workbook

from recon.config import load_settings
from recon.core.errors import NotificationFailed
from recon.core.match import match_settlement
from recon.report.delivery import deliver
from recon.report.mail import build_report_email
from recon.report.summary import build_summary
from recon.report.workbook import write_exception_workbook
from tests.builders import (
    context,
    ledger_frame,
    open_items_frame,
    payment_row,
    payments_frame,
    refunds_frame,
    rows_frame,
)
from tests.smtp_server import SmtpServer, free_port, self_signed


@pytest.fixture
def report(tmp_path: Path) -> tuple[dict, Path]:
    rows = [payment_row("INV-1", "10000.00"), payment_row("INV-2", "5.00")]
    result = match_settlement(rows_frame(rows), payments_frame(
        [("INV-1", "10000.00", "00", "2026-11-27 10:00"),
         ("INV-3", "2500.00", "00", "2026-11-28 10:00")]), refunds_frame([]), ledger_frame([]),
        open_items_frame([]), context())
    summary = build_summary(result, "OVO_SETTLEMENT_M001_20261130.csv", "cd" * 32, "csv (,)",
                            False)
    workbook = write_exception_workbook(result, summary, tmp_path / "recon_M001_20261130.xlsx")
    return summary, workbook


@pytest.fixture
def server() -> Iterator[SmtpServer]:
    smtp = SmtpServer()
    yield smtp
    smtp.stop()


def settings_for(tmp_path: Path, port: int, **extra: str):
    return load_settings(None, {
        "smtp_host": "127.0.0.1", "smtp_port": str(port), "smtp_security": "none",
        "mail_from": "recon@merchant.example", "mail_to": "settle@ovo.example,ops@m.example",
        "mail_cc": "finance@m.example", "outbox": str(tmp_path / "outbox"),
        "smtp_timeout": "5", "smtp_retries": "2", "smtp_backoff_seconds": "0.01", **extra},
        environ={})


def _check_received(server: SmtpServer, summary: dict) -> None:
    (received,) = server.inbox.messages
    assert received.mail_from == "recon@merchant.example"
    assert sorted(received.rcpt_tos) == ["finance@m.example", "ops@m.example",
                                         "settle@ovo.example"]
    message = received.message
    assert message["Subject"] == "[OVO recon] M001 2026-11-30: 2 exceptions, IDR 2,505.00"
    plain = message.get_body(("plain",)).get_content()
    assert "MISSING_IN_RECORDS" in plain and "2,500.00" in plain
    assert "Open items from earlier dates still open: 0" in plain
    html = message.get_body(("html",)).get_content()
    assert "<table" in html and "MISSING_IN_SETTLEMENT" in html
    (attachment,) = list(message.iter_attachments())
    assert attachment.get_filename() == "recon_M001_20261130.xlsx"
    book = load_workbook(BytesIO(attachment.get_content()))
    assert book.sheetnames[0] == "Summary"
    assert summary.counts["MISSING_IN_SETTLEMENT"] == 1


def test_plain_smtp(server: SmtpServer, report, tmp_path: Path) -> None:
    server.start()
    summary, workbook = report
    settings = settings_for(tmp_path, server.port)
    message = build_report_email(summary, workbook, settings.mail_from, settings.mail_to,
                                 settings.mail_cc)
    delivery = deliver(message, settings, "recon_M001_20261130")
    assert delivery.channel == "smtp"
    _check_received(server, summary)
    assert not (tmp_path / "outbox").exists()


def test_starttls_with_login(server: SmtpServer, report, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server.start(tls=(cert, key), users={"recon": "s3cret"})
    summary, workbook = report
    settings = settings_for(tmp_path, server.port, smtp_security="starttls",
                            smtp_user="recon", smtp_ca_file=str(cert))
    settings = settings.replace(smtp_password="s3cret")
    message = build_report_email(summary, workbook, settings.mail_from, settings.mail_to,
                                 settings.mail_cc)
    deliver(message, settings, "recon_M001_20261130")
    _check_received(server, summary)


def test_implicit_tls(server: SmtpServer, report, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server.start(tls=(cert, key), implicit_tls=True)
    summary, workbook = report
    settings = settings_for(tmp_path, server.port, smtp_security="ssl", smtp_ca_file=str(cert))
    message = build_report_email(summary, workbook, settings.mail_from, settings.mail_to)
    deliver(message, settings, "recon_M001_20261130")
    assert len(server.inbox.messages) == 1


def test_wrong_password_fails_at_once(server: SmtpServer, report, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server.start(tls=(cert, key), users={"recon": "s3cret"})
    summary, workbook = report
    settings = settings_for(tmp_path, server.port, smtp_security="starttls", smtp_user="recon",
                            smtp_ca_file=str(cert), smtp_retries="5",
                            smtp_backoff_seconds="30").replace(smtp_password="wrong")
    message = build_report_email(summary, workbook, settings.mail_from, settings.mail_to)
    started = dt.datetime.now()
    with pytest.raises(NotificationFailed, match="login refused"):
        deliver(message, settings, "recon_M001_20261130")
    assert (dt.datetime.now() - started).total_seconds() < 20  # no 30 s backoff: not retried
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 1


def test_server_refuses_recipients(server: SmtpServer, report, tmp_path: Path) -> None:
    server.inbox.refuse_rcpt = "550 5.1.1 mailbox unavailable"
    server.start()
    summary, workbook = report
    settings = settings_for(tmp_path, server.port)
    message = build_report_email(summary, workbook, settings.mail_from, settings.mail_to)
    with pytest.raises(NotificationFailed) as caught:
        deliver(message, settings, "recon_M001_20261130")
    assert "recipients refused" in caught.value.message
    (kept,) = list((tmp_path / "outbox").glob("recon_M001_20261130_*.eml"))
    assert str(kept) in caught.value.message
    assert server.inbox.messages == []


def test_server_down_is_retried_then_kept(report, tmp_path: Path) -> None:
    summary, workbook = report
    settings = settings_for(tmp_path, free_port())
    message = build_report_email(summary, workbook, settings.mail_from, settings.mail_to)
    with pytest.raises(NotificationFailed, match="connection refused after 3 attempts"):
        deliver(message, settings, "recon_M001_20261130")
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 1


def test_a_run_whose_mail_fails_keeps_its_results_and_can_resend(
        tmp_path: Path, prefect_api: str, server: SmtpServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from recon.app.cli import main
    from recon.app.demo import DEMO_DATES, generate, write_demo
    from recon.app.runner import run_dates
    from recon.core.errors import ReconError

    data = generate(per_day=110)
    data.files = {DEMO_DATES[0]: data.files[DEMO_DATES[0]]}
    config = write_demo(tmp_path / "merchant", data)
    down = {"smtp_host": "127.0.0.1", "smtp_port": str(free_port()), "smtp_security": "none",
            "smtp_retries": "1", "smtp_backoff_seconds": "0.01"}
    with pytest.raises(ReconError) as caught:
        run_dates(down, str(config), None, [DEMO_DATES[0]])
    assert caught.value.exit_code == 7
    assert "results are saved; re-send with: recon notify --date 2026-11-30" in str(
        caught.value)
    report_dir = tmp_path / "merchant" / "reports" / "M001" / "2026-11-30"
    saved = json.loads((report_dir / "summary.json").read_text())
    assert saved["file"]["rows"] > 300
    assert list((tmp_path / "merchant" / "outbox").glob("recon_M001_20261130_*.eml"))

    server.start()
    for key, value in {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(server.port),
                       "SMTP_SECURITY": "none"}.items():
        monkeypatch.setenv(f"RECON_{key}", value)
    assert main(["notify", "--config", str(config), "--date", "2026-11-30"]) == 0
    (received,) = server.inbox.messages
    assert received.message["Subject"].startswith("[OVO recon] M001 2026-11-30: ")
    (attachment,) = list(received.message.iter_attachments())
    assert attachment.get_content() == (report_dir / "recon_M001_20261130.xlsx").read_bytes()
