"""End to end: an Exchange public folder tree (the EWS test server's French organisation) named
by a ``public:`` line of the users table, its mail into a shared mailbox of a real Dovecot and
its calendar and contacts into a real Radicale, read back with imapclient and plain HTTP
(icalendar, vobject); a second pass copies nothing, a message added and one deleted between
passes are moved and reported then removed; a line naming no folder, or a folder another line
copies, stops ``plan`` before anything moves."""

from __future__ import annotations

import csv
import hashlib
import os
import signal
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import icalendar
import pytest
import vobject

from connectors import registry
from mappings.spaces import public_folder, space_source
from mappings.users import UsersFileInvalid, load_users
from reports.i18n import Text
from tests import mailboxes
from tests.cli import bascule, report
from tests.dovecot import Dovecot
from tests.ews_seed import DOMAIN, SERVICE_LOGIN, contact, mime_message, single_event, utc_zone
from tests.faults import BasculeRun
from tests.radicale import Radicale
from tests.test_engine_dav import collections

ALICE = f"alice@{DOMAIN}"
SHARED = "mairie-partage"
LINE = "public:\\Mairie"


def write_batch(folder: Path, server: Any, imap: Dovecot, radicale: Radicale,
                lines: tuple[str, ...] = (LINE,), deletions: str = "report",
                service_account: bool = True) -> Path:
    rows = [(ALICE, "alice", "", "env:ALICE_TARGET")] if service_account else []
    rows += [(line, SHARED if n == 0 else f"{SHARED}-{n}", "", "env:SHARED_TARGET")
             for n, line in enumerate(lines)]
    mailboxes.write_users(folder, rows)
    signing_in = f"""[source.service_account]
login = "{SERVICE_LOGIN}"
secret = "env:EWS_SECRET"
""" if service_account else ""
    dav = f'type = "dav"\nurl = "{radicale.base_url}/"\n'
    path = folder / "batch.toml"
    path.write_text(f"""
name = "dossiers-publics"
workloads = ["mail", "calendar", "contacts"]
[source]
type = "ews"
service_endpoint = "{server.url}"
auth = "ntlm"
ca_file = "{server.ca_file}"
{signing_in}[target]
type = "imap"
host = "{imap.host}"
port = {imap.port}
security = "none"
[targets.calendar]
{dav}[targets.contacts]
{dav}[run]
work_dir = "work"
deletions = "{deletions}"
""", encoding="utf-8")
    return path


def seed_public(tenant: Any) -> None:
    """Beside the seeded tree (Mairie, its Délibérations with one message, its Agenda des
    salles): a message in Mairie itself, a room booking, an address book with a contact, a
    folder of notes no workload takes."""
    when = datetime(2026, 4, 7, 9, 0, tzinfo=UTC)
    tenant.deliver_public(("Mairie",), mime_message(
        f"accueil@{DOMAIN}", f"mairie@{DOMAIN}", "Horaires d'été de l'accueil",
        "Ouvert de 8 h à 16 h.\r\n", when), received=when, is_read=True)
    tenant.add_public_item(("Mairie", "Agenda des salles"), single_event(
        "Salle du conseil — commission travaux", when, when + timedelta(hours=2), utc_zone()))
    tenant.add_public_folder(("Mairie", "Notes de service"), "IPF.StickyNote")
    tenant.add_public_folder(("Mairie", "Annuaire des services"), "IPF.Contact")
    tenant.add_public_item(("Mairie", "Annuaire des services"), contact(
        "Lucie", "Martin", f"lucie.martin@{DOMAIN}", company="Mairie", job="Urbanisme"))
    tenant.public.set_permission(("Mairie", "Délibérations"), ALICE, "Reviewer")
    tenant.public.set_permission(("Mairie", "Délibérations"), "Default", "Author")


def expected(server: Any, path: tuple[str, ...]) -> Counter:
    folder = server.tenant.public.folder_at(path)
    return Counter(hashlib.sha256(item.mime).hexdigest() for item in folder.items.values())


