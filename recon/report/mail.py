"""The email to the settlement team: built here, written to the outbox as .eml."""

from __future__ import annotations

import contextlib
import datetime as dt
import html
import logging
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

from recon.core import categories as cat
from recon.core.errors import NotificationFailed
from recon.core.money import format_idr
from recon.report.summary import Summary
from recon.system.paths import within

log = logging.getLogger(__name__)

XLSX_TYPE = ("application", "vnd.openxmlformats-officedocument.spreadsheetml.sheet")


def report_subject(summary: Summary) -> str:
    head = f"[OVO recon] {summary.merchant_id} {summary.settlement_date}"
    if summary.exceptions == 0:
        return f"{head}: all clear"
    amount = format_idr(summary.exception_amount)
    return f"{head}: {summary.exceptions} exceptions, IDR {amount}"


def _table_lines(summary: Summary) -> list[tuple[str, int, str]]:
    return [(name, summary.counts[name], format_idr(summary.amounts[name]))
            for name in cat.ALL_CATEGORIES]


def _case_lines(summary: Summary) -> list[str]:
    """The exception cases in a few lines: opened and resolved, open by age, overdue."""
    figures = summary.cases
    if figures is None:
        return []
    ages = ", ".join(f"{bucket} working days: {count} (IDR {format_idr(amount)})"
                     for bucket, (count, amount) in figures.open_by_age.items())
    return [f"Cases: {figures.opened} opened by this run, {figures.resolved} resolved today",
            f"Open cases by age: {ages}",
            f"Overdue: {figures.overdue_acknowledgements} acknowledgements, "
            f"{figures.overdue_claims} claims to OVO (recon cases list --overdue)"]


def report_body(summary: Summary) -> tuple[str, str]:
    rows = _table_lines(summary)
    file = summary.file
    intro = [
        f"Merchant {summary.merchant_id}, settlement date {summary.settlement_date}",
        f"Covers transaction dates {', '.join(d.isoformat() for d in summary.covered_dates)}",
        f"File {file.name} ({file.rows} rows, sha256 {file.sha256[:16]})",
        f"Open items from earlier dates still open: {summary.open_items}",
        *_case_lines(summary),
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


def message_to(sender: str, to: tuple[str, ...], cc: tuple[str, ...], subject: str
               ) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(to)
    if cc:
        message["Cc"] = ", ".join(cc)
    message["Subject"] = subject
    message["Date"] = format_datetime(dt.datetime.now(dt.UTC))
    message["Message-ID"] = make_msgid(domain="ovo-recon.local")
    return message


def build_report_email(summary: Summary, workbook: Path, sender: str,
                       to: tuple[str, ...], cc: tuple[str, ...] = ()) -> EmailMessage:
    message = message_to(sender, to, cc, report_subject(summary))
    text, body = report_body(summary)
    message.set_content(text)
    message.add_alternative(body, subtype="html")
    message.add_attachment(workbook.read_bytes(), maintype=XLSX_TYPE[0], subtype=XLSX_TYPE[1],
                           filename=workbook.name)
    return message


#: What an alert tells the settlement team, by the failure's reason code: what happened,
#: in words, and what to expect. The command that fixes it is for the operator's log.
_ALERT_TEXTS = {
    "FILE_MISSING": ("had not arrived at the source by its deadline",
                     "No reconciliation was made for this date. Operations will fetch the file "
                     "from OVO and re-run the date; the report will follow then."),
    "FILE_REJECTED": ("arrived but cannot be trusted as a whole",
                      "Nothing from this file was recorded. Operations will ask OVO for a "
                      "corrected file and re-run the date; the report will follow then."),
    "SOURCE_UNAVAILABLE": ("could not be fetched: OVO's file server could not be reached or "
                           "refused the connection",
                           "No reconciliation was made for this date. Operations will re-run it "
                           "once the server can be reached; the report will follow then."),
}
_RUN_FAILED = ("could not be reconciled: the run failed",
               "Nothing from this run was recorded; the previous report of this date, if any, "
               "still stands. Operations have the details and will re-run the date.")


def build_alert_email(merchant_id: str, settlement_date: dt.date, reason_code: str,
                      detail: str, sender: str, to: tuple[str, ...],
                      cc: tuple[str, ...] = ()) -> EmailMessage:
    """The alert for a date that was not reconciled, in words the settlement team acts on."""
    what, expect = _ALERT_TEXTS.get(reason_code, _RUN_FAILED)
    subject = f"[OVO recon] {merchant_id} {settlement_date}: ALERT, file not reconciled"
    message = message_to(sender, to, cc, subject)
    message.set_content(
        f"The OVO settlement file for merchant {merchant_id}, settlement date "
        f"{settlement_date:%A %d %B %Y}, {what}.\n\n"
        f"What was found: {' '.join(detail.split())}\n\n"
        f"What to expect: {expect}\n"
    )
    return message


def write_to_outbox(message: EmailMessage, outbox: Path, stem: str) -> Path:
    """Write `message` as <outbox>/<stem>_<UTC time>.eml; earlier files are kept.
    NotificationFailed when the outbox cannot be written."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    path = within(outbox, f"{stem}_{stamp}.eml")
    temp = path.with_suffix(".eml.tmp")
    try:
        outbox.mkdir(parents=True, exist_ok=True)
        temp.write_bytes(bytes(message))
        temp.replace(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temp.unlink(missing_ok=True)
        raise NotificationFailed(f"the outbox {outbox} cannot be written "
                                 f"({exc.strerror or exc})") from exc
    log.info("email %r written to %s", message["Subject"], path)
    return path
