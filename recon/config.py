"""One typed settings object, read at the edge and passed inward as a value.

Sources, lowest to highest priority: built-in defaults, a TOML file (``--config`` or
``RECON_CONFIG``), ``RECON_<KEY>`` environment variables, command-line options.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import json
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from recon.core.errors import ConfigError
from recon.core.fees import ROUNDING_MODES, FeeRules
from recon.formats.declaration import ReadLimits, normalise_pay_option

SMTP_SECURITY = ("none", "starttls", "ssl")
#: Settings that only come from the environment, never from a file in a repository.
SECRET_KEYS = frozenset({"smtp_password", "sftp_password", "sftp_key_passphrase"})
#: Settings that can be read from a Prefect Secret block instead.
SECRET_BLOCK_KEYS = frozenset({*SECRET_KEYS, "database_url"})

@dataclass(frozen=True)
class Settings:
    merchant_id: str = ""
    database_url: str = "sqlite:///var/recon.db"
    source: str = "var/inbox"
    report_dir: Path = Path("var/reports")
    outbox: Path = Path("var/outbox")
    archive_dir: Path = Path("var/archive")
    # A run in parts on disk (`recon.inparts.run`): 0 holds the whole file in memory.
    parts: int = 0
    spill_dir: Path = Path("var/spill")
    file_name_pattern: str = "OVO_SETTLEMENT_{merchant_id}_{yyyymmdd}"
    profile: str = "ovo-v1"
    extra_holidays: tuple[dt.date, ...] = ()
    extra_working_days: tuple[dt.date, ...] = ()
    mdr_rates: Mapping[str, Decimal] = field(default_factory=dict)
    vat_rate: Decimal = Decimal("0.11")
    fee_tolerance: Decimal = Decimal("0.01")
    fee_rounding: str = "half_up"
    fee_decimals: int = 2
    refund_window_days: int = 60
    lock_wait_seconds: float = 30.0
    # A SQLite lock row whose heartbeat is older than this is a dead run's, taken over.
    lock_stale_seconds: float = 300.0
    merchant_id_pattern: str = r"^[A-Za-z0-9_-]{1,32}$"
    max_file_bytes: int = ReadLimits.max_file_bytes
    max_xlsx_uncompressed_bytes: int = ReadLimits.max_xlsx_uncompressed_bytes
    max_xlsx_ratio: int = ReadLimits.max_xlsx_ratio
    max_quoted_lines: int = ReadLimits.max_quoted_lines
    mail_from: str = "ovo-recon@localhost"
    mail_to: tuple[str, ...] = ("settlement-team@localhost",)
    mail_cc: tuple[str, ...] = ()
    mail_all_clear: bool = True
    # Who hears of a file missing or rejected, or a failed run (empty: mail_to).
    alert_to: tuple[str, ...] = ()
    smtp_host: str = ""
    smtp_port: int = 0
    smtp_security: str = "starttls"
    smtp_user: str = ""
    smtp_password: str = field(default="", repr=False)
    smtp_timeout: float = 30.0
    smtp_retries: int = 3
    smtp_backoff_seconds: float = 2.0
    smtp_ca_file: str = ""
    open_item_alert_days: int = 3
    # Exception cases: working days to acknowledge one, and for OVO to answer a claim; a
    # resolution of more than this amount at risk (IDR) needs a second person's approval.
    case_ack_sla_days: int = 2
    ovo_claim_sla_days: int = 5
    approval_threshold: Decimal = Decimal("1000000")
    # Where claims to OVO go: the address in the merchant's agreement with OVO.
    ovo_claims_to: tuple[str, ...] = ()
    file_deadline: dt.time = dt.time(12, 0)
    poll_seconds: float = 60.0
    sftp_known_hosts: str = "~/.ssh/known_hosts"
    sftp_key_file: str = ""
    sftp_key_passphrase: str = field(default="", repr=False)
    sftp_password: str = field(default="", repr=False)
    sftp_timeout: float = 30.0
    sftp_retries: int = 3
    sftp_backoff_seconds: float = 2.0
    sftp_done_marker: str = ""
    sftp_stable_seconds: float = 5.0
    merchants: tuple[Mapping[str, Any], ...] = ()
    secret_blocks: Mapping[str, str] = field(default_factory=dict)
    schedule_cron: str = "0 9 * * 1-5"
    deployment_name: str = "daily"

    @property
    def fee_rules(self) -> FeeRules:
        return FeeRules(
            mdr_rates=self.mdr_rates,
            vat_rate=self.vat_rate,
            tolerance=self.fee_tolerance,
            rounding=self.fee_rounding,
            decimals=self.fee_decimals,
        )

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @property
    def read_limits(self) -> ReadLimits:
        return ReadLimits(max_file_bytes=self.max_file_bytes,
                          max_xlsx_uncompressed_bytes=self.max_xlsx_uncompressed_bytes,
                          max_xlsx_ratio=self.max_xlsx_ratio,
                          max_quoted_lines=self.max_quoted_lines)

    @property
    def alert_recipients(self) -> tuple[str, ...]:
        return self.alert_to or self.mail_to

    def check_merchant_id(self, merchant_id: str, where: str = "merchant") -> str:
        """`merchant_id` when it matches `merchant_id_pattern`, else ConfigError: it names
        folders and files, so it must never be a path."""
        if not re.fullmatch(self.merchant_id_pattern, merchant_id or ""):
            raise ConfigError(f"{where} {merchant_id!r} is not a valid merchant ID "
                              f"(merchant_id_pattern {self.merchant_id_pattern})")
        return merchant_id

    @property
    def merchant_ids(self) -> tuple[str, ...]:
        """The merchants to reconcile: the configured list, else the one merchant_id."""
        if self.merchants:
            return tuple(str(m["merchant_id"]) for m in self.merchants)
        return (self.merchant_id,) if self.merchant_id else ()

    def for_merchant(self, merchant_id: str | None,
                     overrides: Mapping[str, Any] | None = None) -> Settings:
        """These settings with the merchant's own entry applied, then `overrides`."""
        changes: dict[str, Any] = {}
        if merchant_id:
            entry = next((m for m in self.merchants if m["merchant_id"] == merchant_id), None)
            if self.merchants and entry is None:
                known = ", ".join(self.merchant_ids)
                raise ConfigError(f"merchant {merchant_id} is not configured (known: {known})")
            changes.update(entry or {})
            changes["merchant_id"] = self.check_merchant_id(merchant_id)
        for key, value in (overrides or {}).items():
            if value is not None:
                changes[key] = _coerce(key, value)
        return dataclasses.replace(self, **changes)


