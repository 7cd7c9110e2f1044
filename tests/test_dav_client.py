"""The HTTP client every DAV connector shares, against a real WsgiDAV: over TLS, verified
against the batch's CA and against nothing the environment names; behind a fault proxy, an
answer cut short is a lost connection."""

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


def test_a_file_whose_answer_is_cut_short_is_a_lost_connection_and_an_unreadable_item(
        fault_proxy, tmp_path: Path) -> None:
    """A GET reset by the proxy after 1 MiB of a 3 MiB file: the client raises
    ``connection_lost`` (what the engine tries again), and the WebDAV source says the file
    unreadable (asked again by the next run) rather than stopping; read whole once the
    proxy lets it through."""
    from connectors.webdav.source import WebDavSource

    server = start_wsgidav(tmp_path / "wsgidav", {"u": "p"})
    try:
        content = os.urandom(3 << 20)
        (server.space("u") / "Partage").mkdir()
        (server.space("u") / "Partage" / "gros.bin").write_bytes(content)
        proxy = fault_proxy((server.host, server.port))
        client = DavClient(f"http://127.0.0.1:{proxy.port}/u/", "u", "p", ca_file=None,
                           timeout=30)

        proxy.reset_after(1 << 20, "to_client")
        with pytest.raises(ConnectError) as cut, \
                client.request("GET", "/u/Partage/gros.bin", stream=True) as answer:
            for _ in answer.iter_content(1 << 16):
                pass
        assert cut.value.code == "connection_lost"

        source = WebDavSource(client)
        [drive] = source.document_containers("files")
        refs = source.list_documents(drive, None).refs
        proxy.reset_after(1 << 20, "to_client")
        assert list(source.fetch_documents(drive, refs)) == []
        assert [note.code for note in source.drain_notes()] == ["unreadable_item"]
        [document] = source.fetch_documents(drive, refs)
        with document.open() as body:
            assert body.read() == content
    finally:
        server.stop()
