"""A settlement file written to disk in parts that share no key, read a batch at a time.

A run whose file is larger than memory holds one part at a time: this is how its rows
get there. The file is read in batches (`SettlementBatches`); each batch goes to disk as
it comes (Arrow IPC), and the refund rows, a few percent of a file, are kept: the
payment groups (`recon.inparts.parts.payment_groups`) need them with the refunds and the
ledger's entries, which the caller looks up (`groups_of`). Then each batch is read back
and its rows are written to the file of their part (`part_numbers`: the part of their
payment's group), so every part holds its rows in file order, and the rows of one part
are what `match_in_parts` would give that part's match.

Memory: one batch and the refund rows. Disk: the file's rows twice over at most, the
batches being removed as their rows reach the parts. A file the reader rejects (its
SettlementDate, its TOTAL trailer, no rows: known after the last batch) leaves nothing
behind.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from recon.core import categories as cat
from recon.core.errors import ReconError
from recon.core.schemas import SETTLEMENT_LABELS, SETTLEMENT_ROWS, arrow_text
from recon.formats.declaration import DEFAULT_LIMITS, FileFormat, ReadLimits
from recon.formats.grid import BATCH_BYTES, Trailer
from recon.formats.reader import SettlementBatches
from recon.inparts.parts import part_numbers
from recon.system.memory import give_back_free_heap

log = logging.getLogger(__name__)

#: The columns of the refund rows the payment groups are found by.
REFUND_ROW_COLUMNS = ("transaction_type", "merchant_invoice", "refund_invoice",
                      "ovo_reference_no")

#: A frame schema's types as a part's file holds them (dates are the "object" columns).
_DISK_TYPES = {"int64": pa.int64(), "Int64": pa.int64(), "object": pa.date32(),
               "str": pa.large_string(), "datetime64[ns, UTC]": pa.timestamp("ns", "UTC")}


def disk_schema(columns: Mapping[str, str]) -> pa.Schema:
    """The Arrow schema of a part's file of a frame schema (SETTLEMENT_ROWS, PAYMENTS)."""
    return pa.schema([(name, _DISK_TYPES[dtype]) for name, dtype in columns.items()])


def disk_table(frame: pd.DataFrame, columns: Mapping[str, str],
               labels: Sequence[str]) -> pa.Table:
    """A frame of the schema `columns` as it goes to disk: its labels as text (each batch
    has categories of its own; `read_part` makes them categoricals again)."""
    return pa.Table.from_pandas(frame.astype(dict.fromkeys(labels, "str")),
                                schema=disk_schema(columns), preserve_index=False)


class SpillFailed(ReconError):
    """The parts could not be written (the disk is full, the folder cannot be made)."""


@dataclass
class SpilledFile:
    """The parts of a settlement file on disk: `rows(part)` reads one part."""

    folder: Path
    parts: int
    part_rows: list[int]
    trailer: Trailer | None
    sheet_format: str

    @property
    def data_rows(self) -> int:
        return sum(self.part_rows)

    def path(self, part: int) -> Path:
        return self.folder / f"part-{part:04d}.arrow"

    def rows(self, part: int) -> pd.DataFrame:
        """The part's rows in file order, typed as the reader types them."""
        return read_part(self.path(part), SETTLEMENT_LABELS)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def spill_settlement_file(
    path: Path,
    fmt: FileFormat,
    settlement_date: dt.date,
    folder: Path,
    parts: int,
    groups_of: Callable[[pd.DataFrame], dict[str, str]],
    name: str | None = None,
    batch_bytes: int | None = BATCH_BYTES,
    limits: ReadLimits = DEFAULT_LIMITS,
) -> SpilledFile:
    """The file's rows in `parts` files under `folder` (made here; it must not exist), by
    the part of their payment's group. `groups_of` is given the file's refund rows (the
    columns of `REFUND_ROW_COLUMNS`, in file order) once every batch is read, and answers
    as `payment_groups` does. Raises `FileRejected` as the reader does, and `SpillFailed`;
    either way `folder` is removed."""
    if parts < 1:
        raise ValueError(f"parts must be 1 or more, not {parts}")
    shown = name or path.name
    with spill_folder(folder, shown):
        batches = SettlementBatches(path, fmt, settlement_date, name=name,
                                    batch_bytes=batch_bytes, limits=limits)
        written, refund_rows = _write_batches(batches, folder, shown)
        refunds = pd.concat(refund_rows, ignore_index=True)
        groups = groups_of(refunds)
        counts = _write_parts(written, folder, parts, groups, shown)
        return SpilledFile(folder=folder, parts=parts, part_rows=counts,
                           trailer=batches.trailer, sheet_format=batches.sheet_format)


