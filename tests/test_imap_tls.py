"""TLS to IMAP servers is verified, always: a test CA is trusted by naming its file."""

from __future__ import annotations

import pytest

from connectors.base import ConnectError
from connectors.imap.session import ImapCredentials, ImapEndpoint, connect
from connectors.imap.sink import ImapSink
from tests.corpus import as_messages, build_mailbox
from tests.tls import make_test_certificates


@pytest.fixture
def tls_server(dovecot_factory, tmp_path):
    certificates = make_test_certificates(tmp_path / "pki")
    server = dovecot_factory(users={"alice": "alice-pw"},
                             tls=(certificates.cert_file, certificates.key_file))
    return server, certificates


def test_imaps_and_starttls_with_the_test_ca(tls_server):
    server, certificates = tls_server
    for port, security in ((server.tls_port, "tls"), (server.port, "starttls")):
        endpoint = ImapEndpoint("127.0.0.1", port, security=security,
                                ca_file=str(certificates.ca_file))
        client = connect(endpoint, ImapCredentials("alice", "alice-pw"))
        try:
            assert client.select_folder("INBOX")
        finally:
            client.logout()


def test_capabilities_come_from_the_greeting_but_after_starttls(tls_server, monkeypatch):
    """A connection takes its first capabilities from the server's greeting (no CAPABILITY
    command before LOGIN over TLS); after STARTTLS they are asked for again, over TLS,
    never taken from what was said in clear."""
    import imaplib

    server, certificates = tls_server
    sent: list[str] = []
    send = imaplib.IMAP4.send
    monkeypatch.setattr(imaplib.IMAP4, "send", lambda self, data: (
        sent.append((data.split(b" ") + [b""])[1].decode().strip()), send(self, data))[1])
    commands = {}
    for port, security in ((server.tls_port, "tls"), (server.port, "starttls")):
        sent.clear()
        endpoint = ImapEndpoint("127.0.0.1", port, security=security,
                                ca_file=str(certificates.ca_file))
        client = connect(endpoint, ImapCredentials("alice", "alice-pw"))
        client.logout()
        commands[security] = sent[:sent.index("LOGIN") + 1]
    assert commands["tls"] == ["LOGIN"]
    assert commands["starttls"] == ["STARTTLS", "CAPABILITY", "LOGIN"]


def test_a_certificate_from_an_unknown_ca_is_refused(tls_server):
    server, _ = tls_server
    for port, security in ((server.tls_port, "tls"), (server.port, "starttls")):
        endpoint = ImapEndpoint("127.0.0.1", port, security=security)
        with pytest.raises(ConnectError) as refused:
            connect(endpoint, ImapCredentials("alice", "alice-pw"))
        assert refused.value.code == "tls_failed"


def test_the_append_pipeline_verifies_too(tls_server):
    server, certificates = tls_server
    message = as_messages(build_mailbox(1, seed=1))
    good = ImapSink(ImapEndpoint("127.0.0.1", server.tls_port, security="tls",
                                 ca_file=str(certificates.ca_file)),
                    ImapCredentials("alice", "alice-pw"))
    try:
        [result] = good.put_many("INBOX", message)
    finally:
        good.close()
    assert result.error is None and result.target_ref

    bad = ImapSink(ImapEndpoint("127.0.0.1", server.tls_port, security="tls"),
                   ImapCredentials("alice", "alice-pw"))
    try:
        with pytest.raises(ConnectError) as refused:
            list(bad.put_many("INBOX", message))
        assert refused.value.code == "tls_failed"
    finally:
        bad.close()
