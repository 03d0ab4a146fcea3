"""The store against real databases: SQLite and the PostgreSQL on this machine."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import inspect, text

from recon.core.calendar import WorkingCalendar
from recon.core.errors import RunLocked, StoreError
from recon.core.result import Ledger
from recon.store.engine import init_db, make_engine
from recon.store.load import WindowLoad, load_run_inputs
from recon.store.locks import hold_run_lock
from recon.store.tables import metadata, render_ddl
from tests.builders import payment_row, refund_row, rows_frame

SQL = Path(__file__).parent.parent / "sql"
S = dt.date(2026, 11, 30)
COVERED = [dt.date(2026, 11, 27), dt.date(2026, 11, 28), dt.date(2026, 11, 29)]


def _payment(ref: str, when: dt.datetime, amount: str = "1.00") -> dict[str, Any]:
    """A paid OVO Cash payment record of merchant M001."""
    return {"partner_reference_no": ref, "reference_no": ref, "merchant_id": "M001",
            "amount": Decimal(amount), "pay_option": "OVO_CASH", "status": "00",
            "transaction_time": when}


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql", "mysql"])
def test_sql_files_match_the_table_declarations(dialect: str) -> None:
    assert (SQL / f"{dialect}.sql").read_text() == render_ddl(dialect), (
        f"regenerate with: python -m recon.store.tables {dialect} > sql/{dialect}.sql")


def test_init_db_creates_everything_and_is_safe_to_repeat(database_url: str) -> None:
    engine = make_engine(database_url)
    created = init_db(engine)
    assert set(created) == set(metadata.tables)
    assert init_db(engine) == []
    assert set(inspect(engine).get_table_names()) >= set(metadata.tables)
    engine.dispose()


def test_shipped_ddl_creates_a_working_schema(database_url: str) -> None:
    engine = make_engine(database_url)
    dialect = engine.dialect.name
    script = "\n".join(line for line in (SQL / f"{dialect}.sql").read_text().splitlines()
                       if not line.startswith("--"))
    with engine.begin() as conn:
        for statement in script.split(";\n"):
            if statement.strip():
                conn.execute(text(statement))
    assert init_db(engine) == []
    engine.dispose()


def _raw_insert(engine, rows: list[tuple[str, str, str]]) -> None:
    with engine.begin() as conn:
        for ref, amount, moment in rows:
            conn.execute(text(
                "INSERT INTO ovo_payments (partner_reference_no, reference_no, merchant_id, "
                "amount, currency, pay_option, status, transaction_time) VALUES "
                f"(:ref, :ref, 'M001', {amount}, 'IDR', 'OVO_CASH', '00', :t)"),
                {"ref": ref, "t": moment})


def test_records_written_by_other_programs_sqlite(tmp_path: Path) -> None:
    """Times as other programs write them into SQLite (UTC, per the SPEC) and amounts
    stored as integer, real or text all load exactly."""
    engine = make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    init_db(engine)
    _raw_insert(engine, [
        ("SPACE", "10000", "2026-11-27 03:00:00"),
        ("T-SEP", "10000.5", "2026-11-27T03:00:00"),
        ("MICRO", "'10000.50'", "2026-11-27 03:00:00.123456"),
        ("OFFSET", "0.1", "2026-11-27T10:00:00+07:00"),
        ("EDGE", "19.99", "2026-11-29 16:59:59"),
        ("NEXT", "1", "2026-11-29 17:00:00"),
        ("EARLY", "1", "2026-11-26 16:59:59"),
    ])
    inputs = load_run_inputs(engine, "M001", S, COVERED, rows_frame([]))
    payments = inputs.payments.set_index("partner_reference_no")
    assert payments.loc["SPACE", "amount"] == 1_000_000
    assert payments.loc["T-SEP", "amount"] == 1_000_050
    assert payments.loc["MICRO", "amount"] == 1_000_050
    assert payments.loc["OFFSET", "amount"] == 10
    assert payments.loc["EDGE", "amount"] == 1_999
    for ref in ("SPACE", "T-SEP", "OFFSET"):
        assert payments.loc[ref, "transaction_time"] == pd.Timestamp("2026-11-27 03:00:00Z")
    assert payments.loc["EDGE", "transaction_date"] == dt.date(2026, 11, 29)
    assert payments.loc["NEXT", "transaction_date"] == dt.date(2026, 11, 30)
    assert payments.loc["EARLY", "transaction_date"] == dt.date(2026, 11, 26)


@pytest.mark.postgres
def test_records_written_by_other_programs_postgres(postgres_server_url: str) -> None:
    from tests.conftest import reset_postgres

    reset_postgres(postgres_server_url)
    engine = make_engine(postgres_server_url)
    init_db(engine)
    _raw_insert(engine, [("WIB", "10000.50", "2026-11-27 10:00:00+07"),
                         ("UTC", "1", "2026-11-29 17:00:00+00")])
    inputs = load_run_inputs(engine, "M001", S, COVERED, rows_frame([]))
    payments = inputs.payments.set_index("partner_reference_no")
    assert payments.loc["WIB", "amount"] == 1_000_050
    assert payments.loc["WIB", "transaction_time"] == pd.Timestamp("2026-11-27 03:00:00Z")
    assert payments.loc["UTC", "transaction_date"] == dt.date(2026, 11, 30)
    engine.dispose()


def test_loads_the_window_and_what_the_file_refers_to_only(database_url: str) -> None:
    engine = make_engine(database_url)
    init_db(engine)
    from recon.core.calendar import WIB
    from recon.store.records import insert_records

    insert_records(engine, [
        _payment("IN-WINDOW", dt.datetime(2026, 11, 28, 12, tzinfo=WIB)),
        _payment("OLD-IN-FILE", dt.datetime(2026, 10, 1, 12, tzinfo=WIB)),
        _payment("OLD-UNRELATED", dt.datetime(2026, 10, 1, 13, tzinfo=WIB)),
        _payment("OTHER-MERCHANT", dt.datetime(2026, 11, 28, 12, tzinfo=WIB))
        | {"merchant_id": "M2"},
    ])
    def refund(ref: str, original: str) -> dict:
        return {"partner_refund_no": ref, "original_partner_reference_no": original,
                "refund_no": ref, "refund_amount": Decimal("0.50"), "status": "00",
                "refund_time": dt.datetime(2026, 11, 28, 15, tzinfo=WIB)}

    insert_records(engine, [], [refund("RF-MINE", "OLD-UNRELATED"),
                                refund("RF-OTHER", "OTHER-MERCHANT")])
    inputs = load_run_inputs(engine, "M001", S, COVERED,
                             rows_frame([payment_row("OLD-IN-FILE", "1.00")]))
    assert set(inputs.payments["partner_reference_no"]) == {"IN-WINDOW", "OLD-IN-FILE"}
    assert set(inputs.refunds["partner_refund_no"]) == {"RF-MINE"}
    engine.dispose()


def test_a_key_the_file_repeats_loads_its_record_once(database_url: str) -> None:
    """The file's invoices go to the lookups as they are, repeats and all: a payment in
    the window and one elsewhere, each named twice, are each loaded once."""
    from recon.core.calendar import WIB
    from recon.store.records import insert_records

    engine = make_engine(database_url)
    init_db(engine)
    insert_records(engine, [_payment("IN-WINDOW", dt.datetime(2026, 11, 28, 12, tzinfo=WIB)),
                            _payment("OLD", dt.datetime(2026, 10, 1, 12, tzinfo=WIB))])
    rows = rows_frame([payment_row(ref, "1.00") for ref in ("OLD", "IN-WINDOW", "OLD",
                                                            "IN-WINDOW")])
    inputs = load_run_inputs(engine, "M001", S, COVERED, rows)
    assert sorted(inputs.payments["partner_reference_no"]) == ["IN-WINDOW", "OLD"]
    engine.dispose()


def test_each_window_payment_is_loaded_once_wherever_it_falls(database_url: str) -> None:
    """Loaded without a window ahead, PostgreSQL fetches the window's payments in two
    halves split at the middle of the covered days (28 Nov 12:00 WIB here): a payment
    there, at either end and in each half is loaded once, with the merchant its query
    fixes."""
    from recon.core.calendar import WIB
    from recon.store.records import insert_records

    engine = make_engine(database_url)
    init_db(engine)
    at = {"FIRST": dt.datetime(2026, 11, 27, 0, 0, tzinfo=WIB),
          "BEFORE-MIDDLE": dt.datetime(2026, 11, 28, 11, 59, 59, tzinfo=WIB),
          "MIDDLE": dt.datetime(2026, 11, 28, 12, 0, tzinfo=WIB),
          "AFTER-MIDDLE": dt.datetime(2026, 11, 28, 12, 0, 1, tzinfo=WIB),
          "LAST": dt.datetime(2026, 11, 29, 23, 59, 59, tzinfo=WIB)}
    insert_records(engine, [_payment(ref, when) for ref, when in at.items()])
    inputs = load_run_inputs(engine, "M001", S, COVERED, rows_frame([]))
    loaded = inputs.payments.set_index("partner_reference_no")
    assert sorted(loaded.index) == sorted(at)
    assert set(loaded["merchant_id"]) == {"M001"}
    assert loaded["transaction_time"].to_dict() == at
    engine.dispose()


def test_payments_few_valued_texts_load_as_categoricals_normalised(database_url: str) -> None:
    """The payments' merchant, store, pay option and status load as categoricals, of the
    window and of the payments found elsewhere alike: the pay option trimmed and upper
    case, a missing store empty."""
    from recon.core.calendar import WIB
    from recon.core.schemas import PAYMENT_LABELS
    from recon.store.records import insert_records

    engine = make_engine(database_url)
    init_db(engine)
    in_window = dt.datetime(2026, 11, 28, 12, tzinfo=WIB)
    insert_records(engine, [
        _payment("A", in_window) | {"store_id": None, "pay_option": " ovo_points "},
        _payment("B", in_window) | {"store_id": "S-1", "status": "06"},
        _payment("OLD", dt.datetime(2026, 10, 1, 12, tzinfo=WIB))
        | {"status": "04", "store_id": "S-2"}])
    inputs = load_run_inputs(engine, "M001", S, COVERED,
                             rows_frame([payment_row("OLD", "1.00")]))
    payments = inputs.payments.set_index("partner_reference_no").sort_index()
    for name in PAYMENT_LABELS:
        assert isinstance(payments[name].dtype, pd.CategoricalDtype), name
    assert payments.astype("str")[list(PAYMENT_LABELS)].to_dict("index") == {
        "A": {"merchant_id": "M001", "store_id": "", "pay_option": "OVO_POINTS",
              "status": "00"},
        "B": {"merchant_id": "M001", "store_id": "S-1", "pay_option": "OVO_CASH",
              "status": "06"},
        "OLD": {"merchant_id": "M001", "store_id": "S-2", "pay_option": "OVO_CASH",
                "status": "04"}}
    engine.dispose()


def test_loads_every_refund_of_the_payments_a_refund_row_or_window_refund_names(
        database_url: str) -> None:
    """Refunds outside the window: all of a payment's when a refund row of the file names
    it or one of its refunds is in the window (refund deltas add them up); none of a
    payment the file only settles."""
    engine = make_engine(database_url)
    init_db(engine)
    from recon.core.calendar import WIB
    from recon.store.records import insert_records

    old = dt.datetime(2026, 10, 1, 12, tzinfo=WIB)
    insert_records(engine, [
        _payment(ref, old, "9.00") for ref in (
            "REFUNDED-IN-FILE", "SETTLED-WITH-WINDOW-REFUND", "SETTLED-ONLY", "NOT-IN-FILE")], [
        {"partner_refund_no": ref, "original_partner_reference_no": original, "refund_no": ref,
         "refund_amount": Decimal("1.00"), "status": "00",
         "refund_time": when or dt.datetime(2026, 10, 2, 12, tzinfo=WIB)}
        for ref, original, when in (
            ("RF-OLD-1", "REFUNDED-IN-FILE", None),
            ("RF-WINDOW-2", "SETTLED-WITH-WINDOW-REFUND", dt.datetime(2026, 11, 28, 9,
                                                                      tzinfo=WIB)),
            ("RF-OLD-2", "SETTLED-WITH-WINDOW-REFUND", None),
            ("RF-OLD-3", "SETTLED-ONLY", None),
            ("RF-WINDOW-4", "NOT-IN-FILE", dt.datetime(2026, 11, 28, 9, tzinfo=WIB)),
            ("RF-OLD-4", "NOT-IN-FILE", None))])
    rows = rows_frame([refund_row("REFUNDED-IN-FILE", "1.00"),
                       payment_row("SETTLED-WITH-WINDOW-REFUND", "9.00"),
                       payment_row("SETTLED-ONLY", "9.00")])
    inputs = load_run_inputs(engine, "M001", S, COVERED, rows)
    assert set(inputs.refunds["partner_refund_no"]) == {
        "RF-OLD-1", "RF-WINDOW-2", "RF-OLD-2", "RF-WINDOW-4"}
    engine.dispose()


def test_loads_the_earlier_ledger_entries_the_file_or_its_records_name(
        database_url: str) -> None:
    """Each way an earlier entry is found: by a file key, by a record's own settle key, by
    a refund record's key that differs from the settle key, by an original payment that
    differs when that payment's refunds are added up (a refund row of the file names it).
    A record key that is no refund's, and an original payment whose refunds the run does
    not add up, find nothing: no check reads such an entry
    (`test_the_ledger_loaded_matches_as_the_whole_ledger_would`)."""
    from sqlalchemy import insert

    from recon.core.calendar import WIB
    from recon.store.records import insert_records
    from recon.store.tables import recon_ledger

    engine = make_engine(database_url)
    init_db(engine)
    when = dt.datetime(2026, 11, 28, 12, tzinfo=WIB)
    insert_records(
        engine,
        [_payment(ref, when) for ref in ("P-FILE", "P-WINDOW", "P-OWNER")],
        [{"partner_refund_no": "RF-REC", "original_partner_reference_no": "P-OWNER",
          "refund_no": "OVR-REC", "refund_amount": Decimal("0.50"), "status": "00",
          "refund_time": when}])
    earlier = dt.date(2026, 11, 20)

    def entry(line: int, kind: str, settle: str, record: str, original: str,
              day: dt.date = earlier, merchant: str = "M001") -> dict:
        return {"merchant_id": merchant, "settlement_date": day, "run_id": 1, "kind": kind,
                "settle_key": settle, "record_key": record, "original_reference_no": original,
                "amount": Decimal("1.00"), "line_no": line}

    with engine.begin() as conn:
        conn.execute(insert(recon_ledger), [
            entry(1, "PAYMENT", "P-FILE", "P-FILE", "P-FILE"),  # a file key
            entry(2, "PAYMENT", "P-WINDOW", "P-WINDOW", "P-WINDOW"),  # a record's own key
            entry(3, "REFUND", "RF-OTHER", "RF-REC", "P-OWNER"),  # record key ≠ settle key
            entry(4, "REFUND", "RF-LOST", "", "P-FILE"),  # original payment ≠ settle key
            entry(5, "PAYMENT", "ZZZ", "ZZZ", "ZZZ"),  # nothing names it
            entry(6, "PAYMENT", "P-FILE", "P-FILE", "P-FILE", day=S),  # the date re-run
            entry(7, "PAYMENT", "P-FILE", "P-FILE", "P-FILE", merchant="M2"),
            entry(8, "REFUND", "RF-X", "P-GHOST", "P-Y"),  # record key: a file key, no record
            entry(9, "REFUND", "RF-Y", "P-FILE", "P-Z"),  # record key: a payment's, no refund's
            entry(10, "REFUND", "RF-Z", "", "P-WINDOW"),  # its payment's refunds not added up
        ])
    inputs = load_run_inputs(engine, "M001", S, COVERED, rows_frame(
        [payment_row("P-FILE", "1.00"), payment_row("P-GHOST", "1.00"),
         refund_row("P-FILE", "0.50")]))
    assert sorted(inputs.ledger["line_no"]) == [1, 2, 3, 4]
    engine.dispose()


def test_an_earlier_entry_found_through_several_kinds_of_file_key_loads_once(
        database_url: str) -> None:
    """The ledger is looked up through one key table of every key the file names
    (invoices, refund invoices, OVO reference numbers): an entry whose settle key the file
    names as all three comes once, and one whose original payment is only a refund key of
    the file is not an entry of a payment the file names."""
    from sqlalchemy import insert

    from recon.store.tables import recon_ledger

    engine = make_engine(database_url)
    init_db(engine)
    with engine.begin() as conn:
        conn.execute(insert(recon_ledger), [
            {"merchant_id": "M001", "settlement_date": dt.date(2026, 11, 20), "run_id": 1,
             "kind": "PAYMENT", "settle_key": "K1", "record_key": "K1",
             "original_reference_no": "K1", "amount": Decimal("1.00"), "line_no": 1},
            {"merchant_id": "M001", "settlement_date": dt.date(2026, 11, 20), "run_id": 1,
             "kind": "REFUND", "settle_key": "RZ", "record_key": "",
             "original_reference_no": "RK2", "amount": Decimal("1.00"), "line_no": 2}])
    inputs = load_run_inputs(engine, "M001", S, COVERED, rows_frame(
        [payment_row("K1", "1.00"), refund_row("K1", "0.50", "K1", "K1"),
         refund_row("K2", "0.50", "RK2", "")]))
    assert list(inputs.ledger["line_no"]) == [1]
    engine.dispose()


def _plan_nodes(node: dict) -> Iterator[dict]:
    """A PostgreSQL plan's nodes (EXPLAIN's JSON), the node first, then its children's."""
    yield node
    for child in node.get("Plans", []):
        yield from _plan_nodes(child)


