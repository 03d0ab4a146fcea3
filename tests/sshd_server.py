"""A real OpenSSH sshd on a loopback port, with generated host and user keys."""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.smtp_server import free_port

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def keygen(path: Path, passphrase: str = "", kind: str = "ed25519") -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", passphrase, "-C", "recon-test",
                    "-f", str(path)], check=True)
    return path


class Sshd:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.user = getpass.getuser()
        self.host_key = keygen(root / "host_ed25519")
        self.user_key = keygen(root / "user_ed25519")
        self.locked_key = keygen(root / "locked_ed25519", passphrase="open sesame")
        self.stranger_key = keygen(root / "stranger_ed25519")
        authorized = root / "authorized_keys"
        authorized.write_text((root / "user_ed25519.pub").read_text()
                              + (root / "locked_ed25519.pub").read_text())
        authorized.chmod(0o600)
        self.outgoing = root / "outgoing"
        self.outgoing.mkdir()
        host_public = (root / "host_ed25519.pub").read_text().split()[:2]
        self.known_hosts = root / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {' '.join(host_public)}\n")
        other = keygen(root / "other_host_ed25519").with_suffix(".pub").read_text().split()[:2]
        self.wrong_known_hosts = root / "wrong_known_hosts"
        self.wrong_known_hosts.write_text(f"[127.0.0.1]:{self.port} {' '.join(other)}\n")
        self.config = root / "sshd_config"
        self.config.write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {self.host_key}",
            f"PidFile {root / 'sshd.pid'}", f"AuthorizedKeysFile {authorized}",
            "StrictModes no", "PubkeyAuthentication yes", "PasswordAuthentication yes",
            "KbdInteractiveAuthentication no", "UsePAM no", "PermitRootLogin yes",
            "Subsystem sftp internal-sftp", "LogLevel ERROR", ""]))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Sshd:
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd exited: {self.process.stderr.read().decode()}")  # type: ignore[union-attr]
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.1)
        raise RuntimeError("sshd did not start listening")

    def url(self, user: str | None = None) -> str:
        return f"sftp://{user or self.user}@127.0.0.1:{self.port}{self.outgoing}"

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
