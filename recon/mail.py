"""The email to the settlement team: built here, written to the outbox as .eml."""

from __future__ import annotations

import datetime as dt
import html
import logging
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

from recon import categories as cat
from recon.money import format_idr, to_minor

log = logging.getLogger(__name__)

XLSX_TYPE = ("application", "vnd.openxmlformats-officedocument.spreadsheetml.sheet")


def report_subject(summary: dict[str, Any]) -> str:
    head = f"[OVO recon] {summary['merchant_id']} {summary['settlement_date']}"
    if summary["exceptions"] == 0:
        return f"{head}: all clear"
    amount = format_idr(to_minor(summary["exception_amount"]))
    return f"{head}: {summary['exceptions']} exceptions, IDR {amount}"


def _table_lines(summary: dict[str, Any]) -> list[tuple[str, int, str]]:
    return [(name, summary["counts"][name], format_idr(to_minor(summary["amounts"][name])))
            for name in cat.ALL_CATEGORIES]


def report_body(summary: dict[str, Any]) -> tuple[str, str]:
    rows = _table_lines(summary)
    file = summary["file"]
    intro = [
        f"Merchant {summary['merchant_id']}, settlement date {summary['settlement_date']}",
        f"Covers transaction dates {', '.join(summary['covered_transaction_dates'])}",
        f"File {file['name']} ({file['rows']} rows, sha256 {file['sha256'][:16]})",
        f"Open items from earlier dates still open: {summary['open_items']}",
    ]
    width = max(len(r[0]) for r in rows)
    text = "\n".join(intro) + "\n\n" + "\n".join(
        f"{name:<{width}}  {count:>9}  IDR {amount:>18}" for name, count, amount in rows
    ) + "\n\nThe workbook is attached.\n"
    cells = "".join(
        f"<tr><td>{html.escape(n)}</td><td align='right'>{c}</td>"
        f"<td align='right'>IDR {html.escape(a)}</td></tr>" for n, c, a in rows)
    body = (
        "<html><body>" + "".join(f"<p>{html.escape(line)}</p>" for line in intro)
        + "<table border='1' cellpadding='4' cellspacing='0'><tr><th>Category</th>"
        "<th>Count</th><th>GrossAmount</th></tr>" + cells + "</table>"
        "<p>The workbook is attached.</p></body></html>"
    )
    return text, body


def _message(sender: str, to: tuple[str, ...], cc: tuple[str, ...], subject: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(to)
    if cc:
        message["Cc"] = ", ".join(cc)
    message["Subject"] = subject
    message["Date"] = format_datetime(dt.datetime.now(dt.UTC))
    message["Message-ID"] = make_msgid(domain="ovo-recon.local")
    return message


def build_report_email(summary: dict[str, Any], workbook: Path, sender: str,
                       to: tuple[str, ...], cc: tuple[str, ...] = ()) -> EmailMessage:
    message = _message(sender, to, cc, report_subject(summary))
    text, body = report_body(summary)
    message.set_content(text)
    message.add_alternative(body, subtype="html")
    message.add_attachment(workbook.read_bytes(), maintype=XLSX_TYPE[0], subtype=XLSX_TYPE[1],
                           filename=workbook.name)
    return message


def build_alert_email(merchant_id: str, settlement_date: dt.date, reason: str, sender: str,
                      to: tuple[str, ...], cc: tuple[str, ...] = ()) -> EmailMessage:
    subject = f"[OVO recon] {merchant_id} {settlement_date}: ALERT, file not reconciled"
    message = _message(sender, to, cc, subject)
    message.set_content(
        f"The OVO settlement file for merchant {merchant_id}, settlement date "
        f"{settlement_date}, was not reconciled.\n\nReason: {reason}\n\n"
        "Nothing was written to the reconciliation database. Fix or re-send the file and "
        f"re-run: recon run --date {settlement_date} --merchant {merchant_id}\n"
    )
    return message


def write_to_outbox(message: EmailMessage, outbox: Path, stem: str) -> Path:
    """Write `message` as <outbox>/<stem>_<UTC time>.eml; earlier files are kept."""
    outbox.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    path = outbox / f"{stem}_{stamp}.eml"
    temp = path.with_suffix(".eml.tmp")
    temp.write_bytes(bytes(message))
    temp.replace(path)
    log.info("email %r written to %s", message["Subject"], path)
    return path
