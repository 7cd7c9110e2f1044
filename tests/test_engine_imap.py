"""End to end, Dovecot to Dovecot, through the ``bascule`` command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests import mailboxes
from tests.cli import bascule, report
from tests.corpus import CorpusFolder, build_corpus, build_mailbox

# Where each corpus folder must land on a Dovecot target whose SPECIAL-USE folders are
# Sent, Drafts, Trash, Junk, Archive; the non-mail folders and "Sync Issues" are skipped.
LANDING = {
    ("INBOX",): ("INBOX",),
    ("Éléments envoyés",): ("Sent",),
    ("Brouillons",): ("Drafts",),
    ("Éléments supprimés",): ("Trash",),
    ("Projets",): ("Projets",),
    ("Projets", "Été 2024"): ("Projets", "Été 2024"),
    ("R&D",): ("R&D",),
    ("Archives",): ("Archive",),
    ("Archives", "2019"): ("Archive", "2019"),
}


def batch_file(folder: Path, source, target, *, extra: str = "", admin: str = "") -> Path:
    text = f"""
name = "essai"
[source]
type = "imap"
host = "{source.host}"
port = {source.port}
security = "none"
[target]
type = "imap"
host = "{target.host}"
port = {target.port}
security = "none"
{admin}
[mapping]
users = "users.csv"
[mail]
exclude = ["Sync Issues*"]
{extra}
[run]
work_dir = "work"
workers = 3
"""
    path = folder / "batch.toml"
    path.write_text(text, encoding="utf-8")
    return path


def export_batch(folder: Path, target, *, extra: str = "") -> Path:
    """A batch moving the Maildir export under ``folder/export`` into ``target``."""
    path = folder / "batch.toml"
    path.write_text(f"""
name = "export"
[source]
type = "maildir"
path = "export"
[target]
type = "imap"
host = "{target.host}"
port = {target.port}
security = "none"
{extra}
[run]
work_dir = "work"
""", encoding="utf-8")
    return path


def alice_pair(dovecot_factory, folder: Path, monkeypatch):
    """A source and a target Dovecot, alice's corpus on the source, a batch for both in
    ``folder``: (source, target, corpus, batch path)."""
    source = dovecot_factory(users={"alice@ville.fr": "src-pw"}, separator="/")
    target = dovecot_factory(users={"alice": "dst-pw"}, separator="/")
    corpus = build_corpus(seed=1)
    mailboxes.seed(source, "alice@ville.fr", corpus)
    monkeypatch.setenv("ALICE_SRC", "src-pw")
    monkeypatch.setenv("ALICE_DST", "dst-pw")
    mailboxes.write_users(folder, [("alice@ville.fr", "alice", "env:ALICE_SRC", "env:ALICE_DST")])
    return source, target, corpus, batch_file(folder, source, target)


@pytest.fixture
def pair(dovecot_factory, tmp_path, monkeypatch):
    """A source and a target Dovecot, alice's corpus on the source, a batch for both."""
    return alice_pair(dovecot_factory, tmp_path, monkeypatch)


def test_a_principal_planned_alone_lists_its_folders_over_several_sources(
        dovecot_factory, fault_proxy, tmp_path, monkeypatch):
    """Each folder's listing is a round trip or two: with the workers free, one principal's
    folders are listed side by side, over as many sources as its run would have units,
    and the plan says exactly what it says listing them one after another."""
    source, target, _, _ = alice_pair(dovecot_factory, tmp_path, monkeypatch)
    proxy = fault_proxy(source)
    plans = {}
    for workers in (1, 3):
        folder = tmp_path / f"workers-{workers}"
        folder.mkdir()
        shutil.copy(tmp_path / "users.csv", folder / "users.csv")
        batch = batch_file(folder, proxy, target)
        batch.write_text(batch.read_text().replace("workers = 3", f"workers = {workers}"))
        opened = proxy.connections_opened
        code, output = bascule("plan", str(batch))
        assert code == 0, output
        entries = report(folder, "plan")["entries"]
        listed = [e for e in entries if e["action"] in ("copy", "rename") and not e.get("settled")]
        plans[workers] = (proxy.connections_opened - opened, entries, len(listed))
    (alone, one_by_one, listed), (spread, side_by_side, _) = plans[1], plans[3]
    assert listed >= 3
    assert spread == alone + 2, (alone, spread)  # two more sources, for three lanes
    assert side_by_side == one_by_one


