"""The private SabreDAV fixture and what tests/sabredav.py says of SabreDAV 1.8: discovery
through the well-known redirect, bytes and ETags kept, no implicit scheduling (with a live
capture of what its outbox would mail), and what it accepts or refuses, as the sink reports
it."""

from __future__ import annotations

import hashlib
import io

import pytest
import requests

from connectors.base import Document, ItemRejected, fingerprint_bytes
from connectors.dav.client import DavClient
from connectors.dav.profiles import PROTECT
from connectors.dav.sink import DavSink
from tests.sabredav import SabreDav
from tests.test_scheduling import OUTSIDERS, OWNER, organised, orphan, received, series

PASSWORD = "alice-pw"


@pytest.fixture
def alice(sabredav: SabreDav) -> SabreDav:
    sabredav.add_user(OWNER, PASSWORD)
    return sabredav


def document(uid: str, body: bytes) -> Document:
    return Document(f"src-{uid}", "v1", f"{uid}.ics", (), fingerprint_bytes(body), len(body),
                    None, lambda: io.BytesIO(body))


def sink_of(server: SabreDav, workload: str = "calendar", *,
            rewrite: str | None = PROTECT) -> DavSink:
    return DavSink(DavClient(server.base_url + "/", OWNER, PASSWORD, ca_file=None, timeout=30),
                   workload, rewrite=rewrite)


def test_the_server_address_leads_to_the_homes_through_the_well_known_redirect(alice):
    assert requests.request("PROPFIND", alice.base_url + "/", auth=(OWNER, PASSWORD),
                            headers={"Depth": "0"}, timeout=30).status_code == 404
    calendars, contacts = sink_of(alice), sink_of(alice, "contacts")
    assert calendars.account.principal == f"/remote.php/dav/principals/{OWNER}/"
    assert calendars.account.path == alice.calendar_home(OWNER)
    assert contacts.account.path == alice.addressbook_home(OWNER)
    assert calendars.default_container() == alice.calendar_home(OWNER) + "personal/"
    assert contacts.default_container() == alice.addressbook_home(OWNER) + "contacts/"


def test_a_wrong_password_is_refused(alice):
    answer = requests.request("PROPFIND", alice.base_url + alice.calendar_home(OWNER),
                              auth=(OWNER, "wrong"), headers={"Depth": "0"}, timeout=30)
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"].startswith("Basic")


def test_objects_keep_their_bytes_and_each_put_answers_the_etag_stored(alice):
    # Unprotected, so that what is sent is the body itself.
    sink = sink_of(alice, rewrite=None)
    native = sink.ensure_container(("Conseil municipal",))
    body = series("kept")
    stored = sink.put(native, document("kept", body))
    assert stored.version == f'"{hashlib.md5(body).hexdigest()}"'
    answer = requests.get(alice.base_url + stored.target_ref, auth=(OWNER, PASSWORD),
                          timeout=30)
    assert answer.content == body
    assert answer.headers["ETag"] == stored.version


def test_writes_mail_nobody_even_unprotected_but_an_outbox_post_does(alice):
    """SabreDAV 1.8 schedules only what a client posts to its outbox: objects written as
    they are, changed and deleted, send nothing; the one POST sends one invitation, so the
    capture is live."""
    sink = sink_of(alice, rewrite=None)
    native = sink.ensure_container(("Agenda",))
    for make in (organised, received, series, orphan):
        uid = make.__name__
        first = sink.put(native, document(uid, make(uid)))
        changed = make(uid).replace(b"DTSTAMP:", b"SEQUENCE:1\r\nDTSTAMP:")
        second = sink.put(native, document(uid, changed), first.version)
        sink.remove(native, second.target_ref, second.version)
    assert alice.captured() == []

    invitation = organised("posted").replace(b"VERSION:2.0\r\n",
                                             b"VERSION:2.0\r\nMETHOD:REQUEST\r\n")
    answer = requests.post(alice.base_url + alice.calendar_home(OWNER) + "outbox",
                           data=invitation, auth=(OWNER, PASSWORD), timeout=30, headers={
                               "Content-Type": "text/calendar", "Originator": f"mailto:{OWNER}",
                               "Recipient": f"mailto:{OUTSIDERS[0]}"})
    assert answer.status_code == 200, answer.text
    captured = alice.captured()
    assert len(captured) == 1 and captured[0].startswith(f"To: {OUTSIDERS[0]}\n")


def test_what_it_refuses_is_an_item_error_each_and_the_next_object_lands(alice):
    """No UID: refused before it is sent (SabreDAV answers 400). An RRULE it cannot read:
    an exception its 1.8 series does not catch, so an empty 500. It accepts an orphan
    override and a TZID without its VTIMEZONE."""
    sink = sink_of(alice)
    native = sink.ensure_container(("Agenda",))
    refused = {"no-uid": (organised("x").replace(b"UID:x\r\n", b""), "dav_no_uid"),
               "bad-rule": (series("bad-rule").replace(b"FREQ=WEEKLY;COUNT=5",
                                                       b"FREQ=SOMETIMES"), "server_error")}
    for uid, (body, code) in refused.items():
        with pytest.raises(ItemRejected) as refusal:
            sink.put(native, document(uid, body))
        assert refusal.value.code == code, (uid, refusal.value)
    accepted = [orphan("orphan"), organised("zoned").replace(
        b"DTSTART:20300105T100000Z", b"DTSTART;TZID=Europe/Paris:20300105T100000")]
    assert b"TZID=Europe/Paris" in accepted[1] and b"VTIMEZONE" not in accepted[1]
    landed = {sink.put(native, document(f"ok-{n}", body)).target_ref
              for n, body in enumerate(accepted)}
    assert {stored.target_ref for stored in sink.inventory(native)} == landed