def landed(target: Dovecot) -> dict[tuple[str, ...], Counter]:
    return {folder: Counter(sha for (sha, _, _), n in held.items() for _ in range(n))
            for folder, held in mailboxes.contents(target, SHARED).items()}


def events(radicale: Radicale) -> list[Any]:
    """The events of the shared account's collections, read with plain HTTP."""
    shared = collections(radicale, f"/{SHARED}/", (SHARED, "partage-target"))
    return [c for book in shared.values() for raw in book.objects
            if raw.startswith(b"BEGIN:VCALENDAR")
            for c in icalendar.Calendar.from_ical(raw).walk("VEVENT")]


def cards(radicale: Radicale) -> list[Any]:
    shared = collections(radicale, f"/{SHARED}/", (SHARED, "partage-target"))
    return [vobject.readOne(raw.decode()) for book in shared.values() for raw in book.objects
            if raw.startswith(b"BEGIN:VCARD")]


@pytest.fixture
def targets(ews_server: Any, dovecot_factory: Any, radicale: Radicale,
            monkeypatch: pytest.MonkeyPatch) -> tuple[Dovecot, Radicale]:
    monkeypatch.setenv("EWS_SECRET", ews_server.service_password)
    monkeypatch.setenv("ALICE_TARGET", "alice-target")
    monkeypatch.setenv("SHARED_TARGET", "partage-target")
    radicale.add_user("alice", "alice-target")
    radicale.add_user(SHARED, "partage-target")
    seed_public(ews_server.tenant)
    return dovecot_factory(users={"alice": "alice-target", SHARED: "partage-target"}), radicale


