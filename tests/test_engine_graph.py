"""End to end: Microsoft Graph (the documented test server, real msal) to a real Dovecot."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests import mailboxes
from tests.cli import bascule, report
from tests.graph_server import (
    FixtureMailbox,
    RunningGraphServer,
    french_tenant,
    mime_message,
    running_graph_server,
)
from tests.tls import TestCertificates

AMELIE = "amelie.lefevre@ville-exemple.fr"


@pytest.fixture
def graph(certificates: TestCertificates) -> Iterator[RunningGraphServer]:
    with running_graph_server(french_tenant(), certificates) as server:
        yield server


def amelie(graph: RunningGraphServer) -> FixtureMailbox:
    mailbox = graph.tenant.mailbox(AMELIE)
    assert mailbox is not None
    return mailbox


def write_batch(folder: Path, graph: RunningGraphServer, certificates: TestCertificates,
                target, workloads: tuple[str, ...] = ("mail",)) -> Path:
    (folder / "users.csv").write_text(
        f"source,target,source_secret,target_secret\n{AMELIE},alice,,env:ALICE_TARGET\n",
        encoding="utf-8")
    path = folder / "batch.toml"
    path.write_text(f"""
name = "m365"
workloads = {json.dumps(list(workloads))}
{graph.source_section(certificates.ca_file)}[target]
type = "imap"
host = "{target.host}"
port = {target.port}
security = "none"
[run]
work_dir = "work"
""", encoding="utf-8")
    return path


def expected_inbox(graph: RunningGraphServer) -> Counter:
    """The SHA-256 of every INBOX message as the server holds its MIME."""
    mailbox = amelie(graph)
    inbox = next(f for f in mailbox.folders.values() if f.well_known_name == "inbox")
    return Counter(hashlib.sha256(m.mime).hexdigest() for m in mailbox.messages.values()
                   if m.folder_id == inbox.id)


def target_hashes(server, folder: tuple[str, ...]) -> Counter:
    return Counter(sha for (sha, _, _), count in
                   mailboxes.contents(server, "alice")[folder].items() for _ in range(count))


def test_mail_moves_from_graph_to_dovecot_then_only_changes(graph, certificates, dovecot_factory,
                                                             tmp_path, monkeypatch):
    target = dovecot_factory(users={"alice": "alice-target"})
    monkeypatch.setenv("GRAPH_SECRET", graph.tenant.client_secret)
    monkeypatch.setenv("ALICE_TARGET", "alice-target")
    batch = str(write_batch(tmp_path, graph, certificates, target))

    code, output = bascule("plan", batch)
    assert code == 0, output
    code, output = bascule("run", batch)
    assert code == 0, output
    assert target_hashes(target, ("INBOX",)) == expected_inbox(graph)
    landed = mailboxes.contents(target, "alice")
    assert sum(landed[("INBOX", "Projets", "Été 2024")].values()) == 1
    [(_, draft_flags, _)] = landed[("Drafts",)]
    assert "\\Draft" in draft_flags
    flags = {f for (_, fl, _) in landed[("INBOX",)] for f in fl}
    assert {"\\Seen", "\\Flagged", "Categorie_bleue"} <= flags
    entries = report(tmp_path, "run")["entries"]
    notes = {(e["action"], e.get("code"), e.get("folder")) for e in entries}
    assert ("skip", "hidden_folder_skipped", "Problèmes de synchronisation") in notes
    renamed = [e for e in entries if e.get("code") == "keyword_renamed"]
    # Which unit reports a rename depends on which one met the category first.
    assert any("Catégorie bleue → Categorie_bleue" in e["message_fr"] for e in renamed)
    assert any("Été → Ete" in e["message_fr"] for e in renamed)

    mailbox = amelie(graph)
    inbox = next(f for f in mailbox.folders.values() if f.well_known_name == "inbox")
    when = datetime(2024, 9, 2, 8, 0, tzinfo=UTC)
    graph.tenant.add_message(
        mailbox, inbox,
        mime_message("Zoé Benoît <zoe.benoit@ville-exemple.fr>", AMELIE, "Rentrée scolaire",
                     "Les horaires de la rentrée.\n", when),
        subject="Rentrée scolaire", received=when, is_read=False)
    unread = next(m for m in mailbox.messages.values()
                  if m.folder_id == inbox.id and not m.is_read and m.subject != "Rentrée scolaire")
    graph.tenant.update_message(mailbox, unread.id, is_read=True)
    code, output = bascule("run", batch)
    assert code == 0, output
    summary = report(tmp_path, "run")["summary"]
    assert (summary["copied"], summary["flag_updates"]) == (1, 1)
    assert target_hashes(target, ("INBOX",)) == expected_inbox(graph)
    code, output = bascule("verify", batch)
    assert code == 0, output


def test_a_wrong_secret_stops_before_anything_moves(graph, certificates, dovecot_factory,
                                                     tmp_path, monkeypatch):
    target = dovecot_factory(users={"alice": "alice-target"})
    monkeypatch.setenv("GRAPH_SECRET", "not-the-secret")
    monkeypatch.setenv("ALICE_TARGET", "alice-target")
    batch = str(write_batch(tmp_path, graph, certificates, target))
    for command in ("plan", "run"):
        code, output = bascule("--lang", "fr", command, batch)
        assert code == 2, output
        assert "AADSTS7000215" in output
        assert "not-the-secret" not in output
    assert not any(mailboxes.contents(target, "alice").values())
    assert graph.stats["graph_requests"] == 0


def test_an_item_graph_will_not_give_as_mime_is_reported_and_the_rest_lands(
        graph, certificates, dovecot_factory, tmp_path, monkeypatch):
    target = dovecot_factory(users={"alice": "alice-target"})
    monkeypatch.setenv("GRAPH_SECRET", graph.tenant.client_secret)
    monkeypatch.setenv("ALICE_TARGET", "alice-target")
    mailbox = amelie(graph)
    inbox = next(f for f in mailbox.folders.values() if f.well_known_name == "inbox")
    refused = next(m for m in mailbox.messages.values() if m.folder_id == inbox.id)
    refused.mime_refusal = (400, "ErrorInvalidRequest")
    batch = str(write_batch(tmp_path, graph, certificates, target))
    for _ in range(2):
        code, output = bascule("run", batch)
        assert code == 1, output
        [failed] = [e for e in report(tmp_path, "run")["entries"] if e["action"] == "failed"]
        assert (failed["code"], failed["source_id"]) == ("unreadable_item", refused.id)
    wanted = expected_inbox(graph)
    wanted[hashlib.sha256(refused.mime).hexdigest()] -= 1
    assert target_hashes(target, ("INBOX",)) == +wanted


def test_calendars_and_contacts_become_ics_and_vcf_files(certificates, dovecot_factory,
                                                          tmp_path, monkeypatch):
    import icalendar

    from tests.graph_pim import pim_of, seed_pim

    tenant = french_tenant(users=3, inbox_messages=1)
    mailbox = tenant.mailbox(AMELIE)
    assert mailbox is not None
    pim = seed_pim(mailbox)
    pim.add_calendar("Élus/Commissions")  # a name no folder can hold as it is
    target = dovecot_factory(users={"alice": "alice-target"})
    monkeypatch.setenv("ALICE_TARGET", "alice-target")
    with running_graph_server(tenant, certificates) as graph:
        monkeypatch.setenv("GRAPH_SECRET", graph.tenant.client_secret)
        batch = write_batch(tmp_path, graph, certificates, target,
                            workloads=("calendar", "contacts"))
        code, output = bascule("plan", str(batch))
        assert code == 0, output
        code, output = bascule("run", str(batch))
        assert code == 0, output

        root = tmp_path / "documents" / "alice"
        calendars = sorted(p.relative_to(root).parts[:2] for p in root.glob("calendar/*/*.ics"))
        assert calendars.count(("calendar", "Calendrier")) == 2
        assert calendars.count(("calendar", "Conseil municipal")) == 2
        series = [icalendar.Calendar.from_ical(p.read_bytes())
                  for p in (root / "calendar" / "Calendrier").glob("*.ics")]
        weekly = next(c for c in series if any("RRULE" in e for e in c.walk("VEVENT")))
        events = weekly.walk("VEVENT")
        assert len(events) == 2 and sum("RECURRENCE-ID" in e for e in events) == 1
        assert any("EXDATE" in e for e in events)
        cards = sorted(p.name for p in root.glob("contacts/**/*.vcf"))
        assert len(cards) == 3
        entries = report(tmp_path, "run")["entries"]
        assert any(e.get("code") == "online_meeting_link_total" for e in entries)
        [renamed] = [e for e in entries if e.get("code") == "renamed_container"]
        assert renamed["message_fr"] == ("nom de dossier que la cible ne peut pas garder, "
                                         "renommé (avant : Élus/Commissions)")
        assert (root / "calendar" / "Élus_Commissions").is_dir()
        code, output = bascule("verify", str(batch))
        assert code == 0, output
        assert report(tmp_path, "verify")["summary"]["checked"] == 7

        code, _ = bascule("run", str(batch))
        assert report(tmp_path, "run")["summary"]["copied"] == 0
        master = next(e for e in pim.events.values() if e.data.get("recurrence"))
        pim_of(mailbox).modify_occurrence(master, datetime(2025, 3, 24).date(),
                                          subject="Réunion de service (annulée puis reprise)")
        code, output = bascule("run", str(batch))
        assert code == 0, output
        assert report(tmp_path, "run")["summary"]["copied"] == 1
        assert len(list(root.glob("calendar/Calendrier/*.ics"))) == 2


def test_onedrive_files_land_with_their_bytes_and_mtimes(certificates, dovecot_factory,
                                                         tmp_path, monkeypatch):
    from tests.graph_files import running_download_server, seed_files

    tenant = french_tenant(users=3, inbox_messages=1)
    files = seed_files(tenant, big_file_size=3 << 20)
    target = dovecot_factory(users={"alice": "alice-target"})
    monkeypatch.setenv("ALICE_TARGET", "alice-target")
    with running_graph_server(tenant, certificates) as graph, \
            running_download_server(files, certificates):
        monkeypatch.setenv("GRAPH_SECRET", graph.tenant.client_secret)
        batch = write_batch(tmp_path, graph, certificates, target,
                            workloads=("files",))
        code, output = bascule("run", str(batch))
        assert code == 0, output
        mailbox = tenant.mailbox(AMELIE)
        drive = files.drives[files.user_drives[mailbox.id]]
        root = tmp_path / "documents" / "alice" / "files" / "OneDrive"

        def check_landed() -> int:
            notebooks = ["/".join(drive.path_of(item)) + "/" for item in drive.items.values()
                         if item.kind == "package"]
            expected = {"/".join(drive.path_of(item)): item for item in drive.items.values()
                        if item.kind == "file"}
            expected = {path: item for path, item in expected.items()
                        if not any(path.startswith(notebook) for notebook in notebooks)}
            assert notebooks and len(expected) > 3
            landed = {p.relative_to(root).as_posix(): p for p in root.rglob("*") if p.is_file()}
            assert set(landed) == set(expected)
            for name, item in expected.items():
                assert hashlib.sha256(landed[name].read_bytes()).digest() == \
                    hashlib.sha256(item.content).digest()
                assert landed[name].stat().st_mtime == item.client_modified.timestamp()
            return len(expected)

        check_landed()
        entries = report(tmp_path, "run")["entries"]
        assert any(e.get("code") == "not_a_file" for e in entries)
        assert bascule("verify", str(batch))[0] == 0

        # A folder renamed and another moved: delta lists the two folders alone, and every
        # file below them must follow, leaving no copy at the old place.
        files.rename(drive, drive.at("Documents", "Délibérations").id, "Délibérations du conseil")
        files.move(drive, drive.at("Images", "Fête du 14 juillet").id, drive.at("Documents"))
        below = sum(1 for item in drive.items.values() if item.kind == "file" and (
            drive.path_of(item)[:2] in (["Documents", "Délibérations du conseil"],
                                         ["Documents", "Fête du 14 juillet"])))
        assert below >= 3
        code, output = bascule("run", str(batch))
        assert code == 0, output
        check_landed()
        assert report(tmp_path, "run")["summary"]["copied"] == below
        assert not (root / "Documents" / "Délibérations").exists()
        assert not (root / "Images" / "Fête du 14 juillet").exists()
        assert bascule("verify", str(batch))[0] == 0


def test_a_graph_run_killed_at_several_points_moves_nothing_twice(
        certificates, dovecot_factory, fault_proxy, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from tests.faults import ROOT, kill_in_flight, run_with_signal

    tenant = french_tenant(users=2, inbox_messages=240)
    target = dovecot_factory(users={"alice": "alice-target"})
    proxy = fault_proxy(target)
    with running_graph_server(tenant, certificates) as graph:
        graph.state.latency = 0.01
        batch = write_batch(tmp_path, graph, certificates, proxy)
        env = {**os.environ, "GRAPH_SECRET": tenant.client_secret,
               "ALICE_TARGET": "alice-target", "PYTHONPATH": str(ROOT)}
        # Killed while the first messages are on their way, then with 60 landed, each time
        # with a batch in flight (the proxy holds it there), then once more wherever the run
        # is when 150 have landed.
        outcomes = [kill_in_flight(batch, env, proxy, start) for start in (
            lambda ledger: proxy.bytes_to_server >= 16384,
            lambda ledger: ledger.done >= 60)]
        outcomes.append(run_with_signal(batch, env, signal.SIGKILL,
                                        lambda ledger: ledger.done >= 150))
        assert [outcome.returncode for outcome in outcomes] == [-signal.SIGKILL] * 3
        assert all(outcome.at_signal.inflight > 0 for outcome in outcomes[:2])
        final = subprocess.run([sys.executable, "-m", "migrate", "run", str(batch)], cwd=ROOT,
                               env=env, capture_output=True, text=True, check=False)
        assert final.returncode == 0, final.stderr
        assert target_hashes(target, ("INBOX",)) == expected_inbox(graph)


def test_audit_counts_every_workload_without_reading_a_body(certificates, dovecot_factory,
                                                             tmp_path, monkeypatch):
    from tests.graph_files import running_download_server, seed_files
    from tests.graph_pim import seed_pim

    tenant = french_tenant(users=3, inbox_messages=23)
    mailbox = tenant.mailbox(AMELIE)
    assert mailbox is not None
    seed_pim(mailbox)
    mailbox.archive_id = "MBX:0f3c5a1e-archive@ville-exemple"
    files = seed_files(tenant, big_file_size=1 << 20)
    target = dovecot_factory(users={"alice": "alice-target"})
    with running_graph_server(tenant, certificates) as graph, \
            running_download_server(files, certificates):
        monkeypatch.setenv("GRAPH_SECRET", tenant.client_secret)
        monkeypatch.setenv("ALICE_TARGET", "alice-target")
        batch = write_batch(tmp_path, graph, certificates, target,
                            workloads=("mail", "calendar", "contacts", "files"))
        code, output = bascule("--lang", "fr", "audit", str(batch))
        assert code == 0, output
        assert "1 utilisateur, 13 dossiers, agendas, carnets ou espaces de fichiers" in output
        entries = report(tmp_path, "audit")["entries"]
        inventory = {e["folder"]: e["messages"] for e in entries if e["action"] == "inventory"}
        assert inventory["mail:Boîte de réception"] == 23
        assert inventory["calendar:Calendrier"] == 2
        assert inventory["contacts:Contacts"] == 2
        drive = files.drives[files.user_drives[mailbox.id]]
        assert inventory["files:OneDrive"] == sum(
            1 for item in drive.items.values() if item.kind == "file"
            and not any(p.kind == "package" for p in drive.items.values()
                        if "/".join(drive.path_of(item)).startswith(
                            "/".join(drive.path_of(p)) + "/")))
        assert any(e.get("code") == "hidden_folder_skipped" for e in entries)
        archives = [(e["principal"], e["code"]) for e in entries
                    if e.get("code", "").startswith("in_place_archive")]
        assert archives == [(AMELIE, "in_place_archive")]
        assert files.stats.get("downloads", 0) == 0
        assert not any(mailboxes.contents(target, "alice").values())


def test_a_sharepoint_site_in_the_users_table_lands_in_its_space(certificates, dovecot_factory,
                                                                 tmp_path, monkeypatch):
    from tests.graph_files import running_download_server, seed_files

    tenant = french_tenant(users=3, inbox_messages=1)
    files = seed_files(tenant, big_file_size=1 << 20)
    target = dovecot_factory(users={"alice": "alice-target"})
    with running_graph_server(tenant, certificates) as graph, \
            running_download_server(files, certificates):
        monkeypatch.setenv("GRAPH_SECRET", tenant.client_secret)
        monkeypatch.setenv("ALICE_TARGET", "alice-target")
        batch = write_batch(tmp_path, graph, certificates, target,
                            workloads=("mail", "files"))
        with (tmp_path / "users.csv").open("a", encoding="utf-8") as users:
            users.write("site:Service urbanisme,urbanisme,,\n")
        code, output = bascule("run", str(batch))
        assert code == 0, output
        space = tmp_path / "documents" / "urbanisme" / "files"
        site = next(s for s in files.sites if s.display_name == "Service urbanisme")
        for library in site.drives:
            for item in library.items.values():
                if item.kind == "file":
                    landed = space / library.name / "/".join(library.path_of(item))
                    assert landed.read_bytes() == item.content
        code, output = bascule("verify", str(batch))
        assert code == 0, output

        with (tmp_path / "users.csv").open("a", encoding="utf-8") as users:
            users.write("site:Site disparu,disparu,,\n")
        code, output = bascule("run", str(batch))
        assert code == 1
        errors = [e for e in report(tmp_path, "run")["entries"] if e["action"] == "error"]
        assert [e["principal"] for e in errors] == ["site:Site disparu"]


def test_overlapped_folders_stay_within_the_mailbox_limit_and_land_once(
        graph, certificates, dovecot_factory, tmp_path, monkeypatch):
    target = dovecot_factory(users={"alice": "alice-target"})
    monkeypatch.setenv("GRAPH_SECRET", graph.tenant.client_secret)
    monkeypatch.setenv("ALICE_TARGET", "alice-target")
    mailbox = amelie(graph)
    expected: dict[tuple[str, ...], Counter] = {}
    for n in range(4):
        service = graph.tenant.add_folder(mailbox, f"Service {n}")
        for k in range(25):
            when = datetime(2024, 5, 1 + n, 8, k, tzinfo=UTC)
            mime = mime_message("Mairie <mairie@ville-exemple.fr>", AMELIE,
                                f"Note {n}.{k}", f"Note {k} du service {n}.\n", when)
            graph.tenant.add_message(mailbox, service, mime, subject=f"Note {n}.{k}",
                                     received=when, is_read=True)
        expected[(f"Service {n}",)] = Counter(
            hashlib.sha256(m.mime).hexdigest() for m in mailbox.messages.values()
            if m.folder_id == service.id)
    graph.state.latency = 0.01
    batch = str(write_batch(tmp_path, graph, certificates, target))

    code, output = bascule("run", batch)
    assert code == 0, output
    assert graph.state.max_in_flight[AMELIE] <= 4
    assert graph.stats["concurrency_refused"] == 0
    for folder, hashes in expected.items():
        assert target_hashes(target, folder) == hashes
    assert target_hashes(target, ("INBOX",)) == expected_inbox(graph)
    code, output = bascule("run", batch)
    assert code == 0, output
    assert report(tmp_path, "run")["summary"]["copied"] == 0