def test_migration_keeps_bytes_flags_dates_and_folders(pair, tmp_path):
    source, target, corpus, batch = pair
    code, output = bascule("plan", str(batch))
    assert code == 0, output
    plan = report(tmp_path, "plan")
    skipped = {e["folder"]: e["code"] for e in plan["entries"] if e["action"] == "skip"}
    assert skipped == {"Calendrier": "non_mail_folder", "Contacts": "non_mail_folder",
                       "Sync Issues": "excluded", "Conversation History": "non_mail_folder"}
    assert plan["summary"]["to_copy"] == sum(len(f.messages) for f in corpus
                                             if f.path in LANDING)

    code, output = bascule("run", str(batch))
    assert code == 0, output
    assert mailboxes.filled(target, "alice") == mailboxes.landed(
        mailboxes.contents(source, "alice@ville.fr"), LANDING)

    code, output = bascule("verify", str(batch))
    assert code == 0, output
    verify = report(tmp_path, "verify")
    assert verify["summary"]["mismatches"] == 0
    assert verify["summary"]["checked"] == plan["summary"]["to_copy"]


def test_second_run_moves_only_new_messages_and_changed_flags(pair, tmp_path):
    source, target, _, batch = pair
    assert bascule("run", str(batch))[0] == 0
    code, _ = bascule("run", str(batch))
    assert code == 0
    assert report(tmp_path, "run")["summary"]["copied"] == 0

    new = list(build_mailbox(3, seed=9))
    with mailboxes.client(source, "alice@ville.fr") as imap:
        for message in new:
            mailboxes.append(imap, "INBOX", message)
        imap.select_folder("R&D")
        first = imap.search("ALL")[0]
        imap.set_flags([first], [b"\\Answered", b"Urgent"])
    code, output = bascule("run", str(batch))
    assert code == 0, output
    summary = report(tmp_path, "run")["summary"]
    assert summary["copied"] == 3
    assert summary["flag_updates"] == 1
    with mailboxes.client(target, "alice") as imap:
        imap.select_folder("R&D")
        flags = {frozenset(v[b"FLAGS"])
                 for v in imap.fetch(imap.search("ALL"), ["FLAGS"]).values()}
    assert frozenset({b"\\Answered", b"Urgent"}) in flags
    assert bascule("verify", str(batch))[0] == 0


def test_empty_and_unchanged_folders_are_settled_from_the_folder_list(pair, tmp_path,
                                                                      monkeypatch):
    """A folder the source's folder list shows empty (never copied from) or unchanged since
    the last pass is recorded done at planning, never listed on its own; its target folder
    exists all the same, and the report still has its line."""
    from connectors.imap.source import ImapSource

    source, target, _, batch = pair
    with mailboxes.client(source, "alice@ville.fr") as imap:
        imap.create_folder("Vide")
        imap.create_folder("Vide/Été")
    listed: list[tuple[str, ...]] = []
    list_changes = ImapSource.list_changes

    def counted(self, container, cursor):
        listed.append(container.path)
        return list_changes(self, container, cursor)

    monkeypatch.setattr(ImapSource, "list_changes", counted)
    code, output = bascule("run", str(batch))
    assert code == 0, output
    assert ("Vide",) not in listed and ("Vide", "Été") not in listed
    assert ("INBOX",) in listed
    with mailboxes.client(target, "alice") as imap:
        assert imap.folder_exists("Vide") and imap.folder_exists("Vide/Été")
    folders = {e["folder"]: e for e in report(tmp_path, "run")["entries"]}
    assert folders["Vide/Été"]["action"] == "copy"

    listed.clear()
    code, output = bascule("run", str(batch))
    assert code == 0, output
    assert listed == []
    again = {e["folder"]: e for e in report(tmp_path, "run")["entries"]}
    assert again.keys() == folders.keys()
    assert report(tmp_path, "run")["summary"]["copied"] == 0

    new = next(build_mailbox(1, seed=9))
    with mailboxes.client(source, "alice@ville.fr") as imap:
        mailboxes.append(imap, "INBOX", new)
        imap.select_folder("R&D")
        imap.add_flags([imap.search("ALL")[0]], [b"Urgent"])
        mailboxes.append(imap, "Vide", new)
    listed.clear()
    code, output = bascule("run", str(batch))
    assert code == 0, output
    assert sorted(listed) == [("INBOX",), ("R&D",), ("Vide",)]
    summary = report(tmp_path, "run")["summary"]
    assert (summary["copied"], summary["flag_updates"]) == (2, 1)
    assert mailboxes.filled(target, "alice") == mailboxes.landed(
        mailboxes.contents(source, "alice@ville.fr"), {**LANDING, ("Vide",): ("Vide",)})

    with mailboxes.client(source, "alice@ville.fr") as imap:
        imap.select_folder("Vide")
        imap.delete_messages(imap.search("ALL"))
        imap.expunge()
    listed.clear()
    code, output = bascule("run", str(batch))
    assert code == 0, output
    assert listed == [("Vide",)]
    notes = [e for e in report(tmp_path, "run")["entries"] if e["action"] == "note"]
    assert [(e["folder"], e["messages"]) for e in notes] == [("Vide", 1)]


