"""A certificate authority and an mTLS terminator for the tests that reach Temporal over TLS.

The CA and the certificates are made here with `cryptography`, for `127.0.0.1` and the name
`temporal.test`; Debian's HAProxy terminates TLS in front of a plain dev server and, like a
secured cluster, refuses a client without a certificate signed by the CA (or, like Temporal
Cloud, a request without the API key).
"""

from __future__ import annotations

import datetime
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from docktor.dev.embedded import free_port

SERVER_NAME = "temporal.test"


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Authority:
    """A CA: its certificate file, and what it signs."""

    cert: Path
    key: ec.EllipticCurvePrivateKey
    name: x509.Name


def _key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return key


def _validity(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return builder.not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(
        now + datetime.timedelta(days=1)
    )


def make_authority(folder: Path, name: str = "docktor test CA") -> Authority:
    folder.mkdir(parents=True, exist_ok=True)
    key = _key(folder / "ca.key")
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        _validity(x509.CertificateBuilder())
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    path = folder / "ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Authority(path, key, subject)


def issue(authority: Authority, folder: Path, name: str, server: bool) -> Pair:
    """A leaf certificate signed by `authority`: for a server, valid for SERVER_NAME and
    127.0.0.1; for a client, with the client-auth usage."""
    folder.mkdir(parents=True, exist_ok=True)
    key = _key(folder / f"{name}.key")
    builder = (
        _validity(x509.CertificateBuilder())
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(authority.name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(authority.key.public_key()),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(SERVER_NAME), x509.IPAddress(IPv4Address("127.0.0.1"))]
            ),
            critical=False,
        )
    cert = builder.sign(authority.key, hashes.SHA256())
    path = folder / f"{name}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Pair(path, folder / f"{name}.key")


@dataclass
class Terminator:
    """HAProxy listening on `address` with TLS, passing each connection on to `upstream`."""

    address: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def haproxy_binary() -> str | None:
    return shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
    )


# Long enough for the worker's long polls (a minute or more) to pass through.
_TIMEOUTS = ["timeout connect 5s", "timeout client 10m", "timeout server 10m"]


def start_terminator(
    folder: Path,
    upstream: str,
    server: Pair,
    client_ca: Path | None = None,
    api_key: str | None = None,
    timeout: float = 15,
) -> Terminator:
    """HAProxy in front of `upstream` (plain gRPC): TLS with `server`'s certificate and ALPN h2
    (gRPC clients insist on it; stunnel cannot offer it). With `client_ca`, a client
    certificate signed by it is required, as on an mTLS cluster; with `api_key`, HTTP/2 is
    terminated and a request without `authorization: Bearer <api_key>` is denied, as Temporal
    Cloud does."""
    binary = haproxy_binary()
    assert binary, "haproxy is not installed (scripts/install-test-deps.sh installs it)"
    port = free_port()
    combined = folder / "server-combined.pem"
    combined.write_bytes(server.cert.read_bytes() + server.key.read_bytes())
    combined.chmod(0o600)
    bind = f"bind 127.0.0.1:{port} ssl crt {combined} alpn h2"
    if client_ca is not None:
        bind += f" ca-file {client_ca} verify required"
    mode = ["mode tcp"]
    server_line = f"server upstream {upstream}"
    if api_key is not None:
        mode = [
            "mode http",
            "http-request deny deny_status 401 unless "
            f'{{ req.hdr(authorization) -m str "Bearer {api_key}" }}',
        ]
        server_line += " proto h2"
    log = folder / "haproxy.log"
    conf = folder / "haproxy.cfg"
    conf.write_text(
        "\n".join(
            [
                "defaults",
                *(f"  {line}" for line in _TIMEOUTS),
                "frontend temporal",
                f"  {bind}",
                *(f"  {line}" for line in mode),
                "  default_backend dev",
                "backend dev",
                f"  {mode[0]}",
                f"  {server_line}",
                "",
            ]
        )
    )
    with log.open("wb") as out:
        process = subprocess.Popen([binary, "-db", "-f", str(conf)], stdout=out, stderr=out)
    terminator = Terminator(f"127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise AssertionError(f"haproxy exited ({process.returncode}): {_tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return terminator
        except OSError:
            if time.monotonic() > deadline:
                terminator.stop()
                raise AssertionError(f"haproxy did not listen on {port}: {_tail(log)}") from None
            time.sleep(0.02)


def _tail(log: Path) -> str:
    return log.read_text()[-500:] if log.exists() else "(no log)"
