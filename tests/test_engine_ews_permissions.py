"""End to end: who may open an Exchange mailbox (the EWS test server's organisation) exported
per mailbox after a run, read back with the csv module; the folder permissions of a shared
mailbox set on a private Dovecot with ACL, read back with imapclient's GETACL and the
server's own ACL files; a rerun that changes nothing; a bad FullAccess file."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import imapclient

from tests import mailboxes
from tests.cli import bascule, report
from tests.dovecot import Dovecot
from tests.test_engine_ews import write_batch as engine_batch

ALICE = "alice@ville.fr"
BENOIT = "benoit@ville.fr"
CHLOE = "chloe@ville.fr"
PARTNER = "partenaire@exemple.fr"
PROJECTS = ("inbox", "Projets")
ROADS = ("inbox", "Projets", "Voirie")
SUMMER = ("inbox", "Projets", "Voirie", "Été 2026")


def write_batch(folder: Path, server: Any, target: Dovecot, access_file: str) -> Path:
    # chloe, who holds a permission on alice's folders, has no line: unmapped.
    return engine_batch(folder, server, target, extra=f'access_file = "{access_file}"',
                        target_extra='acl_mailboxes = ["alice"]',
                        users=[(ALICE, "alice", "", "env:ALICE_TARGET"),
                               (BENOIT, "benoit", "", "env:BENOIT_TARGET")])


def grants_on_target(target: Dovecot) -> dict[str, dict[str, str]]:
    """Each of alice's folders -> who holds which rights there, alice herself left out, as
    GETACL answers them, in RFC 4314's order and without its virtual rights (c, d)."""
    with imapclient.IMAPClient(target.host, port=target.port, ssl=False) as client:
        client.login("alice", "alice-target")
        found = {}
        for _flags, _separator, name in client.list_folders():
            found[name] = {who.decode(): "".join(r for r in "lrswipkxtea" if r in rights.decode())
                           for who, rights in client.getacl(name) if who != b"alice"}
        return {name: held for name, held in found.items() if held}


def acl_files(target: Dovecot) -> dict[str, bytes]:
    """The server's own ACL files of alice's folders, as Dovecot wrote them."""
    root = target.mail_dir("alice")
    return {str(path.relative_to(root)): path.read_bytes()
            for path in root.rglob("dovecot-acl")}


def exported(folder: Path, login: str) -> list[dict[str, str]]:
    with open(folder / "work" / "permissions" / f"{login}.csv", encoding="utf-8-sig",
              newline="") as file:
        return list(csv.DictReader(file))


def acl_target(server: Any, dovecot_factory: Any, monkeypatch: Any, **acl: bool) -> Dovecot:
    """A Dovecot with ACL for alice and benoit, their passwords and the service account's
    in the environment the batch names."""
    for name, value in (("EWS_SECRET", server.service_password),
                        ("ALICE_TARGET", "alice-target"), ("BENOIT_TARGET", "benoit-target")):
        monkeypatch.setenv(name, value)
    return dovecot_factory(users={"alice": "alice-target", "benoit": "benoit-target"},
                           acl=True, **acl)


def entries(folder: Path, code: str) -> list[dict[str, Any]]:
    return [e for e in report(folder, "run")["entries"] if e.get("code") == code]