@contextlib.contextmanager
def spill_folder(folder: Path, what: str) -> Iterator[None]:
    """`folder` made (`make_folder`) for `what` to be written under, and removed if the
    writing fails; the disk's errors as `SpillFailed` (`disk_errors`)."""
    make_folder(folder, what)
    try:
        with disk_errors(folder, what):
            yield
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def make_folder(folder: Path, what: str) -> None:
    """`folder` made for `what`; it must not exist."""
    try:
        folder.mkdir(parents=True)
    except OSError as exc:
        raise SpillFailed(f"{what}: cannot make the spill folder {folder} "
                          f"({exc.strerror})") from exc


@contextlib.contextmanager
def disk_errors(folder: Path, what: str) -> Iterator[None]:
    """The disk's errors (full, not writable) while `what` is written under `folder`, as
    one-line `SpillFailed`."""
    try:
        yield
    except OSError as exc:
        raise SpillFailed(f"{what}: cannot write under {folder} ({exc.strerror or exc})"
                          ) from exc


def _write_batches(batches: SettlementBatches, folder: Path, shown: str
                   ) -> tuple[list[Path], list[pd.DataFrame]]:
    """Each batch to a file of its own; the refund rows kept."""
    written: list[Path] = []
    refund_rows: list[pd.DataFrame] = [pd.DataFrame(
        {column: pd.Series(dtype="str") for column in REFUND_ROW_COLUMNS})]
    started, lines = time.perf_counter(), 0
    for number, frame in enumerate(batches):
        refund_rows.append(frame.loc[frame["transaction_type"] == cat.REFUND,
                                     list(REFUND_ROW_COLUMNS)].reset_index(drop=True))
        table = disk_table(frame, SETTLEMENT_ROWS, SETTLEMENT_LABELS)
        if len(frame):
            lines = int(frame["line_no"].iloc[-1])
        del frame
        target = folder / f"batch-{number:05d}.arrow"
        _write_table(target, table)
        del table
        written.append(target)
        log.info("%s: batch %d on disk (to line %s, %.1f s)", shown, number + 1,
                 f"{lines:,}", time.perf_counter() - started)
    return written, refund_rows


def _write_table(target: Path, table: pa.Table) -> None:
    with pa.OSFile(str(target), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def _write_parts(written: list[Path], folder: Path, parts: int, groups: dict[str, str],
                 shown: str) -> list[int]:
    """Each batch's rows into their parts' files, in file order; the batches removed."""
    with PartWriter(folder, "part", parts, disk_schema(SETTLEMENT_ROWS)) as writer:
        for number, batch in enumerate(written):
            with pa.memory_map(str(batch)) as source:
                table = pa.ipc.open_file(source).read_all()
            writer.add(table, part_numbers(arrow_text(table["merchant_invoice"]), groups,
                                           parts))
            del table
            os.remove(batch)
            give_back_free_heap()
            log.info("%s: batch %d of %d split into %d parts", shown, number + 1,
                     len(written), parts)
    return writer.counts


class PartWriter:
    """A file per part under `folder` (`<stem>-<part>.arrow`), each taking the rows given
    for it in the order given. The first table added fixes the files' schema with its
    pandas metadata (what `read_part` makes the columns again); `schema` is for parts
    written when no table is."""

    def __init__(self, folder: Path, stem: str, parts: int, schema: pa.Schema) -> None:
        self.paths = [folder / f"{stem}-{part:04d}.arrow" for part in range(parts)]
        self.counts = [0] * parts
        self._schema = schema
        self._sinks: list[pa.NativeFile] = []
        self._writers: list[pa.ipc.RecordBatchFileWriter] = []

    def __enter__(self) -> PartWriter:
        self._sinks = [pa.OSFile(str(path), "wb") for path in self.paths]
        return self

    def add(self, table: pa.Table, numbers: np.ndarray) -> None:
        """`table`'s rows, each to the file of its part (`numbers`), in their order."""
        if not self._writers:
            self._schema = table.schema
            self._writers = [pa.ipc.new_file(sink, self._schema) for sink in self._sinks]
        parts = len(self.paths)
        order = np.argsort(numbers, kind="stable")  # each part's rows in the order given
        bounds = np.searchsorted(numbers[order], np.arange(parts + 1))
        ordered = table.take(pa.array(order)).replace_schema_metadata(self._schema.metadata)
        for part in range(parts):
            size = int(bounds[part + 1] - bounds[part])
            if size:
                self._writers[part].write_table(ordered.slice(int(bounds[part]), size))
                self.counts[part] += size

    def __exit__(self, *exc: object) -> None:
        try:
            if not self._writers:
                self._writers = [pa.ipc.new_file(sink, self._schema) for sink in self._sinks]
            for writer in self._writers:
                writer.close()
        finally:
            for sink in self._sinks:
                sink.close()


def read_part(path: Path, labels: tuple[str, ...]) -> pd.DataFrame:
    """A part's file as a frame, typed by the pandas metadata written with it, `labels`
    made categoricals."""
    with pa.memory_map(str(path)) as source:
        table = pa.ipc.open_file(source).read_all()
    frame = table.to_pandas()
    del table
    for label in labels:
        frame[label] = frame[label].astype("category")
    return frame
