"""Make a throwaway certificate authority and certificates for test servers on loopback.

The test servers speak TLS because the clients under test refuse anything else (msal only
accepts ``https`` authorities); the clients trust the test CA by naming its file, never by
turning verification off.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class TestCertificates:
    """PEM files: the CA to trust, and the server's certificate and key."""

    __test__ = False  # a name pytest would otherwise collect

    ca_file: Path
    cert_file: Path
    key_file: Path


@dataclass(frozen=True)
class ClientCertificate:
    """An application certificate for client-credential logins, signed by the test CA."""

    cert_file: Path
    key_file: Path
    thumbprint: str
    """SHA-1 of the DER certificate in hex, as Entra ID shows it and msal expects it."""


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write_key(key: rsa.RSAPrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "bascule tests"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def _builder(subject: str, issuer: x509.Name, public_key: rsa.RSAPublicKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
    )


def make_test_certificates(folder: Path) -> TestCertificates:
    """A new CA and a server certificate for ``127.0.0.1`` and ``localhost``, in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca_name = _name("bascule test CA")
    ca_cert = (
        _builder("bascule test CA", ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = _key()
    server_cert = (
        _builder("127.0.0.1", ca_name, server_key.public_key())
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files = TestCertificates(folder / "ca.pem", folder / "cert.pem", folder / "key.pem")
    files.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.cert_file.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    _write_key(server_key, files.key_file)
    return files


def make_client_certificate(folder: Path, common_name: str = "bascule app") -> ClientCertificate:
    """A self-signed application certificate, as one uploads to an app registration."""
    folder.mkdir(parents=True, exist_ok=True)
    key = _key()
    cert = _builder(common_name, _name(common_name), key.public_key()).sign(key, hashes.SHA256())
    der = cert.public_bytes(serialization.Encoding.DER)
    result = ClientCertificate(
        folder / "app-cert.pem", folder / "app-key.pem", hashlib.sha1(der).hexdigest().upper())
    result.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, result.key_file)
    return result


class TlsHTTPServer(ThreadingHTTPServer):
    """An HTTPS test server on 127.0.0.1 and a free port: it accepts on the listening thread
    and shakes hands with TLS on each connection's thread, so a client that refuses the
    certificate holds no other up (counted by ``tls_refused``)."""

    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler],
                 certificates: TestCertificates) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(certificates.cert_file, certificates.key_file)

    def tls_refused(self) -> None:
        """A client refused the handshake (a subclass counts it)."""

    def finish_request(self, request: Any, client_address: Any) -> None:
        # Headers and body leave in separate writes: with Nagle's algorithm the body would
        # wait for the client's delayed ACK (40 ms), a stall no real front end has.
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            request = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            self.tls_refused()
            return
        super().finish_request(request, client_address)

