"""Export files holding a whole calendar or address book: cut into one item per object
(``connectors.local.objects``), read by the folder source, and moved by ``bascule run`` into
a real Radicale, read back with plain HTTP and icalendar / vobject."""

from __future__ import annotations

import io
import os
import tracemalloc
from pathlib import Path

import icalendar
import pytest
import vobject

from connectors.base import Container
from connectors.local.documents import FolderSource
from connectors.local.objects import SCANNED, Reader, objects, versioned
from tests.cli import bascule, report
from tests.test_engine_dav import collections

AMELIE = "amelie.lefevre@ville-exemple.fr"
PASSWORD = "amelie-target"

ZONE = (b"BEGIN:VTIMEZONE\r\nTZID:Europe/Paris\r\nBEGIN:STANDARD\r\n"
        b"DTSTART:19701025T030000\r\nRRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU\r\n"
        b"TZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\nEND:STANDARD\r\nBEGIN:DAYLIGHT\r\n"
        b"DTSTART:19700329T020000\r\nRRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU\r\n"
        b"TZOFFSETFROM:+0100\r\nTZOFFSETTO:+0200\r\nEND:DAYLIGHT\r\nEND:VTIMEZONE\r\n")
SERIES = (b"BEGIN:VEVENT\r\nUID:conseil@ville-exemple.fr\r\nDTSTAMP:20260101T000000Z\r\n"
          b"DTSTART;TZID=Europe/Paris:20260105T180000\r\n"
          b"DTEND;TZID=Europe/Paris:20260105T200000\r\nRRULE:FREQ=WEEKLY;COUNT=6\r\n"
          b"SUMMARY:Conseil municipal\r\nBEGIN:VALARM\r\nUID:alarme-1\r\nACTION:DISPLAY\r\n"
          b"TRIGGER:-PT15M\r\nDESCRIPTION:Conseil\r\nEND:VALARM\r\nEND:VEVENT\r\n")
MOVED = (b"BEGIN:VEVENT\r\nUID:conseil@ville-exemple.fr\r\nDTSTAMP:20260101T000000Z\r\n"
         b"RECURRENCE-ID;TZID=Europe/Paris:20260119T180000\r\n"
         b"DTSTART;TZID=Europe/Paris:20260120T180000\r\n"
         b"DTEND;TZID=Europe/Paris:20260120T200000\r\nSUMMARY:Conseil municipal (d\xc3\xa9plac\xc3\xa9)\r\n"
         b"END:VEVENT\r\n")
ALL_DAY = (b"BEGIN:VEVENT\r\nUID:fete@ville-exemple.fr\r\nDTSTAMP:20260101T000000Z\r\n"
           b"DTSTART;VALUE=DATE:20260714\r\nDTEND;VALUE=DATE:20260715\r\n"
           b"SUMMARY:F\xc3\xaate nationale : d\xc3\xa9fil\xc3\xa9 et bal des pompiers sur la place de\r\n"
           b"  la mairie\r\nEND:VEVENT\r\n")
TASK = (b"BEGIN:VTODO\r\nUID:budget@ville-exemple.fr\r\nDTSTAMP:20260101T000000Z\r\n"
        b"SUMMARY:Budget\r\nEND:VTODO\r\n")
CALENDAR = (b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Export//FR\r\nMETHOD:PUBLISH\r\n"
            + SERIES + ALL_DAY + ZONE + MOVED + b"END:VCALENDAR\r\n")
"""A calendar application's export: a series, an all-day event, then the zone, then the
series' moved occurrence, far from its master."""


def card(uid: str | None, name: str, extra: bytes = b"") -> bytes:
    return (b"BEGIN:VCARD\nVERSION:3.0\n" + (f"UID:{uid}\n".encode() if uid else b"")
            + f"FN:{name}\nN:{name};;;;\n".encode() + extra + b"END:VCARD\n")


BOOK = (card("urn:uuid:11111111-1111-4111-8111-111111111111", "Amélie Lefèvre")
        + b"\n" + card("urn:uuid:22222222-2222-4222-8222-222222222222", "Sébastien Côté")
        + card("urn:uuid:33333333-3333-4333-8333-333333333333", "Élus"))
"""An address book's export (LF line endings, a blank line between two cards)."""


def parts(data: bytes) -> list[tuple[str, bytes]]:
    stream = io.BytesIO(data)
    found = versioned(stream, objects(stream))
    return [(thing.key, Reader(io.BytesIO(data), thing.ranges).read()) for thing in found]


