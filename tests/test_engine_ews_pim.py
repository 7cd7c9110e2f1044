"""End to end: the calendars, contacts and tasks of an Exchange mailbox (the EWS test server's
French organisation) into a real Cyrus, whose CalDAV schedules and mails through a capture
program, and into a real Radicale: read back with plain HTTP, icalendar, recurring_ical_events
and vobject; nobody mailed; a second pass copies nothing."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import icalendar
import pytest
import recurring_ical_events
import vobject

from tests.cli import bascule, report
from tests.ews_seed import COUNCIL, DOMAIN, PHOTO, SERVICE_LOGIN
from tests.test_engine_dav import collections

ALICE = f"alice@{DOMAIN}"
PASSWORD = "alice-target"


def write_batch(folder: Path, server: Any, base_url: str) -> Path:
    (folder / "users.csv").write_text(
        f"source,target,source_secret,target_secret\n{ALICE},{ALICE},,env:ALICE_TARGET\n",
        encoding="utf-8")
    dav = f'type = "dav"\nurl = "{base_url}/"\n'
    path = folder / "batch.toml"
    path.write_text(f"""
name = "agendas-mairie"
workloads = ["calendar", "contacts", "tasks"]
[source]
type = "ews"
service_endpoint = "{server.url}"
auth = "ntlm"
ca_file = "{server.ca_file}"
[source.service_account]
login = "{SERVICE_LOGIN}"
secret = "env:EWS_SECRET"
[targets.calendar]
{dav}[targets.contacts]
{dav}[targets.tasks]
{dav}[run]
work_dir = "work"
""", encoding="utf-8")
    return path


def starts(objects: list[bytes], summary: str) -> list[datetime]:
    found = []
    for raw in objects:
        calendar = icalendar.Calendar.from_ical(raw)
        for event in recurring_ical_events.of(calendar).between(date(2026, 1, 1),
                                                                 date(2027, 1, 1)):
            if str(event["SUMMARY"]) == summary:
                found.append(event["DTSTART"].dt.astimezone(UTC))
    return sorted(found)


@pytest.fixture
def secrets(ews_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EWS_SECRET", ews_server.service_password)
    monkeypatch.setenv("ALICE_TARGET", PASSWORD)


def check_landed(objects: list[bytes], cards: list[bytes]) -> None:
    """The series with its moved and cancelled occurrences, the event in a custom zone at its
    instant, the task, the contact with its photo and the list with its members."""
    assert starts(objects, "Conseil municipal") == COUNCIL.starts
    [tehran] = [icalendar.Calendar.from_ical(raw) for raw in objects if b"T\xc3\xa9h" in raw]
    event = tehran.walk("VEVENT")[0]
    assert event["DTSTART"].dt.astimezone(UTC) == datetime(2026, 3, 10, 6, 30, tzinfo=UTC)
    assert str(event["DTSTART"].params["TZID"]) == "Asia/Tehran"
    [todo] = [c for raw in objects for c in icalendar.Calendar.from_ical(raw).walk("VTODO")]
    assert todo["PERCENT-COMPLETE"] == 40 and str(todo["STATUS"]) == "IN-PROCESS"
    read = [vobject.readOne(raw.decode()) for raw in cards]
    [person] = [card for card in read if card.fn.value == "Jean Dupont"]
    assert person.photo.value == PHOTO
    [group] = [card for card in read if card.fn.value == "Commission voirie"]
    assert sorted(m.value for m in group.contents["x-addressbookserver-member"]) == [
        f"mailto:benoit@{DOMAIN}", f"mailto:chloe@{DOMAIN}"]


@pytest.mark.usefixtures("secrets")
def test_calendars_contacts_and_tasks_land_in_cyrus_and_nobody_is_mailed(
        ews_server, cyrus_factory, tmp_path):
    cyrus = cyrus_factory({ALICE: PASSWORD})
    batch = write_batch(tmp_path, ews_server, cyrus.base_url)
    code, output = bascule("plan", str(batch))
    assert code == 0, output
    code, output = bascule("run", str(batch))
    assert code == 0, output
    assert report(tmp_path, "run")["summary"]["copied"] == 5
    calendars = collections_of(cyrus, f"/dav/calendars/user/{ALICE}/")
    cards = collections_of(cyrus, f"/dav/addressbooks/user/{ALICE}/")
    check_landed(calendars, cards)
    assert cyrus.captured() == [], "Cyrus mailed someone while calendars were migrated"
    code, output = bascule("verify", str(batch))
    assert code == 0, output
    code, output = bascule("run", str(batch))
    assert code == 0, output
    assert report(tmp_path, "run")["summary"]["copied"] == 0
    # The moved occurrence changed at the source: its master's version moves, and the
    # series alone is written again, the change in it.
    mailbox = ews_server.tenant.mailbox(ALICE)
    exception = next(i for i, m in ews_server.tenant.master_of.items()
                     if ews_server.tenant.items[m].folder.owner is mailbox)
    mailbox.update_item(exception, xml=COUNCIL.exceptions[0].replace(
        "Salle des mariages", "Salle polyvalente"))
    code, output = bascule("run", str(batch))
    assert code == 0, output
    assert report(tmp_path, "run")["summary"]["copied"] == 1
    calendars = collections_of(cyrus, f"/dav/calendars/user/{ALICE}/")
    assert starts(calendars, "Conseil municipal") == COUNCIL.starts
    assert [raw for raw in calendars if b"Salle polyvalente" in raw]
    assert cyrus.captured() == [], "Cyrus mailed someone on the delta pass"


@pytest.mark.usefixtures("secrets")
def test_calendars_contacts_and_tasks_land_in_radicale_and_verify(
        ews_server, radicale, tmp_path):
    radicale.add_user(ALICE, PASSWORD)
    batch = write_batch(tmp_path, ews_server, radicale.base_url)
    code, output = bascule("run", str(batch))
    assert code == 0, output
    assert report(tmp_path, "run")["summary"]["copied"] == 5
    landed = collections(radicale, f"/{ALICE}/", (ALICE, PASSWORD))
    objects = [raw for name, book in landed.items() for raw in book.objects
               if b"BEGIN:VCALENDAR" in raw]
    cards = [raw for book in landed.values() for raw in book.objects
             if raw.startswith(b"BEGIN:VCARD")]
    check_landed(objects, cards)
    code, output = bascule("verify", str(batch))
    assert code == 0, output
    assert report(tmp_path, "verify")["summary"]["checked"] == 5


def collections_of(server: Any, home: str) -> list[bytes]:
    return [raw for book in collections(server, home, (ALICE, PASSWORD)).values()
            for raw in book.objects]