@pytest.mark.postgres
def test_postgres_plans_each_key_table_by_its_own_size(postgres_server_url: str) -> None:
    """Each kind of key is its own SELECT, so that the planner knows how many keys it
    joins (a UNION of key tables inside one subquery counts as 200, and a file's million
    invoices were then probed one by one into the ledger's index); the loader's
    connection prices pages read out of order for cached data, the window's keeps the
    server's default for its range scans."""
    from sqlalchemy.dialects import postgresql

    from recon.store import load as store_load
    from recon.store import lookups as store_lookups
    from recon.store import tables as store_tables
    engine = make_engine(postgres_server_url)
    init_db(engine)
    t = store_tables.recon_ledger
    query = store_lookups.keyed_by(store_load.LEDGER_COLUMNS, t.c.settle_key,
                                   ["file", "rinv", "rno"],
                                   t.c.merchant_id == "M001", t.c.settlement_date != S)
    with engine.connect() as conn:
        for tag in ("file", "rinv", "rno"):
            store_lookups.LOAD_KEYS[tag].create(conn)
            conn.execute(store_lookups.LOAD_KEYS[tag].insert(),
                         [{"k": f"{tag}{i}"} for i in range(3000)])
        conn.execute(text("ANALYZE recon_load_keys_file, recon_load_keys_rinv, "
                          "recon_load_keys_rno"))
        plan = conn.execute(text("EXPLAIN (FORMAT JSON) " + store_lookups.written_in(
            query, postgresql.dialect()))).scalar_one()[0]["Plan"]
    setting = "SELECT current_setting('random_page_cost')"
    with store_lookups.ArrowLookups(engine, key_lookups=True) as lookups:
        assert lookups.fetch_table(text(setting), ["cost"])["cost"][0].as_py() == str(
            store_lookups.KEY_LOOKUP_PAGE_COST)
    with store_lookups.ArrowLookups(engine) as window:
        assert window.fetch_table(text(setting), ["cost"])["cost"][0].as_py() != str(
            store_lookups.KEY_LOOKUP_PAGE_COST)
    engine.dispose()

    appended_key_tables = [
        child.get("Relation Name") for node in _plan_nodes(plan) if node["Node Type"] == "Append"
        for child in node.get("Plans", [])
        if str(child.get("Relation Name", "")).startswith("recon_load_keys_")]
    assert not appended_key_tables, appended_key_tables
    scanned = {node.get("Relation Name") for node in _plan_nodes(plan)}
    assert {"recon_load_keys_file", "recon_load_keys_rinv", "recon_load_keys_rno"} <= scanned


