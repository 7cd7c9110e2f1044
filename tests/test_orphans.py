"""Orphan occurrences (a RECURRENCE-ID whose series master is not in the object): which real
servers keep them as they are (the profiles' ``requires_master``), and the standalone form
written where a server needs a master, read back with icalendar."""

from __future__ import annotations

import io
import urllib.parse

import icalendar
import pytest
import requests

from connectors.base import Document, fingerprint_bytes
from connectors.dav.client import DavClient
from connectors.dav.profiles import PROFILES
from connectors.dav.sink import DavSink
from mappings.orphans import Standalone, orphans, standalone_uid
from tests.test_scheduling import OUTSIDERS, OWNER, series, vcalendar, vevent

LONG_UID = "040000008200E00074C5B7101A82E00800000000" + "ab" * 40
"""Longer than a line: folded where it is written."""


def orphan_of(uid: str, owner: str = OWNER) -> bytes:
    """An invitation to the 12 January meeting of a series the owner does not have, with an
    alarm (whose nested component must not be taken for the event's)."""
    alarm = "BEGIN:VALARM\r\nUID:alarm-1\r\nACTION:DISPLAY\r\nTRIGGER:-PT15M\r\nEND:VALARM\r\n"
    return vcalendar(vevent(uid, OUTSIDERS[0], {OUTSIDERS[0]: "ACCEPTED", owner: "ACCEPTED"},
                            extra="RECURRENCE-ID:20300112T100000Z\r\n" + alarm,
                            start="20300112T140000Z"))


def converted(body: bytes, chunk: int) -> tuple[bytes, int]:
    pieces = [body[i:i + chunk] for i in range(0, len(body), chunk)]
    found = orphans(iter(pieces))
    standalone = Standalone(found)
    out = b"".join(standalone(iter(pieces)))
    return out, standalone.converted


@pytest.mark.parametrize("chunk", [1, 7, 75, 1 << 16])
def test_an_orphan_becomes_a_standalone_event_with_a_stable_uid(chunk: int) -> None:
    body = icalendar.Calendar.from_ical(orphan_of("x")).to_ical()  # icalendar folds it
    body = body.replace(b"UID:x", b"UID:" + LONG_UID.encode())
    body = icalendar.Calendar.from_ical(body).to_ical()
    assert b"\r\n " in body.split(b"UID:")[1].split(b"DTSTAMP")[0], "the UID is not folded"
    out, count = converted(body, chunk)
    assert count == 1
    [event] = icalendar.Calendar.from_ical(out).walk("VEVENT")
    assert "RECURRENCE-ID" not in event
    assert str(event["UID"]) == f"{LONG_UID}-20300112T100000Z"
    assert event["DTSTART"].dt.isoformat() == "2030-01-12T14:00:00+00:00"
    [alarm] = event.walk("VALARM")
    assert str(alarm["UID"]) == "alarm-1" and str(alarm["TRIGGER"].to_ical()) != ""
    assert all(len(line) <= 75 for line in out.split(b"\r\n"))
    again, _ = converted(body, 5)
    assert again == out, "another run gives the occurrence another UID"
    kept = [line for line in body.split(b"\r\n") if not line.startswith((b"UID", b"RECURR", b" "))]
    assert [line for line in out.split(b"\r\n") if not line.startswith((b"UID", b" "))] == kept


def test_a_series_with_its_overrides_and_an_object_without_any_pass_unchanged() -> None:
    for body in (series("s"), vcalendar(vevent("single", OWNER, {}))):
        assert orphans([body]) == {}
        out, count = converted(body, 13)
        assert (out, count) == (body, 0)


