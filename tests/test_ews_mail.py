"""The EWS mail source against the EWS test server: its batch section, its folder list, its
delta listings (read flags, deletions, a sync state the server refuses), and users who sign
in with their own secrets; each checked against the server's organisation."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest
from pydantic import ValidationError

from connectors import registry
from connectors.base import ConnectError
from connectors.registry import Account
from tests.conformance.harness import StoreContext
from tests.ews_seed import SERVICE_LOGIN, mime_message
from tests.graph_server import EXCHANGE_AUDIENCE, FixtureTenant, running_graph_server

ALICE = "alice@ville.fr"


def section(server: Any, **changes: Any) -> dict[str, Any]:
    values = {"type": "ews", "service_endpoint": server.url, "ca_file": str(server.ca_file),
              "service_account": {"login": SERVICE_LOGIN, "secret": "env:EWS_SECRET"}}
    values.update(changes)
    return values


def open_source(server: Any, tmp_path: Any, login: str = ALICE, secret_ref: str | None = None,
                secrets: dict[str, str] | None = None, **changes: Any) -> Any:
    ews = registry.connector("ews")
    context = StoreContext(tmp_path, {"env:EWS_SECRET": server.service_password,
                                      **(secrets or {})})
    account = Account(ews.config.model_validate(section(server, **changes)), login, secret_ref)
    assert ews.open_source is not None
    return ews.open_source(context, account, "mail")


@pytest.mark.parametrize(("changes", "code"), [
    ({"auth": "oauth"}, "batch_ews_oauth"),
    ({"archive_root": "Archives/Anciennes"}, "batch_ews_archive_root"),
    ({"service_account": {"login": SERVICE_LOGIN, "secret": "Mot-de-passe-en-clair"}},
     "batch_secret_literal"),
    ({"service_endpoint": "http://mail.ville.fr/EWS/Exchange.asmx"}, "batch_not_https"),
    ({"per_server": 27}, "less_than_equal"),
])
def test_the_batch_section_refuses_what_cannot_work(changes, code):
    ews = registry.connector("ews")
    base = {"type": "ews", "service_endpoint": "https://mail.ville.fr/EWS/Exchange.asmx",
            "service_account": {"login": "VILLE\\svc-bascule", "secret": "env:EWS_SECRET"}}
    with pytest.raises(ValidationError) as refused:
        ews.config.model_validate({**base, **changes})
    assert code in {error["type"] for error in refused.value.errors()}


def test_only_mail_folders_are_listed_with_their_roles(ews_server, tmp_path):
    mailbox = ews_server.tenant.mailbox(ALICE)
    mailbox.add_folder(("Agenda des élus",), "IPF.Appointment")
    mailbox.add_folder(("Agenda des élus", "Notes de séance"))
    mailbox.add_folder(("Rapports",), "IPF.Note.Rapports")
    source = open_source(ews_server, tmp_path)
    found = {c.path: (c.role, c.part) for c in source.containers()}
    assert found[("Boîte de réception",)] == ("inbox", None)
    assert found[("Éléments envoyés",)] == ("sent", None)
    assert found[("Éléments supprimés",)] == ("trash", None)
    assert found[("Brouillons",)] == ("drafts", None)
    assert found[("Courrier indésirable",)] == ("junk", None)
    assert found[("Rapports",)] == (None, None)
    assert found[("Archives", "Archives 2019")] == (None, "archive")
    assert not {path for path in found if path[0] in ("Calendrier", "Contacts", "Tâches",
                                                     "Agenda des élus")}


def test_a_delta_carries_read_flags_whole_and_deletions(ews_server, tmp_path):
    source = open_source(ews_server, tmp_path)
    [inbox] = [c for c in source.containers() if c.role == "inbox"]
    first = source.list_changes(inbox, None)
    assert first.complete and len(first.refs) == 3
    mailbox = ews_server.tenant.mailbox(ALICE)
    items = mailbox.folder_at("inbox").items
    flagged = next(i for i in items.values() if i.flagged)
    labelled = next(i for i in items.values() if i.categories)
    mailbox.update_item(flagged.id, is_read=True)  # a ReadFlagChange alone
    mailbox.delete_item(labelled.id)
    source.drain_notes()
    delta = source.list_changes(inbox, first.cursor)
    assert not delta.complete and not delta.reset
    [ref] = delta.refs
    assert ref.source_id == flagged.id
    assert ref.flags == {"\\Seen", "\\Flagged"}  # the flag kept, the read state new
    notes = [n for n in source.drain_notes() if n.code == "removed_at_source"]
    assert [n.params["count"] for n in notes] == [1]
    assert source.list_changes(inbox, delta.cursor).refs == []


def test_a_sync_state_the_server_refuses_lists_the_folder_whole(ews_server, tmp_path):
    source = open_source(ews_server, tmp_path)
    [inbox] = [c for c in source.containers() if c.role == "inbox"]
    listing = source.list_changes(inbox, {"sync_state": "H4sIAAAAAAAEAO29B2AcSZY"})
    assert listing.complete and not listing.reset
    assert len(listing.refs) == 3
    assert "ews_sync_state_refused" in {n.code for n in source.drain_notes()}
    assert source.list_changes(inbox, listing.cursor).refs == []


def test_users_signing_in_with_their_own_secrets(ews_server, tmp_path):
    mailbox = ews_server.tenant.add_mailbox("denise@ville.fr", "Denise Roux",
                                            password="secret-de-denise")
    raw = mime_message("mairie@ville.fr", "denise@ville.fr", "Permanence du samedi",
                       "Planning joint.\r\n", datetime(2026, 4, 4, 9, 0, tzinfo=UTC))
    mailbox.deliver("inbox", raw)
    source = open_source(ews_server, tmp_path, "denise@ville.fr", "env:DENISE",
                         {"env:DENISE": "secret-de-denise"}, service_account=None)
    [inbox] = [c for c in source.containers() if c.role == "inbox"]
    [ref] = source.list_changes(inbox, None).refs
    [message] = source.fetch(inbox, [ref.source_id])
    assert message.fingerprint == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert ("GetItem", "denise@ville.fr", None) in ews_server.requests  # no impersonation

    wrong = open_source(ews_server, tmp_path / "wrong", "denise@ville.fr", "env:DENISE",
                        {"env:DENISE": "pas-le-bon"}, service_account=None)
    with pytest.raises(ConnectError) as refused:
        wrong.containers()
    assert refused.value.code == "ews_login_refused"
    assert "pas-le-bon" not in str(refused.value)


def test_an_item_gone_between_listing_and_fetch_is_skipped(ews_server, tmp_path):
    source = open_source(ews_server, tmp_path)
    [inbox] = [c for c in source.containers() if c.role == "inbox"]
    refs = source.list_changes(inbox, None).refs
    gone = refs[0].source_id
    ews_server.tenant.mailbox(ALICE).delete_item(gone)
    fetched = list(source.fetch(inbox, [r.source_id for r in refs]))
    assert sorted(m.source_id for m in fetched) == sorted(r.source_id for r in refs[1:])
    assert not [n for n in source.drain_notes() if n.code == "unreadable_item"]


def test_an_application_token_goes_as_bearer_and_is_replaced_once_when_refused(
        ews_server, certificates, tmp_path):
    """auth = "oauth": the token comes from the identity platform through msal (the Graph
    test server's token endpoint), goes as a bearer on each request, and a refused one is
    replaced once. The EWS test server takes Basic and NTLM only: it refuses both tokens,
    which is what this checks (a sign-in it accepted could not be told from a lucky one)."""
    tenant = FixtureTenant(tenant_id="5f1c9e2a-0c0b-4c3e-9a53-3f0f4e0e8a11",
                           domain="ville.fr", client_id="0b7a1f55-8d2e-4f6b-a1c3-d2e4f6a8b0c1",
                           client_secret="secret-de-l-application")
    with running_graph_server(tenant, certificates) as graph:
        source = open_source(
            ews_server, tmp_path, secrets={"env:APP_SECRET": tenant.client_secret},
            auth="oauth", service_account=None,
            oauth={"tenant": tenant.tenant_id, "client_id": tenant.client_id,
                   "client_secret": "env:APP_SECRET", "authority": graph.authority,
                   "ca_file": str(certificates.ca_file)})
        with pytest.raises(ConnectError) as refused:
            source.containers()
        assert refused.value.code == "ews_login_refused"
        assert refused.value.params["login"] == tenant.client_id
        assert graph.stats["exchange_tokens_issued"] == 2


def test_basic_authentication_reads_the_same_mailbox_and_is_warned_about(ews_server, tmp_path):
    source = open_source(ews_server, tmp_path, auth="basic")
    paths = {c.path for c in source.containers()}
    assert ("Boîte de réception",) in paths
    ews = registry.connector("ews")
    config = ews.config.model_validate(section(ews_server, auth="basic"))
    assert ews.warnings(config, "source") == [("ews_basic_auth", {})]


def test_a_folder_larger_than_one_sync_answer_is_listed_page_by_page(ews_server, tmp_path):
    mailbox = ews_server.tenant.mailbox(ALICE)
    mailbox.add_folder(("Courrier 2025",))
    when = datetime(2025, 1, 2, 8, 0, tzinfo=UTC)
    delivered = {mailbox.deliver(("Courrier 2025",), mime_message(
        "mairie@ville.fr", ALICE, f"Courrier n°{n}", "Texte.\r\n", when)) for n in range(530)}
    source = open_source(ews_server, tmp_path)
    [folder] = [c for c in source.containers() if c.path == ("Courrier 2025",)]
    asked = len(ews_server.requests)
    listing = source.list_changes(folder, None)
    assert {ref.source_id for ref in listing.refs} == delivered
    syncs = [op for op, _, _ in ews_server.requests[asked:] if op == "SyncFolderItems"]
    assert len(syncs) == 2  # 512, then the rest
    assert source.list_changes(folder, listing.cursor).refs == []


class EntraTokens(dict):
    """The EWS test server's token table, answering for tokens the Graph test server's
    identity platform issued for Exchange, as an Exchange in hybrid modern authentication
    accepts them: signature and audience checked, the application as the caller."""

    def __init__(self, public_pem: bytes) -> None:
        super().__init__()
        self.public_pem = public_pem

    def get(self, token: str, default: Any = None) -> Any:
        try:
            claims = jwt.decode(token, self.public_pem, algorithms=["RS256"],
                                audience=EXCHANGE_AUDIENCE)
        except jwt.InvalidTokenError:
            return default
        return str(claims["appid"]).lower()


def test_an_application_token_reads_the_mailbox_through_impersonation(
        ews_server, certificates, tmp_path):
    tenant = FixtureTenant(tenant_id="5f1c9e2a-0c0b-4c3e-9a53-3f0f4e0e8a11",
                           domain="ville.fr", client_id="0b7a1f55-8d2e-4f6b-a1c3-d2e4f6a8b0c1",
                           client_secret="secret-de-l-application")
    with running_graph_server(tenant, certificates) as graph:
        ews_server.tenant.tokens = EntraTokens(graph.state.signing_public_pem)
        ews_server.auth = frozenset({"oauth"})
        ews_server.tenant.service_account(tenant.client_id, "sans-mot-de-passe")
        source = open_source(
            ews_server, tmp_path, secrets={"env:APP_SECRET": tenant.client_secret},
            auth="oauth", service_account=None,
            oauth={"tenant": tenant.tenant_id, "client_id": tenant.client_id,
                   "client_secret": "env:APP_SECRET", "authority": graph.authority,
                   "ca_file": str(certificates.ca_file)})
        [inbox] = [c for c in source.containers() if c.role == "inbox"]
        refs = source.list_changes(inbox, None).refs
        fetched = list(source.fetch(inbox, [r.source_id for r in refs]))
        held = ews_server.tenant.mailbox(ALICE).folder_at("inbox").items.values()
        assert sorted(m.fingerprint for m in fetched) == sorted(
            "sha256:" + hashlib.sha256(item.mime).hexdigest() for item in held)
        assert ("GetItem", ALICE, ALICE) in ews_server.requests
        assert graph.stats["exchange_tokens_issued"] == 1  # one token for every request


def test_a_hidden_mail_folder_is_left_out_and_said(ews_server, tmp_path):
    mailbox = ews_server.tenant.mailbox(ALICE)
    hidden = mailbox.add_folder(("Données de l'application",))
    mailbox.add_folder(("Données de l'application", "Cache"))
    ews_server.tenant.folders[hidden].hidden = True
    source = open_source(ews_server, tmp_path)
    paths = {c.path for c in source.containers()}
    assert not {path for path in paths if path[0] == "Données de l'application"}
    assert ("Boîte de réception",) in paths
    skipped = [n.subject for n in source.drain_notes() if n.code == "hidden_folder_skipped"]
    assert skipped == ["Données de l'application"]
