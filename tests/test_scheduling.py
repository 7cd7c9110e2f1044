"""Calendar objects kept from the target's scheduling: the rewrite itself, then what a
scheduling server (Cyrus, its mail captured) sends for each kind of object, as it is and
rewritten."""

from __future__ import annotations

from email.message import EmailMessage

import requests
from icalendar import Calendar

from mappings.scheduling import CLIENT, WithoutAttendees, client_scheduled
from tests.cyrus import Cyrus
from tests.xandikos import Xandikos

OWNER = "alice@example.org"
OUTSIDERS = ("carol@example.net", "dave@example.com")


def rewritten(ics: bytes, size: int | None = None) -> bytes:
    pieces = [ics] if size is None else [ics[i:i + size] for i in range(0, len(ics), size)]
    return b"".join(client_scheduled(pieces))


# --- the rewrite ----------------------------------------------------------------------------

FOLDED = (
    b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\nBEGIN:VEVENT\r\nUID:u-1\r\n"
    b'ORGANIZER;CN="Dupont; J.: Mairie";SCHEDULE-AGENT=SERVER:mailto:alice@exam\r\n'
    b" ple.org\r\n"
    b"ATTENDEE;CN=Am\xc3\xa9lie Poulain de la Tr\xc3\xa9sorerie de Saint-\xc3\x89tienne;PARTST\r\n"
    b" AT=NEEDS-ACTION;SCHEDULE-FORCE-SEND=REQUEST:mailto:amelie@example.net\r\n"
    b"DESCRIPTION:Ordre du jour\\n1. ATTENDEE:mailto:not-a-property@example.net\r\n"
    b"  (suite)\r\n"
    b"attendee;rsvp=TRUE:mailto:carol@example.net\r\n"
    b"X-ATTENDEE-NOTE:left alone\r\n"
    b"END:VEVENT\r\nEND:VCALENDAR\r\n"
)


def test_every_organizer_and_attendee_gets_the_client_agent_and_nothing_else_changes():
    out = rewritten(FOLDED)
    calendar = Calendar.from_ical(out)
    [event] = calendar.walk("VEVENT")
    organizer = event["ORGANIZER"]
    attendees = event["ATTENDEE"]
    assert str(organizer) == "mailto:alice@example.org"
    assert organizer.params["CN"] == "Dupont; J.: Mairie"
    assert organizer.params["SCHEDULE-AGENT"] == "CLIENT"
    assert [str(a) for a in attendees] == ["mailto:amelie@example.net",
                                           "mailto:carol@example.net"]
    assert [a.params["SCHEDULE-AGENT"] for a in attendees] == ["CLIENT", "CLIENT"]
    assert attendees[0].params["CN"] == "Amélie Poulain de la Trésorerie de Saint-Étienne"
    assert attendees[0].params["PARTSTAT"] == "NEEDS-ACTION"
    assert "SCHEDULE-FORCE-SEND" not in attendees[0].params
    assert attendees[1].params["RSVP"] == "TRUE"
    # Every other line, folding included, byte for byte.
    kept = [line for line in FOLDED.split(b"\r\n") if not line.upper().startswith(
        (b"ORGANIZER", b"ATTENDEE", b" PLE", b" AT="))]
    assert [line for line in out.split(b"\r\n") if line in kept] == kept
    assert out.count(CLIENT) == 3


def test_changed_lines_fold_at_75_octets_never_inside_a_character():
    out = rewritten(FOLDED)
    lines = out.split(b"\r\n")
    assert max(len(line) for line in lines) <= 75
    for line in lines:
        line.decode("utf-8")  # a cut inside a UTF-8 sequence would not decode


def test_the_same_bytes_whatever_the_chunks_and_line_breaks_kept():
    whole = rewritten(FOLDED)
    for size in (1, 2, 3, 5, 8, 13, 64):
        assert rewritten(FOLDED, size) == whole, size
    bare = FOLDED.replace(b"\r\n", b"\n")
    assert rewritten(bare) == whole.replace(b"\r\n", b"\n")
    unterminated = FOLDED.rstrip(b"\r\n") + b"\r\nATTENDEE:mailto:last@example.net"
    assert rewritten(unterminated, 7).endswith(
        b"\r\nATTENDEE;SCHEDULE-AGENT=CLIENT:mailto:last@example.net")


