"""The CalDAV and CardDAV sink against a real Cyrus: what its scheduling sends when objects
are created, changed and deleted through the sink, what it refuses, and how discovery
fails. The contract itself is the conformance suite's (tests/conformance)."""

from __future__ import annotations

import http.server
import io
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import unquote

import pytest

from connectors.base import (
    ConnectError,
    ContainerRefused,
    Document,
    ItemRejected,
    fingerprint_bytes,
)
from connectors.dav.client import DavClient
from connectors.dav.sink import (
    SPOOLED_IN_MEMORY,
    DavSink,
    display_name,
    resource_name,
    slug,
)
from tests.cyrus import Cyrus
from tests.radicale import Radicale
from tests.test_scheduling import OWNER, organised, orphan, received, sent, series


def document(uid: str, body: bytes, name: str | None = None) -> Document:
    return Document(f"src-{uid}", "v1", name or f"{uid}.ics", (), fingerprint_bytes(body),
                    len(body), None, lambda: io.BytesIO(body))


def sink_of(cyrus: Cyrus, workload: str = "calendar", url: str | None = None) -> DavSink:
    return DavSink(DavClient(url or cyrus.base_url + "/", OWNER, cyrus.users[OWNER],
                             ca_file=None, timeout=30), workload)


def test_objects_created_changed_and_deleted_through_the_sink_send_nothing(cyrus: Cyrus):
    """Each kind makes Cyrus mail someone when written as it is (tests/test_scheduling.py);
    through the sink, none does, whatever is done to it."""
    sink = sink_of(cyrus)
    native = sink.ensure_container(("Conseil municipal",))
    for kind, make in (("organised", organised), ("received", received),
                       ("series", series), ("orphan", orphan)):
        uid = f"{kind}-through-the-sink"
        first = sink.put(native, document(uid, make(uid)))
        changed = make(uid).replace(b"SUMMARY:Conseil", b"SUMMARY:Conseil (report\xc3\xa9)")
        changed = changed.replace(b"DTSTAMP:", b"SEQUENCE:1\r\nDTSTAMP:")
        second = sink.put(native, document(uid, changed), first.version)
        assert second.target_ref == first.target_ref and second.version != first.version
        sink.remove(native, second.target_ref, second.version)
        assert sink.find(native, document(uid, changed)) is None
        assert sent(cyrus.captured()) == [], kind


def test_objects_the_server_refuses_are_each_an_item_error_and_the_next_lands(cyrus: Cyrus):
    sink = sink_of(cyrus)
    native = sink.ensure_container(("Agenda",))
    broken = {
        "bad-rule": series("bad-rule").replace(b"FREQ=WEEKLY;COUNT=5", b"FREQ=SOMETIMES"),
        "not-ical": b"BEGIN:VCALENDAR\r\nUID:not-ical\r\nthis is not a calendar\r\n",
    }
    for uid, body in broken.items():
        with pytest.raises(ItemRejected) as refused:
            sink.put(native, document(uid, body))
        assert refused.value.code == "dav_invalid_object", (uid, refused.value)
        assert "403" in refused.value.detail or "400" in refused.value.detail, refused.value
    # Without a UID no server keeps it: refused before it is sent.
    with pytest.raises(ItemRejected) as refused:
        sink.put(native, document("no-uid", organised("x").replace(b"UID:x\r\n", b"")))
    assert refused.value.code == "dav_no_uid"
    stored = sink.put(native, document("fine", received("fine")))
    assert [s.target_ref for s in sink.inventory(native)] == [stored.target_ref]


def test_a_uid_the_server_holds_elsewhere_is_refused_naming_where(cyrus: Cyrus,
                                                                   radicale: Radicale):
    """Cyrus keeps one object per UID across a user's calendars (RFC 6638 3.2.4.1, refused
    with ``unique-scheduling-object-resource``, even for an event without attendees);
    Radicale, one per UID within a calendar (``no-uid-conflict``). Either way the item is a
    line naming the resource that holds the UID, and the next one lands."""
    sink = sink_of(cyrus)
    first, second = sink.ensure_container(("Agenda",)), sink.ensure_container(("Mairie",))
    kept = sink.put(first, document("partage", received("partage")))
    with pytest.raises(ItemRejected) as refused:
        sink.put(second, document("partage", received("partage")))
    assert refused.value.code == "dav_uid_taken", refused.value
    assert refused.value.params["holder"] == unquote(kept.target_ref)
    assert [s.target_ref for s in sink.inventory(second)] == []
    sink.put(second, document("autre", received("autre")))
    assert len(list(sink.inventory(second))) == 1

    radicale.add_user(OWNER, "owner-pw")
    on_radicale = DavSink(DavClient(radicale.base_url + "/", OWNER, "owner-pw", ca_file=None,
                                    timeout=30), "calendar")
    native = on_radicale.ensure_container(("Agenda",))
    kept = on_radicale.put(native, document("double", received("double")))
    with pytest.raises(ItemRejected) as refused:
        on_radicale.put(native, document("double", received("double"), name="copie.ics"))
    assert refused.value.code == "dav_uid_taken", refused.value
    assert [s.target_ref for s in on_radicale.inventory(native)] == [kept.target_ref]


