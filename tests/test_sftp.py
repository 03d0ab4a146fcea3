"""The SFTP source against a real OpenSSH sshd on loopback."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from recon.config import load_settings
from recon.core.calendar import WIB
from recon.core.errors import ConfigError, FileMissing, FileRejected, SourceUnavailable
from recon.sources.fetch import fetch_settlement_file, validate_remote_name
from recon.sources.sftp import parse_sftp_url
from tests.conftest import service_unavailable
from tests.smtp_server import free_port
from tests.sshd_server import SSHD, Sshd

DAY = dt.date(2026, 11, 30)
NAME = "OVO_SETTLEMENT_M001_20261130.csv"
CONTENT = b"SettlementDate,MerchantInvoice\n2026-11-30,INV-1\n"


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    if not os.path.exists(SSHD):
        service_unavailable("OpenSSH sshd is not installed (apt-get install openssh-server)")
    server = Sshd(tmp_path_factory.mktemp("sshd")).start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def clean_outgoing(sshd: Sshd) -> None:
    for entry in sshd.outgoing.iterdir():
        entry.unlink()


def settings_for(sshd: Sshd, tmp_path: Path, **extra: str):
    values = {"source": sshd.url(), "sftp_known_hosts": str(sshd.known_hosts),
              "sftp_key_file": str(sshd.user_key), "archive_dir": str(tmp_path / "archive"),
              "sftp_timeout": "5", "sftp_retries": "0", "sftp_stable_seconds": "0.3",
              "poll_seconds": "0.3"}
    values.update(extra)
    return load_settings(None, values, environ={})


def test_download_archives_a_verified_copy(sshd: Sshd, tmp_path: Path) -> None:
    (sshd.outgoing / NAME).write_bytes(CONTENT)
    (sshd.outgoing / "unrelated.txt").write_text("x")
    fetched = fetch_settlement_file(settings_for(sshd, tmp_path), "M001", DAY)
    assert fetched.path.read_bytes() == CONTENT
    assert fetched.path.parent == tmp_path / "archive" / "M001" / "2026-11-30"
    assert fetched.name == NAME and fetched.source.startswith("sftp://")
    assert (fetched.path.parent / f"{fetched.path.name}.sha256").read_text().startswith(
        fetched.sha256)
    assert not list(fetched.path.parent.glob(".incoming-*"))
    assert (sshd.outgoing / NAME).read_bytes() == CONTENT  # the remote file is untouched


def test_merchant_is_taken_from_the_remote_file_name(sshd: Sshd, tmp_path: Path) -> None:
    (sshd.outgoing / "OVO_SETTLEMENT_M777_20261130.xlsx").write_bytes(b"PK")
    fetched = fetch_settlement_file(settings_for(sshd, tmp_path), "", DAY)
    assert fetched.merchant_id == "M777"


def test_encrypted_key_with_its_passphrase(sshd: Sshd, tmp_path: Path) -> None:
    (sshd.outgoing / NAME).write_bytes(CONTENT)
    settings = settings_for(sshd, tmp_path, sftp_key_file=str(sshd.locked_key))
    with pytest.raises(SourceUnavailable, match="RECON_SFTP_KEY_PASSPHRASE"):
        fetch_settlement_file(settings, "M001", DAY)
    with pytest.raises(SourceUnavailable, match="wrong RECON_SFTP_KEY_PASSPHRASE"):
        fetch_settlement_file(settings.replace(sftp_key_passphrase="nope"), "M001", DAY)
    unlocked = settings.replace(sftp_key_passphrase="open sesame")
    assert fetch_settlement_file(unlocked, "M001", DAY).path.read_bytes() == CONTENT


def test_a_changed_host_key_is_refused(sshd: Sshd, tmp_path: Path) -> None:
    (sshd.outgoing / NAME).write_bytes(CONTENT)
    settings = settings_for(sshd, tmp_path, sftp_known_hosts=str(sshd.wrong_known_hosts))
    with pytest.raises(SourceUnavailable, match=r"does not match .* refusing to connect"):
        fetch_settlement_file(settings, "M001", DAY)
    assert not (tmp_path / "archive" / "M001").exists()


def test_an_unknown_host_is_refused(sshd: Sshd, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(SourceUnavailable, match="refusing an unknown host key"):
        fetch_settlement_file(settings_for(sshd, tmp_path, sftp_known_hosts=str(empty)),
                              "M001", DAY)
    with pytest.raises(ConfigError, match="does not exist"):
        fetch_settlement_file(settings_for(
            sshd, tmp_path, sftp_known_hosts=str(tmp_path / "none")), "M001", DAY)


def test_bad_credentials_fail_at_once(sshd: Sshd, tmp_path: Path) -> None:
    settings = settings_for(sshd, tmp_path, sftp_key_file=str(sshd.stranger_key),
                            sftp_retries="5", sftp_backoff_seconds="30")
    started = time.monotonic()
    with pytest.raises(SourceUnavailable, match="authentication refused"):
        fetch_settlement_file(settings, "M001", DAY)
    assert time.monotonic() - started < 20  # refused at once, no 30 s backoff


def test_password_authentication(sshd: Sshd, tmp_path: Path) -> None:
    user, password = "reconsftp", os.environ.get("RECON_TEST_SFTP_PASSWORD", "")
    if not password:
        service_unavailable("RECON_TEST_SFTP_PASSWORD is not set (.ci/run creates the "
                            "reconsftp user and sets it)")
    shared = Path(tempfile.mkdtemp(prefix="recon-sftp-"))  # readable by that user
    try:
        shared.chmod(0o755)
        (shared / NAME).write_bytes(CONTENT)
        (shared / NAME).chmod(0o644)
        source = f"sftp://{user}@127.0.0.1:{sshd.port}{shared}"
        settings = settings_for(sshd, tmp_path, source=source, sftp_key_file="")
        _password_round(settings, password)
    finally:
        shutil.rmtree(shared)


def _password_round(settings, password: str) -> None:
    with pytest.raises(SourceUnavailable, match="authentication refused"):
        fetch_settlement_file(settings.replace(sftp_password="wrong"), "M001", DAY)
    fetched = fetch_settlement_file(settings.replace(sftp_password=password), "M001", DAY)
    assert fetched.path.read_bytes() == CONTENT


def test_an_unreachable_server_is_retried(tmp_path: Path, sshd: Sshd) -> None:
    settings = settings_for(sshd, tmp_path, source=f"sftp://u@127.0.0.1:{free_port()}/x",
                            sftp_retries="2", sftp_backoff_seconds="0.05")
    with pytest.raises(SourceUnavailable, match="after 3 attempts"):
        fetch_settlement_file(settings, "M001", DAY)


def test_a_missing_remote_folder(sshd: Sshd, tmp_path: Path) -> None:
    settings = settings_for(sshd, tmp_path, source=sshd.url() + "/nope")
    with pytest.raises(SourceUnavailable, match="does not exist"):
        fetch_settlement_file(settings, "M001", DAY)


def _today_settings(sshd: Sshd, tmp_path: Path, seconds: float, **extra: str):
    """Settings whose deadline is `seconds` from now (WIB), for today's file."""
    now = dt.datetime.now(WIB)
    deadline = now + dt.timedelta(seconds=seconds)
    if deadline.date() != now.date():
        pytest.skip("too close to midnight WIB for a deadline test")
    return now.date(), settings_for(sshd, tmp_path, file_deadline=deadline.time().isoformat(),
                                    **extra)