def test_a_first_run_examines_and_lists_each_folder_in_one_round_trip(pair, monkeypatch):
    """The folder list's count travels with the planned unit: in a first run every folder
    holding messages has its EXAMINE and its ``UID FETCH 1:*`` sent before either answer
    is read, on whichever connection lists it."""
    import imaplib

    from connectors.imap.source import SMALL_FOLDER_BYTES

    _, target, corpus, batch = pair
    events: dict[int, list[str]] = {}
    send, tagged = imaplib.IMAP4.send, imaplib.IMAP4._get_tagged_response
    monkeypatch.setattr(imaplib.IMAP4, "send", lambda self, data: (
        events.setdefault(id(self), []).append((data.split(b" ") + [b""])[1].decode()),
        send(self, data))[1])
    monkeypatch.setattr(imaplib.IMAP4, "_get_tagged_response", lambda self, tag, **kw: (
        events.setdefault(id(self), []).append("answer"), tagged(self, tag, **kw))[1])
    code, output = bascule("run", str(batch))
    assert code == 0, output
    examined = [(commands, i) for commands in events.values()
                for i, command in enumerate(commands) if command == "EXAMINE"]
    assert len(examined) == len([f for f in corpus if f.path in LANDING and f.messages])
    assert all(commands[i + 1:i + 2] == ["UID"] for commands, i in examined), events
    # A small folder's bodies are asked for in the same round trip (a second FETCH),
    # whichever of the account's connections lists it (this batch runs three at once).
    small = [f for f in corpus if f.path in LANDING and f.messages
             and sum(len(m.raw) for m in f.messages) < SMALL_FOLDER_BYTES * 0.9]
    with_bodies = [i for commands, i in examined if commands[i + 1:i + 3] == ["UID", "FETCH"]]
    assert len(with_bodies) == len(small) > 1
    assert mailboxes.filled(target, "alice")


def _count_target_connections(monkeypatch, target) -> list[str]:
    """Every connection opened to ``target`` from now on: ``control`` (imapclient) or
    ``append`` (the APPEND pipeline), in order; and ``list`` for each folder list read on
    an APPEND connection."""
    from connectors.imap import append as append_module
    from connectors.imap import session as session_module
    from connectors.imap import sink as sink_module

    opened: list[str] = []
    connect, pipeline = session_module.connect, sink_module.AppendPipeline
    list_folders = append_module.AppendPipeline.list_folders

    def control(endpoint, credentials):
        if endpoint.port == target.port:
            opened.append("control")
        return connect(endpoint, credentials)

    def append(endpoint, *args, **kwargs):
        opened.append("append")
        return pipeline(endpoint, *args, **kwargs)

    def listed(self):
        opened.append("list")
        return list_folders(self)

    monkeypatch.setattr(session_module, "connect", control)
    monkeypatch.setattr(sink_module, "AppendPipeline", append)
    monkeypatch.setattr(append_module.AppendPipeline, "list_folders", listed)
    return opened


