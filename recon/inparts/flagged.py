"""A run's flagged rows on disk, for a run in parts: each part's, by category, in the
order of the file, read back a batch at a time. The workbook and the store's exceptions
read them so; a day on which every row is flagged then holds one batch of them at a time,
not the file's millions.

Each part's rows of a category go to a file of their own (`<category>/part-NNNN.arrow`,
the part's rows in file order). `FlaggedOnDisk.batches` merges a category's parts by line
number: it reads the line numbers alone first, then each batch takes from each part the
next rows the merge gives it, a run of rows in that part's file.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from recon.core import categories as cat
from recon.core.result import FLAGGED_COLUMNS
from recon.inparts.spill import disk_errors, disk_schema, make_folder

_SCHEMA = disk_schema(FLAGGED_COLUMNS)
_LABELS = [name for name in FLAGGED_COLUMNS if name in
           {"payment_source", "match_rule", "record_status", "category"}]
_WHAT = "the flagged rows"
#: Rows per record batch in a part's file: what a read takes at the least.
_FILE_BATCH_ROWS = 65_536


class FlaggedWriter:
    """Writes each part's flagged rows under `folder` (made here)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.counts = dict.fromkeys(cat.ROW_CATEGORIES, 0)
        self._part = 0
        make_folder(folder, _WHAT)

    def add(self, rows: pd.DataFrame) -> None:
        """A part's flagged rows, in file order (`SpillFailed` if the disk fails)."""
        with disk_errors(self.folder, _WHAT):
            self._add(rows)

    def _add(self, rows: pd.DataFrame) -> None:
        table = pa.Table.from_pandas(
            rows.loc[:, list(FLAGGED_COLUMNS)].astype(dict.fromkeys(_LABELS, "str")),
            schema=_SCHEMA, preserve_index=False).replace_schema_metadata(None)
        category = rows["category"].astype("str").to_numpy()
        for name in np.unique(category).tolist():
            taken = table.filter(pa.array(category == name))
            target = self.folder / name / f"part-{self._part:04d}.arrow"
            target.parent.mkdir(exist_ok=True)
            with pa.OSFile(str(target), "wb") as sink, pa.ipc.new_file(sink, _SCHEMA) as out:
                out.write_table(taken, max_chunksize=_FILE_BATCH_ROWS)
            self.counts[name] += taken.num_rows
        self._part += 1

    def finish(self) -> FlaggedOnDisk:
        return FlaggedOnDisk(self.folder, dict(self.counts))


class FlaggedOnDisk:
    """The flagged rows a `FlaggedWriter` wrote, by category, in file order. The workbook
    and the store read them at once, in threads of their own."""

    def __init__(self, folder: Path, counts: dict[str, int]) -> None:
        self.folder, self.counts = folder, counts
        self._merges: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def batches(self, category: str, rows: int, start: int = 0) -> Iterator[pd.DataFrame]:
        """The category's rows from its `start`th on, `rows` at a time, in file order."""
        paths = sorted((self.folder / category).glob("part-*.arrow"))
        if not paths or start >= self.counts[category]:
            return
        of_part = self._merge(category, paths)
        with contextlib.ExitStack() as files:
            cursors = [files.enter_context(_Cursor(path)) for path in paths]
            for part, skipped in enumerate(np.bincount(of_part[:start], minlength=len(paths))):
                cursors[part].take(int(skipped))
            for at in range(start, len(of_part), rows):
                taken = np.bincount(of_part[at:at + rows], minlength=len(paths))
                table = pa.concat_tables([cursors[part].take(int(size))
                                          for part, size in enumerate(taken) if size])
                order = np.argsort(table.column("line_no").to_numpy(), kind="stable")
                yield _frame(table.take(pa.array(order)))

    def in_order(self, rows: int) -> Iterator[pd.DataFrame]:
        """Every flagged row, a category at a time, each in file order."""
        for category in cat.ROW_CATEGORIES:
            yield from self.batches(category, rows)

    def head(self, category: str, rows: int) -> pd.DataFrame:
        """The category's first `rows` rows."""
        return next(self.batches(category, max(rows, 1)),
                    _frame(_SCHEMA.empty_table())).iloc[:rows]

    def _merge(self, category: str, paths: list[Path]) -> np.ndarray:
        """The part of each of the category's rows in file order (4 bytes a row), from
        the parts' line numbers, made once for every reader."""
        with self._lock:
            if category not in self._merges:
                lines = [_column(path, "line_no") for path in paths]
                of_part = np.concatenate([np.full(len(numbers), part, dtype=np.int32)
                                          for part, numbers in enumerate(lines)])
                self._merges[category] = of_part[np.argsort(np.concatenate(lines),
                                                            kind="stable")]
            return self._merges[category]


def _column(path: Path, name: str) -> np.ndarray:
    with pa.OSFile(str(path)) as source:
        reader = pa.ipc.open_file(source)
        return np.concatenate(
            [reader.get_batch(i).column(name).to_numpy() for i in
             range(reader.num_record_batches)] or [np.zeros(0, dtype=np.int64)])


class _Cursor:
    """A part's file read forward: `take(n)` gives its next n rows."""

    def __init__(self, path: Path) -> None:
        self._source = pa.OSFile(str(path))
        self._reader = pa.ipc.open_file(self._source)
        self._next = 0
        self._left = _SCHEMA.empty_table()

    def __enter__(self) -> _Cursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self._source.close()

    def take(self, size: int) -> pa.Table:
        pieces = [self._left.slice(0, 0)]
        while size:
            if not self._left.num_rows:
                self._left = pa.Table.from_batches([self._reader.get_batch(self._next)])
                self._next += 1
            piece = self._left.slice(0, size)
            self._left = self._left.slice(piece.num_rows)
            pieces.append(piece)
            size -= piece.num_rows
        return pa.concat_tables(pieces)


def _frame(table: pa.Table) -> pd.DataFrame:
    """A batch as the frame types the workbook and the store read."""
    frame = table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
    frame["line_no"] = frame["line_no"].astype("int64")
    return frame
