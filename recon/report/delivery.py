"""Deliver an email: over SMTP when configured (with retries), else into the outbox.

When SMTP delivery fails after its retries the message is kept in the outbox as .eml and
NotificationFailed is raised, so the run reports it and `recon notify` can re-send.
"""

from __future__ import annotations

import logging
import smtplib
import socket
import ssl
import time
from dataclasses import dataclass
from email.message import EmailMessage

from recon.config import Settings
from recon.core.errors import NotificationFailed
from recon.report.mail import write_to_outbox

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"none": 25, "starttls": 587, "ssl": 465}


@dataclass(frozen=True)
class Delivery:
    channel: str  # "smtp" or "outbox"
    detail: str  # server or .eml path


class _Permanent(Exception):
    """A refusal that retrying will not change (5xx, authentication)."""


def _port(settings: Settings) -> int:
    return settings.smtp_port or DEFAULT_PORTS[settings.smtp_security]


def _send_once(message: EmailMessage, settings: Settings) -> None:
    context = ssl.create_default_context(cafile=settings.smtp_ca_file or None)
    host, port, timeout = settings.smtp_host, _port(settings), settings.smtp_timeout
    client: smtplib.SMTP
    if settings.smtp_security == "ssl":
        client = smtplib.SMTP_SSL(host, port, timeout=timeout, context=context)
    else:
        client = smtplib.SMTP(host, port, timeout=timeout)
    with client:
        client.ehlo()
        if settings.smtp_security == "starttls":
            client.starttls(context=context)
            client.ehlo()
        if settings.smtp_user:
            client.login(settings.smtp_user, settings.smtp_password)
        refused = client.send_message(message)
        if refused:
            log.warning("some recipients were refused: %s", ", ".join(sorted(refused)))


def _classify(exc: Exception) -> str:
    """One line for an SMTP failure; raises _Permanent for refusals not worth retrying."""
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        raise _Permanent(f"login refused ({exc.smtp_code})") from exc
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = {code for code, _ in exc.recipients.values()}
        text = f"recipients refused ({', '.join(sorted(exc.recipients))})"
        if all(400 <= code < 500 for code in codes):
            return text
        raise _Permanent(text) from exc
    if isinstance(exc, smtplib.SMTPResponseException):
        detail = exc.smtp_error.decode(errors="replace") if isinstance(
            exc.smtp_error, bytes) else str(exc.smtp_error)
        text = f"server answered {exc.smtp_code} {' '.join(detail.split())}"
        if 500 <= exc.smtp_code < 600:
            raise _Permanent(text) from exc
        return text
    if isinstance(exc, ssl.SSLError):
        raise _Permanent(f"TLS failed ({exc.reason or exc})") from exc
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return f"{type(exc).__name__}: {exc}"


def send_with_retries(message: EmailMessage, settings: Settings) -> None:
    """Send over SMTP; transient failures are retried with exponential backoff."""
    attempts = settings.smtp_retries + 1
    where = f"{settings.smtp_host}:{_port(settings)}"
    reason = ""
    for attempt in range(1, attempts + 1):
        try:
            _send_once(message, settings)
            return
        except (smtplib.SMTPException, OSError) as exc:
            try:
                reason = _classify(exc)
            except _Permanent as permanent:
                raise NotificationFailed(f"SMTP {where}: {permanent}") from exc
        if attempt < attempts:
            delay = settings.smtp_backoff_seconds * 2 ** (attempt - 1)
            log.warning("SMTP %s: %s (attempt %d of %d), retrying in %.1f s", where, reason,
                        attempt, attempts, delay)
            time.sleep(delay)
    raise NotificationFailed(f"SMTP {where}: {reason} after {attempts} attempts")


def deliver(message: EmailMessage, settings: Settings, stem: str) -> Delivery:
    """Send `message`; without SMTP configured, write it to the outbox."""
    if not settings.smtp_host:
        return Delivery("outbox", str(write_to_outbox(message, settings.outbox, stem)))
    try:
        send_with_retries(message, settings)
    except NotificationFailed as exc:
        kept = write_to_outbox(message, settings.outbox, stem)
        raise NotificationFailed(f"{exc.message}; the email is kept as {kept}") from exc
    log.info("email %r sent via %s:%d to %s", message["Subject"], settings.smtp_host,
             _port(settings), message["To"])
    return Delivery("smtp", f"{settings.smtp_host}:{_port(settings)}")


