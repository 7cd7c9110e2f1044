"""The HTTP client every DAV connector shares, against a real WsgiDAV over TLS: verified
against the batch's CA, and against nothing the environment names."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from connectors.base import ConnectError, Document
from connectors.dav.client import DavClient
from connectors.spool import Spool
from connectors.webdav.sink import WebDavSink
from tests.tls import TestCertificates
from tests.wsgidav import start_wsgidav


def test_tls_is_verified_with_the_batchs_ca_and_never_with_the_environments(
        certificates: TestCertificates, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file of three blocks and a bit written over TLS with the batch's CA lands whole;
    a client without it refuses the same server (``tls_failed``) although the environment
    names that CA (``REQUESTS_CA_BUNDLE``, ``SSL_CERT_FILE``), and writes nothing."""
    server = start_wsgidav(tmp_path / "wsgidav", {"u": "p"}, certificates=certificates)
    space = server.space_url().replace("{login}", "u")
    assert space.startswith("https://127.0.0.1:")
    try:
        content = os.urandom(3 << 20) + b"fin"
        body = Spool.from_chunks([content])
        document = Document("1", "v1", "rapport.bin", (), body.fingerprint, body.size, None,
                            body.open)
        sink = WebDavSink(DavClient(space, "u", "p", ca_file=str(certificates.ca_file),
                                    timeout=30), sets_mtime=False)
        stored = sink.put(sink.ensure_container(("Partage",)), document)
        sink.close()
        landed = server.space("u") / "Partage" / "rapport.bin"
        assert hashlib.sha256(landed.read_bytes()).digest() == hashlib.sha256(content).digest()
        assert stored.version

        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certificates.ca_file))
        monkeypatch.setenv("SSL_CERT_FILE", str(certificates.ca_file))
        stranger = WebDavSink(DavClient(space, "u", "p", ca_file=None, timeout=30),
                              sets_mtime=False)
        with pytest.raises(ConnectError) as refused:
            stranger.ensure_container(("Autre",))
        assert refused.value.code == "tls_failed"
        assert not (server.space("u") / "Autre").exists()
    finally:
        server.stop()
