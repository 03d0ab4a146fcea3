"""Logging for runs: Prefect's console goes to stdout; stderr is kept for the one-line
reason a command fails. Expected failures (ReconError) are logged without a traceback."""

from __future__ import annotations

import logging
import os

from recon.core.errors import ReconError


class _NoTracebackForReconErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], ReconError):
            record.exc_info = None
            record.exc_text = None
        return True


def prepare_prefect_environment() -> None:
    """Call before importing prefect: console logs to stdout."""
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_STREAM", "ext://sys.stdout")
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_DEBUG_STREAM", "ext://sys.stdout")
    # The temporary API server's telemetry heartbeat only adds noise to an operator's log.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def install_log_filters() -> None:
    quiet = _NoTracebackForReconErrors()
    for name in ("prefect.flow_runs", "prefect.task_runs", "prefect"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoTracebackForReconErrors) for f in logger.filters):
            logger.addFilter(quiet)
    logging.getLogger("recon").setLevel(logging.INFO)
