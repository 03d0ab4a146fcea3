"""One error family for everything an operator must read; each maps to an exit code.

Findings about rows are never exceptions (they are rows in a result); these errors are
for the cases where a run cannot, or must not, go on.
"""

from __future__ import annotations


class ReconError(Exception):
    """Base error: a one-line, operator-readable message and a stable reason code."""

    reason_code = "ERROR"
    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def one_line(self) -> str:
        """The message as a single line, prefixed with the reason code."""
        text = " ".join(self.message.split())
        return f"{self.reason_code}: {text}"

    def __reduce__(self) -> tuple[object, ...]:
        """Pickled with its fields (a flow run's result crosses to a Dask worker and back),
        whatever the subclass's own constructor takes."""
        return (_rebuilt, (type(self), self.__dict__))


def _rebuilt(kind: type[ReconError], fields: dict[str, object]) -> ReconError:
    error = kind.__new__(kind)
    Exception.__init__(error, fields.get("message", ""))
    error.__dict__.update(fields)
    return error


class ConfigError(ReconError):
    """The configuration or the command line is wrong."""

    reason_code = "CONFIG"
    exit_code = 2


class NotWorkingDay(ReconError):
    """The settlement date asked for is not a working day: no file is due."""

    reason_code = "NOT_WORKING_DAY"
    exit_code = 3


class FileMissing(ReconError):
    """The settlement file is not at the source (or the source cannot be reached)."""

    reason_code = "FILE_MISSING"
    exit_code = 4


class FileRejected(ReconError):
    """The settlement file is there but cannot be trusted as a whole."""

    reason_code = "FILE_REJECTED"
    exit_code = 5

    def __init__(self, file_name: str, fault: str) -> None:
        super().__init__(f"{file_name}: {fault}")
        self.file_name = file_name
        self.fault = fault


class RunLocked(ReconError):
    """Another run of the same merchant and settlement date holds the lock."""

    reason_code = "RUN_LOCKED"
    exit_code = 6


class NotificationFailed(ReconError):
    """The results are saved but the email could not be delivered."""

    reason_code = "NOTIFY_FAILED"
    exit_code = 7


class SourceUnavailable(ReconError):
    """The file source cannot be reached or refuses us (host key, credentials, permissions)."""

    reason_code = "SOURCE_UNAVAILABLE"
    exit_code = 9


class StoreError(ReconError):
    """The database could not be reached or refused a statement."""

    reason_code = "DATABASE"
    exit_code = 8


class OutputUnwritable(ReconError):
    """A report, archive or spill folder cannot be written (full, read-only, missing)."""

    reason_code = "OUTPUT_UNWRITABLE"
    exit_code = 10