def _as_date(key: str, value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value).strip())
    except ValueError as exc:
        raise ConfigError(f"{key}: {value!r} is not a date (YYYY-MM-DD)") from exc


def _as_decimal(key: str, value: Any) -> Decimal:
    if isinstance(value, float):
        value = repr(value)
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise ConfigError(f"{key}: {value!r} is not a decimal number") from exc
    if not number.is_finite() or number < 0:
        raise ConfigError(f"{key}: {value!r} must be a non-negative number")
    return number


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, list | tuple):
        return list(value)
    text = str(value).strip()
    if not text:
        return []
    if text.startswith("["):
        return list(json.loads(text))
    return [part.strip() for part in text.split(",") if part.strip()]


def _as_rates(key: str, value: Any) -> dict[str, Decimal]:
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return {}
        if text.startswith("{"):
            value = json.loads(text)
        else:
            pairs = [part.split("=", 1) for part in text.split(",") if part.strip()]
            if any(len(pair) != 2 for pair in pairs):
                raise ConfigError(f"{key}: expected 'OVO Cash=0.007,OVO Points=0.005'")
            value = {name.strip(): rate.strip() for name, rate in pairs}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}: expected a table of payment source = rate")
    rates: dict[str, Decimal] = {}
    for name, rate in value.items():
        option = normalise_pay_option(name)
        if option is None:
            raise ConfigError(f"{key}: unknown payment source {name!r} (OVO Cash, OVO Points)")
        rates[option] = _as_decimal(f"{key}.{name}", rate)
    return rates