def test_postgres_finds_the_window_refunds_payments_through_their_index(
        postgres_server_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The window's refunds are those whose payment is the merchant's: once the window's
    payments are fetched, their connection finds each refund's payment through the
    payments' primary key (20,000 probes at 1M payments took 0.09 s on one process) and not
    by hashing every payment of the merchant on three (0.2 s, three times the CPU). The key
    lookups' connection takes no parallel workers either, and analyzes its key tables
    from a small sample."""
    from sqlalchemy.dialects import postgresql

    from recon.store import load as store_load
    from recon.store import lookups as store_lookups
    from tests.conftest import reset_postgres

    reset_postgres(postgres_server_url)
    engine = make_engine(postgres_server_url)
    init_db(engine)
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO ovo_payments (partner_reference_no, merchant_id, amount, pay_option, "
            "status, transaction_time) SELECT 'P' || i, 'M001', 10, 'OVO_CASH', '00', "
            "TIMESTAMPTZ '2026-11-28 12:00+07' FROM generate_series(1, 100000) AS i"))
        conn.execute(text(
            "INSERT INTO ovo_refunds (partner_refund_no, original_partner_reference_no, "
            "refund_amount, refund_time, status) SELECT 'R' || i, 'P' || (i * 50), 1, "
            "TIMESTAMPTZ '2026-11-28 13:00+07', '00' FROM generate_series(1, 2000) AS i"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE ovo_payments, ovo_refunds"))
    start, end = store_load.window_bounds(WorkingCalendar().covered_dates(S))

    class Written:  # the query `fetch_window_refunds` sends, as the server gets it
        dialect = postgresql.dialect()
        sql = ""

        def fetch(self, query: Any, names: list[str]) -> pd.DataFrame:
            Written.sql = store_lookups.written_in(query, self.dialect)
            return pd.DataFrame()

    written: Any = Written()
    store_load.fetch_window_refunds(written, "M001", start, end)
    with engine.connect() as conn:  # ADBC sends a query through COPY, which EXPLAIN is not
        for statement in store_lookups.KEY_LOOKUP_SETTINGS:
            conn.execute(text(statement))
        plan = conn.execute(text("EXPLAIN (FORMAT JSON) " + Written.sql)).scalar_one()
    shown = text("SELECT current_setting('random_page_cost'), "
                 "current_setting('max_parallel_workers_per_gather'), "
                 "current_setting('default_statistics_target')")
    names = ["cost", "workers", "sample"]
    with store_lookups.ArrowLookups(engine) as window:
        before = window.fetch_table(shown, names).to_pylist()
        window.use_lookup_settings()
        after = window.fetch_table(shown, names).to_pylist()
    with store_lookups.ArrowLookups(engine, key_lookups=True) as lookups:
        looking = lookups.fetch_table(shown, names).to_pylist()
    in_the_load = []  # the settings of the connection the window's refunds come on

    def window_refunds(lookups: Any, *args: Any) -> pd.DataFrame:
        in_the_load.extend(lookups.fetch_table(shown, names).to_pylist())
        return fetch_window_refunds(lookups, *args)

    fetch_window_refunds = store_load.fetch_window_refunds
    monkeypatch.setattr(store_load, "fetch_window_refunds", window_refunds)
    given: list[pd.DataFrame] = []
    store_load.load_window(engine, "M001", S, WorkingCalendar().covered_dates(S), True,
                           lambda *records: given.extend(records))
    payments, refunds = given
    engine.dispose()
    assert (len(payments), len(refunds)) == (100_000, 2000)

    found = [(node["Node Type"], node.get("Relation Name"), node.get("Index Name"))
             for node in _plan_nodes(plan[0]["Plan"])]
    assert ("Index Scan", "ovo_payments", "ovo_payments_pkey") in found, found
    assert not [node for node in found if node[0] in ("Gather", "Hash")], found
    probing = {"cost": str(store_lookups.KEY_LOOKUP_PAGE_COST), "workers": "0"}
    assert before[0]["cost"] != probing["cost"] and before[0]["workers"] != "0"
    assert after == [{**before[0], **probing}]
    assert looking == [{**probing, "sample": str(store_lookups.KEY_TABLE_STATISTICS)}]
    assert in_the_load == after


@pytest.mark.postgres
def test_postgres_probes_a_ledger_large_for_the_keys_and_finds_the_same_entries(
        postgres_server_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once the ledger holds more than LEDGER_PROBE_RATIO entries per file key, its
    lookup by settle key probes the primary key (no hash or merge join); the entries
    found are the same as by the planner's own join. An unanalyzed ledger, or one small
    for the keys, is left to the planner."""
    from sqlalchemy import insert

    from recon.store import load as store_load
    from recon.store import lookups as store_lookups
    from recon.store import tables as store_tables
    from tests.conftest import reset_postgres

    reset_postgres(postgres_server_url)
    engine = make_engine(postgres_server_url)
    init_db(engine)
    entry = {"merchant_id": "M001", "settlement_date": dt.date(2026, 11, 20), "run_id": 1,
             "kind": "PAYMENT", "record_key": "", "original_reference_no": "",
             "amount": Decimal("1.00")}
    with engine.begin() as conn:  # 2,000 entries of other keys, three of the file's
        # Analyzed only when the test says so, wherever autovacuum runs.
        conn.execute(text("ALTER TABLE recon_ledger SET (autovacuum_enabled = false)"))
        conn.execute(insert(store_tables.recon_ledger), [
            {**entry, "settle_key": key, "original_reference_no": key, "line_no": n}
            for n, key in enumerate([f"X{i}" for i in range(2000)] + ["K1", "K7", "K9"])])
    rows = rows_frame([payment_row(f"K{i}", "1.00") for i in range(100)])
    shown = text("SELECT current_setting('enable_hashjoin'), "
                 "current_setting('enable_mergejoin')")
    seen: list[tuple[str, list[dict[str, Any]]]] = []
    ledger_of = store_load.fetch_ledger_of

    def settings_seen(lookups: Any, merchant: str, day: dt.date, column: Any,
                      tags: Any, *conditions: Any) -> pd.DataFrame:
        seen.append((column.name, lookups.fetch_table(shown, ["hash", "merge"]).to_pylist()))
        return ledger_of(lookups, merchant, day, column, tags, *conditions)

    monkeypatch.setattr(store_load, "fetch_ledger_of", settings_seen)

    def loaded(ratio: int) -> list[str]:
        monkeypatch.setattr(store_lookups, "LEDGER_PROBE_RATIO", ratio)
        seen.clear()
        ledger = load_run_inputs(engine, "M001", S, COVERED, rows).ledger
        return sorted(ledger["settle_key"])

    unanalyzed = loaded(4)
    assert all(found == [{"hash": "on", "merge": "on"}] for _, found in seen), seen
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE recon_ledger"))
    probed = loaded(4)  # 2,003 entries for 100 keys
    # By settle key: the file's refund rows' keys (none here: nothing to probe), its
    # invoices outside the window (probed), the records it does not name (the planner's).
    by_key = [found[0]["hash"] for column, found in seen if column == "settle_key"]
    assert by_key == ["on", "off", "on"], seen
    assert all(found == [{"hash": "on", "merge": "on"}]
               for column, found in seen if column != "settle_key"), seen
    planned = loaded(100)  # 2,003 entries are few for 100 keys at 100 each
    assert all(found == [{"hash": "on", "merge": "on"}] for _, found in seen), seen
    engine.dispose()
    assert unanalyzed == probed == planned == ["K1", "K7", "K9"]


def test_a_merchant_id_with_quotes_and_backslashes_loads_its_own_records_only(
        database_url: str) -> None:
    """On PostgreSQL the merchant, dates and bounds are written into the query's text: a
    merchant whose id holds a quote or a backslash gets its own payments, refunds and
    earlier ledger entries, not those of a merchant whose id differs by an escape."""
    from sqlalchemy import insert

    from recon.core.calendar import WIB
    from recon.store.records import insert_records
    from recon.store.tables import recon_ledger

    merchant, others = "M'0\\1", ("M''0\\1", "M'0\\\\1", "M'01")
    engine = make_engine(database_url)
    init_db(engine)
    when = dt.datetime(2026, 11, 28, 12, tzinfo=WIB)
    insert_records(engine, [_payment(f"P-{m}", when) | {"merchant_id": m}
                            for m in (merchant, *others)],
                   [{"partner_refund_no": f"RF-{m}", "original_partner_reference_no": f"P-{m}",
                     "refund_no": f"RF-{m}", "refund_amount": Decimal("0.50"), "status": "00",
                     "refund_time": when} for m in (merchant, *others)])
    with engine.begin() as conn:
        conn.execute(insert(recon_ledger), [
            {"merchant_id": m, "settlement_date": dt.date(2026, 11, 20), "run_id": 1,
             "kind": "PAYMENT", "settle_key": "P-FILE", "record_key": "P-FILE",
             "original_reference_no": "P-FILE", "amount": Decimal("1.00"), "line_no": line}
            for line, m in enumerate((merchant, *others), start=1)])
    inputs = load_run_inputs(engine, merchant, S, COVERED,
                             rows_frame([payment_row("P-FILE", "1.00")]))
    assert list(inputs.payments["partner_reference_no"]) == [f"P-{merchant}"]
    assert list(inputs.payments["merchant_id"]) == [merchant]
    assert list(inputs.refunds["partner_refund_no"]) == [f"RF-{merchant}"]
    assert list(inputs.ledger["line_no"]) == [1]
    engine.dispose()


def test_loads_an_open_items_payment_outside_the_window_and_what_the_ledger_says_of_it(
        database_url: str) -> None:
    """A payment an open item names, outside the window and not in the file: loaded, and
    so are the ledger entries of its own key (no file key names it)."""
    from sqlalchemy import insert

    from recon.core.calendar import WIB
    from recon.store.records import insert_records
    from recon.store.tables import recon_exceptions, recon_ledger

    engine = make_engine(database_url)
    init_db(engine)
    insert_records(engine, [
        _payment("P-OPEN", dt.datetime(2026, 10, 1, 12, tzinfo=WIB)),
        _payment("P-OLD-FILE", dt.datetime(2026, 10, 2, 12, tzinfo=WIB)),
        _payment("P-WINDOW", dt.datetime(2026, 11, 28, 12, tzinfo=WIB))])
    opened, later = dt.date(2026, 10, 2), dt.date(2026, 12, 2)
    with engine.begin() as conn:
        conn.execute(insert(recon_exceptions).values(
            merchant_id="M001", settlement_date=opened, run_id=1,
            category="MISSING_IN_SETTLEMENT", kind="PAYMENT", record_key="P-OPEN",
            record_date=dt.date(2026, 10, 1), record_amount=Decimal("1.00"),
            reason="payment of 2026-10-01 not in the settlement file", state="open"))
        conn.execute(insert(recon_ledger), [
            {"merchant_id": "M001", "settlement_date": later, "run_id": 2, "kind": "PAYMENT",
             "settle_key": key, "record_key": key, "original_reference_no": key,
             "amount": Decimal("1.00"), "line_no": line}
            for line, key in ((2, "P-OPEN"), (3, "P-OLD-FILE"), (4, "P-WINDOW"),
                              (5, "P-ELSE"))])
    inputs = load_run_inputs(engine, "M001", S, COVERED,
                             rows_frame([payment_row("P-OLD-FILE", "1.00")]))
    assert sorted(inputs.payments["partner_reference_no"]) == [
        "P-OLD-FILE", "P-OPEN", "P-WINDOW"]
    assert list(inputs.open_items["record_key"]) == ["P-OPEN"]
    assert sorted(inputs.ledger["line_no"]) == [2, 3, 4]
    engine.dispose()


def test_a_window_loaded_while_the_file_is_read_gives_the_same_inputs(
        database_url: str) -> None:
    from recon.core.calendar import WIB
    from recon.store.records import insert_records

    engine = make_engine(database_url)
    init_db(engine)
    insert_records(engine, [
        _payment("IN-WINDOW", dt.datetime(2026, 11, 28, 12, tzinfo=WIB)),
        _payment("OLD-IN-FILE", dt.datetime(2026, 10, 1, 12, tzinfo=WIB))],
        [{"partner_refund_no": "RF-1", "original_partner_reference_no": "IN-WINDOW",
          "refund_no": "OVR-1", "refund_amount": Decimal("0.50"), "status": "00",
          "refund_time": dt.datetime(2026, 11, 28, 15, tzinfo=WIB)}])
    rows = rows_frame([payment_row("OLD-IN-FILE", "1.00"), payment_row("IN-WINDOW", "1.00")])
    alone = load_run_inputs(engine, "M001", S, COVERED, rows)
    ahead = load_run_inputs(engine, "M001", S, COVERED, rows,
                            WindowLoad(engine, "M001", S, COVERED))
    for name in ("payments", "refunds", "ledger", "open_items"):
        first, second = getattr(alone, name), getattr(ahead, name)
        key = first.columns[0]
        pd.testing.assert_frame_equal(first.sort_values(key, ignore_index=True),
                                      second.sort_values(key, ignore_index=True))
    assert sorted(ahead.payments["partner_reference_no"]) == ["IN-WINDOW", "OLD-IN-FILE"]
    assert list(ahead.refunds["partner_refund_no"]) == ["RF-1"]
    with pytest.raises(ValueError, match="the window loaded is"):
        load_run_inputs(engine, "M002", S, COVERED, rows,
                        WindowLoad(engine, "M001", S, COVERED))
    engine.dispose()


def test_the_loader_goes_on_while_the_windows_ledger_join_runs(
        database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The window hands its payments and refunds over before its ledger entries: the
    loader looks the file's other keys up while the ledger's join runs (held here until
    the loader has done so), and the entries the join finds are in the load. A join that
    fails after the payments were handed over is the load's one-line database error."""
    from sqlalchemy import insert
    from sqlalchemy.exc import OperationalError

    from recon.core.calendar import WIB
    from recon.store import load as store_load
    from recon.store.records import insert_records
    from recon.store.tables import recon_ledger

    engine = make_engine(database_url)
    init_db(engine)
    insert_records(engine, [_payment("P-WINDOW", dt.datetime(2026, 11, 28, 12, tzinfo=WIB)),
                            _payment("P-OLD", dt.datetime(2026, 10, 1, 12, tzinfo=WIB))])
    with engine.begin() as conn:
        conn.execute(insert(recon_ledger), [
            {"merchant_id": "M001", "settlement_date": dt.date(2026, 11, 20), "run_id": 1,
             "kind": "PAYMENT", "settle_key": key, "record_key": key,
             "original_reference_no": key, "amount": Decimal("1.00"), "line_no": line}
            for line, key in ((7, "P-WINDOW"), (8, "P-OLD"))])
    looked_up = threading.Event()
    load_payments, window_ledger = store_load.load_payments, store_load.fetch_window_ledger

    def payments_found(*args: Any) -> Any:  # after the window's payments are handed over
        found = load_payments(*args)
        looked_up.set()
        return found

    def held(*args: Any) -> pd.DataFrame:
        if not looked_up.wait(20):
            raise AssertionError("the loader waited for the window's ledger join")
        return window_ledger(*args)

    monkeypatch.setattr(store_load, "load_payments", payments_found)
    monkeypatch.setattr(store_load, "fetch_window_ledger", held)
    rows = rows_frame([payment_row("P-WINDOW", "1.00"), payment_row("P-OLD", "1.00")])
    inputs = load_run_inputs(engine, "M001", S, COVERED, rows,
                             WindowLoad(engine, "M001", S, COVERED))
    assert sorted(inputs.ledger["line_no"]) == [7, 8]

    def failed(*args: Any) -> pd.DataFrame:
        raise OperationalError("SELECT ... FROM recon_ledger", {},
                               Exception("canceling statement due to statement timeout"))

    monkeypatch.setattr(store_load, "fetch_window_ledger", failed)
    with pytest.raises(StoreError) as caught:
        load_run_inputs(engine, "M001", S, COVERED, rows, WindowLoad(engine, "M001", S, COVERED))
    assert "statement timeout" in caught.value.one_line()
    assert "\n" not in caught.value.one_line()
    engine.dispose()


def test_a_window_load_that_failed_is_the_loads_database_error(tmp_path: Path) -> None:
    """The window's load runs on its own connection; its error is raised by the load, as
    the one-line database error, not in the thread or while the file is read."""
    engine = make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    init_db(engine)
    empty = make_engine(f"sqlite:///{tmp_path / 'no-tables.db'}")
    window = WindowLoad(empty, "M001", S, COVERED)
    window.let_writers_in()  # SQLite: until the load has ended
    with pytest.raises(StoreError) as caught:
        load_run_inputs(engine, "M001", S, COVERED, rows_frame([]), window)
    assert "ovo_payments" in caught.value.one_line()
    assert "\n" not in caught.value.one_line()
    engine.dispose()
    empty.dispose()


def test_a_second_run_of_the_same_date_waits_then_refuses(database_url: str) -> None:
    engine = make_engine(database_url)
    init_db(engine)
    holding, release = threading.Event(), threading.Event()

    def first() -> None:
        with hold_run_lock(engine, "M001", S, wait_seconds=0):
            holding.set()
            release.wait(10)

    worker = threading.Thread(target=first)
    worker.start()
    assert holding.wait(10)
    with (pytest.raises(RunLocked, match="another run of M001 2026-11-30 is in progress"),
          hold_run_lock(engine, "M001", S, wait_seconds=0.6)):
        pass
    with hold_run_lock(engine, "M001", dt.date(2026, 12, 1), wait_seconds=0):
        pass  # another date is not blocked
    release.set()
    worker.join(10)
    with hold_run_lock(engine, "M001", S, wait_seconds=2):
        pass  # free again once the first run is done
    engine.dispose()


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "postgresql+psycopg"])
def test_plain_postgres_urls_use_the_installed_driver(scheme: str) -> None:
    engine = make_engine(f"{scheme}://user@127.0.0.1:5432/db")
    assert engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg"