def test_a_pass_with_nothing_new_opens_one_target_connection(pair, monkeypatch):
    """The target's folder list is read on the first APPEND connection (Dovecot has
    LIST-STATUS): a pass where every folder is settled from the folder lists opens that one
    connection and no other; one with a new message appends on it."""
    source, target, _, batch = pair
    assert bascule("run", str(batch))[0] == 0
    opened = _count_target_connections(monkeypatch, target)
    assert bascule("run", str(batch))[0] == 0
    assert opened == ["append", "list"]
    with mailboxes.client(source, "alice@ville.fr") as imap:
        mailboxes.append(imap, "INBOX", next(build_mailbox(1, seed=9)))
    opened.clear()
    assert bascule("run", str(batch))[0] == 0
    assert opened == ["append", "list"]


def test_the_target_folder_list_is_read_once_for_the_account(pair, monkeypatch):
    """The account's sinks share its folder list: units running side by side read it once
    between them, on an APPEND connection, and open no control connection (each used to
    open its own, to read the list again); the target still holds every message."""
    from connectors.imap import session as session_module

    source, target, _, batch = pair
    opened = _count_target_connections(monkeypatch, target)
    sources: list[int] = []
    connect = session_module.connect  # already counting the target's

    def counted(endpoint, credentials):
        sources.append(endpoint.port)
        return connect(endpoint, credentials)

    monkeypatch.setattr(session_module, "connect", counted)
    code, output = bascule("run", str(batch))
    assert code == 0, output
    assert opened.count("list") == 1 and "control" not in opened, opened
    assert sources.count(source.port) > 1  # units did run side by side
    assert mailboxes.filled(target, "alice") == mailboxes.landed(
        mailboxes.contents(source, "alice@ville.fr"), LANDING)


def test_uidvalidity_change_brings_no_duplicate(pair, tmp_path):
    source, target, corpus, batch = pair
    assert len(next(f for f in corpus if f.path == ("R&D",)).messages) == 2
    assert bascule("run", str(batch))[0] == 0
    rd = next(f for f in corpus if f.path == ("R&D",))
    with mailboxes.client(source, "alice@ville.fr") as imap:
        imap.delete_folder("R&D")
        imap.create_folder("R&D")
        for message in rd.messages:
            mailboxes.append(imap, "R&D", message)
        extra = next(build_mailbox(1, seed=5))
        mailboxes.append(imap, "R&D", extra)
    code, output = bascule("run", str(batch))
    assert code == 0, output
    assert report(tmp_path, "run")["summary"]["copied"] == 1
    assert mailboxes.filled(target, "alice") == mailboxes.landed(
        mailboxes.contents(source, "alice@ville.fr"), LANDING)


def test_a_refused_message_is_reported_and_the_rest_lands(dovecot_factory, tmp_path,
                                                          monkeypatch):
    source = dovecot_factory(users={"alice": "a"})
    target = dovecot_factory(users={"alice": "b"}, max_mail_size=1 << 20)
    folders = build_corpus(seed=2, large_size=2 << 20)
    mailboxes.seed(source, "alice", folders)
    monkeypatch.setenv("A1", "a")
    monkeypatch.setenv("A2", "b")
    mailboxes.write_users(tmp_path, [("alice", "alice", "env:A1", "env:A2")])
    batch = batch_file(tmp_path, source, target)
    code, output = bascule("run", str(batch))
    assert code == 1, output
    failed = [e for e in report(tmp_path, "run")["entries"] if e["action"] == "failed"]
    assert len(failed) == 1 and failed[0]["code"] == "too_big"
    assert failed[0]["folder"] == "Projets/Été 2024"
    landed = mailboxes.filled(target, "alice")
    assert sum(landed[("Projets", "Été 2024")].values()) == 1
    assert sum(landed[("INBOX",)].values()) == len(folders[0].messages)
    code, _ = bascule("status", str(batch))
    assert code == 1
    assert any(e.get("code") == "too_big" for e in report(tmp_path, "status")["entries"])


