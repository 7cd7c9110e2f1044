"""End to end on local stores: Maildir and mbox exports into a Maildir target, and the demo."""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path

import pytest

from connectors.local.maildir import MaildirSource
from tests.cli import bascule, report
from tests.corpus import build_corpus, write_maildir
from tests.modes import not_private, umask


def maildir_view(root: Path) -> dict[tuple[str, ...], Counter]:
    """Folder -> Counter of (sha256, flags), read straight from the files on disk."""
    source = MaildirSource(root)
    view = {}
    for container in source.containers():
        listing = source.list_changes(container, None)
        counter: Counter = Counter()
        for message in source.fetch(container, [r.source_id for r in listing.refs]):
            with message.open() as body:
                counter[(hashlib.sha256(body.read()).hexdigest(), message.flags)] += 1
        if counter:
            view[container.path] = counter
    return view


BATCH = """
name = "local"
[source]
type = "{kind}"
path = "export"
[target]
type = "maildir"
path = "target"
[mail]
exclude = ["Sync Issues*"]
[run]
work_dir = "work"
"""


def test_maildir_export_to_maildir_then_delta(tmp_path):
    corpus = build_corpus(seed=5)
    write_maildir(tmp_path / "export" / "alice", corpus)
    (tmp_path / "users.csv").write_text("source,target\nalice,alice.martin\n", encoding="utf-8")
    (tmp_path / "batch.toml").write_text(BATCH.format(kind="maildir"), encoding="utf-8")
    batch = str(tmp_path / "batch.toml")

    assert bascule("plan", batch)[0] == 0
    code, output = bascule("run", batch)
    assert code == 0, output
    landed = maildir_view(tmp_path / "target" / "alice.martin")
    assert landed[("Sent",)] == Counter(
        (hashlib.sha256(m.raw).hexdigest(), m.flags) for m in corpus[1].messages)
    assert sum(landed[("INBOX",)].values()) == len(corpus[0].messages)
    assert ("Sync Issues",) not in landed and ("Calendrier",) not in landed

    code, _ = bascule("run", batch)
    assert code == 0
    run = json.loads((tmp_path / "work" / "run-latest.json").read_text(encoding="utf-8"))
    assert run["summary"]["copied"] == 0
    code, output = bascule("verify", batch)
    assert code == 0, output


def test_mbox_and_eml_exports_to_maildir(tmp_path):
    export = tmp_path / "export"
    (export / "alice").mkdir(parents=True)
    first = b"From: a@ville.example\nSubject: un\nStatus: RO\n\nLigne\n>From quoted\n"
    second = b"From: b@ville.example\nSubject: deux\n\nAutre\n"
    (export / "alice" / "Projets").write_bytes(
        b"From a@ville.example Mon Mar  4 10:00:00 2024\n" + first + b"\n"
        b"From b@ville.example Tue Mar  5 11:00:00 2024\n" + second)
    (tmp_path / "users.csv").write_text("source,target\nalice,alice\n", encoding="utf-8")
    (tmp_path / "batch.toml").write_text(BATCH.format(kind="mbox"), encoding="utf-8")
    code, output = bascule("run", str(tmp_path / "batch.toml"))
    assert code == 0, output
    landed = maildir_view(tmp_path / "target" / "alice")
    assert sum(landed[("Projets",)].values()) == 2
    assert (hashlib.sha256(first).hexdigest(), frozenset({"\\Seen"})) in landed[("Projets",)]

    eml = tmp_path / "eml"
    (eml / "export" / "bob" / "Dossiers").mkdir(parents=True)
    (eml / "export" / "bob" / "Dossiers" / "a.eml").write_bytes(second)
    (eml / "users.csv").write_text("source,target\nbob,bob\n", encoding="utf-8")
    (eml / "batch.toml").write_text(BATCH.format(kind="eml"), encoding="utf-8")
    code, output = bascule("run", str(eml / "batch.toml"))
    assert code == 0, output
    assert maildir_view(eml / "target" / "bob")[("Dossiers",)] == Counter(
        {(hashlib.sha256(second).hexdigest(), frozenset()): 1})


def test_a_store_without_a_line_in_the_users_table_blocks_the_plan(tmp_path):
    write_maildir(tmp_path / "export" / "alice", build_corpus(seed=5)[:1])
    write_maildir(tmp_path / "export" / "bob", build_corpus(seed=6)[:1])
    (tmp_path / "users.csv").write_text("source,target\nalice,alice\n", encoding="utf-8")
    (tmp_path / "batch.toml").write_text(BATCH.format(kind="maildir"), encoding="utf-8")
    code, output = bascule("plan", str(tmp_path / "batch.toml"))
    assert code == 2, output
    plan = json.loads((tmp_path / "work" / "plan-latest.json").read_text(encoding="utf-8"))
    assert [e["code"] for e in plan["errors"]] == ["unmapped_user"]
    assert "bob" in plan["errors"][0]["message_fr"]
    code, _ = bascule("run", str(tmp_path / "batch.toml"))
    assert code == 2
    assert not (tmp_path / "target").exists()