def test_permissions_are_exported_and_a_shared_mailbox_s_set_with_setacl_once(
        ews_server, dovecot_factory, tmp_path, monkeypatch):
    target = acl_target(ews_server, dovecot_factory, monkeypatch)
    alice = ews_server.tenant.mailbox(ALICE)
    alice.set_permission(PROJECTS, BENOIT, "Editor")
    alice.set_permission(PROJECTS, CHLOE, "Reviewer")
    alice.set_permission(PROJECTS, PARTNER, "Reviewer")
    alice.set_permission(ROADS, "Default", "Reviewer")
    alice.set_permission(ROADS, "Anonymous", "Reviewer")
    alice.set_permission(SUMMER, BENOIT, "Author")
    alice.set_permission(alice.folder_at(("Archives 2019",), archive=True).id, BENOIT,
                         "Reviewer")
    (tmp_path / "full-access.csv").write_text(
        '"Mailbox","User","AccessRights","Deny"\n'
        f'"{ALICE}","{BENOIT}","FullAccess","False"\n'
        f'"{ALICE}","{BENOIT}","SendAs","False"\n', encoding="utf-8")
    batch = str(write_batch(tmp_path, ews_server, target, "full-access.csv"))

    code, output = bascule("run", batch)
    assert code == 0, output

    rows = exported(tmp_path, "alice")
    by = {(row["kind"], row["source_path"], row["who"]): row for row in rows}
    inbox = alice.folder_at("inbox").display_name
    calendar = alice.folder_at("calendar").display_name
    projects = by[("folder", f"{inbox}/Projets", BENOIT)]
    assert (projects["path"], projects["mailbox"], projects["workload"]) == (
        "INBOX/Projets", ALICE, "mail")
    assert (projects["target_login"], projects["mapping"], projects["level"]) == (
        "benoit", "mapped", "Editor")
    assert set(projects["rights"].split()) == {
        "CanCreateItems", "IsFolderVisible", "EditItems:All", "DeleteItems:All",
        "ReadItems:FullDetails"}
    assert by[("folder", f"{inbox}/Projets", CHLOE)]["mapping"] == "unmapped"
    assert by[("folder", f"{inbox}/Projets", PARTNER)]["mapping"] == "external"
    assert by[("folder", f"{inbox}/Projets/Voirie", "Default")]["mapping"] == "default"
    assert by[("folder", f"{inbox}/Projets/Voirie", "Anonymous")]["mapping"] == "anonymous"
    delegate = by[("delegate", calendar, BENOIT)]
    assert (delegate["level"], delegate["meeting_requests"], delegate["path"]) == (
        "Editor", "DelegatesAndMe", "")  # calendars are not moved through EWS yet
    assert by[("delegate", inbox, BENOIT)]["path"] == "INBOX"
    assert by[("full_access", "", BENOIT)]["level"] == "FullAccess"
    assert by[("send_as", "", BENOIT)]["target_login"] == "benoit"
    assert {row["kind"] for row in rows} == {"folder", "delegate", "full_access", "send_as"}
    # benoit's own mailbox has its CSV too (only its defaults), but nothing applied.
    assert {row["who"] for row in exported(tmp_path, "benoit")} == {"Default"}

    named = entries(tmp_path, "permissions_exported")
    assert sorted(e["principal"] for e in named) == [ALICE, BENOIT]
    assert all("permissions" in e["message_en"] and "autorisations" in e["message_fr"]
               for e in named)
    not_there = {e["message_en"].split(":")[0] for e in entries(tmp_path,
                                                                "permissions_not_on_target")
                 if e["principal"] == ALICE}
    assert calendar in not_there

    assert grants_on_target(target) == {
        "INBOX": {"benoit": "lrs"},
        "INBOX/Projets": {"benoit": "lrswite"},
        "INBOX/Projets/Voirie": {"authenticated": "lrs"},
        "INBOX/Projets/Voirie/Été 2026": {"benoit": "lrsi"},
        "Archives/Archives 2019": {"benoit": "lrs"},
    }
    assert len(entries(tmp_path, "permission_set")) == 4
    [partly] = entries(tmp_path, "permission_set_partly")
    assert "EditItems:Owned" in partly["message_en"] and "DeleteItems:Owned" in partly[
        "message_fr"]
    [unmapped] = entries(tmp_path, "permission_unmapped")
    assert CHLOE in unmapped["message_en"] and "table des utilisateurs" in unmapped[
        "message_fr"]
    assert len(entries(tmp_path, "permission_external")) == 1
    assert len(entries(tmp_path, "permission_anonymous")) == 1
    [applied] = entries(tmp_path, "permissions_applied")
    assert "set 5, already there 0, not applied 3" in applied["message_en"]
    assert "left to the CSV 6" in applied["message_en"]

    written = acl_files(target)
    assert written
    code, output = bascule("run", batch)
    assert code == 0, output
    assert acl_files(target) == written
    assert exported(tmp_path, "alice") == rows
    assert entries(tmp_path, "permission_set") == []
    assert entries(tmp_path, "permission_set_partly") == []
    assert len(entries(tmp_path, "permission_present")) == 5
    assert len(grants_on_target(target)) == 5


def test_a_bad_full_access_file_stops_the_run_before_anything_moves(
        ews_server, dovecot_factory, tmp_path, monkeypatch):
    target = acl_target(ews_server, dovecot_factory, monkeypatch)
    # Get-MailboxPermission exported without the README's Select-Object: no addresses.
    (tmp_path / "full-access.csv").write_text(
        '"Identity","User","AccessRights","IsInherited","Deny"\n'
        '"ville.local/Utilisateurs/Alice Martin","VILLE\\benoit","{FullAccess}","False",'
        '"False"\n', encoding="utf-8")
    batch = str(write_batch(tmp_path, ews_server, target, "full-access.csv"))
    for language, words in (("en", "line 2: the mailbox \"ville.local/Utilisateurs/Alice"),
                            ("fr", "ligne 2 : la boîte « ville.local/Utilisateurs/Alice")):
        code, output = bascule("--lang", language, "run", batch)
        assert code == 2, output
        assert words in " ".join(output.split())
    assert not any(mailboxes.contents(target, "alice").values())
    assert not ews_server.requests
    assert not (tmp_path / "work" / "permissions").exists()


def test_what_the_target_refuses_or_cannot_hold_is_a_line_each(
        ews_server, dovecot_factory, tmp_path, monkeypatch):
    # Dovecot without acl_anyone refuses the authenticated identifier; benoit's rights go in.
    target = acl_target(ews_server, dovecot_factory, monkeypatch, acl_anyone=False)
    alice = ews_server.tenant.mailbox(ALICE)
    alice.set_permission(ROADS, "Default", "Reviewer")
    (tmp_path / "full-access.csv").write_text('"Mailbox","User","AccessRights"\n',
                                              encoding="utf-8")
    batch = write_batch(tmp_path, ews_server, target, "full-access.csv")
    code, output = bascule("run", str(batch))
    assert code == 0, output
    [refused] = entries(tmp_path, "permission_refused")
    assert refused["message_en"].startswith("INBOX/Projets/Voirie: the target refused lrs")
    assert "authenticated" in refused["message_en"]
    assert grants_on_target(target) == {"INBOX": {"benoit": "lrs"}}

    # A target without ACL: each folder permission is a line, nothing else breaks.
    plain = dovecot_factory(users={"alice": "alice-target", "benoit": "benoit-target"})
    elsewhere = tmp_path / "sans-acl"
    elsewhere.mkdir()
    (elsewhere / "full-access.csv").write_text('"Mailbox","User","AccessRights"\n',
                                               encoding="utf-8")
    code, output = bascule("run", str(write_batch(elsewhere, ews_server, plain,
                                                  "full-access.csv")))
    assert code == 0, output
    lines = entries(elsewhere, "permission_no_acl")
    assert {e["message_en"].split(":")[0] for e in lines} == {"INBOX", "INBOX/Projets/Voirie"}
    assert all("imap_acl" in e["message_fr"] for e in lines)
