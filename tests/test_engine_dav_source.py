"""End to end from one DAV server to another: calendars and contacts seeded in a real
Radicale with plain HTTP, moved by ``bascule run`` into a real Cyrus (which schedules and
mails through a capture program), then read back on both sides with plain HTTP and
icalendar and compared by meaning; a second run moves nothing, a change at the source goes
over on the delta pass the sync token lists, and nobody is ever mailed."""

from __future__ import annotations

import base64
import sqlite3
import urllib.parse
from datetime import date
from pathlib import Path
from typing import Any

import icalendar
import recurring_ical_events
import requests

from tests.cli import bascule, report
from tests.cyrus import Cyrus
from tests.radicale import Radicale
from tests.servers import dav_members

AMELIE = "amelie.lefevre@ville-exemple.fr"
SOURCE_PASSWORD = "amelie-source"
TARGET_PASSWORD = "amelie-target"
WINDOW = (date(2025, 1, 1), date(2026, 1, 1))
PHOTO = bytes(range(256)) * 8 + b"\xff\xd9"
ZONE = (b"BEGIN:VTIMEZONE\r\nTZID:Europe/Paris\r\n"
        b"BEGIN:DAYLIGHT\r\nTZOFFSETFROM:+0100\r\nTZOFFSETTO:+0200\r\nTZNAME:CEST\r\n"
        b"DTSTART:19700329T020000\r\nRRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU\r\n"
        b"END:DAYLIGHT\r\nBEGIN:STANDARD\r\nTZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\n"
        b"TZNAME:CET\r\nDTSTART:19701025T030000\r\nRRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU\r\n"
        b"END:STANDARD\r\nEND:VTIMEZONE\r\n")
PEOPLE = (f"ORGANIZER;CN=Amélie Lefèvre:mailto:{AMELIE}\r\n"
          "ATTENDEE;PARTSTAT=ACCEPTED;ROLE=REQ-PARTICIPANT:mailto:jean.martin@exemple-asso.fr\r\n"
          "ATTENDEE;PARTSTAT=NEEDS-ACTION;ROLE=OPT-PARTICIPANT:mailto:"
          "helene.noel@exemple-asso.fr\r\n").encode()


def calendar(*events: bytes, zone: bool = False) -> bytes:
    return (b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//ville-exemple//agenda//FR\r\n"
            + (ZONE if zone else b"") + b"".join(events) + b"END:VCALENDAR\r\n")


def event(uid: str, lines: str, people: bool = True) -> bytes:
    return (f"BEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20250101T080000Z\r\n{lines}".encode()
            + (PEOPLE if people else b"") + b"END:VEVENT\r\n")


SERIES = calendar(
    event("service@ville-exemple.fr",
          "DTSTART;TZID=Europe/Paris:20250303T090000\r\n"
          "DTEND;TZID=Europe/Paris:20250303T100000\r\n"
          "RRULE:FREQ=WEEKLY;BYDAY=MO;COUNT=10\r\n"
          "EXDATE;TZID=Europe/Paris:20250421T090000\r\nSUMMARY:Réunion de service\r\n"),
    event("service@ville-exemple.fr",
          "RECURRENCE-ID;TZID=Europe/Paris:20250317T090000\r\n"
          "DTSTART;TZID=Europe/Paris:20250317T140000\r\n"
          "DTEND;TZID=Europe/Paris:20250317T150000\r\nSUMMARY:Réunion de service (déplacée)\r\n"),
    zone=True)
ALL_DAY = calendar(event("fete@ville-exemple.fr",
                         "DTSTART;VALUE=DATE:20250714\r\nDTEND;VALUE=DATE:20250715\r\n"
                         "SUMMARY:Fête nationale\r\nCATEGORIES:Fêtes,Ville\r\n", people=False))
MEETING = calendar(event("conseil@ville-exemple.fr",
                         "DTSTART:20250605T160000Z\r\nDTEND:20250605T180000Z\r\n"
                         "SUMMARY:Conseil municipal\r\n"))
CARD_PHOTO = ("BEGIN:VCARD\r\nVERSION:3.0\r\nUID:helene@ville-exemple.fr\r\n"
              "FN:Hélène Noël\r\nN:Noël;Hélène;;;\r\nEMAIL;TYPE=WORK:helene.noel@exemple-asso.fr\r\n"
              "PHOTO;ENCODING=b;TYPE=JPEG:" + base64.b64encode(PHOTO).decode() + "\r\n"
              "END:VCARD\r\n").encode()
CARD = (b"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:jean@ville-exemple.fr\r\nFN:Jean Martin\r\n"
        b"N:Martin;Jean;;;\r\nTEL;TYPE=CELL:+33 6 12 34 56 78\r\nEND:VCARD\r\n")


