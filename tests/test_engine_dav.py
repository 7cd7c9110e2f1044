"""End to end: calendars and contacts from Microsoft Graph (the documented test server, real
msal) into a real Cyrus, whose CalDAV schedules (RFC 6638) and mails through a capture
program: everything lands, read back with plain HTTP and icalendar, and nobody is mailed;
into a real Radicale, whose rewriting verify sees; and into a real SabreDAV, laid out as
Nextcloud's DAV server."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from xml.etree import ElementTree

import icalendar
import pytest
import recurring_ical_events
import requests

from tests.cli import bascule, report, verify_items
from tests.cyrus import Cyrus
from tests.graph_pim import PimData, pim_of, seed_pim
from tests.graph_server import RunningGraphServer, french_tenant, running_graph_server
from tests.radicale import Radicale
from tests.sabredav import SabreDav
from tests.tls import TestCertificates
from tests.xandikos import Xandikos

AMELIE = "amelie.lefevre@ville-exemple.fr"
PASSWORD = "amelie-target"
WINDOW = (date(2025, 1, 1), date(2025, 12, 31))


def write_batch(folder: Path, graph: RunningGraphServer, certificates: TestCertificates,
                cyrus: Cyrus | Radicale | Xandikos | SabreDav, settings: str = "") -> Path:
    (folder / "users.csv").write_text(
        f"source,target,source_secret,target_secret\n{AMELIE},{AMELIE},,env:AMELIE_TARGET\n",
        encoding="utf-8")
    path = folder / "batch.toml"
    path.write_text(f"""