#: Settings that hold for the whole installation, never per merchant.
GLOBAL_KEYS = frozenset({"database_url", "merchants", "secret_blocks", "schedule_cron",
                         "deployment_name", "lock_wait_seconds", "lock_stale_seconds",
                         "merchant_id_pattern"})


def _merchant_entries(value: Any) -> tuple[Mapping[str, Any], ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, Mapping) for v in value):
        raise ConfigError("merchants: expected [[merchants]] tables")
    entries = []
    for number, entry in enumerate(value, start=1):
        if not str(entry.get("merchant_id", "")).strip():
            raise ConfigError(f"merchants entry {number}: merchant_id is required")
        converted: dict[str, Any] = {}
        for key, item in entry.items():
            if key not in SETTING_KEYS:
                raise ConfigError(f"merchants entry {number}: unknown key {key!r}"
                                  + _closest(key))
            if key in GLOBAL_KEYS or key in SECRET_KEYS:
                raise ConfigError(f"merchants entry {number}: {key!r} cannot be set per merchant")
            converted[key] = _coerce(key, item)
        entries.append(converted)
    ids = [e["merchant_id"] for e in entries]
    if len(set(ids)) != len(ids):
        raise ConfigError("merchants: a merchant_id appears twice")
    return tuple(entries)


def _secret_blocks(key: str, value: Any) -> dict[str, str]:
    table = json.loads(value) if isinstance(value, str) else value
    if not isinstance(table, Mapping):
        raise ConfigError("secret_blocks: expected a table of setting = block name")
    unknown = set(table) - SECRET_BLOCK_KEYS
    if unknown:
        raise ConfigError(f"secret_blocks: {', '.join(sorted(unknown))} cannot come "
                          f"from a secret block ({', '.join(sorted(SECRET_BLOCK_KEYS))})")
    return {str(k): str(v) for k, v in table.items()}


def _boolean(key: str, value: Any) -> bool:
    text = str(value).strip().lower()
    if text not in {"true", "false", "1", "0", "yes", "no"}:
        raise ConfigError(f"{key}: {value!r} is not true or false")
    return text in {"true", "1", "yes"}


def _one_of(choices: Mapping[str, object] | tuple[str, ...]) -> Callable[[str, Any], str]:
    def chosen(key: str, value: Any) -> str:
        text = str(value).strip().lower()
        if text not in choices:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(choices)}")
        return text
    return chosen


def _whole(least: int) -> Callable[[str, Any], int]:
    def number(key: str, value: Any) -> int:
        whole = int(str(value))
        if whole < least:
            raise ConfigError(f"{key}: must not be negative" if least == 0
                              else f"{key}: must be at least {least}")
        return whole
    return number


def _pattern(key: str, value: Any) -> str:
    re.compile(str(value))
    return str(value)


def _wib_time(key: str, value: Any) -> dt.time:
    if isinstance(value, dt.time):
        return value
    try:
        return dt.time.fromisoformat(str(value).strip())
    except ValueError as exc:
        raise ConfigError(f"{key}: {value!r} is not a time (HH:MM, WIB)") from exc


def _keys(names: str, convert: Callable[[str, Any], Any]) -> dict[str, Callable[[str, Any], Any]]:
    return dict.fromkeys(names.split(), convert)