def test_demo_runs_on_embedded_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, output = bascule("--lang", "fr", "demo")
    assert code == 0, output
    assert "démonstration terminée" in output
    verify = json.loads((tmp_path / "bascule-demo" / "work" / "verify-latest.json").read_text())
    assert verify["summary"]["mismatches"] == 0
    assert verify["summary"]["checked"] > 200
    assert (tmp_path / "bascule-demo" / "target" / "alice" / ".Sent").is_dir()


def test_users_option_runs_a_subset_and_names_unknown_users(tmp_path):
    write_maildir(tmp_path / "export" / "alice", build_corpus(seed=5)[:1])
    write_maildir(tmp_path / "export" / "bob", build_corpus(seed=6)[:1])
    (tmp_path / "users.csv").write_text("source,target\nalice,alice\nbob,bob\n", encoding="utf-8")
    (tmp_path / "batch.toml").write_text(BATCH.format(kind="maildir"), encoding="utf-8")
    batch = str(tmp_path / "batch.toml")
    code, output = bascule("run", batch, "--users", "bob")
    assert code == 0, output
    assert (tmp_path / "target" / "bob" / "cur").is_dir()
    assert not (tmp_path / "target" / "alice").exists()
    code, output = bascule("run", batch, "--users", "carol")
    assert code == 2
    assert "carol" in output


def test_the_batch_size_limit_refuses_big_messages_in_plan_and_run(tmp_path):
    corpus = build_corpus(seed=5, large_size=2 << 20)
    write_maildir(tmp_path / "export" / "alice", corpus)
    (tmp_path / "users.csv").write_text("source,target\nalice,alice\n", encoding="utf-8")
    text = BATCH.format(kind="maildir").replace('path = "target"',
                                                'path = "target"\nmax_message_size = 1000000')
    (tmp_path / "batch.toml").write_text(text, encoding="utf-8")
    batch = str(tmp_path / "batch.toml")
    assert bascule("plan", batch)[0] == 0
    plan = json.loads((tmp_path / "work" / "plan-latest.json").read_text(encoding="utf-8"))
    assert [e["folder"] for e in plan["entries"] if e["action"] == "too_big"] == [
        "Projets/Été 2024"]
    code, _ = bascule("run", batch)
    assert code == 1
    run = json.loads((tmp_path / "work" / "run-latest.json").read_text(encoding="utf-8"))
    assert run["summary"]["failed"] == 1
    [refused] = [e for e in run["entries"] if e["action"] == "failed"]
    assert refused["code"] == "too_big" and refused["folder"] == "Projets/Été 2024"
    assert "trop gros" in refused["message_fr"]

    # The DSI raises the limit: the next run retries the refused message, and only it.
    (tmp_path / "batch.toml").write_text(text.replace("1000000", "5000000"), encoding="utf-8")
    assert bascule("run", batch)[0] == 0
    run = json.loads((tmp_path / "work" / "run-latest.json").read_text(encoding="utf-8"))
    assert (run["summary"]["copied"], run["summary"]["failed"]) == (1, 0)
    assert bascule("verify", batch)[0] == 0


def test_a_bad_users_table_is_bad_input_with_every_line_named(tmp_path):
    (tmp_path / "export").mkdir()
    (tmp_path / "users.csv").write_text(
        "source;target;source_secret\nalice;alice;Secret123!\n;bob;\nalice;carol;\n",
        encoding="utf-8")
    (tmp_path / "batch.toml").write_text(BATCH.format(kind="maildir"), encoding="utf-8")
    code, output = bascule("--lang", "fr", "plan", str(tmp_path / "batch.toml"))
    assert code == 2
    assert "Secret123!" not in output
    assert "users.csv:2" in output and "users.csv:3" in output and "users.csv:4" in output