def test_attendees_left_out_whatever_the_chunks_the_organiser_and_the_rest_kept():
    whole = None
    for size in (None, 1, 3, 7, 64):
        dropping = WithoutAttendees()
        pieces = [FOLDED] if size is None else [FOLDED[i:i + size]
                                                  for i in range(0, len(FOLDED), size)]
        out = b"".join(dropping(pieces))
        assert dropping.dropped == 2
        whole = whole or out
        assert out == whole, size
    [event] = Calendar.from_ical(whole).walk("VEVENT")
    assert "ATTENDEE" not in event
    assert str(event["ORGANIZER"]) == "mailto:alice@example.org"
    assert str(event["X-ATTENDEE-NOTE"]) == "left alone"
    assert whole == FOLDED.replace(
        b"ATTENDEE;CN=Am\xc3\xa9lie Poulain de la Tr\xc3\xa9sorerie de Saint-\xc3\x89tienne;PARTST\r\n"
        b" AT=NEEDS-ACTION;SCHEDULE-FORCE-SEND=REQUEST:mailto:amelie@example.net\r\n", b""
    ).replace(b"attendee;rsvp=TRUE:mailto:carol@example.net\r\n", b"")


def test_an_object_without_participants_passes_unchanged():
    alone = (b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VTODO\r\nUID:t-1\r\n"
             b"SUMMARY:Relire le budget\r\nEND:VTODO\r\nEND:VCALENDAR\r\n")
    assert rewritten(alone, 4) == alone


# --- what Cyrus sends ---------------------------------------------------------------------

def vcalendar(*components: str) -> bytes:
    return ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//bascule//tests//EN\r\n"
            + "".join(components) + "END:VCALENDAR\r\n").encode()


def vevent(uid: str, organizer: str, attendees: dict[str, str], *, extra: str = "",
           start: str = "20300105T100000Z") -> str:
    """A VEVENT of ``organizer`` with ``attendees`` (address: PARTSTAT)."""
    people = "".join(f"ATTENDEE;PARTSTAT={state}:mailto:{address}\r\n"
                     for address, state in attendees.items())
    return (f"BEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20300101T090000Z\r\nDTSTART:{start}\r\n"
            f"DURATION:PT1H\r\nSUMMARY:Conseil\r\n{extra}ORGANIZER:mailto:{organizer}\r\n"
            f"{people}END:VEVENT\r\n")


def organised(uid: str) -> bytes:
    """Organised by the owner, two outside attendees."""
    return vcalendar(vevent(uid, OWNER, {OWNER: "ACCEPTED", **dict.fromkeys(
        OUTSIDERS, "NEEDS-ACTION")}))


def received(uid: str) -> bytes:
    """An outside organiser's invitation, the owner an attendee who accepted."""
    return vcalendar(vevent(uid, OUTSIDERS[0], {OUTSIDERS[0]: "ACCEPTED", OWNER: "ACCEPTED"}))


def series(uid: str) -> bytes:
    """A weekly series with one occurrence moved."""
    people = {OWNER: "ACCEPTED", **dict.fromkeys(OUTSIDERS, "NEEDS-ACTION")}
    return vcalendar(
        vevent(uid, OWNER, people, extra="RRULE:FREQ=WEEKLY;COUNT=5\r\n"),
        vevent(uid, OWNER, people, start="20300112T140000Z",
               extra="RECURRENCE-ID:20300112T100000Z\r\n"))


def orphan(uid: str) -> bytes:
    """One occurrence of a series whose master is not there (an invitation to it alone)."""
    return vcalendar(vevent(uid, OUTSIDERS[0], {OUTSIDERS[0]: "ACCEPTED", OWNER: "ACCEPTED"},
                            extra="RECURRENCE-ID:20300112T100000Z\r\n",
                            start="20300112T100000Z"))


