"""Exchange Online over IMAP with the application's token (SASL XOAUTH2).

The token comes from the documented identity platform test server through the real msal, for
the scope Exchange documents; a real Dovecot checks it as Exchange does, as far as Dovecot 2.3
can (``tests.dovecot.AppTokens`` says which checks): signature with the tenant's key, issuer,
expiry, then the mailbox permission given to the application.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from connectors.graph.auth import GraphCredentials, token_provider
from connectors.imap.session import (
    ImapCredentials,
    ImapEndpoint,
    TokenRefused,
    connect,
)
from connectors.imap.sink import ImapSink
from connectors.imap.source import ImapSource
from tests import mailboxes
from tests.cli import bascule, report
from tests.corpus import CorpusFolder, as_messages, build_mailbox
from tests.dovecot import AppTokens, Dovecot
from tests.graph_server import (
    EXCHANGE_AUDIENCE,
    EXCHANGE_SCOPE,
    GRAPH_SCOPE,
    RunningGraphServer,
    french_tenant,
    running_graph_server,
)
from tests.test_imap_source import EXCHANGE_ONLINE_CAPABILITY
from tests.tls import TestCertificates

AMELIE = "amelie.lefevre@ville-exemple.fr"
FRANCOIS = "francois.dupre@ville-exemple.fr"
HELENE = "helene.noel@ville-exemple.fr"
"""In the tenant, but the application was given no access to her mailbox."""


@pytest.fixture
def identity(certificates: TestCertificates) -> Iterator[RunningGraphServer]:
    with running_graph_server(french_tenant(users=3), certificates) as server:
        yield server


@pytest.fixture
def exchange(identity: RunningGraphServer, dovecot_factory) -> Dovecot:
    """An IMAP server that takes the tenant's app-only tokens, for Amélie and François."""
    state = identity.state
    return dovecot_factory(
        {AMELIE: "a-pw", FRANCOIS: "f-pw", HELENE: "h-pw"},
        capability=EXCHANGE_ONLINE_CAPABILITY,
        app_tokens=AppTokens(public_key_pem=state.signing_public_pem, key_id=state.signing_kid,
                             audience=EXCHANGE_AUDIENCE, issuer=state.issuer,
                             granted=(AMELIE, FRANCOIS)))


def app_tokens(identity: RunningGraphServer, certificates: TestCertificates,
               scope: str = EXCHANGE_SCOPE):
    tenant = identity.tenant
    credentials = GraphCredentials(tenant.tenant_id, tenant.client_id,
                                   client_secret=tenant.client_secret)
    return token_provider(credentials, authority=identity.authority,
                          ca_file=str(certificates.ca_file), scope=scope)


def endpoint(server: Dovecot) -> ImapEndpoint:
    return ImapEndpoint(server.host, server.port, security="none")


def test_a_token_the_server_stops_accepting_is_replaced_once(identity, exchange, certificates):
    tokens = app_tokens(identity, certificates)
    identity.state.exchange_jwt_lifetime = 2
    client = connect(endpoint(exchange), ImapCredentials(AMELIE, "", token=tokens))
    client.logout()
    assert identity.stats["exchange_tokens_issued"] == 1
    identity.state.exchange_jwt_lifetime = 3600
    time.sleep(3)
    # msal still holds the first token as valid for an hour; the server says it expired.
    source = ImapSource(endpoint(exchange), ImapCredentials(FRANCOIS, "", token=tokens))
    assert ("INBOX",) in [c.path for c in source.containers()]
    source.close()
    assert identity.stats["exchange_tokens_issued"] == 2
    # The APPEND pipeline logs in on its own connections, with the same fallback.
    sink = ImapSink(endpoint(exchange), ImapCredentials(AMELIE, "", token=tokens), connections=2)
    [result] = sink.put_many(sink.ensure_container(("INBOX",)),
                             as_messages(build_mailbox(1, seed=5)))
    sink.close()
    assert result.target_ref
    assert sum(mailboxes.contents(exchange, AMELIE)[("INBOX",)].values()) == 1


