"""Where settlement files come from: fetch one, verify it, archive it with its SHA-256.

The embedded default is a local folder. Remote files are only read, never changed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from recon.errors import ConfigError, FileMissing, FileRejected

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


def expected_stem(pattern: str, merchant_id: str, day: dt.date) -> str:
    try:
        return pattern.format(merchant_id=merchant_id, yyyymmdd=day.strftime("%Y%m%d"),
                              date=day.isoformat())
    except (KeyError, IndexError) as exc:
        raise ConfigError(f"file_name_pattern {pattern!r}: unknown placeholder {exc}") from exc


def validate_remote_name(name: str) -> str:
    """A file name from a source must be a plain name before it touches the local disk."""
    if not name or name in {".", ".."} or "/" in name or "\\" in name or "\x00" in name:
        raise FileRejected(name or "<empty name>", "unsafe file name")
    return name


def _is_sftp(source: str) -> bool:
    return source.lower().startswith("sftp://")


def find_local_file(folder: Path, pattern: str, merchant_id: str, day: dt.date) -> tuple[
        Path, str]:
    """The settlement file for (merchant, day) in `folder`, and its merchant id.

    With no merchant configured, the merchant is taken from the one file for that date.
    """
    if not folder.is_dir():
        raise FileMissing(f"source folder {folder} does not exist")
    names = sorted(entry.name for entry in folder.iterdir() if entry.is_file())
    if merchant_id:
        stem = expected_stem(pattern, merchant_id, day)
        matches = [n for n in names if n.lower() in {(stem + ext).lower() for ext in EXTENSIONS}]
        if not matches:
            raise FileMissing(f"{stem}.csv (or .xlsx) is not in {folder}")
        if len(matches) > 1:
            raise FileRejected(" and ".join(matches), "both a CSV and an XLSX file for one date")
        return folder / matches[0], merchant_id
    regex = re.compile(
        re.escape(expected_stem(pattern, "\x00", day)).replace("\x00", "(?P<mid>[^/_]+)")
        + r"\.(csv|xlsx)$", re.IGNORECASE)
    found = {(m.group("mid"), n) for n in names if (m := regex.match(n))}
    merchants = sorted({mid for mid, _ in found})
    if not merchants:
        raise FileMissing(f"no settlement file for {day} in {folder}")
    if len(merchants) > 1:
        raise ConfigError(f"files for several merchants ({', '.join(merchants)}) in {folder}: "
                          "choose one with --merchant")
    return find_local_file(folder, pattern, merchants[0], day)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def archive_file(local: Path, name: str, archive_dir: Path, merchant_id: str,
                 day: dt.date) -> tuple[Path, str, int]:
    """Copy to <archive>/<MID>/<date>/<sha12>_<name> (temp name, then rename)."""
    folder = archive_dir / merchant_id / day.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=".incoming-", dir=folder)
    os.close(handle)
    temp = Path(temp_name)
    try:
        shutil.copyfile(local, temp)
        digest = sha256_of(temp)
        target = folder / f"{digest[:12]}_{name}"
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
    (folder / f"{target.name}.sha256").write_text(f"{digest}  {name}\n")
    return target, digest, target.stat().st_size


def fetch_settlement_file(source: str, pattern: str, merchant_id: str, day: dt.date,
                          archive_dir: Path) -> FetchedFile:
    """Fetch the file for (merchant, day) from `source` and archive a verified copy."""
    if _is_sftp(source):
        raise ConfigError(f"source {source}: SFTP sources are not supported by this version; "
                          "use a local folder")
    path, merchant = find_local_file(Path(source), pattern, merchant_id, day)
    name = validate_remote_name(path.name)
    before = path.stat().st_size
    archived, digest, size = archive_file(path, name, archive_dir, merchant, day)
    if size != before:
        raise FileRejected(name, f"changed while being copied ({before} -> {size} bytes)")
    log.info("fetched %s (%d bytes, sha256 %s) into %s", name, size, digest[:12], archived)
    return FetchedFile(name=name, merchant_id=merchant, path=archived, sha256=digest, size=size,
                       source=str(path))
