"""What a run is matched against: the payments and refunds of the window of dates the file
covers, the records its keys name beyond the window, the ledger of other dates and the
open items.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import adbc_driver_manager
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Engine, String, func, or_, select, type_coerce
from sqlalchemy.exc import SQLAlchemyError

from recon.core import categories as cat
from recon.core.calendar import WIB
from recon.core.schemas import (
    LEDGER,
    OPEN_ITEMS,
    PAYMENT_LABELS,
    PAYMENTS,
    REFUNDS,
    arrow_frame,
    concat_labelled,
    conform,
    empty_frame,
    found_both_ways,
    found_in,
    label_column,
    one_chunk,
    positions_in,
    text_array,
)
from recon.formats.values import date_objects, wib_dates
from recon.store.engine import as_frame, database_error, minor_amount, to_utc
from recon.store.lookups import (
    ArrowLookups,
    Lookups,
    SqlLookups,
    keyed_by,
    load_connection,
    object_frame,
    written_in,
)
from recon.store.tables import ovo_payments, ovo_refunds, recon_exceptions, recon_ledger


@dataclass(frozen=True)
class RunInputs:
    """What the store hands the matching engine for one settlement date."""

    payments: pd.DataFrame
    refunds: pd.DataFrame
    ledger: pd.DataFrame
    open_items: pd.DataFrame


def window_bounds(dates: Sequence[dt.date]) -> tuple[dt.datetime, dt.datetime]:
    """UTC bounds around the covered WIB dates, a day wider; exact filtering is in pandas."""
    start = dt.datetime.combine(min(dates) - dt.timedelta(days=1), dt.time())
    end = dt.datetime.combine(max(dates) + dt.timedelta(days=2), dt.time())
    return start.replace(tzinfo=dt.UTC), end.replace(tzinfo=dt.UTC)


def _dates(values: pd.Series) -> pd.Series:
    """Database dates (date objects; text from SQLite) -> datetime.date objects."""
    if values.empty or isinstance(values.iloc[0], dt.date):
        return values.astype("object")
    parsed = pd.to_datetime(values.astype("str"), format="%Y-%m-%d")
    return date_objects(parsed, values.index)


def _distinct(column: pd.Series) -> pa.Array:
    """The distinct non-empty texts of `column`, as an Arrow array."""
    return _named(pc.unique(text_array(column)))


def _named(keys: pa.Array) -> pa.Array:
    """The non-empty `keys`."""
    return keys.filter(pc.not_equal(keys, ""))


class WindowLoad:
    """The payments and refunds of the covered window, and the ledger entries of other
    dates whose settle key is one of those payments' keys, loading on a connection of
    their own while the file is read: they do not depend on it. The lookups the file's
    keys need follow in `load_run_inputs`; this load's database errors surface there.

    The ledger's lookup is a join in the database of the window's payments with the
    ledger: a million keys of the file are not sent to be joined against, and the lookup,
    whose time grows with the ledger, is done while the file is read. The window holds
    every payment the file names but a few (other dates, unknown keys); `load_run_inputs`
    looks those up by their keys.

    The load runs in a daemon thread: a run that fails before it needs the window (a
    rejected file, an interrupt) ends at once instead of waiting for the query, and the
    connection closes with the process or when the query ends.

    `alone`: nothing else runs meanwhile (the loader needs the window at once), so on
    PostgreSQL the payments come in two halves on two connections. Beside the file's read
    one connection is enough: two took the cores from the read (at 1M rows the read step
    took 6.4 s against 4.6 s, and the load was no faster).

    The payments and refunds are handed over (`records`) before the ledger's entries
    (`ledger`): the loader looks the file's other keys up while the ledger's join runs.
    Alone, at 1M rows with a day of other entries in the ledger, the join took 0.47-0.70 s
    after the payments, which the loader waited for."""

    def __init__(self, engine: Engine, merchant_id: str, settlement_date: dt.date,
                 covered: Sequence[dt.date], alone: bool = False) -> None:
        self.key = (merchant_id, settlement_date, tuple(covered))
        self._holds_off_writers = engine.dialect.name == "sqlite"
        self._records: Future[tuple[pd.DataFrame, pd.DataFrame]] = Future()
        self._ledger: Future[pd.DataFrame] = Future()
        task = partial(_settle_window, self._records, self._ledger,
                       partial(load_window, engine, merchant_id, settlement_date, covered,
                               alone))
        # Each connection to an in-memory SQLite database is a database of its own.
        if engine.dialect.name == "sqlite" and engine.url.database in (None, "", ":memory:"):
            task()
        else:
            threading.Thread(target=task, name="recon-window", daemon=True).start()

    def records(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The window's payments and refunds, handed over once: this object does not keep
        a million rows alive for the rest of the run."""
        future, self._records = self._records, _taken_already()
        return future.result()

    def ledger(self) -> pd.DataFrame:
        """The window's ledger entries, handed over once."""
        future, self._ledger = self._ledger, _taken_already()
        return future.result()

    def result(self) -> Window:
        """The whole window, handed over once."""
        return Window(*self.records(), self.ledger())

    def let_writers_in(self) -> None:
        """On SQLite a reader holds off every writer: wait until the load has ended (an
        error is raised by `records` or `ledger`). Called before the run lock is taken."""
        if self._holds_off_writers:
            futures_wait([self._records, self._ledger])


