"""The CalDAV and CardDAV source against a real Radicale and a real Cyrus, filled with plain
HTTP: which collections are containers, delta listings from a sync token, a token the
server refuses; and against a small hostile server, hrefs that lead out of a collection.
The contract itself is the conformance suite's (tests/conformance)."""

from __future__ import annotations

import http.server
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import requests

from connectors.base import Container, DocumentRef
from connectors.dav.client import DavClient
from connectors.dav.source import DavSource
from tests.conformance.items import sample_body
from tests.cyrus import Cyrus
from tests.radicale import Radicale

LOGIN = "alice@example.org"
PASSWORD = "alice-pw"
HOMES = {"cyrus": "/dav/calendars/user/{login}/", "radicale": "/{login}/"}


class Account:
    """The account on the server, written with plain HTTP."""

    def __init__(self, server: Cyrus | Radicale, home: str) -> None:
        self.server = server
        self.home = home

    def request(self, method: str, path: str, **options: Any) -> requests.Response:
        return requests.request(method, self.server.base_url + urllib.parse.quote(path,
                                                                                   safe="/@"),
                                auth=(LOGIN, PASSWORD), timeout=30, **options)

    def calendar(self, segment: str, shown: str, components: tuple[str, ...] = ()) -> str:
        place = f"{self.home}{segment}/"
        limited = "".join(f'<C:comp name="{name}"/>' for name in components)
        limited = f"<C:supported-calendar-component-set>{limited}" \
                  "</C:supported-calendar-component-set>" if limited else ""
        answer = self.request("MKCALENDAR", place, headers={"Content-Type": "application/xml"},
                              data=('<?xml version="1.0" encoding="utf-8"?><C:mkcalendar '
                                    'xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">'
                                    f"<D:set><D:prop><D:displayname>{shown}</D:displayname>"
                                    f"{limited}</D:prop></D:set></C:mkcalendar>").encode())
        assert answer.status_code == 201, answer.text
        return place

    def put(self, path: str, body: bytes) -> None:
        answer = self.request("PUT", path, data=body,
                              headers={"Content-Type": "text/calendar; charset=utf-8"})
        assert answer.status_code in (201, 204), answer.text


@pytest.fixture(params=["radicale", "cyrus"])
def account(request: pytest.FixtureRequest) -> Account:
    if request.param == "cyrus":
        server: Cyrus | Radicale = request.getfixturevalue("cyrus_factory")({LOGIN: PASSWORD})
    else:
        server = request.getfixturevalue("radicale")
        server.add_user(LOGIN, PASSWORD)
    return Account(server, HOMES[request.param].format(login=LOGIN))


def source_of(url: str) -> DavSource:
    return DavSource(DavClient(url, LOGIN, PASSWORD, ca_file=None, timeout=30))


def by_name(source: DavSource) -> dict[str, Container]:
    return {container.path[-1]: container for container in
            source.document_containers("calendar")}


def test_calendars_that_take_events_are_containers_by_name_the_default_first(
        account: Account):
    account.calendar("travaux-1", "Travaux")
    account.calendar("travaux-2", "Travaux")
    account.calendar("taches", "Tâches", ("VTODO",))
    account.calendar("mixte", "Mixte", ("VEVENT", "VTODO"))
    source = source_of(account.server.base_url + "/")
    containers = source.document_containers("calendar")
    shown = [container.path for container in containers]
    assert ("Tâches",) not in shown
    assert {("Travaux",), ("Travaux (travaux-2)",), ("Mixte",)} <= set(shown)
    assert [(note.code, note.subject) for note in source.drain_notes()] == [
        ("duplicate_container_name", "Travaux (travaux-2)")]
    defaults = [c for c in containers if c.role == "default"]
    if isinstance(account.server, Cyrus):  # Cyrus makes one; Radicale none
        assert [c.native_name for c in defaults] == [f"{account.home}Default/"]
        assert containers[0] == defaults[0]
    else:
        assert defaults == []
    assert source.document_containers("files") == []


def test_a_delta_listing_gives_what_changed_and_what_went(account: Account):
    place = account.calendar("agenda", "Agenda")
    for key in ("un", "deux", "trois"):
        account.put(f"{place}{key}.ics", sample_body("calendar", key))
    source = source_of(account.server.base_url + "/")
    agenda = by_name(source)["Agenda"]
    first = source.list_documents(agenda, None)
    assert first.complete and sorted(ref.name for ref in first.refs) == [
        "deux.ics", "trois.ics", "un.ics"]
    assert set(first.cursor) == {"sync_token"}

    account.put(f"{place}un.ics", sample_body("calendar", "un", " (reporté)"))
    assert account.request("DELETE", f"{place}deux.ics").status_code in (200, 204)
    account.put(f"{place}quatre.ics", sample_body("calendar", "quatre"))
    delta = source_of(account.server.base_url + "/").list_documents(agenda, first.cursor)
    assert not delta.complete
    assert sorted(ref.name for ref in delta.refs) == ["quatre.ics", "un.ics"]
    assert delta.removed == [f"{place}deux.ics"]
    before = {ref.source_id: ref.version for ref in first.refs}
    assert [ref.version != before[ref.source_id] for ref in delta.refs
            if ref.name == "un.ics"] == [True]
    [changed] = source.fetch_documents(agenda, [ref for ref in delta.refs
                                                if ref.name == "un.ics"])
    with changed.open() as body:
        assert "Conseil municipal un (reporté)" in body.read().decode()

    still = source.list_documents(agenda, delta.cursor)
    assert (still.complete, still.refs, still.removed) == (False, [], [])