class Reader:
    """One account of a DAV server read and written with plain HTTP, not bascule's code."""

    def __init__(self, server: Cyrus | Radicale, password: str) -> None:
        self.server = server
        self.password = password

    def request(self, method: str, path: str, **options: Any) -> requests.Response:
        return requests.request(method, self.server.base_url + urllib.parse.quote(path,
                                                                                   safe="/@"),
                                auth=(AMELIE, self.password), timeout=30, **options)

    def members(self, path: str) -> list[tuple[str, set[str], str]]:
        return dav_members(self.request, path)

    def objects(self, home: str, shown: str) -> list[bytes]:
        """Every object of the collection of the home shown under this name."""
        [place] = [path for path, kinds, name in self.members(home) if name == shown]
        return [self.request("GET", path).content for path, kinds, _ in self.members(place)
                if "{DAV:}collection" not in kinds]

    def make(self, place: str, shown: str, calendar: bool) -> None:
        name = f"<D:displayname>{shown}</D:displayname>"
        if calendar:
            body = ('<?xml version="1.0" encoding="utf-8"?><C:mkcalendar xmlns:D="DAV:" '
                    'xmlns:C="urn:ietf:params:xml:ns:caldav"><D:set><D:prop>'
                    f"{name}</D:prop></D:set></C:mkcalendar>")
        else:
            body = ('<?xml version="1.0" encoding="utf-8"?><D:mkcol xmlns:D="DAV:" '
                    'xmlns:A="urn:ietf:params:xml:ns:carddav"><D:set><D:prop><D:resourcetype>'
                    f"<D:collection/><A:addressbook/></D:resourcetype>{name}</D:prop>"
                    "</D:set></D:mkcol>")
        answer = self.request("MKCALENDAR" if calendar else "MKCOL", place,
                              data=body.encode(), headers={"Content-Type": "application/xml"})
        assert answer.status_code == 201, answer.text

    def put(self, path: str, body: bytes) -> None:
        kind = "text/calendar" if path.endswith(".ics") else "text/vcard"
        answer = self.request("PUT", path, data=body,
                              headers={"Content-Type": f"{kind}; charset=utf-8"})
        assert answer.status_code in (201, 204), answer.text


def meaning(objects: list[bytes]) -> dict[str, Any]:
    """UID -> what a user sees of it: every component's times, summary, rule, exceptions,
    categories, people with their part and role, and the occurrences over the window;
    a contact's names, addresses and photo (decoded)."""
    found: dict[str, Any] = {}
    for raw in objects:
        component = icalendar.Component.from_ical(raw)
        if component.name == "VCARD":
            photo = component.get("PHOTO")
            found[str(component["UID"])] = (
                str(component["FN"]), str(component.get("EMAIL", "")),
                str(component.get("TEL", "")),
                base64.b64decode(str(photo).split(",")[-1]) if photo is not None else None)
            continue
        events = []
        for vevent in component.walk("VEVENT"):
            people = vevent.get("ATTENDEE", [])
            people = people if isinstance(people, list) else [people]
            events.append((
                str(vevent.get("RECURRENCE-ID").dt) if "RECURRENCE-ID" in vevent else "",
                vevent["DTSTART"].dt.isoformat(), vevent["DTEND"].dt.isoformat(),
                str(vevent["SUMMARY"]), vevent["RRULE"].to_ical() if "RRULE" in vevent else b"",
                sorted(str(day.dt) for exdate in _listed(vevent.get("EXDATE"))
                       for day in exdate.dts),
                sorted(str(category) for categories in _listed(vevent.get("CATEGORIES"))
                       for category in categories.cats),
                str(vevent.get("ORGANIZER", "")),
                sorted((str(a), str(a.params.get("PARTSTAT")), str(a.params.get("ROLE")))
                       for a in people)))
        uid = str(component.walk("VEVENT")[0]["UID"])
        found[uid] = (sorted(events), sorted(
            (occurrence["DTSTART"].dt.isoformat(), str(occurrence["SUMMARY"]))
            for occurrence in recurring_ical_events.of(component).between(*WINDOW)))
    return found


def _listed(value: Any) -> list[Any]:
    return [] if value is None else value if isinstance(value, list) else [value]


def write_batch(folder: Path, radicale: Radicale, cyrus: Cyrus) -> Path:
    (folder / "users.csv").write_text(
        "source,target,source_secret,target_secret\n"
        f"{AMELIE},{AMELIE},env:AMELIE_SOURCE,env:AMELIE_TARGET\n", encoding="utf-8")
    path = folder / "batch.toml"
    path.write_text(f"""
name = "radicale-vers-cyrus"
workloads = ["calendar", "contacts"]
[source]
type = "dav"
url = "{radicale.base_url}/"
[targets.calendar]
type = "dav"
url = "{cyrus.base_url}/"
[targets.contacts]
type = "dav"
url = "{cyrus.base_url}/"
[run]
work_dir = "work"
""", encoding="utf-8")
    return path


