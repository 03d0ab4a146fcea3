"""Shared fixtures: real databases (SQLite file, the PostgreSQL on this machine) and one
Prefect test harness per session. With CI=true a missing service fails, never skips."""

from __future__ import annotations

import importlib
import os
import random
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from pipelines.logs import prepare_prefect_environment
from recon.formats import values

prepare_prefect_environment()

#: Modules that draw from the global `random` in background threads: websockets' keepalive
#: pings and reconnect delays, Prefect's retry and service-loop jitter. Hypothesis takes a
#: change of the global state while it generates data for a strategy's own use of `random`
#: and warns ("Do not use the random module inside strategies") at random, as a ping falls.
BACKGROUND_RANDOM_USERS = ("websockets.asyncio.connection", "websockets.client",
                           "prefect.utilities.math", "prefect._internal._observation_delivery")


def pytest_configure(config: pytest.Config) -> None:
    """Each of BACKGROUND_RANDOM_USERS draws from a generator of its own."""
    for name in BACKGROUND_RANDOM_USERS:
        try:
            module = importlib.import_module(name)
        except ImportError:  # another version of the library
            continue
        if getattr(module, "random", None) is random:
            module.random = random.Random()  # type: ignore[attr-defined]


IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
PG_ADMIN_URL = os.environ.get("RECON_TEST_PG_URL",
                              "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MARIADB_ADMIN_URL = os.environ.get("RECON_TEST_MARIADB_URL",
                                   "mysql+pymysql://root@127.0.0.1:3306/test")


@pytest.fixture(autouse=True)
def _restore_recon_environment() -> Iterator[None]:
    """No test leaves RECON_* variables behind for the next one."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("RECON_")}
    yield
    for key in [k for k in os.environ if k.startswith("RECON_")]:
        if key not in saved:
            del os.environ[key]
    os.environ.update(saved)


@pytest.fixture(autouse=True)
def _columns_parsed_two_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file a test reads, however few its rows, has its columns parsed two at a time
    on two threads, as a file of a day's rows has: the golden cases and the properties
    hold for that path. The path of small files, one column after another, is tested
    beside it in test_reader.py."""
    monkeypatch.setattr(values, "PARALLEL_ROWS", 0)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true",
                     help="write missing expected files of golden cases (never overwrites)")


def service_unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: a missing service is a failure)")
    pytest.skip(reason)


#: How to create and drop a throw-away database on each server.
SERVERS = {
    "PostgreSQL": (PG_ADMIN_URL, 'CREATE DATABASE "{name}"',
                   'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'),
    "MariaDB": (MARIADB_ADMIN_URL, "CREATE DATABASE `{name}` CHARACTER SET utf8mb4",
                "DROP DATABASE IF EXISTS `{name}`"),
}


def _session_database(server: str) -> Iterator[str]:
    """A fresh database on `server` for this test session, dropped at the end."""
    admin_url, create, drop = SERVERS[server]
    name = f"recon_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(create.format(name=name)))
    except Exception as exc:  # any connection failure means the server is not usable
        admin.dispose()
        service_unavailable(f"{server} at {admin_url} is not reachable: {exc!s:.200}")
    yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(text(drop.format(name=name)))
    admin.dispose()


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    yield from _session_database("PostgreSQL")


@pytest.fixture(scope="session")
def mariadb_server_url() -> Iterator[str]:
    yield from _session_database("MariaDB")


def reset_mariadb(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    engine = create_engine(MARIADB_ADMIN_URL)
    with engine.begin() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    engine.dispose()


def reset_postgres(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres),
                        pytest.param("mariadb", marks=pytest.mark.mariadb)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each kind the store supports."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'recon.db'}"
    if request.param == "mariadb":
        url: str = request.getfixturevalue("mariadb_server_url")
        reset_mariadb(url)
        return url
    url = request.getfixturevalue("postgres_server_url")
    reset_postgres(url)
    return url


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """One Prefect API server for the whole session; its URL for subprocesses."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield str(PREFECT_API_URL.value())


def libreoffice() -> str:
    """The path of LibreOffice's soffice. Without it a test is skipped here, and fails
    under CI (`.ci/run` installs it)."""
    import shutil

    soffice = shutil.which("soffice") or shutil.which("libreoffice")
    if soffice is None:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail("LibreOffice (soffice) is not installed: .ci/run installs it")
        pytest.skip("LibreOffice (soffice) is not installed")
    return soffice