def _taken_already() -> Future[Any]:
    """What stands for a part of a window's load once it is handed over."""
    taken: Future[Any] = Future()
    taken.set_exception(RuntimeError("the window's load was taken already"))
    return taken


@dataclass(frozen=True)
class Window:
    """What `WindowLoad` loads: the window's payments (PAYMENTS) and refunds (as the
    database gives them), and the ledger entries of the merchant's other dates whose
    settle key is one of those payments' keys (as `fetch_ledger_of` gives them)."""

    payments: pd.DataFrame
    refunds: pd.DataFrame
    ledger: pd.DataFrame


#: What a window's load calls with the window's payments and refunds once it has them.
OnRecords = Callable[[pd.DataFrame, pd.DataFrame], None]


def _settle_window(records: Future[tuple[pd.DataFrame, pd.DataFrame]],
                   ledger: Future[pd.DataFrame],
                   task: Callable[[OnRecords], pd.DataFrame]) -> None:
    """Run a window's load (`load_window`): its payments and refunds into `records` when
    it has them, its ledger entries into `ledger`; a failure into each not yet set."""
    try:
        ledger.set_result(task(lambda payments, refunds: records.set_result(
            (payments, refunds))))
    except BaseException as exc:  # raised where the window is asked for
        for future in (records, ledger):
            if not future.done():
                future.set_exception(exc)


def settle_future(future: Future[Any], task: Callable[[], Any]) -> None:
    future.set_running_or_notify_cancel()
    try:
        future.set_result(task())
    except BaseException as exc:  # raised where the result is asked for
        future.set_exception(exc)


def load_window(engine: Engine, merchant_id: str, settlement_date: dt.date,
                covered: Sequence[dt.date], halves: bool,
                on_records: OnRecords) -> pd.DataFrame:
    """The window's payments and refunds, given to `on_records`, then its ledger entries,
    returned."""
    start, end = window_bounds(covered)
    if engine.dialect.name == "postgresql":
        return _arrow_window(engine, merchant_id, settlement_date, covered, start, end, halves,
                             on_records)
    with engine.connect() as conn:
        lookups = SqlLookups(conn)
        lo, hi = start.replace(tzinfo=None), end.replace(tzinfo=None)
        payments = _payment_frame(lookups.fetch(*_window_payments(lookups, merchant_id, lo, hi)),
                                  merchant_id)
        on_records(payments, fetch_window_refunds(lookups, merchant_id, lo, hi))
        return fetch_window_ledger(lookups, merchant_id, settlement_date, lo, hi, len(payments))


#: Payments a batch of the window's holds (SQLite, MariaDB; ADBC sends PostgreSQL's in
#: batches of its own).
WINDOW_BATCH_ROWS = 500_000


def window_payment_batches(engine: Engine, merchant_id: str, covered: Sequence[dt.date],
                           batch_rows: int = WINDOW_BATCH_ROWS) -> Iterator[pd.DataFrame]:
    """The window's payments (what `WindowLoad` loads as its payments) a batch from the
    database at a time, of the PAYMENTS columns: memory for one batch, where the window
    whole is about a row of the file per payment. `StoreError` for the database."""
    start, end = window_bounds(covered)
    try:
        for raw in _window_payment_batches(engine, merchant_id, start, end, batch_rows):
            frame = _payment_frame(raw, merchant_id)
            if not frame.empty:
                yield frame
    except (SQLAlchemyError, adbc_driver_manager.Error) as exc:
        raise database_error(engine, exc) from exc