def put(cyrus: Cyrus, uid: str, body: bytes, etag: str | None = None) -> str:
    condition = {"If-Match": etag} if etag else {"If-None-Match": "*"}
    answer = requests.put(f"{cyrus.calendar_url(OWNER)}{uid}.ics", data=body,
                          auth=(OWNER, cyrus.users[OWNER]), timeout=30,
                          headers={"Content-Type": "text/calendar; charset=utf-8",
                                   **condition})
    assert answer.status_code in (201, 204), (answer.status_code, answer.text, cyrus.log)
    return answer.headers.get("ETag") or _etag(cyrus, uid)


def _etag(cyrus: Cyrus, uid: str) -> str:
    """Cyrus 3.6 answers a PUT with a Schedule-Tag and no ETag (it stores the object
    rewritten), and a HEAD with 500: the ETag comes with a GET (a weak one)."""
    answer = requests.get(f"{cyrus.calendar_url(OWNER)}{uid}.ics",
                          auth=(OWNER, cyrus.users[OWNER]), timeout=30)
    return answer.headers["ETag"]


def sent(messages: list[EmailMessage]) -> list[str]:
    """Each captured message as its envelope recipient and iTIP method."""
    found = []
    for message in messages:
        method = next((part.get_param("method") for part in message.walk()
                       if part.get_content_type() == "text/calendar"), None)
        found.append(f"{str(message['Envelope-To']).strip('<>')} {method}")
    return sorted(found)


def test_each_kind_of_object_schedules_as_it_is_and_sends_nothing_rewritten(cyrus: Cyrus):
    """Written as it is, each kind makes Cyrus mail someone: that is what a migration must
    not do, and it proves the case reaches the scheduler. Rewritten, none does."""
    for kind, make in (("organised", organised), ("received", received),
                       ("series", series), ("orphan", orphan)):
        before = len(cyrus.captured())
        put(cyrus, f"{kind}-as-is", make(f"{kind}-as-is"))
        assert len(cyrus.captured()) > before, f"{kind}: Cyrus sent nothing as it is"

        before = len(cyrus.captured())
        put(cyrus, f"{kind}-quiet", rewritten(make(f"{kind}-quiet")))
        assert len(cyrus.captured()) == before, (kind, sent(cyrus.captured()[before:]))


def test_a_rewritten_event_changed_then_deleted_sends_nothing(cyrus: Cyrus):
    etag = put(cyrus, "kept-quiet", rewritten(organised("kept-quiet")))
    changed = organised("kept-quiet").replace(b"SUMMARY:Conseil", b"SUMMARY:Conseil (report\xc3\xa9)")
    put(cyrus, "kept-quiet", rewritten(changed.replace(b"DTSTAMP:", b"SEQUENCE:1\r\nDTSTAMP:")),
        etag=etag)
    gone = requests.delete(f"{cyrus.calendar_url(OWNER)}kept-quiet.ics",
                           auth=(OWNER, cyrus.users[OWNER]), timeout=30)
    assert gone.status_code in (200, 204), (gone.status_code, gone.text)
    assert sent(cyrus.captured()) == []
    # The same three steps as they are: an invitation, an update, a cancellation each.
    etag = put(cyrus, "loud", organised("loud"))
    put(cyrus, "loud", changed.replace(b"kept-quiet", b"loud").replace(
        b"DTSTAMP:", b"SEQUENCE:1\r\nDTSTAMP:"), etag=etag)
    requests.delete(f"{cyrus.calendar_url(OWNER)}loud.ics",
                    auth=(OWNER, cyrus.users[OWNER]), timeout=30)
    methods = sent(cyrus.captured())
    assert sum(line.endswith("REQUEST") for line in methods) == 4, methods
    assert sum(line.endswith("CANCEL") for line in methods) == 2, methods



def changed(body: bytes) -> bytes:
    """The same object changed as a user would: a new summary and sequence, and for the
    owner's own answer to an invitation, declined instead of accepted."""
    body = body.replace(b"SUMMARY:Conseil", b"SUMMARY:Conseil (report\xc3\xa9)")
    body = body.replace(b"DTSTAMP:", b"SEQUENCE:1\r\nDTSTAMP:")
    return body.replace(f"PARTSTAT=ACCEPTED:mailto:{OWNER}".encode(),
                        f"PARTSTAT=DECLINED:mailto:{OWNER}".encode())