def test_a_calendar_export_is_cut_by_uid_with_its_zone_and_calendar_properties():
    cut = dict(parts(CALENDAR))
    head = b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Export//FR\r\n"
    assert list(cut) == ["conseil@ville-exemple.fr", "fete@ville-exemple.fr"]
    # The series with its moved occurrence, the zone they name, no METHOD; its alarm's UID
    # names no object of its own.
    assert cut["conseil@ville-exemple.fr"] == head + ZONE + SERIES + MOVED + b"END:VCALENDAR\r\n"
    # The all-day event names no zone: none goes with it. Its folded line is kept folded.
    assert cut["fete@ville-exemple.fr"] == head + ALL_DAY + b"END:VCALENDAR\r\n"
    series = icalendar.Calendar.from_ical(cut["conseil@ville-exemple.fr"])
    assert len(series.walk("VEVENT")) == 2 and len(series.walk("VTIMEZONE")) == 1


def test_each_card_of_an_address_book_is_an_item_and_a_card_without_uid_is_kept_by_place():
    book = card("x", "Un") + card(None, "Deux") + card("x", "Trois").lower()
    cut = parts(book)
    assert [key for key, _ in cut] == ["x", "#2", "#3"]
    assert b"".join(body for _, body in cut) == book
    assert [vobject.readOne(body.decode()).fn.value for _, body in cut] == [
        "Un", "Deux", "trois"]


@pytest.mark.parametrize("data", [
    CALENDAR[:-len(b"END:VCALENDAR\r\n")],
    BOOK[:-len(b"END:VCARD\n")],
    b"Subject: not a calendar\r\n\r\nBEGIN:VCARD\r\n",
    b"",
])
def test_a_file_ending_inside_an_object_or_of_another_kind_is_not_cut(data):
    """Left whole: the sink then refuses it, with its reason, rather than part of it going
    and the rest vanishing."""
    assert objects(io.BytesIO(data)) == []


