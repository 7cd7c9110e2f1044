"""End to end: Exchange on premises (the EWS test server, its French organisation) to a real
Dovecot, read back with imapclient alone."""

from __future__ import annotations

import hashlib
import os
import signal
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests import mailboxes
from tests.cli import bascule, report
from tests.dovecot import Dovecot
from tests.ews_seed import SERVICE_LOGIN, mime_message
from tests.faults import BasculeRun

ALICE = "alice@ville.fr"
IMPERSONATION_LINE = ("New-ManagementRoleAssignment -Name bascule-impersonation "
                      "-Role ApplicationImpersonation -User")


def write_batch(folder: Path, server: Any, target: Dovecot, *, login: str = SERVICE_LOGIN,
                extra: str = "", target_extra: str = "",
                users: list[tuple[str, str, str, str]] | None = None,
                endpoint: bool = True) -> Path:
    """A batch moving the users (alice alone by default) from the EWS test server into
    ``target``; ``extra`` and ``target_extra`` are lines of the source's and the target's
    sections; without ``endpoint``, no ``service_endpoint`` (Autodiscover finds it)."""
    mailboxes.write_users(folder, users or [(ALICE, "alice", "", "env:ALICE_TARGET")])
    address = f'service_endpoint = "{server.url}"' if endpoint else ""
    path = folder / "batch.toml"
    path.write_text(f"""
name = "mairie"
[source]
type = "ews"
{address}
auth = "ntlm"
ca_file = "{server.ca_file}"
{extra}
[source.service_account]
login = "{login}"
secret = "env:EWS_SECRET"
[target]
type = "imap"
host = "{target.host}"
port = {target.port}
security = "none"
{target_extra}
[run]
work_dir = "work"
""", encoding="utf-8")
    return path


def expected(server: Any, folder_path: tuple[str, ...], *, archive: bool = False) -> Counter:
    """The SHA-256 of each message of a folder as the server's organisation holds its MIME."""
    mailbox = server.tenant.mailbox(ALICE)
    folder = mailbox.folder_at(folder_path, archive=archive)
    return Counter(hashlib.sha256(item.mime).hexdigest() for item in folder.items.values())


def landed(target: Dovecot) -> dict[tuple[str, ...], Counter]:
    """Target folder -> SHA-256 of each message there."""
    return {folder: Counter(sha for (sha, _, _), n in held.items() for _ in range(n))
            for folder, held in mailboxes.contents(target, "alice").items()}


def target_flags(target: Dovecot, folder: tuple[str, ...]) -> set[str]:
    return {flag for (_, flags, _) in mailboxes.contents(target, "alice")[folder]
            for flag in flags}


def test_mail_moves_from_exchange_to_dovecot_then_only_changes(
        ews_server, dovecot_factory, tmp_path, monkeypatch):
    target = dovecot_factory(users={"alice": "alice-target"})
    monkeypatch.setenv("EWS_SECRET", ews_server.service_password)
    monkeypatch.setenv("ALICE_TARGET", "alice-target")
    batch = str(write_batch(tmp_path, ews_server, target))

    code, output = bascule("audit", batch)
    assert code == 0, output
    audited = report(tmp_path, "audit")
    assert audited["summary"]["archive_containers"] == 2  # its deleted items and "Archives 2019"
    assert audited["summary"]["archive_items"] == 1
    versions = [e for e in audited["entries"] if e.get("code") == "ews_server_version"]
    assert len(versions) == 1
    assert "Exchange Server 2016 (15.1.2507.6)" in versions[0]["message_en"]
    assert versions[0]["message_fr"].startswith("serveur source :")

    code, output = bascule("plan", batch)
    assert code == 0, output
    planned = report(tmp_path, "plan")
    assert planned["summary"]["archive_units"] == 2
    assert planned["summary"]["archive_to_copy"] == 1
    assert any(e.get("code") == "ews_server_version" for e in planned["entries"])

    code, output = bascule("run", batch)
    assert code == 0, output
    held = landed(target)
    inbox = ("Boîte de réception",)
    assert held[("INBOX",)] == expected(ews_server, inbox) and len(held[("INBOX",)]) == 3
    deep = ("Projets", "Voirie", "Été 2026", "Réunions")
    assert held[("INBOX", *deep)] == expected(ews_server, (*inbox, *deep))
    assert held[("Sent",)] == expected(ews_server, ("Éléments envoyés",))
    assert held[("Archives", "Archives 2019")] == expected(
        ews_server, ("Archives 2019",), archive=True)
    # The French folders found their roles; the archive's keep their names, under Archives.
    assert not any(name.startswith(("Boîte", "Éléments"))
                   for path in held if path[0] != "Archives" for name in path)
    assert ("Archives", "Éléments supprimés") in held
    assert {"\\Seen", "\\Flagged", "Elus"} <= target_flags(target, ("INBOX",))
    dates = {date for (_, _, date) in mailboxes.contents(target, "alice")[("INBOX",)]}
    assert datetime(2026, 3, 2, 8, 30, tzinfo=UTC).timestamp() in dates  # received, in seconds

    # A delta pass: one message read and unflagged at the source, one new one.
    mailbox = ews_server.tenant.mailbox(ALICE)
    flagged = next(item for item in mailbox.folder_at("inbox").items.values() if item.flagged)
    mailbox.update_item(flagged.id, flagged=False)
    when = datetime(2026, 9, 1, 7, 45, tzinfo=UTC)
    mailbox.deliver("inbox", mime_message(f"ecole@{ALICE.split('@')[1]}", ALICE,
                                          "Rentrée scolaire", "Les horaires.\r\n", when),
                    received=when)
    asked = len(ews_server.requests)
    code, output = bascule("run", batch)
    assert code == 0, output
    summary = report(tmp_path, "run")["summary"]
    assert (summary["copied"], summary["flag_updates"]) == (1, 1)
    assert landed(target)[("INBOX",)] == expected(ews_server, inbox)
    assert "\\Flagged" not in target_flags(target, ("INBOX",))
    fetched = [op for op, _, _ in ews_server.requests[asked:] if op == "GetItem"]
    assert len(fetched) == 1  # only the new message's body was read
    code, output = bascule("verify", batch)
    assert code == 0, output