def test_a_public_folder_tree_lands_in_a_shared_mailbox_and_collections(
        ews_server, targets, tmp_path):
    imap, radicale = targets
    batch = str(write_batch(tmp_path, ews_server, imap, radicale))

    code, output = bascule("audit", batch)
    assert code == 0, output
    audited = report(tmp_path, "audit")["summary"]
    # Mairie (1 message), Délibérations (1), the room calendar (1), the address book (1).
    assert (audited["public_containers"], audited["public_items"]) == (4, 4)

    code, output = bascule("plan", batch)
    assert code == 0, output
    planned = report(tmp_path, "plan")
    # Mairie and Délibérations (mail), the room calendar and the address book.
    assert (planned["summary"]["public_units"], planned["summary"]["public_to_copy"]) == (4, 4)
    [notes] = [e for e in planned["entries"] if e.get("code") == "public_folder_kind_skipped"]
    assert "IPF.StickyNote" in notes["message_fr"] and notes["principal"] == LINE

    code, output = bascule("run", batch)
    assert code == 0, output
    held = landed(imap)
    assert held[("Mairie",)] == expected(ews_server, ("Mairie",)) and held[("Mairie",)]
    assert held[("Mairie", "Délibérations")] == expected(ews_server, ("Mairie", "Délibérations"))
    flags = {flag for (_, found, _) in mailboxes.contents(imap, SHARED)[("Mairie",)]
             for flag in found}
    assert "\\Seen" in flags
    [event] = events(radicale)
    assert str(event["SUMMARY"]) == "Salle du conseil — commission travaux"
    assert event["DTSTART"].dt.astimezone(UTC) == datetime(2026, 4, 7, 9, 0, tzinfo=UTC)
    [card] = cards(radicale)
    assert card.fn.value == "Lucie Martin" and card.email.value == f"lucie.martin@{DOMAIN}"
    # Who may see each public folder, in the space's CSV with the folder where it landed.
    with open(tmp_path / "work" / "permissions" / f"{SHARED}.csv", encoding="utf-8-sig",
              newline="") as file:
        rows = [row for row in csv.DictReader(file) if row["source_path"] ==
                "Mairie/Délibérations"]
    assert sorted((row["path"], row["who"], row["mapping"], row["level"]) for row in rows) == [
        ("Mairie/Délibérations", "Default", "default", "Author"),
        ("Mairie/Délibérations", ALICE, "mapped", "Reviewer")]
    # The public folders were read as the service account itself, never impersonating.
    public_ops = [(op, who) for op, mailbox, who in ews_server.requests if mailbox == ""]
    assert {op for op, _ in public_ops} == {"FindFolder", "FindItem", "GetItem", "GetFolder"}
    assert all(who is None for _, who in public_ops)

    code, output = bascule("run", batch)
    assert code == 0, output
    assert report(tmp_path, "run")["summary"]["copied"] == 0

    # Between passes: a new message in Délibérations and a new booking; the message of
    # Mairie and the contact deleted.
    when = datetime(2026, 5, 12, 18, 0, tzinfo=UTC)
    public = ews_server.tenant.public
    ews_server.tenant.deliver_public(("Mairie", "Délibérations"), mime_message(
        f"secretariat@{DOMAIN}", f"mairie@{DOMAIN}", "Délibération 2026-02",
        "Adoptée par 21 voix contre 6.\r\n", when), received=when)
    ews_server.tenant.add_public_item(("Mairie", "Agenda des salles"), single_event(
        "Salle des fêtes — vœux du maire", when, when + timedelta(hours=3), utc_zone()))
    [gone] = list(public.folder_at(("Mairie",)).items)
    public.delete_item(gone)
    [card_gone] = list(public.folder_at(("Mairie", "Annuaire des services")).items)
    public.delete_item(card_gone)
    code, output = bascule("run", batch)
    assert code == 0, output
    ran = report(tmp_path, "run")
    assert ran["summary"]["copied"] == 2
    assert any(e.get("code") == "deleted_at_source" and e["principal"] == LINE
               for e in ran["entries"])
    held = landed(imap)
    assert held[("Mairie", "Délibérations")] == expected(ews_server, ("Mairie", "Délibérations"))
    assert len(held[("Mairie",)]) == 1, "deletions = report leaves the copy"
    assert len(cards(radicale)) == 1, "deletions = report leaves the copy"
    assert len(events(radicale)) == 2

    batch = str(write_batch(tmp_path, ews_server, imap, radicale, deletions="remove"))
    code, output = bascule("run", batch)
    assert code == 0, output
    assert landed(imap)[("Mairie",)] == Counter()
    assert cards(radicale) == []
    assert sorted(str(e["SUMMARY"]) for e in events(radicale)) == [
        "Salle des fêtes — vœux du maire", "Salle du conseil — commission travaux"]
    code, output = bascule("verify", batch)
    assert code == 0, output
    assert report(tmp_path, "verify")["summary"]["mismatches"] == 0


def test_a_run_killed_mid_way_then_run_again_leaves_no_duplicate_and_no_gap(
        ews_server, targets, tmp_path):
    imap, radicale = targets
    start = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
    for n in range(180):
        path = ("Mairie", "Délibérations") if n % 2 else ("Mairie", f"Courrier {n % 3}")
        ews_server.tenant.add_public_folder(path)
        ews_server.tenant.deliver_public(path, mime_message(
            f"greffe@{DOMAIN}", f"mairie@{DOMAIN}", f"Courrier n°{n}", f"Pièce {n}.\r\n"
            * (1 + n % 30), start + timedelta(hours=n)), received=start + timedelta(hours=n))
    ews_server.latency(0.02)
    batch = write_batch(tmp_path, ews_server, imap, radicale)
    run = BasculeRun(batch, dict(os.environ))
    assert run.signal_when(signal.SIGKILL, lambda ledger: ledger.done >= 50)
    run.finish()
    ews_server.latency(0)
    code, output = bascule("run", str(batch))
    assert code == 0, output
    held = landed(imap)
    for path in (("Mairie",), ("Mairie", "Délibérations"),
                 *(("Mairie", f"Courrier {n}") for n in range(3))):
        assert held[path] == expected(ews_server, path), path
    assert all(count == 1 for folder in held.values() for count in folder.values())