def _window_payment_batches(engine: Engine, merchant_id: str, start: dt.datetime,
                            end: dt.datetime, batch_rows: int) -> Iterator[pd.DataFrame]:
    """The window's payments as the database gives them, a batch at a time."""
    if engine.dialect.name == "postgresql":
        with ArrowLookups(engine) as arrow:
            query, names = _window_payments(arrow, merchant_id, start, end)
            arrow.cursor.execute(written_in(query, arrow.dialect))
            for batch in arrow.cursor.fetch_record_batch():
                yield arrow_frame(pa.Table.from_batches([batch]).rename_columns(list(names)))
        return
    with engine.connect() as conn:
        query, names = _window_payments(SqlLookups(conn), merchant_id,
                                        start.replace(tzinfo=None), end.replace(tzinfo=None))
        result = conn.execution_options(stream_results=True).execute(query)
        for rows in result.partitions(batch_rows):
            yield object_frame(rows, names)


def _arrow_window(engine: Engine, merchant_id: str, settlement_date: dt.date,
                  covered: Sequence[dt.date], start: dt.datetime, end: dt.datetime,
                  halves: bool, on_records: OnRecords) -> pd.DataFrame:
    """The window through ADBC (`load_window`). With `halves` the payments come in two
    halves of the covered days, on two connections at once: each server process scans and
    sends its half (at 1M rows 0.77–0.89 s, against 0.90–0.91 s on one connection). The
    refunds and the ledger's entries follow on the first connection."""
    middle, later = end, None
    if halves:
        first_day, last_day = min(covered), max(covered) + dt.timedelta(days=1)
        middle = (dt.datetime.combine(first_day, dt.time(), WIB)
                  + (last_day - first_day) / 2).astimezone(dt.UTC)
        later = Future[pa.Table]()
        threading.Thread(target=settle_future, name="recon-window-half", daemon=True,
                         args=(later, partial(_arrow_payments, engine, merchant_id, middle,
                                              end))).start()
    with ArrowLookups(engine) as arrow:
        table = arrow.fetch_table(*_window_payments(arrow, merchant_id, start, middle))
        arrow.use_lookup_settings()  # its range scan done: the refunds' payments are found by key
        if later is not None:  # waited for: its connection closes when its query ends
            table = pa.concat_tables([table, later.result()])
        # The database finds the refunds and joins the ledger while the payments become a
        # frame here.
        refunds, ledger = Future[pd.DataFrame](), Future[pd.DataFrame]()
        payments = table.num_rows

        def queries() -> pd.DataFrame:  # the refunds as soon as found, then the entries
            settle_future(refunds, partial(fetch_window_refunds, arrow, merchant_id, start, end))
            refunds.result()  # the refunds' failure is the ledger's too
            return fetch_window_ledger(arrow, merchant_id, settlement_date, start, end, payments)

        threading.Thread(target=settle_future, args=(ledger, queries),
                         name="recon-window-queries", daemon=True).start()
        try:
            # Each column in one chunk (ADBC sends a batch at a time), one at a time.
            names, columns = table.column_names, table.columns
            del table
            for i, column in enumerate(columns):
                columns[i] = one_chunk(column)
                del column
            on_records(_payment_frame(arrow_frame(pa.table(columns, names=names)),
                                      merchant_id), refunds.result())
            return ledger.result()
        finally:
            futures_wait([ledger])  # the connection is not closed under its queries


