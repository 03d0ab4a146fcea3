"""Errors are values: they cross a Dask worker (pickled) and a flow run's state with their
reason code and exit code, never as text parsed back."""

from __future__ import annotations

import pickle

import pytest
from prefect.states import Crashed, Failed

from recon.app.runner import state_error
from recon.core.errors import (
    ConfigError,
    FileMissing,
    FileRejected,
    NotificationFailed,
    OutputUnwritable,
    ReconError,
    RunLocked,
    SourceUnavailable,
    StoreError,
)

ERRORS = [ConfigError("bad --date"), FileMissing("no file"), FileRejected("f.csv", "empty"),
          RunLocked("held"), NotificationFailed("smtp down"), StoreError("db down"),
          SourceUnavailable("host key"), OutputUnwritable("disk full"), ReconError("oops")]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_an_error_pickles_with_its_codes_and_fields(error: ReconError) -> None:
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is type(error)
    assert (again.one_line(), again.exit_code, again.__dict__) == (
        error.one_line(), error.exit_code, error.__dict__)


def test_a_failed_state_gives_its_error_back_and_a_crash_is_an_error() -> None:
    rejected = FileRejected("f.csv", "line 7: a quoted field opens here")
    assert state_error(Failed(message=rejected.one_line(), data=rejected)) is rejected
    crashed = state_error(Crashed(message="Execution was aborted by an interrupt signal."))
    assert (crashed.reason_code, crashed.exit_code) == ("ERROR", 1)
    assert crashed.message == "Execution was aborted by an interrupt signal."
