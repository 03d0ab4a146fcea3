"""Where settlement files come from: find one, wait until it is complete, download it to a
temporary name, verify it, archive it with its SHA-256. Sources are only read.

A source is a local folder (the embedded default) or `sftp://user@host:port/dir`.
A missing or still-growing file is polled for until the deadline (WIB) of its date.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from recon.config import Settings
from recon.core.calendar import WIB
from recon.core.errors import ConfigError, FileMissing, FileRejected, OutputUnwritable
from recon.sources.base import Entry, NotReady, Source
from recon.system.paths import has_control_character, within

log = logging.getLogger(__name__)

EXTENSIONS = (".csv", ".xlsx")


@dataclass(frozen=True)
class FetchedFile:
    name: str
    merchant_id: str
    path: Path  # the archived copy the run reads
    sha256: str
    size: int
    source: str


class LocalFolder:
    remote = False

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.location = str(folder)

    def entries(self) -> list[Entry]:
        if not self.folder.is_dir():
            raise ConfigError(f"source folder {self.folder} does not exist")
        found = []
        for entry in self.folder.iterdir():
            if entry.is_file():
                info = entry.stat()
                found.append(Entry(entry.name, info.st_size, info.st_mtime))
        return found

    def download(self, name: str, target: Path) -> None:
        source = self.folder / name
        try:
            with source.open("rb") as reading:
                try:
                    with target.open("wb") as writing:
                        shutil.copyfileobj(reading, writing, 1 << 20)
                except OSError as exc:
                    raise OutputUnwritable(f"the archive copy {target} cannot be written "
                                           f"({exc.strerror or exc})") from exc
        except OSError as exc:
            raise FileRejected(name, f"cannot be read at the source ({exc.strerror or exc})"
                               ) from exc


def expected_stem(pattern: str, merchant_id: str, day: dt.date) -> str:
    try:
        return pattern.format(merchant_id=merchant_id, yyyymmdd=day.strftime("%Y%m%d"),
                              date=day.isoformat())
    except (KeyError, IndexError) as exc:
        raise ConfigError(f"file_name_pattern {pattern!r}: unknown placeholder {exc}") from exc


def validate_remote_name(name: str) -> str:
    """A file name from a source must be a plain name before it touches the local disk or
    a mail header: no folder, no control character (CR, LF, NUL)."""
    if (not name or name in {".", ".."} or "/" in name or "\\" in name or ".." in name
            or has_control_character(name)):
        raise FileRejected(ascii(name) if name else "<empty name>", "unsafe file name")
    return name


def locate(entries: list[Entry], location: str, pattern: str, merchant_id: str,
           day: dt.date) -> tuple[Entry, str]:
    """The settlement file for (merchant, day) among `entries`, and its merchant id.

    With no merchant configured, the merchant is taken from the one file for that date.
    """
    names = {e.name: e for e in entries}
    if merchant_id:
        stem = expected_stem(pattern, merchant_id, day)
        wanted = {(stem + ext).lower() for ext in EXTENSIONS}
        matches = sorted(n for n in names if n.lower() in wanted)
        if not matches:
            raise FileMissing(f"{stem}.csv (or .xlsx) is not in {location}")
        if len(matches) > 1:
            raise FileRejected(" and ".join(matches), "both a CSV and an XLSX file for one date")
        return names[matches[0]], merchant_id
    regex = re.compile(
        re.escape(expected_stem(pattern, "\x00", day)).replace("\x00", "(?P<mid>[^/_]+)")
        + r"\.(csv|xlsx)$", re.IGNORECASE)
    merchants = sorted({m.group("mid") for n in names if (m := regex.match(n))
                        and not has_control_character(n)})
    if not merchants:
        raise FileMissing(f"no settlement file for {day} in {location}")
    if len(merchants) > 1:
        raise ConfigError(f"files for several merchants ({', '.join(merchants)}) in {location}:"
                          " choose one with --merchant")
    return locate(entries, location, pattern, merchants[0], day)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_ready(source: Source, entry: Entry, settings: Settings,
                 sleep: Callable[[float], None]) -> None:
    if settings.sftp_done_marker:
        markers = {entry.name + settings.sftp_done_marker,
                   Path(entry.name).stem + settings.sftp_done_marker}
        if not markers & {e.name for e in source.entries()}:
            raise NotReady(f"{entry.name} has no {settings.sftp_done_marker} marker yet")
        return
    if source.remote and settings.sftp_stable_seconds > 0:
        sleep(settings.sftp_stable_seconds)
        again = {e.name: e for e in source.entries()}.get(entry.name)
        if again is None or (again.size, again.mtime) != (entry.size, entry.mtime):
            raise NotReady(f"{entry.name} is still being written")


def _download_and_archive(source: Source, entry: Entry, archive_dir: Path, merchant_id: str,
                          day: dt.date) -> tuple[Path, str, int]:
    """Download to a temporary name beside the archive, verify the size, then rename."""
    folder = within(archive_dir, merchant_id, day.isoformat())
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(prefix=".incoming-", dir=folder)
        os.close(handle)
    except OSError as exc:
        raise OutputUnwritable(f"the archive folder {folder} cannot be written "
                               f"({exc.strerror or exc}); nothing was fetched") from exc
    temp = Path(temp_name)
    try:
        source.download(entry.name, temp)
        size = temp.stat().st_size
        if size != entry.size:
            raise NotReady(f"{entry.name} changed while being downloaded "
                           f"({entry.size} -> {size} bytes)")
        digest = sha256_of(temp)
        target = folder / f"{digest[:12]}_{entry.name}"
        os.replace(temp, target)
        (folder / f"{target.name}.sha256").write_text(f"{digest}  {entry.name}\n")
    except OSError as exc:
        raise OutputUnwritable(f"the archive folder {folder} cannot be written "
                               f"({exc.strerror or exc}); nothing was fetched") from exc
    finally:
        temp.unlink(missing_ok=True)
    return target, digest, size


@contextlib.contextmanager
def open_source(settings: Settings) -> Iterator[Source]:
    if settings.source.lower().startswith("sftp://"):
        from recon.sources.sftp import SftpFolder

        folder = SftpFolder(settings.source, settings)
        try:
            yield folder
        finally:
            folder.close()
    else:
        yield LocalFolder(Path(settings.source))


def fetch_settlement_file(settings: Settings, merchant_id: str, day: dt.date,
                          now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
                          sleep: Callable[[float], None] = time.sleep) -> FetchedFile:
    """Fetch the file for (merchant, day) and archive a verified copy.

    On the settlement date itself, a file that is missing or not complete yet is looked
    for again every `poll_seconds` until `file_deadline` (WIB); then FileMissing. For any
    other date the file is looked for once.
    """
    deadline = dt.datetime.combine(day, settings.file_deadline, WIB)
    # Only today's file is waited for; any other date's file is there or it is not.
    polling = now().astimezone(WIB).date() == day
    waited = False
    while True:
        try:
            with open_source(settings) as source:
                entry, merchant = locate(source.entries(), source.location,
                                         settings.file_name_pattern, merchant_id, day)
                validate_remote_name(entry.name)
                settings.check_merchant_id(merchant, f"the merchant of {entry.name!r}")
                if entry.size > settings.max_file_bytes:
                    raise FileRejected(entry.name, f"{entry.size:,} bytes, over max_file_bytes "
                                                   f"({settings.max_file_bytes:,})")
                _check_ready(source, entry, settings, sleep)
                archived, digest, size = _download_and_archive(
                    source, entry, settings.archive_dir, merchant, day)
                log.info("fetched %s (%d bytes, sha256 %s) from %s into %s", entry.name, size,
                         digest[:12], source.location, archived)
                return FetchedFile(name=entry.name, merchant_id=merchant, path=archived,
                                   sha256=digest, size=size, source=source.location)
        except (FileMissing, NotReady) as exc:
            remaining = (deadline - now()).total_seconds()
            if not polling or remaining <= 0:
                text = exc.message if isinstance(exc, FileMissing) else str(exc)
                if waited:
                    text += f" (waited until the deadline {deadline:%Y-%m-%d %H:%M} WIB)"
                raise FileMissing(text) from exc
            pause = min(settings.poll_seconds, remaining)
            log.info("%s; looking again in %.0f s (deadline %s WIB)",
                     exc.message if isinstance(exc, FileMissing) else exc, pause,
                     f"{deadline:%Y-%m-%d %H:%M}")
            waited = True
            sleep(pause)


def check_source(settings: Settings) -> None:
    """Before a run: a local source folder exists (ConfigError, an operator's mistake, not
    a missing file). A remote source is looked at by the run itself, with its retries."""
    if settings.source.lower().startswith("sftp://"):
        return
    if not Path(settings.source).is_dir():
        raise ConfigError(f"source folder {settings.source} does not exist")


def source_names_merchant(settings: Settings, merchant_id: str) -> bool:
    """Whether a file at a local source has `merchant_id` in its name (a remote source is
    given the benefit of the doubt)."""
    if settings.source.lower().startswith("sftp://"):
        return True
    folder = Path(settings.source)
    return folder.is_dir() and any(merchant_id in entry.name for entry in folder.iterdir())


def announce_wait(settings: Settings, day: dt.date,
                  now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> str:
    """The line a run that will wait for today's file starts with ('' when it will not):
    the file it waits for and until when."""
    deadline = dt.datetime.combine(day, settings.file_deadline, WIB)
    moment = now()
    if moment.astimezone(WIB).date() != day or moment >= deadline:
        return ""
    merchant = settings.merchant_id
    if merchant and not settings.source.lower().startswith("sftp://"):
        source = LocalFolder(Path(settings.source))
        with contextlib.suppress(FileMissing, FileRejected, ConfigError):
            locate(source.entries(), source.location, settings.file_name_pattern, merchant, day)
            return ""  # the file is there: the run will not wait
    what = (expected_stem(settings.file_name_pattern, merchant, day) + ".csv (or .xlsx)"
            if merchant else f"the settlement file of {day}")
    return (f"{merchant or 'merchant from the file name'} {day}: waiting for {what} at "
            f"{settings.source} until {deadline:%H:%M} WIB (file_deadline), looking every "
            f"{settings.poll_seconds:g} s")