def test_bad_urls_are_config_errors() -> None:
    from recon.core.errors import ConfigError

    with pytest.raises(ConfigError, match="not valid"):
        make_engine("not a url")
    with pytest.raises(ConfigError, match="no database driver"):
        make_engine("oracle+nodriver://x@y/z")


@pytest.mark.mariadb
def test_records_written_by_other_programs_mariadb(mariadb_server_url: str) -> None:
    """MariaDB DATETIME holds UTC, whatever the server's own time zone is."""
    from tests.conftest import reset_mariadb

    reset_mariadb(mariadb_server_url)
    engine = make_engine(mariadb_server_url)
    init_db(engine)
    _raw_insert(engine, [("UTC", "10000.50", "2026-11-27 03:00:00"),
                         ("EDGE", "1", "2026-11-29 17:00:00")])
    inputs = load_run_inputs(engine, "M001", S, COVERED, rows_frame([]))
    payments = inputs.payments.set_index("partner_reference_no")
    assert payments.loc["UTC", "amount"] == 1_000_050
    assert payments.loc["UTC", "transaction_time"] == pd.Timestamp("2026-11-27 03:00:00Z")
    assert payments.loc["EDGE", "transaction_date"] == dt.date(2026, 11, 30)
    engine.dispose()


def test_lock_names_differ_per_database_and_fit_mariadb() -> None:
    from recon.store.locks import lock_name

    first = lock_name("merchant_a", "M001", S)
    assert first == "ovo-recon:merchant_a:M001:2026-11-30"
    assert first != lock_name("merchant_b", "M001", S)
    long = lock_name("x" * 80, "M001", S)
    assert len(long) <= 64 and long != lock_name("y" * 80, "M001", S)


