"""A settlement file written to disk in parts by its payment groups (`recon.inparts.spill`): each
part holds the rows the whole read gives that part, in file order, typed as the reader
types them; a rejected file leaves nothing behind."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recon.core.errors import FileRejected
from recon.core.schemas import SETTLEMENT_LABELS
from recon.formats.filegen import HEADER
from recon.formats.ovo_v1 import OVO_V1
from recon.formats.reader import read_settlement_file
from recon.inparts.parts import part_numbers
from recon.inparts.spill import REFUND_ROW_COLUMNS, SpillFailed, spill_settlement_file
from tests.test_reader import S, row, settlement_texts

AS_TEXT = dict.fromkeys(SETTLEMENT_LABELS, "str")


@st.composite
def files_with_refunds(draw: st.DrawFn) -> bytes:
    """Payment and refund rows of a few invoices (so keys repeat and refunds name each
    other's keys), some of them unreadable, with or without a trailer, either line end."""
    end = draw(st.sampled_from(["\n", "\r\n"]))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator=end)
    writer.writerow(HEADER)
    rows = draw(st.integers(0, 40))
    gross = 0
    for _ in range(rows):
        invoice = f"INV-{draw(st.integers(0, 9))}"
        if draw(st.booleans()):
            cells = row(MerchantInvoice=invoice, TransactionType="REFUND",
                        RefundInvoice=draw(st.sampled_from(["", "RF-1", "RF-2", "RF-3"])),
                        OVOReferenceNo=draw(st.sampled_from(["", "OVR-1", "OVR-2"])),
                        GrossAmount="-100.00", MDRAmount="0", TaxAmount="0",
                        NetAmount="-100.00")
            gross -= 10_000
        else:
            cells = row(MerchantInvoice=invoice, StoreID=draw(st.sampled_from(["ST01", "ST02"])))
            gross += 1_000_000
        if draw(st.sampled_from([False] * 9 + [True])):
            cells["TransactionDateTime"] = "not a time"
        writer.writerow(list(cells.values()))
    if draw(st.booleans()):
        writer.writerow(["TOTAL", str(rows), f"{gross / 100:.2f}", f"{gross / 100:.2f}"])
    return buffer.getvalue().encode()


def _check_spill(folder: Path, data: bytes, batch_bytes: int, parts: int,
                 ties: dict[str, str]) -> None:
    path = folder / "f.csv"
    path.write_bytes(data)
    spilled_to = folder / "spill"
    given_rows: list[pd.DataFrame] = []

    def groups_of(refund_rows: pd.DataFrame) -> dict[str, str]:
        given_rows.append(refund_rows)
        return ties

    try:
        whole = read_settlement_file(path, OVO_V1, S)
    except FileRejected as rejected:
        with pytest.raises(FileRejected) as raised:
            spill_settlement_file(path, OVO_V1, S, spilled_to, parts, groups_of,
                                  batch_bytes=batch_bytes)
        assert raised.value.fault == rejected.fault
        assert not spilled_to.exists()
        return
    spilled = spill_settlement_file(path, OVO_V1, S, spilled_to, parts, groups_of,
                                    batch_bytes=batch_bytes)
    rows = whole.rows
    expected = part_numbers(rows["merchant_invoice"], ties, parts)
    for part in range(parts):
        got = spilled.rows(part)
        assert all(isinstance(got[label].dtype, pd.CategoricalDtype)
                   for label in SETTLEMENT_LABELS)
        pd.testing.assert_frame_equal(
            got.astype(AS_TEXT), rows.loc[expected == part].reset_index(drop=True).astype(AS_TEXT))
    assert spilled.part_rows == [int((expected == part).sum()) for part in range(parts)]
    assert (spilled.trailer, spilled.sheet_format) == (whole.trailer, whole.sheet_format)
    refund_rows = rows.loc[rows["transaction_type"] == "REFUND", list(REFUND_ROW_COLUMNS)]
    assert len(given_rows) == 1
    pd.testing.assert_frame_equal(given_rows[0], refund_rows.reset_index(drop=True))
    assert sorted(p.name for p in spilled_to.iterdir()) == [
        f"part-{part:04d}.arrow" for part in range(parts)]
    spilled.remove()
    assert not spilled_to.exists()


#: Payments tied into groups, as `payment_groups` answers: each with its group's least key.
TIES = st.dictionaries(st.sampled_from([f"INV-{i}" for i in range(10)]),
                       st.sampled_from(["INV-0", "INV-1"]), max_size=6).map(
    lambda ties: {**ties, **{root: root for root in set(ties.values())}})


@settings(max_examples=120, deadline=None)
@given(settlement_texts(), st.integers(min_value=180, max_value=1200), st.integers(1, 4), TIES)
def test_a_file_spilled_in_parts_is_the_file_read_whole_split_by_part(
        tmp_path_factory: pytest.TempPathFactory, data: bytes, batch_bytes: int, parts: int,
        ties: dict[str, str]) -> None:
    """Every row in its part, in file order, typed as read; the trailer and layout; or the
    reader's fault and no folder left."""
    _check_spill(tmp_path_factory.mktemp("spill"), data, batch_bytes, parts, ties)


@settings(max_examples=60, deadline=None)
@given(files_with_refunds(), st.integers(min_value=180, max_value=900), st.integers(1, 5), TIES)
def test_the_refund_rows_go_to_the_groups_and_tied_payments_share_a_part(
        tmp_path_factory: pytest.TempPathFactory, data: bytes, batch_bytes: int, parts: int,
        ties: dict[str, str]) -> None:
    _check_spill(tmp_path_factory.mktemp("spill"), data, batch_bytes, parts, ties)


def test_tied_payments_are_in_one_part(tmp_path: Path) -> None:
    """A group's rows share its least key's part, whatever their own keys hash to."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HEADER)
    for i in range(200):
        writer.writerow(list(row(MerchantInvoice=f"INV-{i}").values()))
    (tmp_path / "f.csv").write_text(buffer.getvalue())
    ties = {f"INV-{i}": "INV-0" for i in range(0, 200, 7)}
    spilled = spill_settlement_file(tmp_path / "f.csv", OVO_V1, S, tmp_path / "s", 4,
                                    lambda _: ties, batch_bytes=1024)
    where = {invoice: part for part in range(4)
             for invoice in spilled.rows(part)["merchant_invoice"]}
    assert {where[key] for key in ties} == {where["INV-0"]}
    assert len(set(where.values())) > 1  # the others spread over the parts
    assert spilled.data_rows == 200


def test_a_spill_folder_that_is_there_already_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f.csv").write_text(",".join(HEADER) + "\n" + ",".join(row().values()) + "\n")
    (tmp_path / "s").mkdir()
    with pytest.raises(SpillFailed, match=r"f\.csv: cannot make the spill folder .*s "):
        spill_settlement_file(tmp_path / "f.csv", OVO_V1, S, tmp_path / "s", 2, lambda _: {})
    assert (tmp_path / "s").is_dir()  # not the spill's to remove