def test_a_sync_token_the_server_refuses_gives_a_full_listing_and_a_note(account: Account):
    place = account.calendar("agenda", "Agenda")
    account.put(f"{place}un.ics", sample_body("calendar", "un"))
    source = source_of(account.server.base_url + "/")
    agenda = by_name(source)["Agenda"]
    source.drain_notes()
    listing = source.list_documents(agenda, {"sync_token": "http://example.invalid/sync/1"})
    assert listing.complete and [ref.name for ref in listing.refs] == ["un.ics"]
    assert listing.cursor["sync_token"] != "http://example.invalid/sync/1"
    assert [(note.code, note.subject) for note in source.drain_notes()] == [
        ("sync_token_refused", "Agenda")]


# --- a hostile server ----------------------------------------------------------------------

MEMBER = ("<D:response><D:href>{href}</D:href><D:propstat><D:prop><D:getetag>\"{etag}\""
          "</D:getetag><D:resourcetype/></D:prop><D:status>HTTP/1.1 200 OK</D:status>"
          "</D:propstat></D:response>")
OUTSIDE = ("http://elsewhere.example/cal/vol.ics", "/cal/../autre/secret.ics",
           "/cal/sous/profond.ics", "/autre/voisin.ics")


@contextmanager
def hostile(sync: bool, etag: str = "1") -> Iterator[tuple[str, list[str], list[str]]]:
    """A server whose collection ``/cal/`` holds ``ok.ics`` and names, besides, hrefs on
    another server, out of the collection and below it; a sync REPORT, or (``sync``
    false) only PROPFIND. Answers its URL, the paths it was asked for, and the etags it
    gives (change the first to change ``ok.ics``)."""
    asked: list[str] = []
    etags = [etag]

    class Handler(http.server.BaseHTTPRequestHandler):
        def answer(self, status: int, body: bytes, kind: str = "application/xml") -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("ETag", f'"{etags[0]}"')
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def listing(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            hrefs = ["/cal/ok.ics", *OUTSIDE]
            body = "".join(MEMBER.format(href=href, etag=etags[0]) for href in hrefs)
            token = "<D:sync-token>urn:hostile:1</D:sync-token>" if sync else ""
            self.answer(207, (f'<?xml version="1.0"?><D:multistatus xmlns:D="DAV:">{body}'
                              f"{token}</D:multistatus>").encode())

        def do_REPORT(self) -> None:
            asked.append(f"REPORT {self.path}")
            if sync:
                self.listing()
            else:
                self.answer(501, b"")

        def do_PROPFIND(self) -> None:
            asked.append(f"PROPFIND {self.path}")
            self.listing()

        def do_GET(self) -> None:
            asked.append(f"GET {self.path}")
            self.answer(200, sample_body("calendar", "ok"), "text/calendar")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", asked, etags
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("sync", [True, False], ids=["sync-collection", "propfind"])
def test_hrefs_that_leave_the_collection_are_never_read_and_each_is_noted(sync: bool):
    with hostile(sync) as (url, asked, etags):
        source = source_of(url)
        container = Container(("Agenda",), native_name="/cal/")
        listing = source.list_documents(container, None)
        assert [ref.source_id for ref in listing.refs] == ["/cal/ok.ics"]
        assert listing.complete
        notes = source.drain_notes()
        assert sorted(note.detail for note in notes) == sorted(OUTSIDE)
        assert {note.code for note in notes} == {"dav_href_outside"}
        # Even named by a ledger, an item outside the collection is not asked for.
        fetched = list(source.fetch_documents(container, [
            *listing.refs, DocumentRef("/autre/voisin.ics", "1"),
            DocumentRef("/cal/../autre/secret.ics", "1")]))
        assert [document.source_id for document in fetched] == ["/cal/ok.ics"]
        assert [line for line in asked if line.startswith("GET")] == ["GET /cal/ok.ics"]

        etags[0] = "2"
        again = source.list_documents(container, listing.cursor)
        assert not again.complete and [ref.version for ref in again.refs] == ['"2"']
