"""The payment groups a file is matched in parts by (`recon.inparts.parts`); that matching in
parts gives the whole match's result is a property in test_properties.py."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from recon.core import categories as cat
from recon.inparts.parts import part_numbers, payment_groups
from tests.builders import (
    S,
    ledger_frame,
    payment_row,
    refund_row,
    refunds_frame,
    rows_frame,
)

REFUNDS = [("RF-A", "P-A", "OVR-A", "10.00", "00", "2026-11-28 10:00"),
           ("RF-B", "P-B", "OVR-B", "10.00", "00", "2026-11-28 10:00"),
           ("RF-C", "P-C", "OVR-C", "10.00", "00", "2026-11-28 10:00")]


def groups_of(rows: list[dict], entries: list[tuple] = ()) -> dict[str, str]:
    return payment_groups(rows_frame(rows), refunds_frame(REFUNDS), ledger_frame(list(entries)))


def test_payments_tied_by_nothing_are_groups_of_their_own() -> None:
    assert groups_of([payment_row("P-A", "10.00"), payment_row("P-B", "10.00"),
                      refund_row("P-A", "10.00", "RF-A"), refund_row("P-B", "10.00", "", "OVR-B"),
                      refund_row("P-C", "10.00")]) == {}


def test_a_refund_row_ties_its_payment_to_the_refunds_its_keys_name() -> None:
    assert groups_of([refund_row("P-B", "10.00", "RF-A")]) == {"P-A": "P-A", "P-B": "P-A"}
    assert groups_of([refund_row("P-C", "10.00", "", "OVR-B")]) == {"P-B": "P-B", "P-C": "P-B"}
    # A RefundInvoice and an OVOReferenceNo of two other payments: all three, one group.
    assert set(groups_of([refund_row("P-C", "10.00", "RF-A", "OVR-B")]).values()) == {"P-A"}


def test_refund_rows_of_one_settle_key_tie_their_payments() -> None:
    assert groups_of([refund_row("P-X", "10.00", "RF-SAME"),
                      refund_row("P-Y", "10.00", "RF-SAME")]) == {"P-X": "P-X", "P-Y": "P-X"}


def test_an_entry_of_another_date_ties_its_payment_to_the_rows_and_refunds_it_names() -> None:
    earlier = S - dt.timedelta(days=1)
    # A refund entry of P-C whose settle key a refund row of P-B has.
    assert groups_of([refund_row("P-B", "10.00", "RF-9")],
                     [(earlier, cat.REFUND, "RF-9", "", "P-C", "10.00")]) == {
        "P-B": "P-B", "P-C": "P-B"}
    # A refund entry of P-C recording P-A's refund.
    assert groups_of([], [(earlier, cat.REFUND, "RF-7", "RF-A", "P-C", "10.00")]) == {
        "P-A": "P-A", "P-C": "P-A"}
    # A payment entry as the matcher writes it ties nothing.
    assert groups_of([], [(earlier, cat.PAYMENT, "P-C", "P-C", "P-C", "10.00")]) == {}


def test_a_group_is_in_one_part_whatever_its_keys_hash_to() -> None:
    keys = [f"P-{i}" for i in range(200)]
    groups = {key: "P-0" for key in keys[:100]}
    numbers = part_numbers(pd.Series(keys, dtype="str"), groups, 7)
    assert len(set(numbers[:100].tolist())) == 1
    assert set(numbers.tolist()) == set(range(7))  # the others spread over every part
    assert (numbers == part_numbers(pd.Series(keys, dtype="str"), groups, 7)).all()
    assert np.issubdtype(numbers.dtype, np.integer)