def test_bulk_insert_writes_every_batch(database_url: str,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows go a batch at a time (COPY or executemany); each database gets every row."""
    from sqlalchemy import select

    from recon.store import engine as store_engine
    from recon.store.tables import recon_ledger

    monkeypatch.setattr(store_engine, "WRITE_BATCH_ROWS", 2)
    engine = make_engine(database_url)
    init_db(engine)
    frame = pd.DataFrame({
        "merchant_id": "M001", "settlement_date": "2026-11-30", "run_id": 1, "kind": "PAYMENT",
        "settle_key": [f"K{i}" for i in range(7)], "record_key": [f"K{i}" for i in range(7)],
        "original_reference_no": ['a "quoted", text', *(f"K{i}" for i in range(1, 7))],
        "amount": ["1.00", "-0.05", "12345678.90", "0.00", "1.10", "2.00", "3.00"],
        "line_no": range(2, 9)})
    with engine.begin() as conn:
        store_engine.bulk_insert(conn, recon_ledger, frame)
    with engine.connect() as conn:
        got = conn.execute(select(recon_ledger.c.line_no, recon_ledger.c.original_reference_no,
                                  recon_ledger.c.amount).order_by(recon_ledger.c.line_no)).all()
    assert [r.line_no for r in got] == list(range(2, 9))
    assert got[0].original_reference_no == 'a "quoted", text'
    assert [r.amount for r in got][:3] == [Decimal("1.00"), Decimal("-0.05"),
                                          Decimal("12345678.90")]
    engine.dispose()


@pytest.mark.postgres
def test_the_ledger_goes_into_postgres_by_binary_copy_exactly(postgres_server_url: str) -> None:
    """Every value as the text path writes it: texts of any bytes, amounts from zero to the
    largest NUMERIC(18,2), negative ones, more rows than a batch."""

    from sqlalchemy import select

    from recon.store import copy as store_copy
    from recon.store.tables import recon_ledger

    engine = make_engine(postgres_server_url)
    init_db(engine)
    texts = ["", "é", "a,b", 'q"uote', "back\\slash", "tab\there", "line\nbreak", "🧾", "x" * 64]
    amounts = [0, 1, 5, 99, 100, 10_001, 123_456_789, 999_999_999_999_999_99,
               -1, -100_050, -999_999_999_999_999_99]
    count = 250
    ledger = pd.DataFrame({
        "kind": ["PAYMENT" if i % 3 else "REFUND" for i in range(count)],
        "settle_key": [f"K{i:04d}{texts[i % len(texts)]}" for i in range(count)],
        "record_key": [texts[i % len(texts)] for i in range(count)],
        "original_reference_no": [texts[(i + 1) % len(texts)] for i in range(count)],
        "amount": pd.array([amounts[i % len(amounts)] for i in range(count)], dtype="Int64"),
        "line_no": range(2, 2 + count)}).astype({name: "str" for name in (
            "kind", "settle_key", "record_key", "original_reference_no")})
    day = dt.date(2031, 12, 31)
    # The ledger names its entries among the file's rows: every seventh row is not one.
    settled = np.array([i % 7 != 3 for i in range(count)])
    with engine.begin() as conn:
        conn.execute(recon_ledger.delete().where(recon_ledger.c.merchant_id == "MÉ-1"))
        original = store_copy.WRITE_BATCH_ROWS
        store_copy.WRITE_BATCH_ROWS = 100  # three batches
        try:
            store_copy.copy_ledger(conn, dataclasses.replace(Ledger.of(ledger),
                                                         at=np.flatnonzero(settled)),
                               "MÉ-1", day, 42)
        finally:
            store_copy.WRITE_BATCH_ROWS = original
        written = conn.execute(select(recon_ledger).where(
            recon_ledger.c.merchant_id == "MÉ-1").order_by(recon_ledger.c.line_no)).all()
    assert len(written) == settled.sum() == 214
    for row, (_, expected) in zip(written, ledger.loc[settled].iterrows(), strict=True):
        assert (row.merchant_id, row.settlement_date, row.run_id) == ("MÉ-1", day, 42)
        assert (row.kind, row.settle_key, row.record_key, row.original_reference_no) == (
            expected["kind"], expected["settle_key"], expected["record_key"],
            expected["original_reference_no"])
        assert row.amount == Decimal(int(expected["amount"])) / 100
        assert row.line_no == expected["line_no"]
    engine.dispose()


@pytest.mark.postgres
def test_a_ledger_copy_told_to_stop_ends_at_the_next_batch_and_writes_nothing(
        postgres_server_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that fails while its ledger goes in (ten million rows at 10M) does not wait
    for the rest of the COPY: it ends before the next batch and rolls back."""
    from sqlalchemy import func, select

    from recon.store import copy as store_copy
    from recon.store.tables import recon_ledger

    engine = make_engine(postgres_server_url)
    init_db(engine)
    count = 300
    ledger = pd.DataFrame({
        "kind": "PAYMENT", "settle_key": [f"K{i:04d}" for i in range(count)],
        "record_key": [f"K{i:04d}" for i in range(count)],
        "original_reference_no": [f"K{i:04d}" for i in range(count)],
        "amount": pd.array([100] * count, dtype="Int64"),
        "line_no": range(2, 2 + count)}).astype({name: "str" for name in (
            "kind", "settle_key", "record_key", "original_reference_no")})
    monkeypatch.setattr(store_copy, "WRITE_BATCH_ROWS", 100)
    asked: list[int] = []

    def stop() -> bool:  # the run fails while the first batch is written
        asked.append(len(asked))
        return len(asked) > 1

    with pytest.raises(store_copy.LedgerAbandoned), engine.begin() as conn:
        store_copy.copy_ledger(conn, Ledger.of(ledger), "M-STOP", S, 1, stop)
    assert len(asked) == 2  # one batch written, the second not begun
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(recon_ledger).where(
            recon_ledger.c.merchant_id == "M-STOP")).scalar_one() == 0
    engine.dispose()