def test_a_run_killed_mid_way_then_run_again_leaves_no_duplicate_and_no_gap(
        ews_server, dovecot_factory, tmp_path):
    target = dovecot_factory(users={"alice": "alice-target"})
    mailbox = ews_server.tenant.mailbox(ALICE)
    start = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
    for n in range(240):
        when = start + timedelta(hours=n)
        path: Any = "inbox" if n % 3 == 0 else ("Dossiers", f"Quartier {n % 4}")
        if n % 3:
            mailbox.add_folder(path)
        mailbox.deliver(path, mime_message("mairie@ville.fr", ALICE, f"Courrier n°{n}",
                                           f"Pièce {n}.\r\n" * (1 + n % 40), when),
                        is_read=n % 2 == 0, received=when)
    ews_server.latency(0.02)
    batch = write_batch(tmp_path, ews_server, target)
    secrets = {**os.environ, "EWS_SECRET": ews_server.service_password,
               "ALICE_TARGET": "alice-target"}

    run = BasculeRun(batch, secrets)
    assert run.signal_when(signal.SIGKILL, lambda ledger: ledger.done >= 60)
    run.finish()
    ews_server.latency(0)
    code, output = bascule_env(secrets, "run", str(batch))
    assert code == 0, output
    held = landed(target)
    assert held[("INBOX",)] == expected(ews_server, ("Boîte de réception",))
    for n in range(4):
        quarter = ("Dossiers", f"Quartier {n}")
        assert held[quarter] == expected(ews_server, quarter), quarter
    assert all(count == 1 for folder in held.values() for count in folder.values())
    code, output = bascule_env(secrets, "verify", str(batch))
    assert code == 0, output


def bascule_env(env: dict[str, str], *args: str) -> tuple[int, str]:
    saved = {key: os.environ.get(key) for key in ("EWS_SECRET", "ALICE_TARGET")}
    os.environ.update({key: env[key] for key in saved})
    try:
        return bascule(*args)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.mark.parametrize("per_item", [False, True], ids=["fault", "per-message"])
def test_a_storm_of_busy_answers_completes_with_nothing_lost(
        ews_server, dovecot_factory, tmp_path, monkeypatch, per_item):
    target = dovecot_factory(users={"alice": "alice-target"})
    monkeypatch.setenv("EWS_SECRET", ews_server.service_password)
    monkeypatch.setenv("ALICE_TARGET", "alice-target")
    batch = str(write_batch(tmp_path, ews_server, target))
    mailbox = ews_server.tenant.mailbox(ALICE)
    for n in range(64):  # enough for GetItem requests side by side
        mailbox.deliver("inbox", mime_message("mairie@ville.fr", ALICE, f"Note n°{n}",
                                              f"Texte {n}.\r\n", datetime(2025, 5, 1, tzinfo=UTC)))
    ews_server.latency(0.03)
    ews_server.busy(25, back_off_ms=40, per_item=per_item)
    started = time.monotonic()
    ews_server.max_concurrency(1)  # two requests of one account in flight are one too many
    code, output = bascule("run", batch)
    assert code == 0, output
    assert ews_server.stats["busy"] == 25
    assert ews_server.stats["refused_concurrency"] > 0
    # The 40 ms the server asked were waited, not the client's own pause (2 s, doubling).
    assert time.monotonic() - started < 25
    held = landed(target)
    assert held[("INBOX",)] == expected(ews_server, ("Boîte de réception",))
    assert held[("Archives", "Archives 2019")] == expected(
        ews_server, ("Archives 2019",), archive=True)
    assert report(tmp_path, "run")["summary"]["failed"] == 0