def test_a_missing_file_is_polled_for_until_the_deadline(sshd: Sshd, tmp_path: Path) -> None:
    today, settings = _today_settings(sshd, tmp_path, 2.0)
    started = time.monotonic()
    with pytest.raises(FileMissing, match="waited until the deadline"):
        fetch_settlement_file(settings, "M001", today)
    assert time.monotonic() - started >= 1.5


def test_a_file_arriving_before_the_deadline_is_fetched(sshd: Sshd, tmp_path: Path) -> None:
    today, settings = _today_settings(sshd, tmp_path, 20.0)
    name = f"OVO_SETTLEMENT_M001_{today:%Y%m%d}.csv"
    threading.Timer(1.0, lambda: (sshd.outgoing / name).write_bytes(CONTENT)).start()
    assert fetch_settlement_file(settings, "M001", today).path.read_bytes() == CONTENT


def test_a_growing_file_is_waited_for(sshd: Sshd, tmp_path: Path) -> None:
    today, settings = _today_settings(sshd, tmp_path, 30.0, sftp_stable_seconds="0.8")
    target = sshd.outgoing / f"OVO_SETTLEMENT_M001_{today:%Y%m%d}.csv"
    target.write_bytes(CONTENT)
    lines = [f"2026-11-30,INV-{n}\n".encode() for n in range(2, 12)]

    def grow() -> None:
        for line in lines:
            time.sleep(0.3)
            with target.open("ab") as handle:
                handle.write(line)

    writer = threading.Thread(target=grow)
    writer.start()
    fetched = fetch_settlement_file(settings, "M001", today)
    writer.join()
    assert fetched.path.read_bytes() == CONTENT + b"".join(lines)