def test_a_public_line_naming_no_folder_or_a_copied_one_stops_plan(
        ews_server, targets, tmp_path):
    imap, radicale = targets
    batch = str(write_batch(tmp_path, ews_server, imap, radicale, lines=(
        LINE, "public:Mairie/Délibérations", "public:\\Mairie\\Courrier arrivé")))
    code, output = bascule("plan", batch)
    assert code == 2, output
    refused = [e for e in report(tmp_path, "plan")["entries"] if e["action"] == "error"]
    errors = {e["principal"]: e for e in refused}
    # Each line once, though its mail, calendars and contacts each met the refusal.
    assert sorted(e["principal"] for e in refused) == [
        "public:Mairie/Délibérations", "public:\\Mairie\\Courrier arrivé"]
    overlap = errors["public:Mairie/Délibérations"]
    assert overlap["code"] == "public_folder_overlap"
    assert LINE in overlap["message_fr"] and LINE in overlap["message_en"]
    missing = errors["public:\\Mairie\\Courrier arrivé"]
    assert missing["code"] == "public_folder_not_found"
    assert "Courrier arrivé" in missing["message_fr"] and "Délibérations" in missing["message_fr"]
    assert "Courrier arrivé" in output
    assert not any(op == "GetItem" and mailbox == ""
                   for op, mailbox, _ in ews_server.requests)


def test_public_folders_without_a_service_account_are_refused_with_their_line(
        ews_server, targets, tmp_path):
    imap, radicale = targets
    batch = str(write_batch(tmp_path, ews_server, imap, radicale, service_account=False))
    code, output = bascule("plan", batch)
    assert code == 2, output
    [error] = [e for e in report(tmp_path, "plan")["entries"] if e["action"] == "error"]
    assert (error["principal"], error["code"]) == (LINE, "ews_public_service_account")
    assert "service_account" in error["message_en"] and "compte de service" in error["message_fr"]
    assert ews_server.requests == []


def test_public_lines_are_the_ews_source_s_and_site_lines_graph_s():
    ews, graph = registry.connector("ews"), registry.connector("graph")
    for workload in ("mail", "calendar", "contacts"):
        assert ews.serves(LINE, workload)
    assert not ews.serves(LINE, "files")
    assert not ews.serves("site:Service urbanisme", "files")
    assert not ews.serves("team:Équipe voirie", "files")
    for workload in ("mail", "calendar", "contacts", "files"):
        assert not graph.serves(LINE, workload)
    assert graph.serves("site:Service urbanisme", "files")


def test_public_lines_are_read_as_written_and_a_malformed_one_is_refused(tmp_path: Path):
    assert public_folder("public:\\Mairie\\Délibérations") == ("Mairie", "Délibérations")
    assert public_folder(" PUBLIC:Mairie/Agenda des salles/ ") == ("Mairie", "Agenda des salles")
    assert public_folder("public:\\Services techniques\\Voirie/Été 2026") == (
        "Services techniques", "Voirie/Été 2026")
    assert public_folder("site:Service urbanisme") is None
    assert space_source(LINE) is None  # never a SharePoint line
    users = tmp_path / "users.csv"
    users.write_text("source,target\npublic:,a\npublic:\\Mairie\\\\Courrier,b\n"
                     "public:\\Mairie,c\n", encoding="utf-8")
    with pytest.raises(UsersFileInvalid) as raised:
        load_users(users)
    assert [(e.code, e.line) for e in raised.value.errors] == [
        ("users_space_malformed", 2), ("users_space_malformed", 3)]
    text = Text.of(raised.value.errors[0].code, **raised.value.errors[0].params)
    assert "public:\\" in text.en and "public:\\" in text.fr and text.en != text.fr
