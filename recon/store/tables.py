"""Table declarations: the merchant's reference tables and the pipeline's own state.

This module is the single source of the DDL; ``sql/<dialect>.sql`` is generated from it
(``python -m recon.store.tables``) and a test keeps the two in step.
"""

from __future__ import annotations

import sys
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Index,
    Integer,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.schema import CreateIndex, CreateTable

metadata = MetaData()

Money = Numeric(18, 2, asdecimal=True)
Moment = DateTime(timezone=True)
Id = BigInteger().with_variant(Integer, "sqlite")

# ------------------------------------------------------------------ reference tables (SPEC §4)

ovo_payments = Table(
    "ovo_payments",
    metadata,
    Column("partner_reference_no", String(64), primary_key=True),
    Column("reference_no", String(64)),
    Column("merchant_id", String(32), nullable=False),
    Column("store_id", String(64)),
    Column("amount", Money, nullable=False),
    Column("currency", String(3), nullable=False, server_default="IDR"),
    Column("pay_option", String(16), nullable=False),
    Column("status", String(2), nullable=False),
    Column("transaction_time", Moment, nullable=False),
    Column("paid_time", Moment),
    Index("ix_ovo_payments_time", "transaction_time"),
)

ovo_refunds = Table(
    "ovo_refunds",
    metadata,
    Column("partner_refund_no", String(64), primary_key=True),
    Column("original_partner_reference_no", String(64), nullable=False),
    Column("refund_no", String(64)),
    Column("refund_amount", Money, nullable=False),
    Column("refund_time", Moment, nullable=False),
    Column("status", String(2), nullable=False),
    Index("ix_ovo_refunds_time", "refund_time"),
    Index("ix_ovo_refunds_original", "original_partner_reference_no"),
    Index("ix_ovo_refunds_refund_no", "refund_no"),
)

REFERENCE_TABLES = (ovo_payments, ovo_refunds)

# ------------------------------------------------------------------ the pipeline's own state