#: How each setting's value is read from TOML, the environment or the command line (a
#: setting not named here is text).
_CONVERTERS: dict[str, Callable[[str, Any], Any]] = {
    "merchants": lambda key, value: _merchant_entries(
        json.loads(value) if isinstance(value, str) else value),
    "secret_blocks": _secret_blocks,
    **_keys("report_dir outbox archive_dir spill_dir", lambda key, value: Path(str(value))),
    **_keys("extra_holidays extra_working_days",
            lambda key, value: tuple(_as_date(key, item) for item in _as_list(value))),
    **_keys("mail_to mail_cc alert_to ovo_claims_to",
            lambda key, value: tuple(str(item) for item in _as_list(value))),
    "mdr_rates": _as_rates,
    **_keys("vat_rate fee_tolerance approval_threshold", _as_decimal),
    "mail_all_clear": _boolean,
    "smtp_security": _one_of(SMTP_SECURITY),
    "fee_rounding": _one_of(ROUNDING_MODES),
    **_keys("fee_decimals refund_window_days smtp_port smtp_retries open_item_alert_days "
            "sftp_retries parts case_ack_sla_days ovo_claim_sla_days", _whole(0)),
    **_keys("max_file_bytes max_xlsx_uncompressed_bytes max_xlsx_ratio max_quoted_lines",
            _whole(1)),
    "merchant_id_pattern": _pattern,
    "file_deadline": _wib_time,
    **_keys("lock_wait_seconds lock_stale_seconds smtp_timeout smtp_backoff_seconds "
            "poll_seconds sftp_timeout sftp_backoff_seconds sftp_stable_seconds",
            lambda key, value: float(str(value))),
}


def _coerce(key: str, value: Any) -> Any:
    """Turn a TOML/env/CLI value into the type the Settings field holds."""
    convert = _CONVERTERS.get(key, lambda key, value: str(value).strip())
    try:
        return convert(key, value)
    except (ValueError, json.JSONDecodeError, re.error) as exc:
        raise ConfigError(f"{key}: {value!r} is not valid ({exc})") from exc


SETTING_KEYS = tuple(f.name for f in dataclasses.fields(Settings))


def _closest(key: str) -> str:
    """' (did you mean 'x'?)' for the known key nearest to `key`, '' when none is near."""
    found = difflib.get_close_matches(key.lower(), SETTING_KEYS, n=1, cutoff=0.6)
    return f" (did you mean {found[0]!r}?)" if found else ""


def load_settings(
    config_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Defaults < TOML file < RECON_* environment < explicit overrides (None ignored)."""
    env = os.environ if environ is None else environ
    path = config_file or env.get("RECON_CONFIG")
    values = _file_values(str(path)) if path else {}
    for key in SETTING_KEYS:
        env_value = env.get(f"RECON_{key.upper()}")
        if env_value is not None:
            values[key] = _coerce(key, env_value)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in SETTING_KEYS:
            raise ConfigError(f"unknown setting {key!r}" + _closest(key))
        values[key] = _coerce(key, value)
    return _checked(Settings(**values))


def _file_values(path: str) -> dict[str, Any]:
    """The settings a TOML file gives (at the top level or under [recon])."""
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError as exc:
        raise ConfigError(f"configuration file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"configuration file {path}: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"configuration file {path} cannot be read "
                          f"({getattr(exc, 'strerror', None) or exc})") from exc
    values: dict[str, Any] = {}
    for key, value in data.get("recon", data).items():
        if key in SECRET_KEYS:
            raise ConfigError(f"configuration file {path}: {key} must not be in a file; "
                              f"set RECON_{key.upper()} in the environment")
        if key not in SETTING_KEYS:
            raise ConfigError(f"configuration file {path}: unknown key {key!r}" + _closest(key))
        values[key] = _coerce(key, value)
    return values


def _checked(settings: Settings) -> Settings:
    """The checks across settings: merchant IDs, days both off and on."""
    if settings.merchant_id:
        settings.check_merchant_id(settings.merchant_id)
    for entry in settings.merchants:
        settings.check_merchant_id(str(entry["merchant_id"]), "merchants entry")
    overlap = set(settings.extra_holidays) & set(settings.extra_working_days)
    if overlap:
        days = ", ".join(sorted(d.isoformat() for d in overlap))
        raise ConfigError(f"{days} listed both as extra holiday and extra working day")
    return settings
