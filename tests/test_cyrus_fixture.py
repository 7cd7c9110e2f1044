"""The private Cyrus fixture: CalDAV scheduling mail is captured, and stopping leaves nothing.

These reproduce what shared/SERVERS.md reports of Cyrus 3.6, so that a test of a CalDAV
migration can rely on the capture to prove that no invitation went out.
"""

from __future__ import annotations

import socket
from email.message import EmailMessage
from pathlib import Path

import requests

from tests.conftest import CyrusFactory
from tests.cyrus import Cyrus
from tests.servers import proc_stat

ORGANIZER = "alice@example.org"
OUTSIDERS = ("carol@example.net", "dave@example.com")


def _event(uid: str, *, organizer_agent: str = "", attendee_agent: str = "") -> str:
    """An event organised by alice with two outside attendees, held in 2020: long past
    Cyrus's default historical age, so it schedules only because the fixture sets
    ``caldav_historical_age: -1``."""
    organizer = f";SCHEDULE-AGENT={organizer_agent}" if organizer_agent else ""
    attendee = f";SCHEDULE-AGENT={attendee_agent}" if attendee_agent else ""
    attendees = "".join(
        f"ATTENDEE{attendee};RSVP=TRUE;PARTSTAT=NEEDS-ACTION:mailto:{address}\r\n"
        for address in OUTSIDERS
    )
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//bascule//tests//EN\r\n"
        f"BEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20200101T090000Z\r\n"
        "DTSTART:20200105T100000Z\r\nDTEND:20200105T110000Z\r\nSUMMARY:Planning\r\n"
        f"ORGANIZER{organizer}:mailto:{ORGANIZER}\r\n"
        f"ATTENDEE{attendee};PARTSTAT=ACCEPTED;ROLE=CHAIR:mailto:{ORGANIZER}\r\n"
        f"{attendees}END:VEVENT\r\nEND:VCALENDAR\r\n"
    )


def _put_event(cyrus: Cyrus, uid: str, body: str) -> None:
    answer = requests.put(
        f"{cyrus.calendar_url(ORGANIZER)}{uid}.ics",
        data=body.encode(),
        auth=(ORGANIZER, cyrus.users[ORGANIZER]),
        headers={"Content-Type": "text/calendar; charset=utf-8", "If-None-Match": "*"},
        timeout=30,
    )
    assert answer.status_code in (201, 204), (answer.status_code, answer.text, cyrus.log)


def _calendar_part(message: EmailMessage) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/calendar":
            return str(part.get_content())
    raise AssertionError(f"no text/calendar part in {message['Subject']!r}")


def _invitations(messages: list[EmailMessage]) -> list[tuple[str, str]]:
    """(envelope recipient, UID) of each message, as iMIP REQUESTs."""
    found = []
    for message in messages:
        calendar = _calendar_part(message).replace("\r\n ", "").replace("\n ", "")
        assert "METHOD:REQUEST" in calendar, calendar
        uid = next(line[4:] for line in calendar.splitlines() if line.startswith("UID:"))
        found.append((str(message["Envelope-To"]).strip("<>"), uid.strip()))
    return sorted(found)


def test_an_organised_event_invites_each_outside_attendee(cyrus: Cyrus) -> None:
    _put_event(cyrus, "invite-1", _event("invite-1"))

    assert _invitations(cyrus.captured()) == [(address, "invite-1") for address in sorted(OUTSIDERS)]


def test_schedule_agent_client_on_every_participant_sends_nothing(cyrus: Cyrus) -> None:
    _put_event(cyrus, "quiet-1", _event("quiet-1", organizer_agent="CLIENT",
                                        attendee_agent="CLIENT"))

    assert cyrus.captured() == []
    # Cyrus mails during the PUT; an ordinary event written next proves that the capture
    # works in this server and that nothing of the first came late.
    _put_event(cyrus, "loud-1", _event("loud-1"))
    assert _invitations(cyrus.captured()) == [(address, "loud-1") for address in sorted(OUTSIDERS)]


def test_schedule_agent_client_on_the_organizer_alone_still_invites(cyrus: Cyrus) -> None:
    _put_event(cyrus, "half-1", _event("half-1", organizer_agent="CLIENT"))

    assert _invitations(cyrus.captured()) == [(address, "half-1") for address in sorted(OUTSIDERS)]


def test_address_book_takes_a_vcard(cyrus: Cyrus) -> None:
    card = ("BEGIN:VCARD\r\nVERSION:3.0\r\nUID:card-1\r\nFN:Carol Example\r\n"
            "N:Example;Carol;;;\r\nEMAIL:carol@example.net\r\nEND:VCARD\r\n")
    url = f"{cyrus.addressbook_url(ORGANIZER)}card-1.vcf"
    auth = (ORGANIZER, cyrus.users[ORGANIZER])

    put = requests.put(url, data=card.encode(), auth=auth, timeout=30,
                       headers={"Content-Type": "text/vcard; charset=utf-8"})
    got = requests.get(url, auth=auth, timeout=30)

    assert put.status_code in (201, 204), (put.status_code, put.text, cyrus.log)
    assert got.status_code == 200
    assert "FN:Carol Example" in got.text


def test_stop_leaves_no_process_behind(cyrus_factory: CyrusFactory) -> None:
    cyrus = cyrus_factory({ORGANIZER: "alice-pw"})
    _put_event(cyrus, "stop-1", _event("stop-1"))
    started = {pid: _start_time(pid) for pid in cyrus.processes()}
    programs = {Path(_command(pid)[0]).name for pid in started}
    assert {"master", "httpd"} <= programs, programs

    cyrus.stop()

    assert not cyrus.running
    assert cyrus.processes() == []
    assert [pid for pid, since in started.items() if _start_time(pid) == since] == []
    config = str(cyrus.root / "imapd.conf")
    assert [pid for pid in _all_pids() if config in _command(pid)] == []
    for port in (cyrus.http_port, cyrus.imap_port):
        with socket.socket() as probe:
            # As Cyrus binds: connections it closed may linger in TIME_WAIT on the port.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((cyrus.host, port))


def _all_pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def _command(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return [""]


def _start_time(pid: int) -> str | None:
    """When the process started (clock ticks since boot), None if it is gone: with the pid,
    it names one process even if the pid is reused."""
    fields = proc_stat(pid)
    return fields[19] if len(fields) > 19 else None
