"""What every file source offers (a local folder, an SFTP folder): its entries, and the
download of one. Shared by `recon.sources.fetch` and `recon.sources.sftp` without either
importing the other."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Entry:
    name: str
    size: int
    mtime: float


class NotReady(Exception):
    """The file is there but not complete yet (marker missing, still growing)."""


class Source(Protocol):
    location: str
    remote: bool

    def entries(self) -> list[Entry]: ...

    def download(self, name: str, target: Path) -> None: ...