def test_a_run_that_fails_before_the_window_is_needed_does_not_wait_for_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rejected file (here any error) ends the run at once: the window's load goes on
    in a daemon thread, which the process does not wait for at exit."""
    from recon.store import load as store_load
    release = threading.Event()
    started = threading.Event()

    def slow_window(*args: object) -> store_load.Window:
        started.set()
        release.wait(30)
        raise RuntimeError("not reached by the run")

    monkeypatch.setattr(store_load, "load_window", slow_window)
    engine = make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    with pytest.raises(ValueError, match="the file was rejected"):
        WindowLoad(engine, "M001", S, COVERED)
        assert started.wait(10)
        raise ValueError("the file was rejected")
    loading = [t for t in threading.enumerate() if t.name == "recon-window"]
    assert loading and all(t.daemon and t.is_alive() for t in loading)
    release.set()
    for thread in loading:
        thread.join(10)
    engine.dispose()


def test_a_ledger_written_while_matching_commits_with_the_run_or_not_at_all(
        database_url: str) -> None:
    """`write_ledger` begins the run's transaction in a thread while the match goes on: a
    run that fails after it leaves the database as it was, one that finishes writes what
    writing everything at the end writes."""
    from recon.core.match import match_settlement
    from recon.core.schemas import LEDGER, OPEN_ITEMS, REFUNDS, empty_frame
    from recon.store.history import RunRecord
    from recon.store.persist import RunWriter, persist_run
    from recon.store.tables import recon_runs
    from tests.builders import context, payments_frame, stored_state

    engine = make_engine(database_url)
    init_db(engine)
    result = match_settlement(
        rows_frame([payment_row("INV-1", "100.00"), payment_row("INV-2", "7.00"),
                    payment_row("GHOST", "5.00")]),
        payments_frame([("INV-1", "100.00", "00", "2026-11-27 10:00:00"),
                        ("INV-2", "8.00", "00", "2026-11-27 11:00:00"),
                        ("UNSETTLED", "3.00", "00", "2026-11-28 11:00:00")]),
        empty_frame(REFUNDS), empty_frame(LEDGER), empty_frame(OPEN_ITEMS), context())
    assert len(result.ledger) == 3 and result.exceptions == 3
    run = RunRecord("M001", S, dt.datetime(2026, 12, 1, 0, 30, tzinfo=dt.UTC), "f.csv",
                    "0" * 64, 3, "archive/f.csv", result.exceptions, {"exceptions": 3})
    assert persist_run(engine, result, run).attempt == 1
    first = stored_state(engine)
    assert len(first[0]) == 3 and len(first[1]) == 3 and first[2] == [(1, True)]

    # As when the match raises after handing over the ledger: at once (on PostgreSQL the
    # COPY may stop early), and once the ledger is written.
    for wait in (False, True):
        failed = RunWriter(engine)
        failed.write_ledger(result.ledger, run)
        deadline = time.monotonic() + 30
        while (wait and engine.dialect.name != "sqlite" and failed.ledger_seconds is None
               and time.monotonic() < deadline):
            time.sleep(0.01)
        failed.abort()
        assert stored_state(engine) == first

    writer = RunWriter(engine)
    writer.write_ledger(result.ledger, run)
    again = writer.finish(result, run)
    assert (again.attempt, again.rerun) == (2, True)
    ledger, exceptions, runs = stored_state(engine)
    assert (ledger, exceptions) == first[:2]
    assert runs == [(1, False), (2, True)]
    with engine.connect() as conn:  # the run's results, written by `finish`
        assert sorted((r.exceptions, r.summary_json) for r in conn.execute(
            recon_runs.select())) == [(3, '{"exceptions": 3}')] * 2
    engine.dispose()


def test_each_exception_is_stored_cell_for_cell(database_url: str) -> None:
    """The flagged rows and the records missing in the file, as the exceptions table holds
    them: empty keys and flags NULL, a row of no readable kind '?', money as exact
    decimals (a refund's negative), dates as dates, a missing record's reason and state."""
    from recon.core.match import match_settlement
    from recon.core.schemas import OPEN_ITEMS, empty_frame
    from recon.store.history import RunRecord
    from recon.store.persist import persist_run
    from recon.store.tables import recon_exceptions
    from tests.builders import context, ledger_frame, payments_frame, refunds_frame

    engine = make_engine(database_url)
    init_db(engine)
    result = match_settlement(
        rows_frame([payment_row("INV-1", "100.00"), payment_row("INV-2", "7.00", mdr="1.00"),
                    payment_row("GHOST", "5.00"),
                    refund_row("INV-1", "10.50", refund_invoice="RF-NONE"),
                    payment_row("BAD", "1.00", transaction_type="",
                                invalid_reason="TransactionType is not PAYMENT or REFUND")]),
        payments_frame([("INV-1", "100.00", "00", "2026-11-27 10:00:00"),
                        ("INV-2", "8.00", "00", "2026-11-27 11:00:00"),
                        ("UNSETTLED", "3.00", "00", "2026-11-28 11:00:00")]),
        refunds_frame([("RF-9", "INV-1", "OVO-RF-9", "2.25", "00",
                        "2026-11-29 09:00:00")]),
        # A later date settled UNSETTLED already (this date is re-run after it).
        ledger_frame([(dt.date(2026, 12, 1), "PAYMENT", "UNSETTLED", "UNSETTLED",
                       "UNSETTLED", "3.00")]),
        empty_frame(OPEN_ITEMS), context())
    run = RunRecord("M001", S, dt.datetime(2026, 12, 1, 0, 30, tzinfo=dt.UTC), "f.csv",
                    "0" * 64, 5, "archive/f.csv", result.exceptions, {})
    persist_run(engine, result, run)
    t = recon_exceptions
    with engine.connect() as conn:
        stored = [tuple(r) for r in conn.execute(
            t.select().with_only_columns(*[c for c in t.c if c.name not in {
                "exception_id", "run_id", "merchant_id", "settlement_date"}])
            .order_by(t.c.exception_id))]
    day = dt.date
    fee = ("FEE_MISMATCH: MDRAmount 1.00 ≠ 0.7% of 7.00 = 0.05; TaxAmount 0.01 ≠ VAT 11% "
           "of MDR 1.00 = 0.11; NetAmount 6.94 ≠ Gross − MDR − Tax = 5.99")
    assert stored == [
        ("AMOUNT_MISMATCH", "PAYMENT", 3, "INV-2", "", "OVO-3", "INV-2", day(2026, 11, 27),
         Decimal("7.00"), Decimal("8.00"), Decimal("-1.00"),
         "GrossAmount 7.00 ≠ payment amount 8.00 (delta -1.00)", fee, None, None, None),
        ("MISSING_IN_RECORDS", "PAYMENT", 4, "GHOST", "", "OVO-4", None, None,
         Decimal("5.00"), None, None, "no payment with partnerReferenceNo GHOST",
         None, None, None, None),
        ("MISSING_IN_RECORDS", "REFUND", 5, "INV-1", "RF-NONE", "", None, None,
         Decimal("-10.50"), None, None, "no refund record for RefundInvoice RF-NONE, nor an "
         "unmatched refund of 10.50 on payment INV-1", None, None, None, None),
        ("INVALID_ROW", "?", 6, "BAD", "", "OVO-6", None, None, Decimal("1.00"), None, None,
         "TransactionType is not PAYMENT or REFUND", None, None, None, None),
        ("MISSING_IN_SETTLEMENT", "PAYMENT", None, "UNSETTLED", None, "R-UNSETTLED",
         "UNSETTLED", day(2026, 11, 28), None, Decimal("3.00"), None,
         "payment of 2026-11-28 not in the settlement file", None, "closed",
         day(2026, 12, 1), None),
        ("MISSING_IN_SETTLEMENT", "REFUND", None, "INV-1", "RF-9", "OVO-RF-9", "RF-9",
         day(2026, 11, 29), None, Decimal("-2.25"), None,
         "refund of 2026-11-29 not in the settlement file", None, "open", None, None),
    ]
    engine.dispose()


def test_a_rerun_keeps_the_entries_it_writes_again_and_replaces_the_others(
        database_url: str) -> None:
    """After a re-run the date's ledger is what that run settled: an entry changed, gone
    or new is replaced, deleted or written. On PostgreSQL an entry the run before wrote
    exactly so stays as it was, its run id too (a million deleted and written again took
    6.6-10.6 s); elsewhere every entry is written again."""
    from sqlalchemy import select

    from recon.core.match import match_settlement
    from recon.core.schemas import LEDGER, OPEN_ITEMS, empty_frame
    from recon.store.history import RunRecord
    from recon.store.persist import RunWriter
    from recon.store.tables import recon_ledger
    from tests.builders import context, payments_frame, refunds_frame

    engine = make_engine(database_url)
    init_db(engine)
    payments = payments_frame([("INV-1", "100.00", "00", "2026-11-27 10:00:00"),
                               ("INV-2", "9.00", "00", "2026-11-27 11:00:00"),
                               ("INV-3", "3.00", "00", "2026-11-28 11:00:00")])
    refunds = refunds_frame([("RF-1", "INV-1", "OVO-RF-1", "10.00", "00",
                              "2026-11-28 09:00:00")])
    first_file = [payment_row("INV-1", "100.00"), payment_row("INV-2", "7.00"),
                  payment_row("GHOST", "5.00"), refund_row("INV-1", "10.00", "RF-1")]
    # INV-1 moves to another line, INV-2's amount changes on its line, GHOST goes, INV-3
    # comes; the refund's entry is as it was.
    second_file = [payment_row("INV-3", "3.00"), payment_row("INV-2", "9.00"),
                   payment_row("INV-1", "100.00"), refund_row("INV-1", "10.00", "RF-1")]

    def run(rows: list[dict[str, Any]]) -> tuple[int, int | None, set[tuple[Any, ...]]]:
        result = match_settlement(rows_frame(rows), payments, refunds, empty_frame(LEDGER),
                                  empty_frame(OPEN_ITEMS), context())
        record = RunRecord("M001", S, dt.datetime(2026, 12, 1, 0, 30, tzinfo=dt.UTC), "f.csv",
                           "0" * 64, len(rows), "archive/f.csv", result.exceptions, {})
        writer = RunWriter(engine)
        run_id = writer.finish(result, record).run_id
        settled = {(kind, key, record_key, original, Decimal(int(amount)) / 100, int(line))
                   for kind, key, record_key, original, amount, line in zip(
                       *(result.ledger[name] for name in Ledger.COLUMNS), strict=True)}
        return run_id, writer.ledger_kept, settled

    def stored() -> dict[tuple[Any, ...], int]:
        t = recon_ledger
        with engine.connect() as conn:
            return {(r.kind, r.settle_key, r.record_key, r.original_reference_no, r.amount,
                     r.line_no): r.run_id for r in conn.execute(select(t).where(
                         t.c.merchant_id == "M001", t.c.settlement_date == S))}

    first_id, kept, first = run(first_file)
    assert kept is None and stored() == dict.fromkeys(first, first_id)
    second_id, kept, second = run(second_file)
    assert len(first & second) == 1 and len(second - first) == 3
    in_place = engine.dialect.name == "postgresql"
    assert stored() == {entry: first_id if in_place and entry in first else second_id
                        for entry in second}
    assert kept == (1 if in_place else None)
    before = stored()
    third_id, kept, third = run(second_file)  # the same again: nothing to change
    assert third == second
    assert stored() == (before if in_place else dict.fromkeys(second, third_id))
    assert kept == (4 if in_place else None)
    engine.dispose()


def test_a_ledger_table_made_with_the_former_surrogate_id_keeps_working(
        database_url: str) -> None:
    """A database made when the ledger had an id of its own (`ledger_id`) and a key index
    beside it: a run writes its entries there, a re-run replaces them, and a later date's
    load finds each entry once, though two of its lookups find the refund's."""
    from sqlalchemy import Column, Index, MetaData, Table

    from recon.core.match import match_settlement
    from recon.core.schemas import LEDGER, OPEN_ITEMS, empty_frame
    from recon.store.history import RunRecord
    from recon.store.persist import persist_run
    from recon.store.tables import Id, recon_ledger
    from tests.builders import context, payments_frame, refunds_frame, stored_state

    engine = make_engine(database_url)
    Table("recon_ledger", MetaData(),
          Column("ledger_id", Id, primary_key=True, autoincrement=True),
          *(Column(c.name, c.type, nullable=False) for c in recon_ledger.columns),
          Index("ix_recon_ledger_key", "merchant_id", "settle_key")).create(engine)
    assert "recon_ledger" not in init_db(engine)
    result = match_settlement(
        rows_frame([payment_row("INV-1", "100.00"),
                    refund_row("INV-1", "40.00", refund_invoice="RF-1", ovo_ref="OVR-1")]),
        payments_frame([("INV-1", "100.00", "00", "2026-11-27 10:00:00")]),
        refunds_frame([("RF-1", "INV-1", "OVR-1", "40.00", "00", "2026-11-28 10:00:00")]),
        empty_frame(LEDGER), empty_frame(OPEN_ITEMS), context())
    run = RunRecord("M001", S, dt.datetime(2026, 12, 1, 0, 30, tzinfo=dt.UTC), "f.csv",
                    "0" * 64, 2, "archive/f.csv", result.exceptions, {})
    assert persist_run(engine, result, run).attempt == 1
    first = stored_state(engine)
    assert persist_run(engine, result, run).attempt == 2
    assert stored_state(engine)[0] == first[0]
    assert sorted(r[2:5] for r in first[0]) == [  # kind, settle key, record key
        ("PAYMENT", "INV-1", "INV-1"), ("REFUND", "RF-1", "RF-1")]

    later = dt.date(2026, 12, 1)
    inputs = load_run_inputs(engine, "M001", later, [dt.date(2026, 11, 30)], rows_frame(
        [payment_row("INV-1", "100.00"), refund_row("INV-1", "40.00", refund_invoice="RF-1")],
        day=later))
    assert sorted(zip(inputs.ledger["settle_key"], inputs.ledger["line_no"],
                      strict=True)) == [("INV-1", 2), ("RF-1", 3)]
    engine.dispose()


def test_a_ledger_written_a_part_at_a_time_stores_what_the_whole_run_stores(
        database_url: str) -> None:
    """A run matched in parts writes each part's ledger as it comes and its exceptions
    from the report of the parts: the date's ledger, exceptions and runs are what the
    whole match's run stores, on a first run and on re-runs either way (on PostgreSQL a
    re-run in parts keeps every entry it would write again). A run that fails after some
    parts leaves the date as it was."""
    from recon.core.match import conform_inputs, match_settlement
    from recon.core.schemas import LEDGER, OPEN_ITEMS, empty_frame
    from recon.inparts.parts import matched_parts, reported_of_parts
    from recon.store.history import RunRecord
    from recon.store.persist import RunWriter
    from tests.builders import context, payments_frame, refunds_frame, stored_state

    engine = make_engine(database_url)
    init_db(engine)
    payments = payments_frame([(f"INV-{i}", f"{10 + i}.00", "00", "2026-11-27 10:00:00")
                               for i in range(12)])
    refunds = refunds_frame([("RF-1", "INV-1", "OVR-1", "5.00", "00", "2026-11-28 09:00:00"),
                             ("RF-2", "INV-2", "OVR-2", "4.00", "00", "2026-11-28 09:00:00")])
    rows = [payment_row(f"INV-{i}", f"{10 + i}.00") for i in range(1, 10)] + [
        payment_row("INV-4", "14.00"), payment_row("GHOST", "5.00"),
        payment_row("INV-5", "99.00"),
        refund_row("INV-1", "5.00", "RF-1"),
        refund_row("INV-3", "4.00", "RF-2")]  # names INV-2's refund: ties INV-2 and INV-3
    inputs = conform_inputs(rows_frame(rows), payments, refunds, empty_frame(LEDGER),
                            empty_frame(OPEN_ITEMS))
    whole = match_settlement(*inputs, context())
    record = RunRecord("M001", S, dt.datetime(2026, 12, 1, 0, 30, tzinfo=dt.UTC), "f.csv",
                       "0" * 64, len(rows), "archive/f.csv", whole.exceptions, {})

    def in_parts(fail: bool = False) -> RunWriter:
        writer = RunWriter(engine)
        results = []
        for result, _ in matched_parts(*inputs, context(), 3):
            writer.write_ledger_part(result.ledger, record)
            results.append(result)
        assert len(results) > 1
        if fail:
            writer.abort()
            return writer
        writer.finish(reported_of_parts(results, inputs[4], context()), record)
        return writer

    in_parts()
    first = stored_state(engine)
    assert len(first[0]) == len(whole.ledger) and first[2] == [(1, True)]
    RunWriter(engine).finish(whole, record)  # a re-run of the whole
    assert stored_state(engine)[:2] == first[:2]
    again = in_parts()  # a re-run in parts
    ledger, exceptions, runs = stored_state(engine)
    assert (ledger, exceptions) == first[:2]
    assert runs == [(1, False), (2, False), (3, True)]
    assert again.ledger_kept == (len(whole.ledger) if engine.dialect.name == "postgresql"
                                 else None)
    before = stored_state(engine)
    in_parts(fail=True)
    assert stored_state(engine) == before
    in_parts()  # the engine's connections are as they were: the next run in parts writes
    assert stored_state(engine)[:2] == first[:2]
    engine.dispose()


def test_the_window_s_payments_spilled_by_part_are_the_window_load_s(
        database_url: str, tmp_path: Path) -> None:
    """Each part's file holds the window's payments whose group is in that part, typed as
    the window's load types them, a batch from the database at a time; the merchant's
    payments outside the window and other merchants' are in none."""
    from recon.core.calendar import WIB, WorkingCalendar
    from recon.core.schemas import PAYMENT_LABELS, PAYMENTS, conform
    from recon.inparts.load import spill_window_payments
    from recon.inparts.parts import part_numbers
    from recon.store.load import WindowLoad
    from recon.store.records import insert_records

    engine = make_engine(database_url)
    init_db(engine)
    inside = [_payment(f"P-{i}", dt.datetime(2026, 11, 27 + i % 3, 1 + i % 20, tzinfo=WIB),
                       f"{i}.50") for i in range(40)]
    for i, payment in enumerate(inside):
        payment.update(store_id=["", "ST01", "ST02"][i % 3], status=["00", "04", "06"][i % 3])
    insert_records(engine, [
        *inside, {**_payment("LONG-AGO", dt.datetime(2026, 10, 1, 12, tzinfo=WIB)),
                  "store_id": ""},
        {**_payment("OTHER-MERCHANT", dt.datetime(2026, 11, 28, 12, tzinfo=WIB)),
         "merchant_id": "M002", "store_id": ""}])
    covered = WorkingCalendar().covered_dates(S)
    groups = {"P-3": "P-1", "P-1": "P-1", "P-17": "P-1", "P-30": "P-2", "P-2": "P-2"}
    spilled = spill_window_payments(engine, "M001", covered, tmp_path / "payments", 3, groups,
                                    batch_rows=7)
    window = WindowLoad(engine, "M001", S, covered, alone=True).result().payments
    expected = part_numbers(window["partner_reference_no"], groups, 3)
    as_text = dict.fromkeys(PAYMENT_LABELS, "str")
    for part in range(3):
        got = spilled.payments(part)
        assert all(isinstance(got[label].dtype, pd.CategoricalDtype) for label in PAYMENT_LABELS)
        want = conform(window.loc[expected == part], PAYMENTS, "payments")
        pd.testing.assert_frame_equal(
            got.astype(as_text).sort_values("partner_reference_no").reset_index(drop=True),
            want.astype(as_text).sort_values("partner_reference_no").reset_index(drop=True))
    assert spilled.counts == [int((expected == part).sum()) for part in range(3)]
    assert sum(spilled.counts) == 40 and all(spilled.counts)
    engine.dispose()


def test_a_spill_of_the_window_s_payments_that_fails_leaves_no_folder(
        database_url: str, tmp_path: Path) -> None:
    """A database without the payments table: a one-line StoreError, and the folder the
    spill made is gone; a folder that is there already is refused and left alone."""
    from recon.core.calendar import WorkingCalendar
    from recon.core.errors import StoreError
    from recon.inparts.load import spill_window_payments
    from recon.inparts.spill import SpillFailed

    engine = make_engine(database_url)
    covered = WorkingCalendar().covered_dates(S)
    with pytest.raises(StoreError) as raised:
        spill_window_payments(engine, "M001", covered, tmp_path / "payments", 2, {})
    assert "\n" not in raised.value.one_line() and "ovo_payments" in raised.value.one_line()
    assert not (tmp_path / "payments").exists()
    (tmp_path / "there").mkdir()
    with pytest.raises(SpillFailed, match="cannot make the spill folder"):
        spill_window_payments(engine, "M001", covered, tmp_path / "there", 2, {})
    assert (tmp_path / "there").is_dir()
    engine.dispose()