def cursors(folder: Path) -> list[str]:
    """The cursors the ledger keeps for the units, as stored."""
    with sqlite3.connect(folder / "work" / "ledger.sqlite") as ledger:
        return sorted(row[0] or "" for row in ledger.execute("SELECT cursor FROM units"))


def test_calendars_and_contacts_move_from_radicale_to_cyrus_by_meaning_and_nobody_is_mailed(
        radicale, cyrus_factory, tmp_path, monkeypatch):
    radicale.add_user(AMELIE, SOURCE_PASSWORD)
    cyrus = cyrus_factory({AMELIE: TARGET_PASSWORD})
    monkeypatch.setenv("AMELIE_SOURCE", SOURCE_PASSWORD)
    monkeypatch.setenv("AMELIE_TARGET", TARGET_PASSWORD)
    source, target = Reader(radicale, SOURCE_PASSWORD), Reader(cyrus, TARGET_PASSWORD)
    home = f"/{AMELIE}/"
    source.make(f"{home}agenda/", "Agenda", calendar=True)
    source.make(f"{home}carnet/", "Carnet", calendar=False)
    for name, body in (("service.ics", SERIES), ("fete.ics", ALL_DAY),
                       ("conseil.ics", MEETING)):
        source.put(f"{home}agenda/{name}", body)
    for name, body in (("helene.vcf", CARD_PHOTO), ("jean.vcf", CARD)):
        source.put(f"{home}carnet/{name}", body)
    batch = write_batch(tmp_path, radicale, cyrus)

    code, output = bascule("run", str(batch))
    assert code == 0, output
    assert report(tmp_path, "run")["summary"]["copied"] == 5

    calendars = f"/dav/calendars/user/{AMELIE}/"
    books = f"/dav/addressbooks/user/{AMELIE}/"
    sent = meaning(source.objects(home, "Agenda"))
    landed = meaning(target.objects(calendars, "Agenda"))
    assert landed == sent
    series = landed["service@ville-exemple.fr"]
    assert ("2025-03-17T14:00:00+01:00", "Réunion de service (déplacée)") in series[1]
    assert len(series[1]) == 9  # ten Mondays, one taken out
    assert landed["fete@ville-exemple.fr"][0][0][1] == "2025-07-14"
    cards = meaning(target.objects(books, "Carnet"))
    assert cards == meaning(source.objects(home, "Carnet"))
    assert cards["helene@ville-exemple.fr"][3] == PHOTO
    assert cyrus.captured() == [], "Cyrus mailed someone while calendars were moved"

    code, output = bascule("verify", str(batch))
    assert code == 0, output
    verified = report(tmp_path, "verify")["summary"]
    assert (verified["checked"], verified["mismatches"]) == (5, 0)

    code, output = bascule("run", str(batch))
    assert code == 0, output
    assert report(tmp_path, "run")["summary"]["copied"] == 0
    tokens = cursors(tmp_path)
    assert all("sync_token" in cursor for cursor in tokens), tokens

    source.put(f"{home}agenda/fete.ics", ALL_DAY.replace("Fête nationale".encode(),
                                                         "Fête nationale (bal)".encode()))
    assert source.request("DELETE", f"{home}agenda/conseil.ics").status_code in (200, 204)
    code, output = bascule("run", str(batch))
    assert code == 0, output
    delta = report(tmp_path, "run")
    assert delta["summary"]["copied"] == 1
    assert [(row["folder"], row["messages"]) for row in delta["entries"]
            if row.get("code") == "deleted_at_source"] == [("calendar:Agenda", 1)]
    landed = meaning(target.objects(calendars, "Agenda"))
    assert landed["fete@ville-exemple.fr"] == meaning(
        source.objects(home, "Agenda"))["fete@ville-exemple.fr"]
    assert cursors(tmp_path) != tokens
    assert cyrus.captured() == [], "Cyrus mailed someone on the delta pass"

    code, output = bascule("verify", str(batch))
    verified = report(tmp_path, "verify")["summary"]
    # The meeting deleted at the source stays on the target (a run never deletes there),
    # which verify tells without failing.
    assert (code, verified["mismatches"], verified["deleted_at_source"]) == (0, 0, 1), output

    # The control: the meeting as the source holds it, written straight into the target
    # under another UID, does make Cyrus mail its attendees.
    [place] = [path for path, _, name in target.members(calendars) if name == "Agenda"]
    target.put(f"{place}control.ics", MEETING.replace(b"UID:conseil@", b"UID:control@"))
    assert sorted(str(m["Envelope-To"]).strip("<>") for m in cyrus.captured()) == [
        "helene.noel@exemple-asso.fr", "jean.martin@exemple-asso.fr"]
