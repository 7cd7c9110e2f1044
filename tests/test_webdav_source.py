"""The WebDAV source against a real WsgiDAV and a real Apache ``mod_dav_fs``, their spaces
filled on their disks: which collections are drives, what is passed over and noted, a file
changed or gone between listing and reading, a file the server will not give; and against a
small hostile server, hrefs that would lead out of a collection. The contract itself is the
conformance suite's (tests/conformance)."""

from __future__ import annotations

import http.server
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from xml.etree import ElementTree

import pytest

from connectors.base import ConnectError, Container, DocumentRef, fingerprint_bytes
from connectors.dav.client import DAV, DavClient, Resource, tag
from connectors.webdav.source import WebDavSource, _version
from tests.apache import Apache, start_apache
from tests.wsgidav import WsgiDav, start_wsgidav

LOGIN = "alice"
PASSWORD = "alice-pw"
WHEN = datetime(2023, 11, 2, 16, 45, 12, tzinfo=UTC)


@pytest.fixture(params=["wsgidav", "apache"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[WsgiDav | Apache]:
    started = (start_wsgidav if request.param == "wsgidav" else start_apache)(
        tmp_path / request.param, {LOGIN: PASSWORD})
    yield started
    started.stop()


def source_of(server: WsgiDav | Apache) -> WebDavSource:
    return WebDavSource(DavClient(server.space_url().format(login=LOGIN), LOGIN, PASSWORD,
                                  ca_file=None, timeout=30))


def put(space: Path, path: str, content: bytes) -> Path:
    place = space / path
    place.parent.mkdir(parents=True, exist_ok=True)
    place.write_bytes(content)
    os.utime(place, (WHEN.timestamp(), WHEN.timestamp()))
    return place


def test_drives_are_the_top_collections_and_hidden_names_are_noted(server):
    space = server.space(LOGIN)
    put(space, "OneDrive/Délibérations/2024/PV n°3.pdf", b"%PDF-1.7\n")
    put(space, "OneDrive/vide.txt", b"")
    put(space, "OneDrive/.DS_Store", b"finder")
    put(space, "OneDrive/.0123456789abcdef.bascule-part", b"half")
    put(space, "OneDrive/notes.bascule-part", b"a user's own")
    put(space, "OneDrive/.cache/vignette.png", b"png")
    put(space, "Urbanisme/Plans/plan cadastral.txt", b"parcelle 12")
    put(space, "Lisez-moi.txt", b"at the top")
    (space / "Vide").mkdir()
    source = source_of(server)

    drives = source.document_containers("files")
    assert [d.path for d in drives] == [("OneDrive",), ("Urbanisme",), ("Vide",)]
    assert source.document_containers("calendar") == []
    listed = {}
    for drive in drives:
        listing = source.list_documents(drive, None)
        assert listing.complete and listing.cursor == {}
        listed[drive.path] = {ref.source_id: (ref.folder, ref.name, ref.size)
                              for ref in listing.refs}
    assert listed == {
        ("OneDrive",): {"Délibérations/2024/PV n°3.pdf": (("Délibérations", "2024"),
                                                          "PV n°3.pdf", 9),
                        "notes.bascule-part": ((), "notes.bascule-part", 12),
                        "vide.txt": ((), "vide.txt", 0)},
        ("Urbanisme",): {"Plans/plan cadastral.txt": (("Plans",), "plan cadastral.txt", 11)},
        ("Vide",): {}}
    # Each said once, though the drives were listed again.
    source.document_containers("files")
    assert sorted((n.code, n.subject) for n in source.drain_notes()) == [
        ("file_outside_drives", "Lisez-moi.txt"),
        ("hidden_file_skipped", "OneDrive/.DS_Store"),
        ("webdav_hidden_folder_skipped", "OneDrive/.cache")]

    [onedrive, _, _] = drives
    refs = source.list_documents(onedrive, None).refs
    documents = {d.source_id: d for d in source.fetch_documents(onedrive, refs)}
    pv = documents["Délibérations/2024/PV n°3.pdf"]
    assert (pv.fingerprint, pv.size, pv.modified) == (fingerprint_bytes(b"%PDF-1.7\n"), 9, WHEN)
    assert (pv.name, pv.folder) == ("PV n°3.pdf", ("Délibérations", "2024"))
    assert documents["vide.txt"].fingerprint == fingerprint_bytes(b"")
    assert {d.version for d in documents.values()} == {r.version for r in refs}


def test_a_file_changed_gets_a_new_version_and_one_gone_before_its_reading_is_noted(server):
    space = server.space(LOGIN)
    kept = put(space, "OneDrive/rapport.txt", b"version 1")
    gone = put(space, "OneDrive/brouillon.txt", b"draft")
    source = source_of(server)
    [drive] = source.document_containers("files")
    before = {ref.source_id: ref for ref in source.list_documents(drive, None).refs}

    kept.write_bytes(b"version 2, longer")
    gone.unlink()
    fetched = list(source.fetch_documents(drive, list(before.values())))
    assert [d.source_id for d in fetched] == ["rapport.txt"]
    [document] = fetched
    assert document.fingerprint == fingerprint_bytes(b"version 2, longer")
    assert document.version != before["rapport.txt"].version
    [after] = source.list_documents(drive, None).refs
    assert after.version == document.version
    assert [(n.code, n.subject) for n in source.drain_notes()] == [
        ("gone_before_read", "brouillon.txt")]


def test_a_file_the_server_will_not_give_is_an_unreadable_item(tmp_path):
    """Apache runs as another user (root's tests): a file it may not read answers 403."""
    if os.getuid() != 0:
        pytest.skip("needs Apache to run as a user other than the files' owner")
    server = start_apache(tmp_path / "apache", {LOGIN: PASSWORD})
    try:
        space = server.space(LOGIN)
        put(space, "OneDrive/lisible.txt", b"open")
        put(space, "OneDrive/secret.txt", b"closed").chmod(0o600)
        source = source_of(server)
        [drive] = source.document_containers("files")
        refs = source.list_documents(drive, None).refs
        assert [d.source_id for d in source.fetch_documents(drive, refs)] == ["lisible.txt"]
        [note] = source.drain_notes()
        assert (note.code, note.subject) == ("unreadable_item", "secret.txt")
        assert "403" in note.detail
    finally:
        server.stop()


# --- a hostile server ----------------------------------------------------------------------

MEMBER = ("<D:response><D:href>{href}</D:href><D:propstat><D:prop>{kind}<D:getetag>\"1\""
          "</D:getetag><D:getcontentlength>2</D:getcontentlength></D:prop>"
          "<D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>")
FILE = "<D:resourcetype/>"
FOLDER = "<D:resourcetype><D:collection/></D:resourcetype>"
OUTSIDE = ("http://elsewhere.example/dav/alice/Drive/vol.txt", "/dav/alice/Drive/../../bob/x",
           "/dav/alice/Drive/a%2F..%2F..%2Fbob%2Fsecret.txt", "/dav/alice/Drive/sous/profond.txt",
           "/dav/bob/voisin.txt", "/dav/alice/Drive/./point.txt")


@pytest.fixture
def hostile() -> Iterator[tuple[str, list[str]]]:
    """A server whose space ``/dav/alice/`` holds the drive ``Drive`` with ``ok.txt``, and
    names besides, in the drive's listing, hrefs on another server, out of the drive and
    below it, with ``..`` and encoded slashes. Answers its URL and what it was asked."""
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("ETag", '"1"')
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_PROPFIND(self) -> None:
            asked.append(f"PROPFIND {self.path}")
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path == "/dav/alice/":
                members = [("/dav/alice/", FOLDER), ("/dav/alice/Drive/", FOLDER),
                           ("/dav/alice/../bob/", FOLDER)]
            else:
                members = [("/dav/alice/Drive/", FOLDER), ("/dav/alice/Drive/ok.txt", FILE),
                           *((href, FILE) for href in OUTSIDE)]
            body = "".join(MEMBER.format(href=href, kind=kind) for href, kind in members)
            self.answer(207, (f'<?xml version="1.0"?><D:multistatus xmlns:D="DAV:">{body}'
                              "</D:multistatus>").encode())

        def do_GET(self) -> None:
            asked.append(f"GET {self.path}")
            self.answer(200, b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/dav/alice/", asked
    finally:
        server.shutdown()
        server.server_close()


def test_hrefs_that_leave_a_collection_are_never_read_and_each_is_noted(hostile):
    url, asked = hostile
    source = WebDavSource(DavClient(url, LOGIN, PASSWORD, ca_file=None, timeout=10))
    assert source.document_containers("files") == [Container(("Drive",), native_name="Drive")]
    [drive] = source.document_containers("files")
    refs = source.list_documents(drive, None).refs
    assert [ref.source_id for ref in refs] == ["ok.txt"]
    assert [d.source_id for d in source.fetch_documents(drive, refs)] == ["ok.txt"]
    assert [line for line in asked if line.startswith("GET")] == ["GET /dav/alice/Drive/ok.txt"]
    notes = source.drain_notes()
    assert {note.code for note in notes} == {"webdav_name_refused"}
    assert sorted(note.detail for note in notes) == sorted([
        "/dav/alice/../bob/",
        "http://elsewhere.example/dav/alice/Drive/vol.txt", "/dav/alice/Drive/../../bob/x",
        "/dav/alice/Drive/a/../../bob/secret.txt", "/dav/alice/Drive/sous/profond.txt",
        "/dav/bob/voisin.txt", "/dav/alice/Drive/./point.txt"])


def test_a_folder_the_server_will_not_list_fails_the_listing_rather_than_shorten_it(tmp_path):
    """A listing is whole: one missing a folder would count its files as deleted."""
    if os.getuid() != 0:
        pytest.skip("needs Apache to run as a user other than the files' owner")
    server = start_apache(tmp_path / "apache", {LOGIN: PASSWORD})
    try:
        space = server.space(LOGIN)
        put(space, "OneDrive/lisible.txt", b"open")
        put(space, "OneDrive/Fermé/secret.txt", b"closed")
        (space / "OneDrive" / "Fermé").chmod(0o700)
        source = source_of(server)
        [drive] = source.document_containers("files")
        with pytest.raises(ConnectError) as refused:
            source.list_documents(drive, None)
        assert refused.value.code == "dav_refused"
        assert "403" in str(refused.value)
    finally:
        server.stop()


def test_a_ref_that_would_leave_its_drive_is_never_read(hostile):
    """Refs come from the ledger too: one naming ``..`` is refused before any request."""
    url, asked = hostile
    source = WebDavSource(DavClient(url, LOGIN, PASSWORD, ca_file=None, timeout=10))
    drive = Container(("Drive",), native_name="Drive")
    refs = [DocumentRef("../../bob/secret.txt", "1", 2, "secret.txt", ("..", "..", "bob")),
            DocumentRef("ok.txt", "1", 2, "ok.txt")]
    assert [d.source_id for d in source.fetch_documents(drive, refs)] == ["ok.txt"]
    assert asked == ["GET /dav/alice/Drive/ok.txt"]
    assert [(n.code, n.detail) for n in source.drain_notes()] == [
        ("webdav_name_refused", "Drive/../../bob/secret.txt")]


def test_a_server_giving_no_etag_versions_a_file_by_its_date_and_length():
    def listed(**properties: str) -> Resource:
        found = {}
        for name, text in properties.items():
            element = ElementTree.Element(tag(DAV, name))
            element.text = text
            found[element.tag] = element
        return Resource("/dav/alice/Drive/a.txt", found)

    day = "Thu, 14 Mar 2024 09:26:53 GMT"
    assert _version(listed(getetag='W/"3-61395"'), 3) == _version(listed(getetag='"3-61395"'), 3)
    assert _version(listed(getlastmodified=day), 3) == "2024-03-14T09:26:53+00:00:3"
    assert _version(listed(getlastmodified=day), 4) != _version(listed(getlastmodified=day), 3)
    assert _version(listed(getlastmodified="Fri, 15 Mar 2024 09:26:53 GMT"), 3) != \
        _version(listed(getlastmodified=day), 3)
