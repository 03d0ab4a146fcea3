"""The settlement ledger of a date: what its file settles, replaced on a re-run in batches
(a staged table and one statement on PostgreSQL, deletes and inserts elsewhere).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from sqlalchemy import Column, MetaData, Table, delete, text

from recon.core.money import minor_text
from recon.core.result import Ledger
from recon.store.copy import LEDGER_COPY_COLUMNS, LedgerAbandoned, copy_ledger, ledger_columns
from recon.store.engine import bulk_insert
from recon.store.history import RunRecord
from recon.store.tables import recon_ledger


@dataclass
class LedgerParts:
    """Where a run's ledger written a part at a time goes, and how many entries went."""

    table: Table  # the ledger, or LEDGER_STAGING
    run_id: int
    attempt: int
    staged: bool  # a staging table, moved into the ledger at `finish`
    entries: int = 0

    def write(self, conn: Any, ledger: Ledger, run: RunRecord) -> None:
        merchant, day = run.merchant_id, run.settlement_date
        if conn.dialect.name == "postgresql":
            copy_ledger(conn, ledger, merchant, day, self.run_id, table=self.table.name)
        else:
            bulk_insert(conn, self.table, _ledger_table(ledger, merchant, day, self.run_id))
        self.entries += len(ledger)


def delete_ledger(conn: Any, merchant: str, day: dt.date) -> None:
    t = recon_ledger
    conn.execute(delete(t).where(t.c.merchant_id == merchant, t.c.settlement_date == day))


def insert_ledger(conn: Any, ledger: Ledger, merchant: str, day: dt.date, run_id: int,
                  rerun: bool, stop: Callable[[], bool]) -> int | None:
    """The date's ledger replaced by `ledger`, inside the run's transaction: the date's
    entries deleted and `ledger` written, by COPY on PostgreSQL and executemany elsewhere.
    A re-run on PostgreSQL instead keeps the entries it would write again
    (`_replace_ledger`) and returns how many it kept."""
    if conn.dialect.name == "postgresql" and rerun:
        return _replace_ledger(conn, ledger, merchant, day, run_id, stop)
    delete_ledger(conn, merchant, day)
    if conn.dialect.name == "postgresql":
        copy_ledger(conn, ledger, merchant, day, run_id, stop)
    else:
        bulk_insert(conn, recon_ledger, _ledger_table(ledger, merchant, day, run_id))
    return None


#: A long write of exceptions logs its progress every this many rows.
PROGRESS_ROWS = 1_000_000


def _ledger_table(ledger: Ledger, merchant: str, day: dt.date, run_id: int) -> pa.Table:
    """The ledger rows as database-ready text and numbers (money as exact text)."""
    unsorted, order = ledger_columns(ledger)
    columns = {name: values.take(order) for name, values in unsorted.items()}
    count = len(order)
    return pa.table({
        "merchant_id": pa.repeat(merchant, count), "settlement_date": pa.repeat(
            day.isoformat(), count), "run_id": pa.repeat(int(run_id), count),
        **{name: columns[name] for name in ("kind", "settle_key", "record_key",
                                            "original_reference_no")},
        "amount": minor_text(columns["amount"]), "line_no": columns["line_no"],
    })


#: A re-run's ledger before it replaces the date's (`_replace_ledger`): the ledger's
#: columns, no index, dropped when the run's transaction ends.
LEDGER_STAGING = Table("recon_ledger_staged", MetaData(),
                       *(Column(c.name, c.type) for c in recon_ledger.c),
                       prefixes=["TEMPORARY"], postgresql_on_commit="DROP")


#: The memory each of the ledger replacement's two joins may take in the server, for that
#: transaction only: a million entries' hash in one batch, where the default splits it
#: into many (figures: `bench/ROUNDS.md`, the constants).
REPLACE_WORK_MEM = "128MB"


def _replace_ledger(conn: Any, ledger: Ledger, merchant: str, day: dt.date,
                    run_id: int, stop: Callable[[], bool]) -> int:
    """A re-run's ledger in place of the date's (PostgreSQL): an entry the earlier run
    wrote as it is now (same settle key, line, kind, record, original payment and amount)
    stays as it was, run id included; the others are deleted and the new ones written.
    Returns how many stayed.

    Deleting a million entries and writing them again took 6.6-10.6 s at 1M rows, where
    the date's first write takes 2.2-2.5 s: each new key goes into the primary key beside its
    deleted twin, which the deleting transaction cannot yet clear, and the index's pages
    split. A re-run of the same file and records now changes nothing in the ledger: the
    new entries go into an unindexed staging table by the same COPY, and two joins there
    find what differs."""
    LEDGER_STAGING.create(conn)
    copy_ledger(conn, ledger, merchant, day, run_id, stop, table=LEDGER_STAGING.name)
    if stop():
        raise LedgerAbandoned(f"{merchant} {day}: the run failed")
    return apply_staged(conn, merchant, day, len(ledger))


def apply_staged(conn: Any, merchant: str, day: dt.date, entries: int) -> int:
    """The date's ledger made what the staging table holds (`entries` of them): an entry
    the earlier run wrote as it is now stays, the others are deleted and the new ones
    written. Returns how many stayed."""
    staged = LEDGER_STAGING.name
    conn.exec_driver_sql(f"SET LOCAL work_mem = '{REPLACE_WORK_MEM}'")
    same = " AND ".join(f"s.{name} = l.{name}" for name in (
        "settle_key", "line_no", "kind", "record_key", "original_reference_no", "amount"))
    dated = "l.merchant_id = :merchant AND l.settlement_date = :day"
    values = {"merchant": merchant, "day": day}
    conn.execute(text(f"DELETE FROM {recon_ledger.name} l WHERE {dated} "
                      f"AND NOT EXISTS (SELECT 1 FROM {staged} s WHERE {same})"), values)
    # What is left of the date is what the staging holds as it is: the rest goes in.
    columns = ", ".join(LEDGER_COPY_COLUMNS)
    added = conn.execute(text(
        f"INSERT INTO {recon_ledger.name} ({columns}) SELECT {columns} FROM {staged} s "
        f"WHERE NOT EXISTS (SELECT 1 FROM {recon_ledger.name} l WHERE {dated} "
        "AND l.settle_key = s.settle_key AND l.line_no = s.line_no) ORDER BY s.settle_key"),
        values).rowcount
    return entries - added
