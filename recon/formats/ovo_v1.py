"""OVO's D+1 settlement file (SPEC section 3), declared: its columns, in order, with the
keys' widths the database keeps; the delimiters and trailer are the declaration's
defaults. Known to the configuration's `profile` by name."""

from __future__ import annotations

from recon.core.errors import ConfigError
from recon.formats.declaration import (
    DATE,
    DATETIME,
    MONEY,
    PAYMENT_SOURCE,
    TRANSACTION_TYPE,
    Column,
    FileFormat,
)

OVO_V1 = FileFormat(
    name="ovo-v1",
    columns=(
        Column("SettlementDate", "settlement_date", DATE),
        Column("TransactionDateTime", "transaction_time", DATETIME),
        Column("MerchantID", "merchant_id", key_length=32),
        Column("StoreID", "store_id", required=False),
        Column("MerchantInvoice", "merchant_invoice", mandatory_value=True, key_length=64),
        Column("RefundInvoice", "refund_invoice", required=False, key_length=64),
        Column("OVOReferenceNo", "ovo_reference_no", key_length=64),
        Column("TransactionType", "transaction_type", TRANSACTION_TYPE),
        Column("PaymentSource", "payment_source", PAYMENT_SOURCE),
        Column("GrossAmount", "gross", MONEY),
        Column("MDRAmount", "mdr", MONEY),
        Column("TaxAmount", "tax", MONEY),
        Column("NetAmount", "net", MONEY),
    ),
)

PROFILES = {OVO_V1.name: OVO_V1}


def get_profile(name: str) -> FileFormat:
    try:
        return PROFILES[name]
    except KeyError as exc:
        known = ", ".join(sorted(PROFILES))
        raise ConfigError(f"unknown file profile {name!r} (known: {known})") from exc