def test_a_document_whose_content_changed_while_read_is_refused(cyrus: Cyrus):
    sink = sink_of(cyrus)
    native = sink.ensure_container(("Agenda",))
    body = received("moving")
    changing = document("moving", body)
    changing = Document(changing.source_id, "v1", changing.name, (),
                        fingerprint_bytes(body + b"\r\n"), len(body), None, changing.open)
    with pytest.raises(ItemRejected) as refused:
        sink.put(native, changing)
    assert refused.value.code == "invalid_message"
    assert list(sink.inventory(native)) == []


def test_a_place_outside_the_collection_is_refused_before_any_request(cyrus: Cyrus):
    sink = sink_of(cyrus)
    native = sink.ensure_container(("Agenda",))
    for place in (native + "../Default/x.ics", "/dav/calendars/user/bob@example.org/x.ics",
                  native.rsplit("/", 2)[0] + "/"):
        with pytest.raises(ContainerRefused):
            sink.remove(native, place)
    with pytest.raises(ContainerRefused):
        list(sink.inventory("/dav/calendars/user/bob@example.org/Default/"))


@contextmanager
def answering(status: int, headers: dict[str, str]) -> Iterator[str]:
    """A local HTTP server answering every request with ``status`` and ``headers``."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def answer(self) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_PUT(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.answer()

        do_PROPFIND = do_GET = answer

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_a_server_that_names_no_principal_stops_the_sink_with_a_clear_error(cyrus: Cyrus):
    with answering(404, {}) as url, pytest.raises(ConnectError) as failed:
        sink_of(cyrus, url=url).ensure_container(("Agenda",))
    assert failed.value.code == "dav_no_principal"


def test_a_redirect_to_another_server_is_not_followed(cyrus: Cyrus):
    with answering(301, {"Location": cyrus.base_url + "/dav/"}) as url, \
            pytest.raises(ConnectError) as failed:
        sink_of(cyrus, url=url).ensure_container(("Agenda",))
    assert "another server" in str(failed.value)


def test_names_the_rules_keep_and_change():
    assert resource_name("3fa2-b1c4@ville.fr.ics") == ("3fa2-b1c4@ville.fr.ics", None)
    for hostile in ("../../x.ics", "a/b.ics", "x\0y.ics", ".cache.ics", "é" * 300 + ".ics",
                    "%2e%2e%2fx.ics"):
        name, rule = resource_name(hostile)
        assert rule == "renamed_file_name"
        assert "/" not in name and "%" not in name and not name.startswith(".")
        assert len(name) <= 120 and name.endswith(".ics"), name
    assert resource_name("a b.ics")[0] != resource_name("a_b.ics")[0]
    assert display_name(("Élus", "Commissions")) == "Élus / Commissions"
    assert display_name(("x\0y\x1b",)) == "x_y_"
    assert slug("Conseil municipal – été").startswith("conseil-municipal-ete-")
    assert slug("été") != slug("ete")


def test_a_server_refusing_an_object_as_too_big_or_over_quota_is_said_per_item(cyrus: Cyrus):
    """RFC 4918's 413 and 507, each an item error the run reports and goes past."""
    for status, code in ((413, "too_big"), (507, "over_quota"), (500, "server_error")):
        with answering(status, {}) as url:
            sink = sink_of(cyrus, url=url)
            sink.account.path = "/dav/calendars/user/alice@example.org/"  # not the case
            with pytest.raises(ItemRejected) as refused:
                sink.put(sink.account.path + "Agenda/", document("gros", received("gros")))
        assert refused.value.code == code, (status, refused.value)


def test_an_object_that_fits_in_memory_is_sent_without_a_temporary_file(
        cyrus: Cyrus, monkeypatch: pytest.MonkeyPatch):
    """A file on disk per object cost as much CPU as the rest of a PUT (bench.dav); one
    larger than ``SPOOLED_IN_MEMORY`` still waits on disk, not in memory."""
    rolled: list[int] = []
    rollover = tempfile.SpooledTemporaryFile.rollover

    def counted(spool: tempfile.SpooledTemporaryFile) -> None:  # type: ignore[type-arg]
        rolled.append(1)
        rollover(spool)

    monkeypatch.setattr(tempfile.SpooledTemporaryFile, "rollover", counted)
    with answering(201, {"ETag": '"v1"'}) as url:
        sink = sink_of(cyrus, url=url)
        sink.account.path = "/dav/calendars/user/alice@example.org/"  # not the case
        native = sink.account.path + "Agenda/"
        small = received("petit")
        assert sink.put(native, document("petit", small)).version == '"v1"'
        assert rolled == []
        big = small.replace(b"SUMMARY:", b"DESCRIPTION:" + b"x" * SPOOLED_IN_MEMORY
                            + b"\r\nSUMMARY:")
        assert sink.put(native, document("gros", big)).version == '"v1"'
        assert rolled
