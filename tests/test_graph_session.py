"""The Graph connector's sign-in and HTTP session against the Graph test server over TLS."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import requests

from connectors.base import ConnectError
from connectors.graph.auth import (
    ClientCertificate,
    GraphAuthError,
    GraphCredentials,
    MsalTokenProvider,
    token_provider,
)
from connectors.graph.session import GraphSession, mailbox_of, retry_after_seconds
from tests.graph_server import (
    FixtureMailbox,
    RunningGraphServer,
    Throttle,
    french_tenant,
    mime_message,
    running_graph_server,
)
from tests.tls import TestCertificates, make_client_certificate

AMELIE = "amelie.lefevre@ville-exemple.fr"


@pytest.fixture
def graph(certificates: TestCertificates) -> Iterator[RunningGraphServer]:
    with running_graph_server(french_tenant(), certificates) as server:
        yield server


def provider(graph: RunningGraphServer, certificates: TestCertificates | None,
             **changes: Any) -> MsalTokenProvider:
    tenant = graph.tenant
    fields: dict[str, Any] = {"tenant": tenant.tenant_id, "client_id": tenant.client_id,
                              "client_secret": tenant.client_secret, **changes}
    return token_provider(GraphCredentials(**fields), graph.authority,
                          ca_file=str(certificates.ca_file) if certificates else None)


def session(graph: RunningGraphServer, certificates: TestCertificates,
            **options: Any) -> GraphSession:
    return GraphSession(graph.graph_url, provider(graph, certificates),
                        ca_file=str(certificates.ca_file), **options)


def amelie(graph: RunningGraphServer) -> FixtureMailbox:
    mailbox = graph.tenant.mailbox(AMELIE)
    assert mailbox is not None
    return mailbox


def inbox_ids(graph: RunningGraphServer) -> list[str]:
    mailbox = amelie(graph)
    inbox = next(f for f in mailbox.folders.values() if f.well_known_name == "inbox")
    return [m.id for m in mailbox.messages.values() if m.folder_id == inbox.id]


def download(graph_session: GraphSession, message_id: str, chunk_size: int = 1 << 16) -> bytes:
    with graph_session.stream(f"users/{AMELIE}/messages/{message_id}/$value",
                              chunk_size=chunk_size) as chunks:
        return b"".join(chunks)


# --- sign-in


def test_token_comes_from_msal_and_is_reused(graph: RunningGraphServer,
                                             certificates: TestCertificates) -> None:
    graph_session = session(graph, certificates)
    for _ in range(3):
        assert graph_session.get_json("users", {"$top": 1})["value"]
    assert graph.stats["tokens_issued"] == 1


def test_secret_never_shown(graph: RunningGraphServer, certificates: TestCertificates) -> None:
    secret = graph.tenant.client_secret
    credentials = GraphCredentials(graph.tenant.tenant_id, graph.tenant.client_id, secret)
    tokens = provider(graph, certificates)
    token = tokens()
    assert secret not in repr(credentials)
    assert secret not in repr(tokens) and token not in repr(tokens)


@pytest.mark.parametrize(("changes", "aadsts", "french"), [
    ({"client_secret": "not-the-secret"}, "AADSTS7000215", "secret client est faux"),
    ({"tenant": "mairie-inconnue.fr"}, "AADSTS90002", "tenant n'existe pas"),
    ({"client_id": "00000000-0000-0000-0000-000000000000"}, "AADSTS700016", "n'est pas inscrite"),
])
def test_refused_sign_in_is_explained(graph: RunningGraphServer, certificates: TestCertificates,
                                      changes: dict[str, str], aadsts: str, french: str) -> None:
    with pytest.raises(GraphAuthError) as refused:
        provider(graph, certificates, **changes)()
    assert refused.value.code == "auth_failed"
    assert isinstance(refused.value, ConnectError)
    assert refused.value.detail.startswith(aadsts)
    assert french in refused.value.message_fr
    assert "not-the-secret" not in refused.value.detail
    assert graph.stats["tokens_issued"] == 0


def test_expired_secret_is_explained(graph: RunningGraphServer,
                                     certificates: TestCertificates) -> None:
    graph.state.secret_expired = True
    with pytest.raises(GraphAuthError) as refused:
        provider(graph, certificates)()
    assert refused.value.error_code == "AADSTS7000222"
    assert "expired" in refused.value.message_en and "expiré" in refused.value.message_fr


def test_certificate_sign_in(graph: RunningGraphServer, certificates: TestCertificates,
                             tmp_path: Path) -> None:
    registered = make_client_certificate(tmp_path / "registered")
    other = make_client_certificate(tmp_path / "other")
    graph.tenant.certificate_pem = registered.cert_file.read_bytes()
    good = ClientCertificate(registered.key_file, registered.thumbprint)
    assert provider(graph, certificates, client_secret=None, certificate=good)()
    forged = ClientCertificate(other.key_file, registered.thumbprint)
    with pytest.raises(GraphAuthError) as refused:
        provider(graph, certificates, client_secret=None, certificate=forged)()
    assert refused.value.error_code == "AADSTS700027"


def test_missing_admin_consent_is_explained(graph: RunningGraphServer,
                                            certificates: TestCertificates) -> None:
    graph.state.no_consent = True
    graph_session = session(graph, certificates)
    with pytest.raises(GraphAuthError) as refused:
        graph_session.get_json("users")
    assert refused.value.code == "auth_failed"
    assert refused.value.error_code == "Authorization_RequestDenied"
    assert "consentement" in refused.value.message_fr
    with pytest.raises(GraphAuthError):
        graph_session.get_json(f"users/{AMELIE}/mailFolders")


def test_expired_token_is_renewed_once(graph: RunningGraphServer,
                                       certificates: TestCertificates) -> None:
    graph_session = session(graph, certificates)
    graph_session.get_json("users")
    graph.state.expire_tokens()
    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(lambda _: graph_session.get_json("users")["value"], range(4)))
    assert graph.stats["tokens_issued"] == 2


def test_unknown_ca_fails_tls(graph: RunningGraphServer, certificates: TestCertificates) -> None:
    with pytest.raises(ConnectError) as refused:
        provider(graph, None)()
    assert refused.value.code == "tls_failed"
    graph_session = GraphSession(graph.graph_url, provider(graph, certificates))
    with pytest.raises(ConnectError) as refused:
        graph_session.get_json("users")
    assert refused.value.code == "tls_failed"
    assert graph.stats["graph_requests"] == 0


def test_proxies_from_the_environment_apply_and_netrc_does_not(
        graph: RunningGraphServer, certificates: TestCertificates, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = provider(graph, certificates)
    tokens()
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login agent password not-a-token\n", encoding="utf-8")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    # A proxy where nothing listens: requests that go through it fail.
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    proxied = GraphSession(graph.graph_url, tokens, ca_file=str(certificates.ca_file),
                           connection_attempts=1)
    with pytest.raises(ConnectError):
        proxied.get_json("users")
    assert graph.stats["graph_requests"] == 0
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    direct = GraphSession(graph.graph_url, tokens, ca_file=str(certificates.ca_file))
    # The bearer token goes, not the password ~/.netrc names for the host.
    assert direct.get_json("users")["value"]


# --- reading


def test_paging_through_all_users(graph: RunningGraphServer,
                                  certificates: TestCertificates) -> None:
    pages = session(graph, certificates).pages("users", {"$top": 3,
                                                         "$select": "id,userPrincipalName"})
    seen = [page["value"] for page in pages]
    assert [len(page) for page in seen] == [3, 3, 1]
    names = [user["userPrincipalName"] for page in seen for user in page]
    assert sorted(names) == sorted(m.user_principal_name for m in graph.tenant.mailboxes)
    assert set(seen[0][0]) == {"id", "userPrincipalName"}
    assert pages.delta_link is None


def test_folder_tree_with_accents(graph: RunningGraphServer,
                                  certificates: TestCertificates) -> None:
    graph_session = session(graph, certificates)

    def walk(url: str, parent: tuple[str, ...], hidden: bool) -> list[tuple[str, ...]]:
        found = []
        params = {"includeHiddenFolders": "true"} if hidden else None
        for folder in graph_session.pages(url, params).values():
            path = (*parent, folder["displayName"])
            found.append(path)
            if folder["childFolderCount"]:
                found += walk(f"users/{AMELIE}/mailFolders/{folder['id']}/childFolders", path,
                              hidden)
        return found

    visible = walk(f"users/{AMELIE}/mailFolders", (), hidden=False)
    assert ("Boîte de réception", "Projets", "Été 2024") in visible
    assert ("Éléments envoyés",) in visible
    assert ("Problèmes de synchronisation",) not in visible
    assert ("Problèmes de synchronisation",) in walk(f"users/{AMELIE}/mailFolders", (), True)


def test_delta_moves_only_changes(graph: RunningGraphServer,
                                  certificates: TestCertificates) -> None:
    graph_session = session(graph, certificates)
    prefer = {"Prefer": "odata.maxpagesize=5"}
    first = graph_session.pages(f"users/{AMELIE}/mailFolders/inbox/messages/delta",
                                {"$select": "isRead,flag,categories,receivedDateTime"}, prefer)
    pages = [page["value"] for page in first]
    assert [len(page) for page in pages] == [5, 5, 5, 5, 3]
    listed = {item["id"]: item for page in pages for item in page}
    assert sorted(listed) == sorted(inbox_ids(graph))
    assert first.delta_link

    mailbox, tenant = amelie(graph), graph.tenant
    inbox = next(f for f in mailbox.folders.values() if f.well_known_name == "inbox")
    unread = next(i for i in listed if not listed[i]["isRead"])
    gone = next(i for i in listed if i != unread)
    tenant.update_message(mailbox, unread, is_read=True)
    tenant.delete_message(mailbox, gone)
    when = datetime(2024, 9, 1, 7, 0, tzinfo=UTC)
    new = tenant.add_message(mailbox, inbox, mime_message(
        "Zoé Benoît <zoe.benoit@ville-exemple.fr>", AMELIE, "Rentrée scolaire", "Bonjour\n", when),
        subject="Rentrée scolaire", received=when)

    second = graph_session.pages(first.delta_link, headers=prefer)
    changes = {item["id"]: item for item in second.values()}
    assert set(changes) == {unread, gone, new.id}
    assert changes[unread]["isRead"] is True
    assert changes[gone]["@removed"] == {"reason": "deleted"}
    assert changes[new.id]["receivedDateTime"] == "2024-09-01T07:00:00Z"
    assert second.delta_link and second.delta_link != first.delta_link

    assert list(graph_session.pages(second.delta_link).values()) == []


def test_mime_is_streamed_byte_identical(graph: RunningGraphServer,
                                         certificates: TestCertificates) -> None:
    mailbox = amelie(graph)
    large = max(mailbox.messages.values(), key=lambda m: len(m.mime))
    assert len(large.mime) > 300_000
    graph_session = session(graph, certificates)
    with graph_session.stream(f"users/{AMELIE}/messages/{large.id}/$value",
                              chunk_size=8192) as chunks:
        received = list(chunks)
    assert b"".join(received) == large.mime
    assert len(received) > 30


# --- throttling


def test_throttling_storm_slows_down_and_loses_nothing(graph: RunningGraphServer,
                                                       certificates: TestCertificates) -> None:
    graph.state.throttle = Throttle(ratio=0.5, retry_after=(0, 0, 0, 1))
    graph_session = session(graph, certificates)
    listed = list(graph_session.pages(f"users/{AMELIE}/mailFolders/inbox/messages/delta",
                                      {"$select": "id"}).values())
    with ThreadPoolExecutor(4) as pool:
        bodies = dict(zip([m["id"] for m in listed],
                          pool.map(lambda m: download(graph_session, m["id"]), listed),
                          strict=True))
    mailbox = amelie(graph)
    assert sorted(bodies) == sorted(inbox_ids(graph))
    assert all(bodies[i] == mailbox.messages[i].mime for i in bodies)
    assert graph.stats["throttled"] >= 10
    assert graph.stats["served"] == len(listed) + 3  # delta pages: 10 + 10 + 3


def test_mailbox_concurrency_is_capped(graph: RunningGraphServer,
                                       certificates: TestCertificates) -> None:
    graph.state.latency = 0.05
    graph_session = session(graph, certificates, per_mailbox=4)
    ids = inbox_ids(graph)
    with ThreadPoolExecutor(10) as pool:
        bodies = list(pool.map(lambda i: download(graph_session, i), ids))
    assert len(bodies) == len(ids) and all(bodies)
    assert graph.state.max_in_flight[AMELIE] == 4
    assert graph.stats["concurrency_refused"] == 0


def test_without_the_cap_the_server_refuses_and_retries_recover(
        graph: RunningGraphServer, certificates: TestCertificates) -> None:
    graph.state.latency = 0.05
    graph_session = session(graph, certificates, per_mailbox=10)
    ids = inbox_ids(graph)
    with ThreadPoolExecutor(10) as pool:
        bodies = list(pool.map(lambda i: download(graph_session, i), ids))
    assert bodies == [amelie(graph).messages[i].mime for i in ids]
    assert graph.state.max_in_flight[AMELIE] > 4
    assert graph.stats["concurrency_refused"] > 0


def test_retry_after_is_capped(graph: RunningGraphServer, certificates: TestCertificates) -> None:
    graph.state.throttle = Throttle(ratio=0.3, retry_after=(3600,))
    graph_session = session(graph, certificates, max_retry_after=0.05)
    started = time.monotonic()
    assert len(list(graph_session.pages("users", {"$top": 1}).values())) == 7
    assert graph.stats["throttled"] > 0
    assert time.monotonic() - started < 10


def test_unavailable_service_is_retried_with_backoff(graph: RunningGraphServer,
                                                     certificates: TestCertificates) -> None:
    graph.state.failures = [503, 504, 503]
    waits: list[float] = []
    graph_session = session(graph, certificates, sleep=waits.append)
    assert len(download(graph_session, inbox_ids(graph)[0])) > 0
    assert graph.stats["failed"] == 3
    assert len(waits) == 3 and all(0 < wait <= 60 for wait in waits)


def test_persistent_outage_ends_in_unreachable(graph: RunningGraphServer,
                                               certificates: TestCertificates) -> None:
    graph.state.failures = [503] * 10
    graph_session = session(graph, certificates, sleep=lambda _: None, connection_attempts=3)
    with pytest.raises(ConnectError) as failed:
        graph_session.get_json("users")
    assert failed.value.code == "unreachable"
    assert graph.stats["failed"] == 3


@pytest.mark.parametrize(("per_app", "capped"), [(4, True), (None, False)])
def test_per_app_cap_spans_mailboxes(graph: RunningGraphServer, certificates: TestCertificates,
                                     per_app: int | None, capped: bool) -> None:
    graph.state.latency = 0.05
    graph_session = session(graph, certificates, per_mailbox=4, per_app=per_app)
    users = [m.user_principal_name for m in graph.tenant.mailboxes] * 2
    with ThreadPoolExecutor(len(users)) as pool:
        assert all(pool.map(lambda u: graph_session.get_json(f"users/{u}/mailFolders"), users))
    assert (graph.state.max_app_in_flight <= 4) is capped


# --- pieces


def test_retry_after_in_seconds_or_as_a_date() -> None:
    now = datetime(2024, 7, 14, 12, 0, tzinfo=UTC)
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds(format_datetime(now + timedelta(seconds=30), usegmt=True),
                               now) == 30.0
    assert retry_after_seconds("demain") is None
    assert retry_after_seconds(None) is None


def test_mailbox_of_outlook_requests_only() -> None:
    base = "https://graph.microsoft.com/v1.0"
    assert mailbox_of(f"{base}/users/Am%C3%A9lie@Ville.fr/messages/AAMk=/$value") == \
        "amélie@ville.fr"
    assert mailbox_of(f"{base}/users/abc/mailFolders/inbox/messages/delta?$deltatoken=x") == "abc"
    assert mailbox_of(f"{base}/users/abc/drive/root/delta") is None
    assert mailbox_of(f"{base}/users?$top=3") is None


# --- the HTTP layer under the session (urllib3)


class _Plain(BaseHTTPRequestHandler):
    """Graph as far as these tests need it, in plain HTTP: a ``$value`` that redirects to
    another host, and one whose connection drops before the body is whole."""

    protocol_version = "HTTP/1.1"
    seen: ClassVar[list[tuple[str, str, str]]] = []

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        host = self.headers.get("Host", "")
        self.seen.append((host, self.path, self.headers.get("Authorization", "")))
        port = self.server.server_address[1]
        if self.path.endswith("/moved/$value"):
            self.send_response(302)
            self.send_header("Location", f"http://localhost:{port}/blob?sig=abc")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path.startswith("/blob"):
            body = b"Subject: moved\r\n\r\nbody\r\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:  # cut: 1,000 bytes announced, 10 sent, the connection closed
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"Subject: c")
            self.close_connection = True


@pytest.fixture
def plain() -> Iterator[tuple[GraphSession, list[tuple[str, str, str]]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Plain)
    _Plain.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    graph_session = GraphSession(f"http://127.0.0.1:{server.server_address[1]}/v1.0",
                                 lambda refresh=False: "jeton-de-test", connection_attempts=1)
    try:
        yield graph_session, _Plain.seen
    finally:
        graph_session.close()
        server.shutdown()
        server.server_close()


def test_redirect_is_followed_without_the_token_off_graph(
        plain: tuple[GraphSession, list[tuple[str, str, str]]]) -> None:
    graph_session, seen = plain
    with graph_session.stream(f"users/{AMELIE}/messages/moved/$value") as chunks:
        assert b"".join(chunks) == b"Subject: moved\r\n\r\nbody\r\n"
    (first_host, _, first_token), (second_host, second_path, second_token) = seen
    assert first_host.startswith("127.0.0.1:") and first_token == "Bearer jeton-de-test"
    assert second_host.startswith("localhost:") and second_path == "/blob?sig=abc"
    assert second_token == ""


def test_connection_dropped_mid_body_is_a_request_exception(
        plain: tuple[GraphSession, list[tuple[str, str, str]]]) -> None:
    """What the Graph sources catch to download again (``connectors/graph/mail.py``)."""
    graph_session, _ = plain
    with pytest.raises(requests.RequestException), \
            graph_session.stream(f"users/{AMELIE}/messages/cut/$value") as chunks:
        b"".join(chunks)