def test_a_wrong_password_stops_before_anything_moves(
        ews_server, dovecot_factory, tmp_path, monkeypatch):
    target = dovecot_factory(users={"alice": "alice-target"})
    monkeypatch.setenv("EWS_SECRET", "pas-le-bon-mot-de-passe")
    monkeypatch.setenv("ALICE_TARGET", "alice-target")
    batch = str(write_batch(tmp_path, ews_server, target))
    for language, words in (("en", "Exchange refused the login of svc-bascule@ville.fr"),
                            ("fr", "Exchange a refusé la connexion de svc-bascule@ville.fr")):
        code, output = bascule("--lang", language, "run", batch)
        assert code == 2, output
        assert words in output
        assert "pas-le-bon-mot-de-passe" not in output
    assert not any(mailboxes.contents(target, "alice").values())
    assert not [op for op, _, _ in ews_server.requests if op != "GetFolder"]


def test_a_missing_impersonation_right_stops_saying_what_to_grant(
        ews_server, dovecot_factory, tmp_path, monkeypatch):
    target = dovecot_factory(users={"alice": "alice-target"})
    ews_server.tenant.service_account("svc-sans-droit@ville.fr", "mot-de-passe",
                                      impersonation=False)
    monkeypatch.setenv("EWS_SECRET", "mot-de-passe")
    monkeypatch.setenv("ALICE_TARGET", "alice-target")
    batch = str(write_batch(tmp_path, ews_server, target, login="svc-sans-droit@ville.fr"))
    for language, words in (("en", "may not act as alice@ville.fr"),
                            ("fr", "ne peut pas agir pour alice@ville.fr")):
        code, output = bascule("--lang", language, "plan", batch)
        assert code == 2, output
        assert words in output
        assert f"{IMPERSONATION_LINE} svc-sans-droit@ville.fr" in " ".join(output.split())
    code, output = bascule("run", batch)
    assert code == 2, output
    assert not any(mailboxes.contents(target, "alice").values())
    assert not [op for op, _, _ in ews_server.requests if op != "GetFolder"]


def test_a_mailbox_exchange_does_not_have_stops_the_plan(
        ews_server, dovecot_factory, tmp_path, monkeypatch):
    target = dovecot_factory(users={"alice": "alice-target"})
    monkeypatch.setenv("EWS_SECRET", ews_server.service_password)
    monkeypatch.setenv("ALICE_TARGET", "alice-target")
    batch = write_batch(tmp_path, ews_server, target)
    mailboxes.write_users(tmp_path, [("inconnu@ville.fr", "alice", "", "env:ALICE_TARGET")])
    code, output = bascule("--lang", "fr", "plan", str(batch))
    assert code == 2, output
    assert "Exchange n'a pas de boîte inconnu@ville.fr" in output


def test_requests_in_flight_stay_within_per_mailbox(
        ews_server, dovecot_factory, tmp_path, monkeypatch):
    target = dovecot_factory(users={"alice": "alice-target"})
    monkeypatch.setenv("EWS_SECRET", ews_server.service_password)
    monkeypatch.setenv("ALICE_TARGET", "alice-target")
    mailbox = ews_server.tenant.mailbox(ALICE)
    for n in range(96):  # two folders' worth of GetItem requests, each unit wanting two
        path: Any = "inbox" if n % 2 else ("Urbanisme",)
        if n % 2 == 0:
            mailbox.add_folder(path)
        mailbox.deliver(path, mime_message("mairie@ville.fr", ALICE, f"Dossier n°{n}",
                                           f"Texte {n}.\r\n", datetime(2025, 6, 1, tzinfo=UTC)))
    ews_server.latency(0.02)
    batch = str(write_batch(tmp_path, ews_server, target, extra="per_mailbox = 2"))
    code, output = bascule("run", batch)
    assert code == 0, output
    assert ews_server.stats["max_in_flight"] == 2
    assert sum(landed(target)[("Urbanisme",)].values()) == 48
