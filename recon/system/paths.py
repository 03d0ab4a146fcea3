"""Output paths: every file the pipeline writes lands inside its configured folder."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import re
import shutil
import time
from pathlib import Path

from recon.core.errors import ConfigError

log = logging.getLogger(__name__)

#: Characters a name from outside (a source's file name) must not carry to the disk or a
#: mail header: control characters (CR, LF, NUL, ...) and DEL.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def within(root: Path, *parts: str) -> Path:
    """`root` joined with `parts`, refused (ConfigError) when the result, resolved, is not
    inside `root`: a merchant ID or a file name must never lead out of its folder."""
    base = Path(root).resolve()
    path = base.joinpath(*parts).resolve()
    if path != base and base not in path.parents:
        shown = "/".join(parts)
        raise ConfigError(f"{shown!r} leads outside {root}: refused")
    return path


def has_control_character(name: str) -> bool:
    return _CONTROL.search(name) is not None


#: A download's temporary file older than this is a killed run's, not one in progress.
INCOMING_STALE_SECONDS = 3600


def remove_leftovers(report_dir: Path, spill_dir: Path, archive_dir: Path, merchant_id: str,
                     day: dt.date, keep: Path | None = None) -> list[Path]:
    """What killed runs of (merchant, day) left behind: report staging folders, folders of
    parts on disk, downloads that never finished. Called under the date's lock, so no live
    run of the date owns them (but `keep`, the caller's own). The paths removed."""
    candidates = [
        *Path(report_dir, merchant_id).glob(f".{day.isoformat()}.staging-*"),
        *Path(spill_dir).glob(f"{merchant_id}_{day:%Y%m%d}_*"),
    ]
    now = time.time()
    for temp in Path(archive_dir, merchant_id, day.isoformat()).glob(".incoming-*"):
        with contextlib.suppress(OSError):
            if now - temp.stat().st_mtime > INCOMING_STALE_SECONDS:
                candidates.append(temp)
    removed = []
    for path in candidates:
        if keep is not None and path.resolve() == keep.resolve():
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
        if not path.exists():
            removed.append(path)
            log.warning("removed %s, left behind by an earlier run that did not finish", path)
    return removed
