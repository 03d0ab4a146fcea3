"""SFTP source (paramiko): host key checked against known_hosts, never auto-accepted;
transient failures retried with backoff, refusals reported at once. Files are only read."""

from __future__ import annotations

import errno
import logging
import stat
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import paramiko

from recon.config import Settings
from recon.core.errors import ConfigError, SourceUnavailable
from recon.sources.base import Entry

log = logging.getLogger(__name__)


def parse_sftp_url(url: str) -> tuple[str, str, int, str]:
    """sftp://user@host:port/dir -> (user, host, port, dir)."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "sftp" or not parts.hostname or not parts.username:
        raise ConfigError(f"source {url!r}: expected sftp://user@host:port/dir")
    if parts.password:
        raise ConfigError("source: put the SFTP password in RECON_SFTP_PASSWORD, not the URL")
    try:
        port = parts.port or 22
    except ValueError as exc:
        raise ConfigError(f"source {url!r}: bad port") from exc
    return unquote(parts.username), parts.hostname, port, unquote(parts.path) or "."


class _Transient(Exception):
    pass


class SftpFolder:
    """One remote folder; connects at construction, `close()` when done."""

    remote = True

    def __init__(self, url: str, settings: Settings) -> None:
        self.user, self.host, self.port, self.directory = parse_sftp_url(url)
        self.location = f"sftp://{self.user}@{self.host}:{self.port}{self.directory}"
        self.settings = settings
        self.client: paramiko.SSHClient | None = None
        self.sftp: paramiko.SFTPClient | None = None
        self._connect_with_retries()

    # ----------------------------------------------------------------- connecting
    def _connect_once(self) -> None:
        settings = self.settings
        known_hosts = Path(settings.sftp_known_hosts).expanduser()
        if not known_hosts.is_file():
            raise ConfigError(
                f"sftp_known_hosts {known_hosts} does not exist: add the server's key after "
                f"checking its fingerprint (ssh-keyscan -p {self.port} {self.host})")
        if not settings.sftp_key_file and not settings.sftp_password:
            raise ConfigError("SFTP needs sftp_key_file or RECON_SFTP_PASSWORD")
        key = self._load_key() if settings.sftp_key_file else None
        client = paramiko.SSHClient()
        client.load_host_keys(str(known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        where = f"{self.host}:{self.port}"
        timeout = settings.sftp_timeout
        try:
            client.connect(
                self.host, port=self.port, username=self.user,
                pkey=key, password=settings.sftp_password or None,
                timeout=timeout, banner_timeout=timeout, auth_timeout=timeout,
                channel_timeout=timeout, look_for_keys=False, allow_agent=False)
            sftp = client.open_sftp()
            channel = sftp.get_channel()
            if channel is not None:
                channel.settimeout(timeout)
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise SourceUnavailable(
                f"{where} presented a host key that does not match {known_hosts}: refusing "
                "to connect (the server's key changed, or someone is in between)") from exc
        except paramiko.AuthenticationException as exc:
            client.close()
            raise SourceUnavailable(f"{self.user}@{where}: authentication refused") from exc
        except paramiko.SSHException as exc:
            client.close()
            if "known_hosts" in str(exc):
                raise SourceUnavailable(
                    f"{where} is not in {known_hosts}: refusing an unknown host key") from exc
            raise _Transient(f"SSH error: {exc}") from exc
        except (TimeoutError, OSError, EOFError) as exc:
            client.close()
            raise _Transient(str(exc) or type(exc).__name__) from exc
        self.client, self.sftp = client, sftp

    def _load_key(self) -> paramiko.PKey:
        path = Path(self.settings.sftp_key_file).expanduser()
        passphrase = self.settings.sftp_key_passphrase or None
        try:
            return paramiko.PKey.from_path(
                path, password=passphrase.encode() if passphrase else None)
        except FileNotFoundError as exc:
            raise ConfigError(f"sftp_key_file {path} does not exist") from exc
        except (paramiko.PasswordRequiredException, TypeError) as exc:
            # cryptography raises TypeError for an encrypted OpenSSH key without a password
            if passphrase is None:
                raise SourceUnavailable(
                    f"sftp_key_file {path} is encrypted: set RECON_SFTP_KEY_PASSPHRASE"
                ) from exc
            raise SourceUnavailable(f"sftp_key_file {path} cannot be read (wrong "
                                    "RECON_SFTP_KEY_PASSPHRASE?)") from exc
        except (paramiko.SSHException, ValueError) as exc:
            hint = " (wrong RECON_SFTP_KEY_PASSPHRASE?)" if passphrase else ""
            raise SourceUnavailable(f"sftp_key_file {path} cannot be read{hint}") from exc

    def _connect_with_retries(self) -> None:
        attempts = self.settings.sftp_retries + 1
        reason = ""
        for attempt in range(1, attempts + 1):
            try:
                self._connect_once()
                return
            except _Transient as exc:
                reason = str(exc)
            if attempt < attempts:
                delay = self.settings.sftp_backoff_seconds * 2 ** (attempt - 1)
                log.warning("SFTP %s:%d: %s (attempt %d of %d), retrying in %.1f s", self.host,
                            self.port, reason, attempt, attempts, delay)
                time.sleep(delay)
        raise SourceUnavailable(f"cannot reach {self.location} after {attempts} attempts: "
                                f"{reason}")

    # ----------------------------------------------------------------- reading
    def _remote_error(self, exc: OSError, what: str) -> SourceUnavailable:
        if exc.errno == errno.ENOENT:
            return SourceUnavailable(f"{what} does not exist on {self.host}:{self.port}")
        if exc.errno == errno.EACCES:
            return SourceUnavailable(f"{what}: permission denied on {self.host}:{self.port}")
        return SourceUnavailable(f"{what}: {exc}")

    def entries(self) -> list[Entry]:
        assert self.sftp is not None
        try:
            listing = self.sftp.listdir_attr(self.directory)
        except OSError as exc:
            raise self._remote_error(exc, f"remote folder {self.directory}") from exc
        return [Entry(a.filename, int(a.st_size or 0), float(a.st_mtime or 0))
                for a in listing if a.st_mode is not None and stat.S_ISREG(a.st_mode)]

    def download(self, name: str, target: Path) -> None:
        assert self.sftp is not None
        remote = f"{self.directory.rstrip('/')}/{name}"
        try:
            self.sftp.get(remote, str(target))
        except OSError as exc:
            raise self._remote_error(exc, remote) from exc

    def close(self) -> None:
        if self.sftp is not None:
            self.sftp.close()
        if self.client is not None:
            self.client.close()