recon_runs = Table(
    "recon_runs",
    metadata,
    Column("run_id", Id, primary_key=True, autoincrement=True),
    Column("merchant_id", String(32), nullable=False),
    Column("settlement_date", Date, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("is_current", Boolean, nullable=False),
    Column("started_at", Moment, nullable=False),
    Column("finished_at", Moment, nullable=False),
    Column("file_name", String(255), nullable=False),
    Column("file_sha256", String(64), nullable=False),
    Column("file_rows", Integer, nullable=False),
    Column("archive_path", Text),
    Column("exceptions", Integer, nullable=False),
    Column("summary_json", Text, nullable=False),
    Index("ix_recon_runs_date", "merchant_id", "settlement_date"),
)

recon_ledger = Table(
    "recon_ledger",
    metadata,
    Column("merchant_id", String(32), nullable=False),
    Column("settlement_date", Date, nullable=False),
    Column("run_id", Id, nullable=False),
    Column("kind", String(8), nullable=False),
    Column("settle_key", String(128), nullable=False),
    Column("record_key", String(64), nullable=False),
    Column("original_reference_no", String(64), nullable=False),
    Column("amount", Money, nullable=False),
    Column("line_no", Integer, nullable=False),
    # The primary key is the key index: a merchant's entries by settle key, then the date
    # and line that settled it (a date's ledger is one run's, a line settles once). A
    # surrogate id beside it would cost a second B-tree per row on every COPY (figures:
    # `bench/ROUNDS.md`, the constants).
    PrimaryKeyConstraint("merchant_id", "settle_key", "settlement_date", "line_no",
                         name="pk_recon_ledger"),
    # Read only to replace an earlier run of a date. A day's ledger goes in by one COPY,
    # so a merchant's date lies in adjacent pages, which a BRIN index summarises per
    # range of pages, far cheaper to keep up than a B-tree.
    Index("ix_recon_ledger_date", "merchant_id", "settlement_date", postgresql_using="brin"),
)


def _where_differs(column: Column[str]) -> dict[str, Any]:
    """The partial-index condition `column <> settle_key` (PostgreSQL, SQLite; MariaDB has
    no partial indexes and indexes every row). A payment's record key and original
    payment are its settle key, so these indexes hold about the refunds alone, and a
    day's ledger costs one key index per row instead of three; the loader finds the rows
    where they are equal through the primary key."""
    condition = column != recon_ledger.c.settle_key
    return {"postgresql_where": condition, "sqlite_where": condition}


Index("ix_recon_ledger_record", recon_ledger.c.merchant_id, recon_ledger.c.record_key,
      **_where_differs(recon_ledger.c.record_key))
Index("ix_recon_ledger_original", recon_ledger.c.merchant_id,
      recon_ledger.c.original_reference_no, **_where_differs(recon_ledger.c.original_reference_no))

recon_exceptions = Table(
    "recon_exceptions",
    metadata,
    Column("exception_id", Id, primary_key=True, autoincrement=True),
    Column("merchant_id", String(32), nullable=False),
    Column("settlement_date", Date, nullable=False),
    Column("run_id", Id, nullable=False),
    Column("category", String(32), nullable=False),
    Column("kind", String(8), nullable=False),
    Column("line_no", Integer),
    Column("merchant_invoice", String(255)),
    Column("refund_invoice", String(255)),
    Column("ovo_reference_no", String(255)),
    Column("record_key", String(64)),
    Column("record_date", Date),
    Column("file_amount", Money),
    Column("record_amount", Money),
    Column("delta", Money),
    Column("reason", Text, nullable=False),
    Column("flags", Text),
    # MISSING_IN_SETTLEMENT only: open until a later file settles the record.
    Column("state", String(8)),
    Column("closed_by_date", Date),
    Column("closed_by_line", Integer),
    Index("ix_recon_exceptions_date", "merchant_id", "settlement_date"),
    Index("ix_recon_exceptions_state", "merchant_id", "category", "state"),
    Index("ix_recon_exceptions_closed", "merchant_id", "closed_by_date"),
)

# ------------------------------------------------------------------ exception cases

#: Each merchant's last case number: case IDs are never reused.
recon_case_numbers = Table(
    "recon_case_numbers",
    metadata,
    Column("merchant_id", String(32), primary_key=True),
    Column("last_number", Integer, nullable=False),
)

#: One row per problem, stable across days and re-runs: its key, and its state as the
#: fold of its events (kept here for listing; `recon_case_events` is the history).
recon_cases = Table(
    "recon_cases",
    metadata,
    Column("case_id", String(48), primary_key=True),
    Column("merchant_id", String(32), nullable=False),
    Column("category", String(32), nullable=False),
    Column("kind", String(8), nullable=False),
    Column("case_key", String(160), nullable=False),
    Column("first_seen", Date, nullable=False),
    Column("last_seen", Date, nullable=False),
    Column("state", String(20), nullable=False),
    Column("owner", String(255), nullable=False),
    Column("resolution", String(32), nullable=False),
    Column("note", Text, nullable=False),
    Column("proposed_by", String(255), nullable=False),
    Column("claim_due", Date),
    Column("raised_on", Date),
    Column("version", Integer, nullable=False),
    # The amount at risk and delta of the case's latest occurrence.
    Column("amount_at_risk", Money, nullable=False),
    Column("delta", Money),
    UniqueConstraint("merchant_id", "category", "kind", "case_key", name="uq_recon_cases_key"),
    Index("ix_recon_cases_state", "merchant_id", "state"),
)

#: A case's history, append-only: no code path updates or deletes an event (on
#: PostgreSQL a trigger refuses it).
recon_case_events = Table(
    "recon_case_events",
    metadata,
    Column("event_id", Id, primary_key=True, autoincrement=True),
    Column("case_id", String(48), nullable=False),
    Column("at", Moment, nullable=False),
    Column("actor", String(255), nullable=False),
    Column("action", String(16), nullable=False),
    Column("from_state", String(20)),
    Column("to_state", String(20), nullable=False),
    Column("owner", String(255), nullable=False),
    Column("resolution", String(32), nullable=False),
    Column("note", Text, nullable=False),
    Column("source", String(64), nullable=False),
    Column("due_date", Date),
    Index("ix_recon_case_events_case", "case_id", "event_id"),
)

#: Where a case was seen: a settlement date's exception rows of it (line 0 for a record
#: no file settled), replaced when the date is run again.
recon_case_occurrences = Table(
    "recon_case_occurrences",
    metadata,
    Column("case_id", String(48), nullable=False),
    Column("merchant_id", String(32), nullable=False),
    Column("settlement_date", Date, nullable=False),
    Column("line_no", Integer, nullable=False),
    Column("run_id", Id, nullable=False),
    Column("amount_at_risk", Money, nullable=False),
    Column("delta", Money),
    Column("reason", Text, nullable=False),
    PrimaryKeyConstraint("case_id", "settlement_date", "line_no",
                         name="pk_recon_case_occurrences"),
    Index("ix_recon_case_occurrences_date", "merchant_id", "settlement_date"),
)

recon_locks = Table(
    "recon_locks",
    metadata,
    Column("merchant_id", String(32), primary_key=True),
    Column("settlement_date", Date, primary_key=True),
    Column("holder", String(255), nullable=False),
    Column("acquired_at", Moment, nullable=False),
    # Renewed while the run lives; an old heartbeat marks a dead run's lock.
    Column("heartbeat_at", Moment),
)

#: PostgreSQL's guard of the case history: an event is never changed or deleted.
APPEND_ONLY_EVENTS = (
    # The body on one line: a script of these statements is split where a line ends in ';'.
    """CREATE OR REPLACE FUNCTION recon_case_events_append_only() RETURNS trigger AS $$
BEGIN RAISE EXCEPTION 'recon_case_events is append-only: % refused', TG_OP; END
$$ LANGUAGE plpgsql""",
    "DROP TRIGGER IF EXISTS recon_case_events_append_only ON recon_case_events",
    """CREATE TRIGGER recon_case_events_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON recon_case_events
    FOR EACH STATEMENT EXECUTE FUNCTION recon_case_events_append_only()""",
)

DIALECTS = {"sqlite": sqlite.dialect(), "postgresql": postgresql.dialect(),
            "mysql": mysql.dialect()}


def render_ddl(dialect_name: str) -> str:
    """CREATE statements for every table and index, for one dialect."""
    dialect = DIALECTS[dialect_name]
    parts = [f"-- DDL for {dialect_name}, generated from recon/store/tables.py "
             f"(python -m recon.store.tables {dialect_name}); do not edit by hand.\n"]
    for table in metadata.sorted_tables:
        parts.append(str(CreateTable(table).compile(dialect=dialect)).strip() + ";\n")
        for index in sorted(table.indexes, key=lambda ix: str(ix.name)):
            parts.append(str(CreateIndex(index).compile(dialect=dialect)).strip() + ";\n")
    if dialect_name == "postgresql":
        parts += [statement + ";\n" for statement in APPEND_ONLY_EVENTS]
    return "\n".join(parts)


if __name__ == "__main__":
    names = sys.argv[1:] or list(DIALECTS)
    for name in names:
        sys.stdout.write(render_ddl(name))