def test_wrong_password_and_unreachable_server_are_reported(dovecot_factory, tmp_path,
                                                           monkeypatch):
    source = dovecot_factory(users={"alice": "alice-source", "bob": "bob-source"})
    target = dovecot_factory(users={"alice": "alice-target", "bob": "bob-target"})
    mailboxes.seed(source, "bob", build_corpus(seed=3)[:1])
    monkeypatch.setenv("ALICE", "not-her-password")
    monkeypatch.setenv("ALICE_T", "alice-target")
    monkeypatch.setenv("BOB", "bob-source")
    monkeypatch.setenv("BOB_T", "bob-target")
    mailboxes.write_users(tmp_path, [("alice", "alice", "env:ALICE", "env:ALICE_T"),
                                     ("bob", "bob", "env:BOB", "env:BOB_T")])
    batch = batch_file(tmp_path, source, target)
    code, output = bascule("run", str(batch))
    assert code == 1, output
    entries = report(tmp_path, "run")["entries"]
    errors = [e for e in entries if e["action"] == "error"]
    assert [(e["principal"], e["code"]) for e in errors] == [("alice", "auth_failed")]
    assert "not-her-password" not in json.dumps(entries)
    bob = build_corpus(seed=3)[0].messages
    assert sum(mailboxes.filled(target, "bob")[("INBOX",)].values()) == len(bob)

    target.stop()
    code, output = bascule("plan", str(batch))
    assert code == 2
    assert any(e.get("code") == "unreachable" for e in report(tmp_path, "plan")["entries"])


def test_separator_dot_target_renames_and_master_user(dovecot_factory, tmp_path, monkeypatch):
    source = dovecot_factory(users={"alice": "a"}, separator="/")
    target = dovecot_factory(users={"alice": "unused"}, separator=".", master=("admin", "adm"))
    folder = CorpusFolder(("Versions", "v1.2"), None, list(build_mailbox(2, seed=4)))
    mailboxes.seed(source, "alice", [CorpusFolder(("Versions",), None, []), folder])
    monkeypatch.setenv("A1", "a")
    monkeypatch.setenv("ADMIN", "adm")
    mailboxes.write_users(tmp_path, [("alice", "alice", "env:A1", "")])
    admin = '[target.admin]\nlogin = "admin"\nsecret = "env:ADMIN"\nstyle = "master"'
    batch = batch_file(tmp_path, source, target, admin=admin)
    code, output = bascule("run", str(batch))
    assert code == 0, output
    entries = report(tmp_path, "run")["entries"]
    renamed = next(e for e in entries if e["folder"] == "Versions/v1.2")
    assert renamed["action"] == "rename" and "renamed_separator" in renamed["code"]
    landed = mailboxes.filled(target, "alice")
    assert [sum(c.values()) for p, c in landed.items() if p[0] == "Versions"] == [2]


def test_maildir_export_into_imap_converts_bare_lf_and_verifies(dovecot_factory, tmp_path,
                                                                monkeypatch):
    from tests.corpus import write_maildir

    target = dovecot_factory(users={"alice": "alice-target"})
    corpus = build_corpus(seed=8)
    write_maildir(tmp_path / "export" / "alice", corpus)
    monkeypatch.setenv("A2", "alice-target")
    mailboxes.write_users(tmp_path, [("alice", "alice", "", "env:A2")])
    export_batch(tmp_path, target, extra='[mail]\nexclude = ["Sync Issues*"]')
    batch = str(tmp_path / "batch.toml")
    code, output = bascule("run", batch)
    assert code == 0, output
    notes = [e for e in report(tmp_path, "run")["entries"] if e.get("code") == "line_endings_converted"]
    bare = [m for f in corpus for m in f.messages if f.path in LANDING
            and b"\n" in m.raw.replace(b"\r\n", b"")]
    assert sum(n["messages"] for n in notes) == len(bare) > 0
    code, output = bascule("verify", batch)
    assert code == 0, output
    assert report(tmp_path, "verify")["summary"]["mismatches"] == 0
    inbox = mailboxes.filled(target, "alice")[("INBOX",)]
    assert sum(inbox.values()) == len(corpus[0].messages)