def _window_queries(lookups: Lookups, merchant_id: str, settlement_date: dt.date,
                    lo: Any, hi: Any, payments: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The window's refunds and ledger entries, on the connection that read its payments
    (`payments` of them), once they are read."""
    return (fetch_window_refunds(lookups, merchant_id, lo, hi),
            fetch_window_ledger(lookups, merchant_id, settlement_date, lo, hi, payments))


def _arrow_payments(engine: Engine, merchant_id: str, lo: dt.datetime,
                    hi: dt.datetime) -> pa.Table:
    with ArrowLookups(engine) as arrow:
        return arrow.fetch_table(*_window_payments(arrow, merchant_id, lo, hi))


def _window_payments(lookups: Lookups, merchant_id: str, lo: Any,
                     hi: Any) -> tuple[Any, list[str]]:
    """The query of the window's payments from `lo` to `hi`, and its column names: the
    payment columns but the merchant, which the query fixes."""
    t = ovo_payments
    columns = [c for c in _payment_columns(lookups) if c.name != "merchant_id"]
    return (select(*columns).where(t.c.merchant_id == merchant_id, t.c.transaction_time >= lo,
                                   t.c.transaction_time < hi), [c.name for c in columns])


def fetch_window_refunds(lookups: Lookups, merchant_id: str, lo: Any, hi: Any) -> pd.DataFrame:
    t, r = ovo_payments, ovo_refunds
    columns = _refund_columns(lookups)
    # The refunds table has no merchant column: a refund belongs to its payment's merchant.
    merchants_payments = select(t.c.partner_reference_no).where(t.c.merchant_id == merchant_id)
    return lookups.fetch(select(*columns).where(
        r.c.refund_time >= lo, r.c.refund_time < hi,
        r.c.original_partner_reference_no.in_(merchants_payments)), [c.name for c in columns])


def fetch_window_ledger(lookups: Lookups, merchant_id: str, settlement_date: dt.date,
                        lo: Any, hi: Any, payments: int) -> pd.DataFrame:
    """The ledger entries of the merchant's other dates whose settle key is one of the
    keys of its `payments` payments from `lo` to `hi` (the window's), joined in the
    database."""
    t = ovo_payments
    keys = select(t.c.partner_reference_no).where(
        t.c.merchant_id == merchant_id, t.c.transaction_time >= lo, t.c.transaction_time < hi)
    with lookups.probing_ledger(payments):
        return lookups.fetch(select(*LEDGER_COLUMNS).where(
            *_of_other_dates(merchant_id, settlement_date), recon_ledger.c.settle_key.in_(keys)),
            _LEDGER_NAMES)


def load_run_inputs(
    engine: Engine,
    merchant_id: str,
    settlement_date: dt.date,
    covered: Sequence[dt.date],
    rows: pd.DataFrame,
    window: WindowLoad | None = None,
) -> RunInputs:
    """Records for the covered window, plus those the file and the open items refer to.

    `window` is the window's load when it was started before the file was read. The keys
    the file names go into temporary tables once and every lookup is a join against
    them. On PostgreSQL this runs through ADBC: keys in by COPY, rows out as Arrow.
    """
    if window is None:
        window = WindowLoad(engine, merchant_id, settlement_date, covered, alone=True)
    elif window.key != (merchant_id, settlement_date, tuple(covered)):
        raise ValueError(f"the window loaded is {window.key}, not {merchant_id} "
                         f"{settlement_date} {covered}")
    try:
        with load_connection(engine) as (conn, lookups):
            open_items = _load_open_items(conn, merchant_id, settlement_date)
            payments, refunds, ledger = _load_records(
                lookups, window, merchant_id, settlement_date, rows, open_items)
    except (SQLAlchemyError, adbc_driver_manager.Error) as exc:
        raise database_error(engine, exc) from exc
    return RunInputs(payments, refunds, ledger, open_items)


class _WindowSource(Protocol):
    def records(self) -> tuple[pd.DataFrame, pd.DataFrame]: ...

    def ledger(self) -> pd.DataFrame: ...


@dataclass(frozen=True)
class _GivenWindow:
    """A window loaded already (a part's, in a run in parts)."""

    window: Window

    def records(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        return self.window.payments, self.window.refunds

    def ledger(self) -> pd.DataFrame:
        return self.window.ledger


def _load_records(lookups: Lookups, window: _WindowSource, merchant_id: str,
                  settlement_date: dt.date, rows: pd.DataFrame,
                  open_items: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """What does not depend on the window is looked up while it loads: the refund keys go
    in, then the refunds they name and the ledger entries they settle. The window tells
    which of the file's invoices are not among its payments: those are the invoices whose
    ledger entries are looked up here (the window's payments' entries come with the
    window, and are waited for last).

    At 1M rows with a day of other entries in the ledger, the refund keys' entries (40,000
    keys, probed) took 0.3 s after the window's payments, and now go on beside them."""
    refund_rows = rows.loc[rows["transaction_type"] == cat.REFUND,  # the columns read
                           ["merchant_invoice", "refund_invoice", "ovo_reference_no"]]
    # The invoices as they are: a million keys, of which a handful repeat, where a set
    # of them would take a hash of every key (a key table may hold one twice).
    file_keys = {"inv": _named(text_array(rows["merchant_invoice"])),
                 "rinv": _distinct(refund_rows["refund_invoice"]),
                 "rno": _distinct(refund_rows["ovo_reference_no"])}
    named = pa.concat_arrays(list(file_keys.values()))
    lookups.add_keys({"rinv": file_keys["rinv"], "rno": file_keys["rno"],
                      "oref": _distinct(
                          open_items.loc[open_items["kind"] == cat.REFUND, "record_key"])})
    named_refunds = _named_refunds(lookups)
    # The refund keys' own entries while the window loads: they need nothing of it.
    refund_rows_ledger = _named_ledger(lookups, merchant_id, settlement_date, ["rinv", "rno"],
                                       len(file_keys["rinv"]) + len(file_keys["rno"]))
    window_payments, window_refunds = window.records()
    # Which invoices are the window's payments: joined here while the refunds are queried.
    window_keys = text_array(window_payments["partner_reference_no"])  # primary keys
    with ThreadPoolExecutor(1, thread_name_prefix="recon-seen") as pool:
        seeing = pool.submit(lambda: found_both_ways(window_keys, file_keys["inv"])[1])
        refunded = _refunded_payments(refund_rows, window_refunds, file_keys["inv"])
        # Their refunds are loaded, and their earlier refund entries (`_load_ledger`).
        lookups.add_keys({"rorig": refunded})
        refunds = _load_refunds(lookups, window_refunds, named_refunds)
        seen = seeing.result()
    open_payments = _distinct(open_items.loc[open_items["kind"] == cat.PAYMENT, "record_key"])
    payments, outside, unnamed = load_payments(lookups, window_payments, window_keys, seen,
                                                file_keys, named, open_payments)
    del window_payments
    # The file's invoices the window's payments are not: their entries by settle key.
    lookups.add_keys({"file": outside})
    by_settle_key = [refund_rows_ledger,
                     _named_ledger(lookups, merchant_id, settlement_date, ["file"], len(outside))]
    refund_keys = text_array(refunds["partner_refund_no"])  # distinct already
    lookups.add_keys({"rec_only": pa.concat_arrays([
        unnamed, refund_keys.filter(pa.array(~found_in(refund_keys, named)))]),
        "rkey": refund_keys})
    ledger = _load_ledger(lookups, merchant_id, settlement_date, window.ledger,
                          by_settle_key, refunded, refund_keys)
    return payments, refunds, ledger


def _time_column(lookups: Lookups, column: Any, label: str) -> Any:
    """A time column: typed on PostgreSQL, as stored (text or datetime) elsewhere."""
    if lookups.dialect.name == "postgresql":
        return column.label(label)
    return type_coerce(column, String).label(label)


_PAYMENT_COLUMNS = [ovo_payments.c.partner_reference_no, ovo_payments.c.reference_no,
                    ovo_payments.c.merchant_id, ovo_payments.c.store_id,
                    minor_amount(ovo_payments.c.amount).label("amount"), ovo_payments.c.pay_option,
                    ovo_payments.c.status]


def _payment_columns(lookups: Lookups) -> list[Any]:
    return [*_PAYMENT_COLUMNS, _time_column(lookups, ovo_payments.c.transaction_time,
                                            "transaction_time")]


def _payment_frame(raw: pd.DataFrame, merchant_id: str | None = None) -> pd.DataFrame:
    """Payments as the database gave them -> the PAYMENTS column types (the window's in
    the thread that loads them). `merchant_id` fills the merchant of the window's
    payments, which their query does not fetch."""
    frame = raw.copy(deep=False)  # copy-on-write: the columns replaced are new ones
    # A few values each over millions of rows: categoricals (at 10M rows 0.4 GB less).
    if merchant_id is not None:
        frame["merchant_id"] = pd.Series(pd.Categorical.from_codes(
            np.zeros(len(frame), dtype=np.int8), pd.Index([merchant_id], dtype="str")),
            index=frame.index)
    if frame.empty:
        return frame
    frame["amount"] = frame["amount"].astype("Int64")
    frame["transaction_time"] = to_utc(frame["transaction_time"])
    frame["transaction_date"] = wib_dates(frame["transaction_time"])
    if merchant_id is None:
        frame["merchant_id"] = label_column(frame["merchant_id"])
    frame["store_id"] = label_column(frame["store_id"])
    frame["status"] = label_column(frame["status"], lambda value: str(value).strip())
    frame["pay_option"] = label_column(frame["pay_option"],
                                       lambda value: str(value).strip().upper())
    return frame


def load_payments(lookups: Lookups, window: pd.DataFrame, window_keys: pa.Array,
                   seen: np.ndarray, file_keys: dict[str, pa.Array], named: pa.Array,
                   open_payments: pa.Array) -> tuple[pd.DataFrame, pa.Array, pa.Array]:
    """The window's payments, plus those the file or the open items name elsewhere; the
    file's invoices that are no key of the window's payments; and the keys of the
    payments found elsewhere that no key of the file (`named`: all of them) names.

    `seen`: which of the file's invoices are keys of the window's payments (`window_keys`),
    one lookup of a million among a million: the others are looked for elsewhere. The
    window's payments need no such list: their ledger entries came with the window
    (`fetch_window_ledger`)."""
    columns = _payment_columns(lookups)
    invoices = file_keys["inv"]
    lookups.add_keys({"pay": pa.concat_arrays([
        invoices.filter(pa.array(~seen)),
        open_payments.filter(pa.array(~found_in(open_payments, window_keys)))])})
    extra = lookups.fetch(keyed_by(columns, ovo_payments.c.partner_reference_no, ["pay"]),
                          [c.name for c in columns])
    if not extra.empty:  # a key the database compares without case may find a window row
        keys = text_array(extra["partner_reference_no"])
        again = window_keys.filter(pc.is_in(window_keys, value_set=keys))
        extra = extra.loc[~np.asarray(pc.is_in(keys, value_set=again))].drop_duplicates(
            "partner_reference_no")
    extra_keys = text_array(extra["partner_reference_no"])
    unnamed = extra_keys.filter(pa.array(~found_in(extra_keys, named)))
    outside = invoices.filter(pa.array(~seen))
    frames = [frame for frame in (window, _payment_frame(extra)) if not frame.empty]
    if not frames:
        return empty_frame(PAYMENTS), outside, unnamed
    frame = frames[0] if len(frames) == 1 else concat_labelled(frames, PAYMENT_LABELS)
    return conform(frame, PAYMENTS, "payments"), outside, unnamed


def _refund_columns(lookups: Lookups) -> list[Any]:
    t = ovo_refunds
    return [t.c.partner_refund_no, t.c.original_partner_reference_no, t.c.refund_no,
            minor_amount(t.c.refund_amount).label("refund_amount"),
            _time_column(lookups, t.c.refund_time, "refund_time"), t.c.status]


def _refunded_payments(refund_rows: pd.DataFrame, window: pd.DataFrame,
                       invoices: pa.Array) -> pa.Array:
    """The file's payments whose every refund the run needs, and every earlier refund
    entry: those its refund rows name (matching by payment and amount, refunds settled per
    payment) and those with a refund in the window (refund deltas). Not every payment of
    the file: a million keys, where the refunds of the others are never read."""
    in_window = _distinct(window["original_partner_reference_no"]).cast(invoices.type)
    return pc.unique(pa.concat_arrays([
        _distinct(refund_rows["merchant_invoice"]).cast(invoices.type),
        invoices.filter(pc.is_in(invoices, value_set=in_window))]))


def _refunds_of(lookups: Lookups, column: Any, *tags: str) -> pd.DataFrame:
    """The refunds whose `column` is one of the loaded keys with one of `tags`."""
    columns = _refund_columns(lookups)
    return lookups.fetch(keyed_by(columns, column, tags), [c.name for c in columns])


def _named_refunds(lookups: Lookups) -> list[pd.DataFrame]:
    """The refunds of the file's refund numbers and of the open items (those the window
    holds too are dropped in `_load_refunds`)."""
    t = ovo_refunds
    return [_refunds_of(lookups, t.c.partner_refund_no, "rinv", "oref"),
            _refunds_of(lookups, t.c.refund_no, "rno")]


def _load_refunds(lookups: Lookups, window: pd.DataFrame,
                  named: list[pd.DataFrame]) -> pd.DataFrame:
    """The window's refunds, plus those elsewhere of the payments in the "rorig" key
    table (`_refunded_payments`), and the `named` ones (`_named_refunds`)."""
    by_payment = _refunds_of(lookups, ovo_refunds.c.original_partner_reference_no, "rorig")
    frame = pd.concat([window, by_payment, *named],
                      ignore_index=True).drop_duplicates("partner_refund_no")
    if frame.empty:
        return empty_frame(REFUNDS)
    frame["refund_amount"] = frame["refund_amount"].astype("Int64")
    frame["refund_time"] = to_utc(frame["refund_time"])
    frame["refund_date"] = wib_dates(frame["refund_time"])
    frame["status"] = frame["status"].fillna("").astype("str").str.strip()
    return conform(frame, REFUNDS, "refunds")


LEDGER_COLUMNS = [*(recon_ledger.c[name] for name in (
    "settlement_date", "kind", "settle_key", "record_key", "original_reference_no")),
    minor_amount(recon_ledger.c.amount).label("amount"), recon_ledger.c.line_no]


_LEDGER_NAMES = [c.name for c in LEDGER_COLUMNS]


def _of_other_dates(merchant_id: str, settlement_date: dt.date) -> tuple[Any, Any]:
    """Where a ledger entry is the merchant's, of a date other than `settlement_date`."""
    t = recon_ledger
    return t.c.merchant_id == merchant_id, t.c.settlement_date != settlement_date


def fetch_ledger_of(lookups: Lookups, merchant_id: str, settlement_date: dt.date,
                    column: Any, tags: Sequence[str], *conditions: Any) -> pd.DataFrame:
    """The ledger entries of the merchant's other dates whose `column` is one of the keys
    with one of `tags` and that meet `conditions`."""
    return lookups.fetch(keyed_by(LEDGER_COLUMNS, column, tags,
                                  *_of_other_dates(merchant_id, settlement_date), *conditions),
                         _LEDGER_NAMES)


def _named_ledger(lookups: Lookups, merchant_id: str, settlement_date: dt.date,
                  tags: Sequence[str], keys: int) -> pd.DataFrame:
    """The entries whose settle key is one of the `keys` keys of the key tables `tags`
    (the file's keys that are no window payment's: duplicates of this file's rows)."""
    with lookups.probing_ledger(keys):
        return fetch_ledger_of(lookups, merchant_id, settlement_date, recon_ledger.c.settle_key,
                               tags)


def _load_ledger(lookups: Lookups, merchant_id: str, settlement_date: dt.date,
                 window_ledger: Callable[[], pd.DataFrame], by_settle_key: list[pd.DataFrame],
                 refunded: pa.Array, refund_keys: pa.Array) -> pd.DataFrame:
    """The entries found by settle key (the window's payments', asked of `window_ledger`
    once the others are found, and `_named_ledger`'s), plus those of the other records the
    file does not name, and the refund entries the match reads through a refund or a
    payment.

    An entry's record key differs from its settle key only for a refund row's entry (a
    payment row's record is its invoice, or none), and its original payment only for a
    refund row's too. The match reads such an entry through its record, a refund
    (`refund_keys`, the refunds loaded: duplicates of a refund record, records settled),
    or through its original payment when that payment's refunds are added up
    (`refunded`: the payments a refund row of the file names, or with a refund in the
    window). Looked up among the file's million keys instead, they found the same
    entries and others no check reads, and took 0.45-0.58 s (by original payment) and
    0.27-0.43 s (by record) where these take 0.05-0.10 s each (1M rows, with an earlier
    day of 1M entries in the ledger)."""
    t = recon_ledger

    def differing(column: Any, tag: str, keys: pa.Array) -> pd.DataFrame:
        """The entries whose `column`, not their settle key, is one of `keys` (the key
        table `tag`), exactly: a database that compares without case finds others too."""
        found = fetch_ledger_of(lookups, merchant_id, settlement_date, column, [tag],
                                column != t.c.settle_key)
        return found.loc[positions_in(text_array(found[column.name]), keys)[0]]

    found = [
        *by_settle_key,
        fetch_ledger_of(lookups, merchant_id, settlement_date, t.c.settle_key, ["rec_only"],
                        t.c.record_key == t.c.settle_key),
        differing(t.c.record_key, "rkey", refund_keys),
        differing(t.c.original_reference_no, "rorig", refunded)]
    return _ledger_frame([window_ledger(), *found])


def _ledger_frame(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Ledger entries as the database gave them, each once, of the LEDGER types."""
    frame = pd.concat(frames, ignore_index=True).drop_duplicates(
        ["settlement_date", "line_no"])  # an entry: a date's line (its one run's)
    if frame.empty:
        return empty_frame(LEDGER)
    frame["settlement_date"] = _dates(frame["settlement_date"])
    frame["amount"] = frame["amount"].astype("Int64")
    frame["line_no"] = frame["line_no"].astype("Int64").astype("int64")
    return conform(frame, LEDGER, "ledger")


@dataclass(frozen=True)
class TieRecords:
    """What a run in parts loads before its parts (`load_tie_records`): what can tie two
    payments into one group, loaded whole."""

    refund_rows: pd.DataFrame  # the file's refund rows (REFUND_ROW_COLUMNS)
    refunds: pd.DataFrame  # every refund a part's load can find (REFUNDS), and more
    ledger: pd.DataFrame  # every entry that can tie two payments (LEDGER), and more
    window_refunds: pd.DataFrame  # the window's refunds, as the database gives them
    window_ledger: pd.DataFrame  # the window's payments' entries of other dates, as given
    open_items: pd.DataFrame  # OPEN_ITEMS


def load_tie_records(engine: Engine, merchant_id: str, settlement_date: dt.date,
                     covered: Sequence[dt.date], refund_rows: pd.DataFrame) -> TieRecords:
    """What the payment groups of a run in parts come from, before its parts are loaded:
    the file's refund rows and what can tie two payments: every refund a part's
    load can find (the window's, those the refund rows and the open items name, and those
    of the payments the refund rows name or the window's refunds are of), every ledger
    entry of other dates whose settle key is a refund row's key or whose record is one of
    those refunds, and every payment entry of other dates whose settle key or record is
    not its payment's (none the matcher writes). More than the whole run loads, so the
    groups are those of the whole run or coarser: a part still holds whole groups. Also
    the window's refunds, the window's payments' ledger entries and the open items, which
    the parts take by the part of their payment."""
    start, end = window_bounds(covered)
    lo, hi = ((start, end) if engine.dialect.name == "postgresql"
              else (start.replace(tzinfo=None), end.replace(tzinfo=None)))
    refund_rows = refund_rows.loc[refund_rows["transaction_type"] == cat.REFUND]
    try:
        with load_connection(engine) as (conn, lookups):
            open_items = _load_open_items(conn, merchant_id, settlement_date)
            t = ovo_payments
            payments = int(conn.execute(select(func.count()).select_from(t).where(
                t.c.merchant_id == merchant_id, t.c.transaction_time >= lo,
                t.c.transaction_time < hi)).scalar_one())
            window_refunds, window_ledger = _window_queries(
                lookups, merchant_id, settlement_date, lo, hi, payments)
            refund_numbers = _distinct(refund_rows["refund_invoice"])
            references = _distinct(refund_rows["ovo_reference_no"])
            lookups.add_keys({"rinv": refund_numbers, "rno": references, "oref": _distinct(
                open_items.loc[open_items["kind"] == cat.REFUND, "record_key"])})
            named = _named_refunds(lookups)
            lookups.add_keys({"rorig": pc.unique(pa.concat_arrays([
                _distinct(refund_rows["merchant_invoice"]),
                _distinct(window_refunds["original_partner_reference_no"])]))})
            refunds = _load_refunds(lookups, window_refunds, named)
            lookups.add_keys({"file": pc.unique(pa.concat_arrays([refund_numbers, references])),
                              "rkey": text_array(refunds["partner_refund_no"])})
            r = recon_ledger
            ledger = _ledger_frame([
                window_ledger,
                fetch_ledger_of(lookups, merchant_id, settlement_date, r.c.settle_key, ["file"]),
                fetch_ledger_of(lookups, merchant_id, settlement_date, r.c.record_key, ["rkey"]),
                lookups.fetch(select(*LEDGER_COLUMNS).where(
                    *_of_other_dates(merchant_id, settlement_date), r.c.kind == cat.PAYMENT,
                    or_(r.c.original_reference_no != r.c.settle_key,
                        r.c.record_key != r.c.settle_key)), _LEDGER_NAMES)])
    except (SQLAlchemyError, adbc_driver_manager.Error) as exc:
        raise database_error(engine, exc) from exc
    return TieRecords(refund_rows=refund_rows, refunds=refunds, ledger=ledger,
                      window_refunds=window_refunds, window_ledger=window_ledger,
                      open_items=open_items)


def load_part_records(engine: Engine, merchant_id: str, settlement_date: dt.date,
                      rows: pd.DataFrame, window: Window, open_items: pd.DataFrame
                      ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """A part's payments, refunds and ledger entries, as `load_run_inputs` loads a file's:
    `rows` are the part's, `window` its window (its payments, and its share of the
    window's refunds and ledger entries), `open_items` its open items. Each lookup is
    keyed by the part's keys on a connection of its own."""
    try:
        with load_connection(engine) as (_, lookups):
            return _load_records(lookups, _GivenWindow(window), merchant_id, settlement_date,
                                 rows, open_items)
    except (SQLAlchemyError, adbc_driver_manager.Error) as exc:
        raise database_error(engine, exc) from exc


def _load_open_items(conn: Any, merchant_id: str, settlement_date: dt.date) -> pd.DataFrame:
    """MISSING_IN_SETTLEMENT items of earlier dates that were open just before this date."""
    t = recon_exceptions
    columns = [t.c.exception_id, t.c.settlement_date.label("opened_date"), t.c.kind,
               t.c.record_key, minor_amount(t.c.record_amount).label("amount"), t.c.record_date]
    query = select(*columns).where(
        t.c.merchant_id == merchant_id,
        t.c.category == cat.MISSING_IN_SETTLEMENT,
        t.c.settlement_date < settlement_date,
        or_(t.c.state == "open", t.c.closed_by_date >= settlement_date),
    )
    frame = as_frame(list(conn.execute(query)), [c.name for c in columns])
    if frame.empty:
        return empty_frame(OPEN_ITEMS)
    return conform(frame, OPEN_ITEMS, "open items")