def test_an_audit_needs_no_target_and_the_other_commands_say_they_do(tmp_path):
    write_maildir(tmp_path / "export" / "alice", build_corpus(seed=5))
    (tmp_path / "users.csv").write_text("source,target\nalice,alice\n", encoding="utf-8")
    text = BATCH.format(kind="maildir").replace('[target]\ntype = "maildir"\npath = "target"\n',
                                                "")
    (tmp_path / "batch.toml").write_text(text, encoding="utf-8")
    batch = str(tmp_path / "batch.toml")
    code, output = bascule("audit", batch)
    assert code == 0, output
    audit = json.loads((tmp_path / "work" / "audit-latest.json").read_text(encoding="utf-8"))
    corpus = build_corpus(seed=5)
    assert audit["summary"]["items"] == sum(len(f.messages) for f in corpus)
    assert audit["summary"]["bytes"] == sum(len(m.raw) for f in corpus for m in f.messages)
    for command in ("plan", "run", "verify"):
        code, output = bascule("--lang", "fr", command, batch)
        assert code == 2, (command, output)
        assert "seul audit" in output


def test_an_exports_26_keywords_land_on_a_maildir_target(tmp_path):
    from tests.corpus import CorpusFolder, CorpusMessage

    many = frozenset({"\\Seen"} | {f"etiquette{n:02d}" for n in range(30)})
    raw = b"From: a@ville.example\r\nSubject: trente etiquettes\r\n\r\ncorps\r\n"
    write_maildir(tmp_path / "export" / "alice",
                  [CorpusFolder(("INBOX",), "inbox", [CorpusMessage(raw, many)])])
    (tmp_path / "users.csv").write_text("source,target\nalice,alice\n", encoding="utf-8")
    (tmp_path / "batch.toml").write_text(BATCH.format(kind="maildir"), encoding="utf-8")
    # The export itself holds only 26 of them (Maildir++ has 26 keyword letters): all land.
    code, output = bascule("run", str(tmp_path / "batch.toml"))
    assert code == 0, output
    run = json.loads((tmp_path / "work" / "run-latest.json").read_text(encoding="utf-8"))
    landed = maildir_view(tmp_path / "target" / "alice")[("INBOX",)]
    [(_, flags)] = landed
    assert len([f for f in flags if not f.startswith("\\")]) == 26
    assert not [e for e in run["entries"] if e.get("code") == "flags_not_kept"]


def test_flags_a_maildir_target_cannot_keep_are_reported(tmp_path):
    from connectors.local.maildir import MaildirSink
    from tests.corpus import CorpusMessage, as_messages

    sink = MaildirSink(tmp_path / "cible")
    native = sink.ensure_container(("INBOX",))
    raw = b"Subject: x\r\n\r\ny\r\n"
    messages = as_messages([CorpusMessage(raw, frozenset(f"k{n:02d}" for n in range(30)))])
    [result] = sink.put_many(native, messages)
    assert result.error is None
    [note] = sink.drain_notes()
    assert (note.code, note.subject, note.detail) == (
        "flags_not_kept", messages[0].source_id, "k26 k27 k28 k29")
    assert sink.drain_notes() == []


SHADOW = Path("/etc/shadow")
OUTSIDE = b"From: secret@ville.example\r\nSubject: hors du dossier\r\n\r\nSECRET-OUTSIDE\r\n"
MESSAGE = b"From: a@ville.example\r\nSubject: un\r\n\r\ncorps\r\n"
SEPARATOR = b"From a@ville.example Thu Jan  4 10:00:00 2024\r\n"