def test_a_folder_name_the_target_refuses_is_reported_and_the_rest_lands(
        dovecot_factory, tmp_path, monkeypatch):
    from tests.corpus import write_maildir

    target = dovecot_factory(users={"alice": "alice-target"})
    odd = CorpusFolder(("~ancien",), None, list(build_mailbox(2, seed=12)))
    inbox = CorpusFolder(("INBOX",), "inbox", list(build_mailbox(3, seed=13)))
    write_maildir(tmp_path / "export" / "alice", [inbox, odd])
    monkeypatch.setenv("A2", "alice-target")
    mailboxes.write_users(tmp_path, [("alice", "alice", "", "env:A2")])
    export_batch(tmp_path, target)
    code, output = bascule("run", str(tmp_path / "batch.toml"))
    assert code == 1, output
    [refused] = [e for e in report(tmp_path, "run")["entries"] if e["action"] == "error"]
    assert (refused["folder"], refused["code"]) == ("~ancien", "name_refused")
    assert sum(mailboxes.filled(target, "alice")[("INBOX",)].values()) == 3


def test_a_message_the_target_refuses_as_invalid_is_reported_and_retried(
        dovecot_factory, tmp_path, monkeypatch):
    target = dovecot_factory(users={"alice": "alice-target"})
    # An empty message between two separator lines of an mbox: no server takes a zero-byte
    # message. (An empty file in a Maildir or an .eml tree is left out by the source itself.)
    separator = b"From a@ville.example Thu Jan  4 10:00:00 2024\r\n"
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "alice.mbox").write_bytes(separator + b"".join(
        separator + message.raw + b"\r\n" for message in build_mailbox(4, seed=14)))
    monkeypatch.setenv("A2", "alice-target")
    mailboxes.write_users(tmp_path, [("alice", "alice", "", "env:A2")])
    batch_path = export_batch(tmp_path, target)
    batch_path.write_text(batch_path.read_text(encoding="utf-8").replace(
        'type = "maildir"', 'type = "mbox"'), encoding="utf-8")
    batch = str(batch_path)
    code, output = bascule("run", batch)
    assert code == 1, output
    [refused] = [e for e in report(tmp_path, "run")["entries"] if e["action"] == "failed"]
    assert refused["code"] == "invalid_message" and refused["source_id"].startswith("0:")
    assert "zero byte" in refused["message_en"]
    assert sum(mailboxes.filled(target, "alice")[("INBOX",)].values()) == 4

    code, output = bascule("run", batch)
    assert code == 1, output
    run = report(tmp_path, "run")
    assert run["summary"]["failed"] == 1 and run["summary"]["copied"] == 0
    assert sum(mailboxes.filled(target, "alice")[("INBOX",)].values()) == 4


def test_keywords_an_imap_target_cannot_hold_are_reported_message_by_message(
        dovecot_factory, tmp_path, monkeypatch):
    from tests.corpus import CorpusMessage, write_maildir

    target = dovecot_factory(users={"alice": "alice-target"})
    raw = b"From: a@ville.example\r\nSubject: urgent\r\n\r\ncorps\r\n"
    message = CorpusMessage(raw, frozenset({"\\Seen", "Priorité haute", "Projet"}))
    write_maildir(tmp_path / "export" / "alice", [CorpusFolder(("INBOX",), "inbox", [message])])
    monkeypatch.setenv("A2", "alice-target")
    mailboxes.write_users(tmp_path, [("alice", "alice", "", "env:A2")])
    batch = export_batch(tmp_path, target)
    code, output = bascule("run", str(batch))
    assert code == 0, output
    [note] = [e for e in report(tmp_path, "run")["entries"] if e.get("code") == "flags_not_kept"]
    assert "Priorité haute" in note["message_fr"] and note["source_id"]
    [(_, flags, _)] = mailboxes.contents(target, "alice")[("INBOX",)]
    assert flags == {"\\Seen", "Projet"}