def test_a_long_photo_is_passed_over_not_gathered(tmp_path):
    """Cutting an address book whose cards carry 6 MB photos (folded base64) holds a line's
    first bytes at a time, not a photo."""
    photo = b"PHOTO;ENCODING=b;TYPE=JPEG:" + b"\n ".join(
        [b"A" * 74] * (6_000_000 // 74)) + b"\n"
    path = tmp_path / "carnet.vcf"
    with path.open("wb") as out:
        for n in range(4):
            out.write(card(f"u{n}", f"Personne {n}", photo))
    tracemalloc.start()
    with path.open("rb") as stream:
        found = versioned(stream, objects(stream))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert [thing.key for thing in found] == ["u0", "u1", "u2", "u3"]
    assert sum(thing.size for thing in found) == os.path.getsize(path)
    assert peak < 2 * SCANNED + (1 << 20), peak


def test_the_folder_source_lists_and_reads_each_object_of_an_export(tmp_path):
    root = tmp_path / "contacts"
    (root / "Carnet").mkdir(parents=True)
    (root / "Carnet" / "carnet.vcf").write_bytes(BOOK)
    (root / "Carnet" / "seule.vcf").write_bytes(card("seule", "Seule"))
    source = FolderSource(root, "contacts")
    container = Container(path=("Carnet",), native_name="Carnet")

    listing = source.list_documents(container, None)
    ids = [ref.source_id for ref in listing.refs]
    assert ids == [f"carnet.vcf#urn:uuid:{n * 8}-{n * 4}-4{n * 3}-8{n * 3}-{n * 12}"
                   for n in "123"] + ["seule.vcf"]
    assert [ref.name for ref in listing.refs][:1] == [
        "carnet-urn:uuid:11111111-1111-4111-8111-111111111111.vcf"]
    notes = source.drain_notes()
    assert [(n.code, n.subject, n.params) for n in notes] == [
        ("export_file_split", "carnet.vcf", {"count": 3})]

    documents = list(source.fetch_documents(container, listing.refs))
    assert [d.source_id for d in documents] == ids
    with documents[1].open() as body:
        second = body.read()
    assert vobject.readOne(second.decode()).fn.value == "Sébastien Côté"
    assert documents[1].fingerprint == documents[1].version == listing.refs[1].version
    assert documents[1].size == len(second)

    # One card changed in the file: only its version changes.
    (root / "Carnet" / "carnet.vcf").write_bytes(BOOK.replace(b"FN:\xc3\x89lus", b"FN:Conseil"))
    again = source.list_documents(container, None).refs
    assert [a.version == b.version for a, b in zip(again, listing.refs, strict=True)] == [
        True, True, False, True]


def write_batch(folder: Path, base_url: str) -> Path:
    export = folder / "export" / AMELIE
    (export / "calendar" / "Agenda").mkdir(parents=True)
    (export / "calendar" / "Agenda" / "agenda.ics").write_bytes(CALENDAR)
    (export / "tasks" / "Tâches").mkdir(parents=True)
    (export / "tasks" / "Tâches" / "taches.ics").write_bytes(
        b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Export//FR\r\n" + TASK
        + TASK.replace(b"budget@", b"voirie@").replace(b"Budget", b"Voirie")
        + b"END:VCALENDAR\r\n")
    (export / "contacts" / "Carnet").mkdir(parents=True)
    (export / "contacts" / "Carnet" / "carnet.vcf").write_bytes(BOOK)
    (folder / "users.csv").write_text(
        "source,target,source_secret,target_secret\n"
        f"{AMELIE},{AMELIE},,env:AMELIE_TARGET\n", encoding="utf-8")
    path = folder / "batch.toml"
    targets = "".join(f"""
[targets.{workload}]
type = "dav"
url = "{base_url}/"
profile = "radicale"
""" for workload in ("calendar", "tasks", "contacts"))
    path.write_text(f"""
name = "exports"
workloads = ["calendar", "tasks", "contacts"]
[source]
type = "folder"
path = "export"
{targets}
[run]
work_dir = "work"
""", encoding="utf-8")
    return path


def test_whole_calendar_and_address_book_exports_land_one_object_a_resource(
        radicale, tmp_path, monkeypatch):
    radicale.add_user(AMELIE, PASSWORD)
    monkeypatch.setenv("AMELIE_TARGET", PASSWORD)
    batch = write_batch(tmp_path, radicale.base_url)

    code, output = bascule("run", str(batch))
    assert code == 0, output
    ran = report(tmp_path, "run")
    assert ran["summary"]["copied"] == 2 + 2 + 3, ran["summary"]
    assert sorted((row["source_id"], row["code"]) for row in ran["entries"]
                  if row.get("code") == "export_file_split") == [
        ("agenda.ics", "export_file_split"), ("carnet.vcf", "export_file_split"),
        ("taches.ics", "export_file_split")]

    landed = collections(radicale, f"/{AMELIE}/")
    events = [icalendar.Calendar.from_ical(body) for body in landed["Agenda"].objects]
    assert sorted(str(c.walk("VEVENT")[0]["UID"]) for c in events) == [
        "conseil@ville-exemple.fr", "fete@ville-exemple.fr"]
    series = next(c for c in events if len(c.walk("VEVENT")) == 2)
    assert [str(z["TZID"]) for z in series.walk("VTIMEZONE")] == ["Europe/Paris"]
    tasks = [icalendar.Calendar.from_ical(body) for body in landed["Tâches"].objects]
    assert sorted(str(c.walk("VTODO")[0]["SUMMARY"]) for c in tasks) == ["Budget", "Voirie"]
    cards = [vobject.readOne(body.decode()) for body in landed["Carnet"].objects]
    assert sorted(c.fn.value for c in cards) == ["Amélie Lefèvre", "Sébastien Côté", "Élus"]

    code, output = bascule("verify", str(batch))
    assert code == 0, output
    verified = report(tmp_path, "verify")["summary"]
    assert (verified["checked"], verified["mismatches"]) == (7, 0)

    code, output = bascule("run", str(batch))
    assert code == 0, output
    assert report(tmp_path, "run")["summary"]["copied"] == 0

    # One card edited in the export: that card alone goes again, in place.
    book = tmp_path / "export" / AMELIE / "contacts" / "Carnet" / "carnet.vcf"
    book.write_bytes(BOOK.replace(b"FN:\xc3\x89lus", b"FN:Conseil des \xc3\xa9lus"))
    code, output = bascule("run", str(batch))
    assert code == 0, output
    assert report(tmp_path, "run")["summary"]["copied"] == 1
    cards = [vobject.readOne(body.decode())
             for body in collections(radicale, f"/{AMELIE}/")["Carnet"].objects]
    assert sorted(c.fn.value for c in cards) == [
        "Amélie Lefèvre", "Conseil des élus", "Sébastien Côté"]
