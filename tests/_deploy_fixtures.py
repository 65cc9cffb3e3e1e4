"""Helpers for the deployment tests: a throwaway PKI, token files, and the daemon as a real process.

The PKI is made with the ``cryptography`` package: a CA, a server certificate
for ``localhost`` / ``127.0.0.1`` / ``::1``, a client certificate signed by
the same CA, and an unrelated "rogue" CA whose certificates the daemon must
refuse.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from _random_llama import RandomLlamaSpec, build_random_llama

AGENTD = [sys.executable, "-c", "from agentd.cli import main; main()"]
STARTUP_TIMEOUT = 180  # torch import and model load on a busy two-core machine
TOKEN = "agentd-test-token-0123456789abcdef"

#: A tiny decoder with a long context, so a stream can outlast a SIGTERM (hidden 32, 2 layers).
LONG_LLAMA = RandomLlamaSpec(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=64,
    max_position_embeddings=2048,
)


@dataclass(frozen=True)
class Pki:
    """Paths of the PEM files of a throwaway PKI."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_ca: Path
    rogue_client_cert: Path
    rogue_client_key: Path


def make_pki(directory: Path) -> Pki:
    """Write a CA, a localhost server certificate, a client certificate and a rogue CA pair."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)

    def write_key(key: ec.EllipticCurvePrivateKey, name: str) -> Path:
        path = directory / name
        path.write_bytes(
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
        os.chmod(path, 0o600)
        return path

    def write_cert(cert: x509.Certificate, name: str) -> Path:
        path = directory / name
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    def name(common_name: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

    def make_ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(common_name))
            .issuer_name(name(common_name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                    key_encipherment=False, data_encipherment=False, key_agreement=False,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return key, cert

    def make_leaf(
        ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, common_name: str, server: bool
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(common_name))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]),
                critical=False,
            )
        return key, builder.sign(ca_key, hashes.SHA256())

    ca_key, ca_cert = make_ca("agentd test CA")
    server_key, server_cert = make_leaf(ca_key, ca_cert, "localhost", server=True)
    client_key, client_cert = make_leaf(ca_key, ca_cert, "agentd test client", server=False)
    rogue_key, rogue_cert = make_ca("rogue CA")
    rogue_client_key, rogue_client_cert = make_leaf(rogue_key, rogue_cert, "rogue client", server=False)
    return Pki(
        ca=write_cert(ca_cert, "ca.pem"),
        server_cert=write_cert(server_cert, "server.pem"),
        server_key=write_key(server_key, "server.key"),
        client_cert=write_cert(client_cert, "client.pem"),
        client_key=write_key(client_key, "client.key"),
        rogue_ca=write_cert(rogue_cert, "rogue-ca.pem"),
        rogue_client_cert=write_cert(rogue_client_cert, "rogue-client.pem"),
        rogue_client_key=write_key(rogue_client_key, "rogue-client.key"),
    )


def write_token(directory: Path, token: str = TOKEN, mode: int = 0o600) -> Path:
    """A token file with ``mode`` (the daemon refuses group/other-readable ones)."""
    path = directory / "token"
    path.write_text(token + "\n")
    os.chmod(path, mode)
    return path


def long_llama(root: Path) -> Path:
    """A tiny random Llama checkpoint with a 2048-token context."""
    return build_random_llama(root / "long-llama", LONG_LLAMA)


def environment(home: Path) -> dict[str, str]:
    """The environment of a test daemon or CLI: a private AGENTD_HOME, no inherited agentd settings."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("AGENTD_") and key != "XDG_RUNTIME_DIR"}
    env.update(AGENTD_HOME=str(home), PYTHONIOENCODING="utf-8", PYTHONUNBUFFERED="1")
    return env


class DaemonProcess:
    """``agentd serve ARGS`` as a child process, with its stdout/stderr in files."""

    def __init__(self, args: Sequence[str], home: Path, socket_path: Path, env: dict[str, str] | None = None):
        home.mkdir(parents=True, exist_ok=True)
        self.home = home
        self.socket_path = socket_path
        self.env = env or environment(home)
        self.stdout_path, self.stderr_path = home / "serve.out", home / "serve.err"
        with self.stdout_path.open("w") as out, self.stderr_path.open("w") as err:
            self.process = subprocess.Popen(
                [*AGENTD, "serve", "--socket", str(socket_path), *args], stdout=out, stderr=err, env=self.env
            )

    @property
    def unix_target(self) -> str:
        return f"unix://{self.socket_path}"

    def stdout(self) -> str:
        return self.stdout_path.read_text()

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def wait_serving(self) -> None:
        """Wait until the Unix socket answers health SERVING (fails the test with the log otherwise)."""
        import pytest

        from agentd.client import Client
        from agentd.errors import AgentdError

        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"agentd serve exited with {self.process.returncode}:\n{self.stderr()}")
            if self.socket_path.exists():
                with Client(self.unix_target, timeout=5) as client:
                    try:
                        if client.health() == "SERVING":
                            return
                    except AgentdError:
                        pass
            time.sleep(0.2)
        pytest.fail(f"agentd serve not SERVING after {STARTUP_TIMEOUT}s:\n{self.stderr()}")

    def tcp_target(self) -> str:
        """The ``host:port`` the daemon printed it listens on."""
        match = re.search(r"listening on (127\.0\.0\.1:\d+)", self.stdout())
        assert match, self.stdout()
        return match.group(1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


def in_process_daemon(table, socket_path: Path, *, tcp: tuple[str, int] | None = None, security=None, log_prompts: bool = False):
    """A :class:`tests._daemon_fixtures.InProcessDaemon` whose daemon has the given security policy."""
    from agentd.server.app import Daemon
    from agentd.server.auth import Security
    from tests._daemon_fixtures import InProcessDaemon

    running = InProcessDaemon(table, socket_path, tcp=tcp)
    running.daemon = Daemon(
        table, socket_path=socket_path, tcp=tcp, grace=1.0, security=security or Security(), log_prompts=log_prompts
    )
    return running