def _maildir_with_strays(store: Path, outside: Path) -> tuple[int, set[tuple[str, str]]]:
    corpus = build_corpus(seed=5)[:2]
    write_maildir(store, corpus)
    os.symlink(SHADOW, store / "cur" / "1700000000.M1P1.evil:2,S")
    os.symlink(outside, store / "new" / "1700000001.M1P1.out")
    (store / "cur" / "1700000002.M1P1.vide:2,S").write_bytes(b"")
    (store / "cur" / "1700000003.M1P1.bruit:2,").write_bytes(bytes(range(256)))
    (store / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (store / "notes.txt").write_text("pas un message")
    (store / "dovecot-uidlist").write_text("3 V1700000000 N1\n")
    return sum(len(f.messages) for f in corpus), {
        ("symlink_skipped", "cur/1700000000.M1P1.evil:2,S"),
        ("symlink_skipped", "new/1700000001.M1P1.out"),
        ("empty_file_skipped", "cur/1700000002.M1P1.vide:2,S"),
        ("not_a_message_skipped", "cur/1700000003.M1P1.bruit:2,"),
        ("hidden_file_skipped", ".DS_Store"),
        ("not_maildir_skipped", "notes.txt"),
    }


def _mbox_with_strays(store: Path, outside: Path) -> tuple[int, set[tuple[str, str]]]:
    store.mkdir(parents=True)
    (store / "Inbox").write_bytes(SEPARATOR + MESSAGE + b"\r\n" + SEPARATOR + MESSAGE)
    (store / "Inbox.msf").write_bytes(b"// mork")
    os.symlink(SHADOW, store / "Shadow")
    os.symlink(outside, store / "Ailleurs")
    (store / "bruit.bin").write_bytes(bytes(range(256)))
    (store / "Vide").write_bytes(b"")
    (store / ".verrou").write_bytes(b"")
    return 2, {
        ("symlink_skipped", "Shadow"),
        ("symlink_skipped", "Ailleurs"),
        ("not_mbox_skipped", "bruit.bin"),
        ("empty_file_skipped", "Vide"),
        ("hidden_file_skipped", ".verrou"),
    }


def _eml_with_strays(store: Path, outside: Path) -> tuple[int, set[tuple[str, str]]]:
    (store / "Projets" / ".cache").mkdir(parents=True)
    (store / "a.eml").write_bytes(MESSAGE)
    (store / "Projets" / "b.eml").write_bytes(MESSAGE)
    os.symlink(SHADOW, store / "shadow.eml")
    os.symlink(outside, store / "Projets" / "ailleurs.eml")
    (store / "Projets" / "Réunion.msg").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1")
    (store / "vide.eml").write_bytes(b"")
    (store / "bruit.eml").write_bytes(bytes(range(256)))
    (store / "._a.eml").write_bytes(b"\0\5\26\7")
    return 2, {
        ("symlink_skipped", "shadow.eml"),
        ("symlink_skipped", "Projets/ailleurs.eml"),
        ("outlook_msg_skipped", "Projets/Réunion.msg"),
        ("empty_file_skipped", "vide.eml"),
        ("not_a_message_skipped", "bruit.eml"),
        ("hidden_file_skipped", "._a.eml"),
        ("hidden_folder_skipped", "Projets/.cache"),
    }


STRAYS = {"maildir": _maildir_with_strays, "mbox": _mbox_with_strays, "eml": _eml_with_strays}
LOCAL_CODES = {"symlink_skipped", "empty_file_skipped", "not_a_message_skipped",
               "hidden_file_skipped", "hidden_folder_skipped", "not_maildir_skipped",
               "not_mbox_skipped", "outlook_msg_skipped"}


def _left_out(document: dict) -> set[tuple[str, str]]:
    """``(code, path in the store)`` of the report's rows about what a store left out; each
    row must say it in both languages."""
    rows = [row for row in document["entries"] if row.get("code") in LOCAL_CODES]
    for row in rows:
        assert row["principal"] == "alice"
        assert row["message_en"] and row["message_fr"] and row["message_en"] != row["message_fr"]
    return {(row["code"], row["source_id"] or row["folder"]) for row in rows}


@pytest.mark.parametrize("kind", ["maildir", "mbox", "eml"])
def test_what_a_local_store_leaves_out_is_in_audit_plan_and_run_and_the_target_is_private(
        tmp_path, kind):
    outside = tmp_path / "outside"
    outside.write_bytes(SEPARATOR + OUTSIDE if kind == "mbox" else OUTSIDE)
    copied, strays = STRAYS[kind](tmp_path / "export" / "alice", outside)
    (tmp_path / "users.csv").write_text("source,target\nalice,alice\n", encoding="utf-8")
    (tmp_path / "batch.toml").write_text(BATCH.format(kind=kind), encoding="utf-8")
    batch = str(tmp_path / "batch.toml")

    with umask(0):
        results = {command: bascule(command, batch) for command in ("audit", "plan", "run")}
        for command, (code, output) in results.items():
            assert code == 0, (command, output)
            assert _left_out(report(tmp_path, command)) == strays, command
        assert report(tmp_path, "run")["summary"]["copied"] == copied
        # A delta pass, nothing changed: still left out, still said.
        assert bascule("run", batch)[0] == 0
        assert report(tmp_path, "run")["summary"]["copied"] == 0
        assert _left_out(report(tmp_path, "run")) == strays

    target = tmp_path / "target"
    held = b"".join(path.read_bytes() for path in target.rglob("*") if path.is_file())
    assert b"SECRET-OUTSIDE" not in held
    if os.access(SHADOW, os.R_OK):
        assert SHADOW.read_bytes()[:40] not in held
    assert sum(1 for path in target.rglob("*") if path.parent.name in ("cur", "new")) == copied
    assert not_private(target) == {}
    reports = [path for path in (tmp_path / "work").iterdir()
               if path.suffix in (".json", ".csv")]
    assert len(reports) == 2 * 4 + 2 * 3  # four timestamped runs, three "-latest" kinds
    assert {path.name: oct(path.stat().st_mode & 0o777) for path in reports} == {
        path.name: "0o600" for path in reports}
