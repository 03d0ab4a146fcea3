"""A temporary Prefect API server owned by one `recon` command.

Without a configured `PREFECT_API_URL`, Prefect starts a temporary server of its own,
which outlives a command killed with SIGKILL (about 250 MB each) and, sharing the
command's process group, dies under an operator's Ctrl-C before the flow run can be marked
as ended. The command starts the same server itself instead: in a session of its own (a
signal to the command's group does not reach it), asked by the kernel to end when the
command ends however it ends (PR_SET_PDEATHSIG, which survives the exec), and stopped when
the command is done.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

#: Runs in the server's process before it becomes uvicorn: end with the parent (SIGTERM
#: when the command's process ends), and at once if the parent has ended already.
_LAUNCH = """
import ctypes, os, signal, sys
parent = int(sys.argv[1])
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
if os.getppid() != parent:
    sys.exit(0)
os.execv(sys.executable, [sys.executable, "-m", "uvicorn", *sys.argv[2:]])
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def api_configured() -> bool:
    """Whether the environment or the Prefect profile names an API server."""
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


@contextlib.contextmanager
def temporary_server(startup_seconds: float) -> Iterator[str | None]:
    """The command's own Prefect API server for the body, unless one is configured
    (then None). Its URL; stopped on the way out."""
    if api_configured():
        yield None
        return
    import prefect
    from prefect.settings import PREFECT_API_URL, temporary_settings

    port = _free_port()
    environment = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
                   "PREFECT__SERVER_FINAL": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    process = subprocess.Popen(
        [sys.executable, "-c", _LAUNCH, str(os.getpid()), "--app-dir",
         str(prefect.__module_path__.parent), "--factory",
         "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "error", "--lifespan", "on"],
        env=environment, start_new_session=True, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + startup_seconds
        while not _healthy(url):
            if process.poll() is not None:
                raise RuntimeError(f"the temporary Prefect server ended at start "
                                   f"(exit {process.returncode})")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the temporary Prefect server did not start within "
                                   f"{startup_seconds:g} s")
            time.sleep(0.2)
        with temporary_settings(updates={PREFECT_API_URL: url}):
            os.environ["PREFECT_API_URL"] = url  # for the flow's own threads and children
            try:
                yield url
            finally:
                _send_what_is_queued()
                os.environ.pop("PREFECT_API_URL", None)
    finally:
        stop_server(process)


def _send_what_is_queued() -> None:
    """The run's logs and events still queued go to the server before it stops."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogHandler

    with contextlib.suppress(Exception):
        APILogHandler().flush()
    with contextlib.suppress(Exception):
        EventsWorker.drain_all(timeout=5)


def stop_server(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