def test_a_done_marker_is_honoured(sshd: Sshd, tmp_path: Path) -> None:
    today, settings = _today_settings(sshd, tmp_path, 20.0, sftp_done_marker=".done",
                                      sftp_stable_seconds="0")
    name = f"OVO_SETTLEMENT_M001_{today:%Y%m%d}.csv"
    (sshd.outgoing / name).write_bytes(CONTENT[:10])  # partial, no marker yet

    def finish() -> None:
        (sshd.outgoing / name).write_bytes(CONTENT)
        (sshd.outgoing / f"{name}.done").write_text("")

    threading.Timer(1.0, finish).start()
    assert fetch_settlement_file(settings, "M001", today).path.read_bytes() == CONTENT
    past = settings.replace(file_deadline=dt.time(0, 0))
    (sshd.outgoing / f"{name}.done").unlink()
    with pytest.raises(FileMissing, match=r"no \.done marker"):
        fetch_settlement_file(past, "M001", today)


@pytest.mark.parametrize("name", ["../etc/passwd", "a/b.csv", "..", "", "x\\y.csv"])
def test_unsafe_remote_names_are_rejected(name: str) -> None:
    with pytest.raises(FileRejected, match="unsafe file name"):
        validate_remote_name(name)


@pytest.mark.parametrize(("url", "parsed"), [
    ("sftp://ovo@files.example:2222/outgoing/M001", ("ovo", "files.example", 2222,
                                                      "/outgoing/M001")),
    ("sftp://ovo@files.example/out", ("ovo", "files.example", 22, "/out")),
])
def test_sftp_urls(url: str, parsed: tuple) -> None:
    assert parse_sftp_url(url) == parsed


def test_a_password_in_the_url_is_refused() -> None:
    with pytest.raises(ConfigError, match="RECON_SFTP_PASSWORD"):
        parse_sftp_url("sftp://ovo:secret@files.example/out")


def _recon_run(sshd: Sshd, tmp_path: Path, database_url: str, api: str,
               known_hosts: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PREFECT_API_URL": api, "RECON_SFTP_KNOWN_HOSTS": str(known_hosts),
           "RECON_SFTP_KEY_FILE": str(sshd.user_key), "RECON_SFTP_STABLE_SECONDS": "0.2",
           "RECON_ARCHIVE_DIR": str(tmp_path / "archive"),
           "RECON_MDR_RATES": "OVO Cash=0.007"}  # as the golden case configures
    return subprocess.run(
        [sys.executable, "-m", "recon.app.cli", "run", "--date", "2026-11-30", "--merchant", "M001",
         "--database", database_url, "--source", sshd.url(), "--report-dir",
         str(tmp_path / "reports"), "--outbox", str(tmp_path / "outbox")],
        env=env, capture_output=True, text=True, timeout=300)


def test_recon_run_from_sftp_end_to_end(sshd: Sshd, tmp_path: Path, database_url: str,
                                        prefect_api: str) -> None:
    from tests.test_golden import GOLDEN, load_case_records

    case = GOLDEN / "every_category"
    load_case_records(case, database_url)
    shutil.copy(case / "inbox" / NAME, sshd.outgoing / NAME)
    swapped = _recon_run(sshd, tmp_path, database_url, prefect_api, sshd.wrong_known_hosts)
    assert swapped.returncode == 9
    assert len(swapped.stderr.splitlines()) == 1
    assert "SOURCE_UNAVAILABLE" in swapped.stderr and "refusing to connect" in swapped.stderr
    done = _recon_run(sshd, tmp_path, database_url, prefect_api, sshd.known_hosts)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "reports/M001/2026-11-30/summary.json").read_text())
    expected = json.loads((case / "expected" / "1_2026-11-30.json").read_text())
    assert summary["counts"] == expected["counts"]
    assert summary["amounts"] == expected["amounts"]