def test_every_kind_changed_then_deleted_sends_nothing_rewritten(cyrus: Cyrus):
    """Each kind of object written, changed and deleted: as they are, each step mails
    someone (Cyrus: invitations, updates, replies, cancellations; but for the deletion of an
    orphan occurrence, after which it replies nothing); rewritten, no step does."""
    for kind, make in (("organised", organised), ("received", received),
                       ("series", series), ("orphan", orphan)):
        for quiet in (False, True):
            uid = f"{kind}-{'quiet' if quiet else 'loud'}-steps"
            body = make(uid)
            steps = []
            before = len(cyrus.captured())
            etag = put(cyrus, uid, rewritten(body) if quiet else body)
            steps.append(len(cyrus.captured()) - before)
            before = len(cyrus.captured())
            put(cyrus, uid, rewritten(changed(body)) if quiet else changed(body), etag=etag)
            steps.append(len(cyrus.captured()) - before)
            before = len(cyrus.captured())
            gone = requests.delete(f"{cyrus.calendar_url(OWNER)}{uid}.ics",
                                   auth=(OWNER, cyrus.users[OWNER]), timeout=30)
            assert gone.status_code in (200, 204), (gone.status_code, gone.text)
            steps.append(len(cyrus.captured()) - before)
            if quiet:
                assert steps == [0, 0, 0], (kind, steps, sent(cyrus.captured()))
            else:
                assert [bool(step) for step in steps] == [True, True, kind != "orphan"], (
                    kind, steps)


def test_taking_the_client_agent_off_afterwards_invites_everyone(cyrus: Cyrus):
    """Why bascule never takes ``SCHEDULE-AGENT=CLIENT`` off what it wrote into a server
    that schedules: the same event written again without it, nothing else changed, is a new
    scheduling object to Cyrus, which invites every attendee."""
    etag = put(cyrus, "later", rewritten(organised("later")))
    assert sent(cyrus.captured()) == []
    put(cyrus, "later", organised("later"), etag=etag)
    assert sent(cyrus.captured()) == [f"{address} REQUEST" for address in sorted(OUTSIDERS)]


# --- what Xandikos sends ------------------------------------------------------------------

def xandikos_put(server: Xandikos, uid: str, body: bytes) -> requests.Response:
    answer = requests.put(f"{server.base_url}/alice/calendars/work/{uid}.ics", data=body,
                          auth=("alice", server.users["alice"]), timeout=30,
                          headers={"Content-Type": "text/calendar; charset=utf-8",
                                   "If-None-Match": "*"})
    assert answer.status_code in (201, 204), (answer.status_code, answer.text, server.log)
    return answer


def test_xandikos_schedules_whatever_the_agent_says(xandikos: Xandikos):
    """Xandikos mails an event's attendees, its own users among them, with
    ``SCHEDULE-AGENT=CLIENT`` as without: no rewrite keeps it quiet, so a batch into it
    must choose (the ``xandikos`` profile refuses the protection)."""
    made = requests.request("MKCALENDAR", f"{xandikos.base_url}/alice/calendars/work/",
                            auth=("alice", xandikos.users["alice"]), timeout=30)
    assert made.status_code == 201, made.text
    owner, colleague = xandikos.address("alice"), xandikos.address("bob")
    people = {owner: "ACCEPTED", colleague: "NEEDS-ACTION", OUTSIDERS[0]: "NEEDS-ACTION"}
    for uid, body in (("as-is", vcalendar(vevent("as-is", owner, people))),
                      ("quiet", rewritten(vcalendar(vevent("quiet", owner, people))))):
        before = len(xandikos.captured())
        xandikos_put(xandikos, uid, body)
        mailed = xandikos.captured()[before:]
        assert sorted(str(m["To"]) for m in mailed) == [colleague, OUTSIDERS[0]], uid