name = "agendas"
workloads = ["calendar", "contacts"]
{graph.source_section(certificates.ca_file)}[targets.calendar]
type = "dav"
url = "{cyrus.base_url}/"
{settings}
[targets.contacts]
type = "dav"
url = "{cyrus.base_url}/"
[run]
work_dir = "work"
""", encoding="utf-8")
    return path

@contextmanager
def graph_with_pim(certificates: TestCertificates, monkeypatch: pytest.MonkeyPatch
                   ) -> Iterator[tuple[RunningGraphServer, PimData]]:
    """The Graph test server with Amélie's calendars and contacts (``seed_pim``), the app's
    secret in ``GRAPH_SECRET`` and her target password in ``AMELIE_TARGET``."""
    tenant = french_tenant(users=3, inbox_messages=1)
    mailbox = tenant.mailbox(AMELIE)
    assert mailbox is not None
    pim = seed_pim(mailbox)
    monkeypatch.setenv("AMELIE_TARGET", PASSWORD)
    with running_graph_server(tenant, certificates) as graph:
        monkeypatch.setenv("GRAPH_SECRET", graph.tenant.client_secret)
        yield graph, pim



@dataclass(frozen=True)
class Collection:
    path: str
    objects: list[bytes]


def collections(cyrus: Cyrus | Radicale | Xandikos | SabreDav, home: str,
                auth: tuple[str, str] = (AMELIE, PASSWORD)) -> dict[str, Collection]:
    """Display name -> each collection of a home with its objects, read with plain HTTP as
    ``auth``."""
    def propfind(path: str) -> list[ElementTree.Element]:
        answer = requests.request(
            "PROPFIND", cyrus.base_url + urllib.parse.quote(path, safe="/@"),
            auth=auth, timeout=30,
            headers={"Depth": "1", "Content-Type": "application/xml"},
            data=b'<?xml version="1.0"?><propfind xmlns="DAV:"><prop><displayname/>'
                 b"<resourcetype/></prop></propfind>")
        assert answer.status_code == 207, answer.text
        return list(ElementTree.fromstring(answer.content).iter("{DAV:}response"))

    found = {}
    for response in propfind(home)[1:]:
        path = urllib.parse.unquote(response.findtext("{DAV:}href") or "")
        kinds = {child.tag for child in response.iter("{DAV:}resourcetype") for child in child}
        if not kinds & {"{urn:ietf:params:xml:ns:caldav}calendar",
                        "{urn:ietf:params:xml:ns:carddav}addressbook"}:
            continue
        objects = []
        for item in propfind(path)[1:]:
            href = item.findtext("{DAV:}href") or ""
            answer = requests.get(cyrus.base_url + href, auth=auth, timeout=30)
            objects.append(answer.content)
        found[response.findtext(".//{DAV:}displayname") or ""] = Collection(path, objects)
    return found


def colour(server: Cyrus | Radicale | Xandikos | SabreDav, path: str) -> str | None:
    """The colour a collection shows clients (Apple's ``calendar-color``), read with HTTP.
    Cyrus 3.6 keeps it but answers it in the ``DAV:`` namespace, undeclared."""
    answer = requests.request(
        "PROPFIND", server.base_url + urllib.parse.quote(path, safe="/@"),
        auth=(AMELIE, PASSWORD), timeout=30,
        headers={"Depth": "0", "Content-Type": "application/xml"},
        data=b'<?xml version="1.0"?><propfind xmlns="DAV:"><prop><calendar-color '
             b'xmlns="http://apple.com/ns/ical/"/></prop></propfind>')
    assert answer.status_code == 207, answer.text
    found = [element.text for element in ElementTree.fromstring(answer.content).iter()
             if element.tag.rpartition("}")[2] == "calendar-color" and element.text]
    return found[0].strip() if found else None


def occurrences(objects: list[bytes]) -> list[tuple[str, str]]:
    """Every occurrence within the window, as (start, summary), sorted."""
    found = []
    for raw in objects:
        calendar = icalendar.Calendar.from_ical(raw)
        for event in recurring_ical_events.of(calendar).between(*WINDOW):
            found.append((event["DTSTART"].dt.isoformat(), str(event["SUMMARY"])))
    return sorted(found)


def test_calendars_and_contacts_land_in_cyrus_and_nobody_is_mailed(
        certificates, cyrus_factory, tmp_path, monkeypatch):
    cyrus = cyrus_factory({AMELIE: PASSWORD})
    calendars = f"/dav/calendars/user/{AMELIE}/"
    with graph_with_pim(certificates, monkeypatch) as (graph, pim):
        mailbox = graph.tenant.mailbox(AMELIE)
        assert mailbox is not None
        batch = write_batch(tmp_path, graph, certificates, cyrus)
        code, output = bascule("plan", str(batch))
        assert code == 0, output
        code, output = bascule("run", str(batch))
        assert code == 0, output
        assert report(tmp_path, "run")["summary"]["copied"] == 7

        landed = collections(cyrus, calendars)
        # Amélie's default calendar went into the one Cyrus made her (its scheduling inbox
        # names it), the other by its name.
        [default] = [name for name, found in landed.items()
                     if found.path == f"{calendars}Default/"]
        assert "Calendrier" not in landed
        # Its colour, chosen in Outlook, goes with the calendar bascule makes.
        assert colour(cyrus, landed["Conseil municipal"].path).upper().startswith("#E3008C")
        assert [len(landed[name].objects) for name in (default, "Conseil municipal")] == [
            2, 2]
        weekly = [icalendar.Calendar.from_ical(raw) for raw in landed[default].objects
                  if b"RRULE" in raw]
        [series] = weekly
        events = series.walk("VEVENT")
        assert len(events) == 2 and sum("RECURRENCE-ID" in e for e in events) == 1
        assert any("EXDATE" in e for e in events)
        assert any(component.name == "VTIMEZONE" for component in series.walk())
        moved = [o for o in occurrences(landed[default].objects) if "déplacée" in o[1]]
        assert moved == [("2025-03-17T14:00:00+01:00", "Réunion de service (déplacée)")]
        mondays = [start for start, summary in occurrences(landed[default].objects)
                   if summary == "Réunion de service"]
        assert "2025-04-14T09:00:00+02:00" in mondays
        assert "2025-04-21T09:00:00+02:00" not in mondays
        meeting = next(icalendar.Calendar.from_ical(raw)
                       for raw in landed["Conseil municipal"].objects if b"ATTENDEE" in raw)
        attendees = meeting.walk("VEVENT")[0].get("ATTENDEE")
        assert len(attendees) == 3
        assert {str(a.params.get("PARTSTAT")) for a in attendees} == {
            "ACCEPTED", "TENTATIVE", "NEEDS-ACTION"}
        cards = collections(cyrus, f"/dav/addressbooks/user/{AMELIE}/")
        assert {book.path.rsplit("/", 2)[1]: len(book.objects) for book in cards.values()
                if book.objects} == {"Default": 2, "contacts-elus-04ae2162": 1}
        assert cyrus.captured() == [], "Cyrus mailed someone while calendars were migrated"

        code, output = bascule("verify", str(batch))
        assert code == 0, output
        assert report(tmp_path, "verify")["summary"]["checked"] == 7

        code, output = bascule("run", str(batch))
        assert code == 0, output
        assert report(tmp_path, "run")["summary"]["copied"] == 0
        master = next(e for e in pim.events.values() if e.data.get("recurrence"))
        pim_of(mailbox).modify_occurrence(master, date(2025, 3, 24),
                                          subject="Réunion de service (annulée puis reprise)")
        code, output = bascule("run", str(batch))
        assert code == 0, output
        assert report(tmp_path, "run")["summary"]["copied"] == 1
        landed = collections(cyrus, calendars)
        assert len(landed[default].objects) == 2
        assert ("2025-03-24T09:00:00+01:00", "Réunion de service (annulée puis reprise)") in \
            occurrences(landed[default].objects)
        assert cyrus.captured() == [], "Cyrus mailed someone on the delta pass"
        code, output = bascule("verify", str(batch))
        assert code == 0, output

    # The control: the meeting as the target holds it, without the protection, written into
    # the same calendar under another UID, does make Cyrus mail its three attendees.
    [raw] = [raw for raw in landed["Conseil municipal"].objects if b"ATTENDEE" in raw]
    loud = re.sub(rb";SCHEDULE-AGENT=CLIENT", b"", raw.replace(b"\r\n ", b""))
    loud = re.sub(rb"UID:[^\r\n]+", b"UID:control-" + str(datetime.now().timestamp()).encode(),
                  loud)
    place = landed["Conseil municipal"].path
    answer = requests.put(cyrus.base_url + urllib.parse.quote(place, safe="/@") + "control.ics",
                          data=loud, auth=(AMELIE, PASSWORD), timeout=30,
                          headers={"Content-Type": "text/calendar; charset=utf-8"})
    assert answer.status_code in (201, 204), answer.text
    recipients = sorted(str(m["Envelope-To"]).strip("<>") for m in cyrus.captured())
    assert recipients == ["francois.dupre@ville-exemple.fr", "helene.noel@ville-exemple.fr",
                          "jean.martin@exemple-asso.fr"], recipients



def test_calendars_and_contacts_land_in_radicale_and_verify(certificates, radicale, tmp_path,
                                                           monkeypatch):
    """Radicale keeps calendars and address books side by side in one home, and rewrites
    what it stores (vobject): the same Graph calendars and contacts land, and verify, which
    compares meanings, finds every one as sent. Their time zones are written as rules:
    written as lists of transitions, Radicale kept only the first date of each list."""
    radicale.add_user(AMELIE, PASSWORD)
    with graph_with_pim(certificates, monkeypatch) as (graph, _):
        batch = write_batch(tmp_path, graph, certificates, radicale)
        code, output = bascule("run", str(batch))
        assert code == 0, output
        assert report(tmp_path, "run")["summary"]["copied"] == 7
        landed = collections(radicale, f"/{AMELIE}/")
        assert sorted((name, len(book.objects)) for name, book in landed.items()) == [
            ("Calendrier", 2), ("Conseil municipal", 2), ("Contacts", 2),
            ("Contacts / Élus", 1)]
        moved = [o for o in occurrences(landed["Calendrier"].objects) if "déplacée" in o[1]]
        assert moved == [("2025-03-17T14:00:00+01:00", "Réunion de service (déplacée)")]
        assert colour(radicale, landed["Conseil municipal"].path).upper() == "#E3008C"
        assert colour(radicale, landed["Calendrier"].path) is None
        zoned = [raw for book in landed.values() for raw in book.objects
                 if b"BEGIN:VTIMEZONE" in raw]
        assert len(zoned) == 3
        assert all(b"RRULE:FREQ=YEARLY" in raw and b"RDATE" not in raw for raw in zoned)
        code, output = bascule("verify", str(batch))
        assert code == 0, output
        assert report(tmp_path, "verify")["summary"]["checked"] == 7
        # Each object compared by its meaning read back, never by bytes the server rewrote;
        # Graph gives no hash of an event or a contact.
        items = verify_items(tmp_path)
        assert [(row["verified_by"], row["outcome"], row["source_check"], row["target_sha256"])
                for row in items] == [("read_back_meaning", "match", "no_source_hash", "")] * 7


def test_into_xandikos_the_protection_is_refused_and_events_go_without_attendees(
        certificates, xandikos, tmp_path, monkeypatch):
    """Xandikos mails attendees whatever SCHEDULE-AGENT says (tests/test_scheduling.py): a
    batch naming it is refused before anything moves until it chooses, and with
    ``drop_attendees`` every event lands without its attendees (its organiser kept), each one
    said in the report, and nobody is mailed."""
    xandikos.add_user(AMELIE, PASSWORD)
    with graph_with_pim(certificates, monkeypatch) as (graph, _):
        batch = write_batch(tmp_path, graph, certificates, xandikos, 'profile = "xandikos"')
        for command in ("plan", "run"):
            code, output = bascule(command, str(batch))
            assert code == 2, output
            assert "SCHEDULE-AGENT=CLIENT" in output and "drop_attendees" in output, output
        assert collections(xandikos, f"/{AMELIE}/calendars/") == {}

        batch = write_batch(tmp_path, graph, certificates, xandikos,
                            'profile = "xandikos"\nscheduling = "drop_attendees"')
        code, output = bascule("run", str(batch))
        assert code == 0, output
        run = report(tmp_path, "run")
        assert run["summary"]["copied"] == 7
        landed = collections(xandikos, f"/{AMELIE}/calendars/")
        objects = [raw for book in landed.values() for raw in book.objects]
        assert len(objects) == 4
        assert not any(b"ATTENDEE" in raw for raw in objects)
        assert sum(b"ORGANIZER" in raw for raw in objects) == 3
        [dropped] = [e for e in run["entries"] if e.get("code") == "attendees_dropped"]
        assert dropped["message_fr"].endswith(": 3 retirés"), dropped
        assert xandikos.captured() == [], "Xandikos mailed someone"
        assert len(collections(xandikos, f"/{AMELIE}/contacts/")) == 2
        code, output = bascule("verify", str(batch))
        assert code == 0, output
        assert report(tmp_path, "verify")["summary"]["checked"] == 7


def test_calendars_and_contacts_land_in_sabredav_with_their_occurrences(
        certificates, sabredav, tmp_path, monkeypatch):
    """SabreDAV is found from its address through the well-known redirect; Amélie's default
    calendar and address book go into the ``personal`` and ``contacts`` it made her, as
    Nextcloud does; the series keeps its moved and removed occurrences; nobody is mailed."""
    sabredav.add_user(AMELIE, PASSWORD)
    with graph_with_pim(certificates, monkeypatch) as (graph, _):
        batch = write_batch(tmp_path, graph, certificates, sabredav)
        code, output = bascule("run", str(batch))
        assert code == 0, output
        assert report(tmp_path, "run")["summary"]["copied"] == 7
        landed = collections(sabredav, sabredav.calendar_home(AMELIE))
        assert {name: (found.path.rsplit("/", 2)[1], len(found.objects))
                for name, found in landed.items()} == {
            "Personal": ("personal", 2), "Conseil municipal": ("conseil-municipal-492ffc1a", 2)}
        mondays = [start for start, summary in occurrences(landed["Personal"].objects)
                   if summary == "Réunion de service"]
        assert "2025-04-14T09:00:00+02:00" in mondays
        assert "2025-04-21T09:00:00+02:00" not in mondays
        moved = [o for o in occurrences(landed["Personal"].objects) if "déplacée" in o[1]]
        assert moved == [("2025-03-17T14:00:00+01:00", "Réunion de service (déplacée)")]
        cards = collections(sabredav, sabredav.addressbook_home(AMELIE))
        assert {name: len(book.objects) for name, book in cards.items()} == {
            "Contacts": 2, "Contacts / Élus": 1}
        assert sabredav.captured() == []
        code, output = bascule("verify", str(batch))
        assert code == 0, output
        assert report(tmp_path, "verify")["summary"]["checked"] == 7
        code, output = bascule("run", str(batch))
        assert code == 0, output
        assert report(tmp_path, "run")["summary"]["copied"] == 0