def test_an_orphan_beside_another_series_master_is_still_an_orphan() -> None:
    body = vcalendar(vevent("other", OWNER, {}, extra="RRULE:FREQ=DAILY;COUNT=2\r\n"),
                     vevent("lonely", OWNER, {}, extra="RECURRENCE-ID;TZID=Europe/Paris:"
                            "20300112T100000\r\n"))
    assert orphans([body]) == {1: standalone_uid("lonely", "20300112T100000")}
    out, count = converted(body, 64)
    events = icalendar.Calendar.from_ical(out).walk("VEVENT")
    assert count == 1 and [str(e["UID"]) for e in events] == ["other", "lonely-20300112T100000"]
    assert "RRULE" in events[0] and not any("RECURRENCE-ID" in e for e in events)


def document(uid: str, body: bytes) -> Document:
    return Document(f"src-{uid}", "v1", f"{uid}.ics", (), fingerprint_bytes(body), len(body),
                    None, lambda: io.BytesIO(body))


KEEPS_ORPHANS = {"cyrus": not PROFILES["cyrus"].requires_master,
                 "radicale": not PROFILES["radicale"].requires_master,
                 "xandikos": not PROFILES["xandikos"].requires_master,
                 "sabredav": True}
"""What bascule holds of each server run here (SabreDAV has no profile of its own:
tests/sabredav.py says it keeps them)."""


@pytest.mark.parametrize("server", sorted(KEEPS_ORPHANS))
def test_which_servers_keep_an_orphan_occurrence_as_it_is(server: str,
                                                          request: pytest.FixtureRequest):
    """Written as it is, an orphan occurrence is kept (RECURRENCE-ID and UID) by the servers
    whose profile says so, and refused by the others. Written through a sink whose profile
    needs a master, it lands standalone, the sink says so, and verify finds it as sent."""
    running = request.getfixturevalue(server)
    login, password = OWNER, "owner-pw"
    if server == "cyrus":
        password = running.users[OWNER]
    elif server == "xandikos":
        login, password = "alice", "alice-pw"
    else:
        running.add_user(login, password)
    owner = running.address(login) if server == "xandikos" else login
    sink = DavSink(DavClient(running.base_url + "/", login, password, ca_file=None, timeout=30),
                   "calendar", rewrite=None)
    native = sink.ensure_container(("Invitations",))
    answer = requests.put(running.base_url + urllib.parse.quote(native, safe="/@") + "o.ics",
                          data=orphan_of("orphan-as-is", owner), auth=(login, password),
                          timeout=30, headers={"Content-Type": "text/calendar; charset=utf-8",
                                               "If-None-Match": "*"})
    kept = answer.status_code in (200, 201, 204)
    assert kept == KEEPS_ORPHANS[server], (answer.status_code, answer.text)
    if kept:
        stored = requests.get(running.base_url + urllib.parse.quote(native, safe="/@") + "o.ics",
                              auth=(login, password), timeout=30)
        [event] = icalendar.Calendar.from_ical(stored.content).walk("VEVENT")
        assert str(event["UID"]) == "orphan-as-is"
        assert event["RECURRENCE-ID"].dt.isoformat() == "2030-01-12T10:00:00+00:00"

    careful = DavSink(DavClient(running.base_url + "/", login, password, ca_file=None,
                                timeout=30), "calendar", rewrite=None, standalone_orphans=True)
    body = orphan_of("orphan-alone", owner)
    written = careful.put(native, document("orphan-alone", body))
    stored = requests.get(running.base_url + urllib.parse.quote(written.target_ref, safe="/@"),
                          auth=(login, password), timeout=30)
    [event] = icalendar.Calendar.from_ical(stored.content).walk("VEVENT")
    assert "RECURRENCE-ID" not in event
    assert str(event["UID"]) == "orphan-alone-20300112T100000Z"
    assert [(n.code, n.subject, n.params) for n in careful.drain_notes()] == [
        ("orphan_standalone", "src-orphan-alone", {"count": 1})]
    [found] = [stored for stored in careful.inventory(native, fingerprints=True)
               if stored.target_ref == written.target_ref]
    assert found.fingerprint == careful.fingerprint(document("orphan-alone", body))