def test_a_mailbox_the_app_cannot_open_is_explained(identity, exchange, certificates):
    tokens = app_tokens(identity, certificates)
    # The same token opens a granted mailbox: the refusal below is about Hélène's grant.
    connect(endpoint(exchange), ImapCredentials(AMELIE, "", token=tokens)).logout()
    with pytest.raises(TokenRefused) as refused:
        connect(endpoint(exchange), ImapCredentials(HELENE, "", token=tokens))
    assert refused.value.code == "auth_failed"
    assert "Add-MailboxPermission" in refused.value.message_en
    assert "principal de service" in refused.value.message_fr
    # One token for Amélie's login, one fresh one for Hélène's second try.
    assert identity.stats["exchange_tokens_issued"] == 2, exchange.log()
    # A token for another resource (a batch asking for Graph's scope) opens no mailbox.
    graph_tokens = app_tokens(identity, certificates, scope=GRAPH_SCOPE)
    with pytest.raises(TokenRefused):
        connect(endpoint(exchange), ImapCredentials(AMELIE, "", token=graph_tokens))


def oauth_batch(tmp_path, identity: RunningGraphServer, certificates, source: Dovecot,
                target: Dovecot) -> str:
    mailboxes.write_users(tmp_path, [(AMELIE, "alice", "", "env:ALICE_DST"),
                                     (FRANCOIS, "bob", "", "env:BOB_DST"),
                                     (HELENE, "carol", "", "env:CAROL_DST")])
    path = tmp_path / "batch.toml"
    path.write_text(f"""
name = "exchange-imap"
[source]
type = "imap"
host = "{source.host}"
port = {source.port}
security = "none"
[source.oauth]
tenant = "{identity.tenant.domain}"
client_id = "{identity.tenant.client_id}"
client_secret = "env:APP_SECRET"
authority = "{identity.authority}"
ca_file = "{certificates.ca_file}"
[target]
type = "imap"
host = "{target.host}"
port = {target.port}
security = "none"
[run]
work_dir = "work"
""", encoding="utf-8")
    return str(path)


def test_exchange_online_mailboxes_move_over_imap_with_the_app_token(
        identity, exchange, certificates, dovecot_factory, tmp_path, monkeypatch):
    target = dovecot_factory({"alice": "a-dst", "bob": "b-dst", "carol": "c-dst"})
    projets = CorpusFolder(("Projets", "Été 2024"), None, list(build_mailbox(40, seed=3)))
    mailboxes.seed(exchange, AMELIE, [
        CorpusFolder(("INBOX",), "inbox", list(build_mailbox(60, seed=2))), projets])
    mailboxes.seed(exchange, FRANCOIS, [
        CorpusFolder(("INBOX",), "inbox", list(build_mailbox(25, seed=4)))])
    for name, value in (("ALICE_DST", "a-dst"), ("BOB_DST", "b-dst"), ("CAROL_DST", "c-dst")):
        monkeypatch.setenv(name, value)
    batch = oauth_batch(tmp_path, identity, certificates, exchange, target)

    monkeypatch.setenv("APP_SECRET", "not-the-secret")
    code, output = bascule("run", batch)
    assert code == 2, output
    assert "AADSTS7000215" in output and "not-the-secret" not in output
    assert not any(mailboxes.contents(target, "alice").values())

    monkeypatch.setenv("APP_SECRET", identity.tenant.client_secret)
    code, output = bascule("audit", batch)
    assert code == 1, output
    audit = report(tmp_path, "audit")
    assert (audit["summary"]["items"], audit["summary"]["errors"]) == (125, 1)
    assert not any(mailboxes.contents(target, "alice").values())

    issued = identity.stats["exchange_tokens_issued"]
    code, output = bascule("--lang", "fr", "run", batch)
    assert code == 1, output
    # One token for every mailbox and connection, and a fresh one after Hélène's refusal.
    assert identity.stats["exchange_tokens_issued"] - issued == 2
    for source_user, target_user, count in ((AMELIE, "alice", 100), (FRANCOIS, "bob", 25)):
        landed = mailboxes.filled(target, target_user)
        assert landed == mailboxes.filled(exchange, source_user)
        assert sum(sum(found.values()) for found in landed.values()) == count
    refused = [e for e in report(tmp_path, "run")["entries"] if e.get("code") == "auth_failed"]
    assert {e["principal"] for e in refused} == {HELENE}
    assert all("Add-MailboxPermission" in e["message_fr"] for e in refused)
    assert identity.tenant.client_secret not in output

    code, output = bascule("verify", batch)
    assert code == 1, output
    verified = report(tmp_path, "verify")
    assert verified["summary"]["checked"] == 125, verified["summary"]
    failed = [e for e in verified["entries"] if e["action"] != "verified" or e["failed"]]
    assert [(e["principal"], e["code"]) for e in failed] == [(HELENE, "auth_failed")]

