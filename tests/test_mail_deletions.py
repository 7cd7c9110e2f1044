"""Messages deleted at the source, Dovecot to Dovecot through ``bascule run``: left on the
target and counted (``deletions = "report"``), or removed from it (``"remove"``) unless
someone changed them there, once, whatever a kill in the middle did."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from tests import mailboxes
from tests.cli import bascule, report
from tests.corpus import CorpusMessage
from tests.test_engine_imap import batch_file


def small_message(number: int) -> CorpusMessage:
    raw = (f"From: Mairie <accueil@ville.fr>\r\nTo: alice@ville.fr\r\n"
           f"Subject: Avis n° {number}\r\nMessage-ID: <avis-{number}@ville.fr>\r\n"
           f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
           f"Content-Transfer-Encoding: 8bit\r\n\r\n"
           f"Avis numéro {number} : la séance du conseil est reportée.\r\n").encode()
    return CorpusMessage(raw, frozenset({"\\Seen"} if number % 2 else ()),
                         datetime(2024, 3, 1 + number % 27, 9, 30, tzinfo=UTC))


def setup(dovecot_factory, folder: Path, folders: dict[str, int],
          through=lambda server: server, **target_options):
    """A source and a target Dovecot (started with ``target_options``), ``folders`` (name ->
    messages) on the source, a batch reaching the target ``through`` a proxy or directly:
    (source, target, batch)."""
    source = dovecot_factory(users={"alice@ville.fr": "src-pw"}, separator="/")
    target = dovecot_factory(users={"alice": "dst-pw"}, separator="/", **target_options)
    number = 0
    with mailboxes.client(source, "alice@ville.fr") as imap:
        for name, count in folders.items():
            if name != "INBOX":
                imap.create_folder(name)
            for _ in range(count):
                number += 1
                mailboxes.append(imap, name, small_message(number))
    mailboxes.write_users(folder, [("alice@ville.fr", "alice", "env:ALICE_SRC",
                                    "env:ALICE_DST")])
    return source, target, batch_file(folder, source, through(target))


def deletions(batch: Path, choice: str) -> None:
    text = batch.read_text(encoding="utf-8")
    text = "".join(line for line in text.splitlines(keepends=True)
                   if not line.startswith("deletions"))
    batch.write_text(text.replace("[run]\n", f'[run]\ndeletions = "{choice}"\n'),
                     encoding="utf-8")


def delete_at_source(source, name: str, numbers: list[int]) -> list[str]:
    """Expunge the messages at these positions of the folder; answer their SHA-256s."""
    with mailboxes.client(source, "alice@ville.fr") as imap:
        imap.select_folder(name)
        uids = sorted(imap.search("ALL"))
        chosen = [uids[n] for n in numbers]
        bodies = imap.fetch(chosen, ["BODY.PEEK[]"])
        imap.delete_messages(chosen)
        imap.expunge()
    return [hashlib.sha256(bodies[uid][b"BODY[]"]).hexdigest() for uid in chosen]


def notes(folder: Path) -> dict[tuple[str, str], int]:
    return {(e["folder"], e["code"]): e.get("messages") for e in report(folder, "run")["entries"]
            if e["action"] == "note"}


def test_deletions_are_reported_then_removed_unless_changed_on_the_target(
        dovecot_factory, tmp_path, monkeypatch):
    monkeypatch.setenv("ALICE_SRC", "src-pw")
    monkeypatch.setenv("ALICE_DST", "dst-pw")
    source, target, batch = setup(dovecot_factory, tmp_path, {"INBOX": 6, "Vrac": 150})
    code, output = bascule("run", str(batch))
    assert code == 0, output
    copied = mailboxes.filled(target, "alice")
    assert copied == mailboxes.filled(source, "alice@ville.fr")

    inbox_gone = delete_at_source(source, "INBOX", [0, 2, 5])
    delete_at_source(source, "Vrac", list(range(0, 150, 3)))
    stranger = small_message(999)
    with mailboxes.client(target, "alice") as imap:
        # On the target: alice flags the copy of a message the source deleted since, and
        # another client leaves a message marked deleted, not expunged, in Vrac.
        imap.select_folder("INBOX")
        bodies = imap.fetch(imap.search("ALL"), ["BODY.PEEK[]"])
        flagged = next(uid for uid, row in bodies.items()
                       if hashlib.sha256(row[b"BODY[]"]).hexdigest() == inbox_gone[1])
        imap.add_flags([flagged], [b"\\Flagged"])
        imap.append("Vrac", stranger.raw, flags=[b"\\Deleted"],
                    msg_time=stranger.internal_date)
    on_target = mailboxes.filled(target, "alice")

    code, output = bascule("run", str(batch))  # deletions = "report", the default
    assert code == 0, output
    assert mailboxes.filled(target, "alice") == on_target
    assert notes(tmp_path) == {("INBOX", "deleted_at_source"): 3,
                               ("Vrac", "deleted_at_source"): 50}

    # The source's delta since that pass says nothing of those deletions: a pass that
    # removes finds them all the same.
    deletions(batch, "remove")
    code, output = bascule("run", str(batch))
    assert code == 0, output
    after = mailboxes.filled(target, "alice")
    source_now = mailboxes.filled(source, "alice@ville.fr")
    assert after[("Vrac",)] == source_now[("Vrac",)] + Counter(
        {(stranger.fingerprint.removeprefix("sha256:"), frozenset({"\\Deleted"}),
          int(stranger.internal_date.timestamp())): 1})
    kept = next(key for key in on_target[("INBOX",)] if key[0] == inbox_gone[1])
    assert "\\Flagged" in kept[1]
    assert after[("INBOX",)] == source_now[("INBOX",)] + Counter({kept: 1})
    assert notes(tmp_path) == {("INBOX", "messages_removed_on_target"): 2,
                               ("INBOX", "messages_left_on_target"): 1,
                               ("Vrac", "messages_removed_on_target"): 50}
    line = next(e for e in report(tmp_path, "run")["entries"]
                if e.get("code") == "messages_removed_on_target" and e["folder"] == "Vrac")
    assert line["message_en"].startswith("50 messages deleted at the source")
    assert line["message_fr"].startswith("50 messages supprimés à la source")

    code, output = bascule("run", str(batch))
    assert code == 0, output
    assert mailboxes.filled(target, "alice") == after
    summary = report(tmp_path, "run")["summary"]
    assert (summary["copied"], summary["failed"]) == (0, 0)
    assert notes(tmp_path) == {("INBOX", "messages_left_on_target"): 1}


def test_a_run_killed_while_removing_then_run_again_removes_each_once(
        dovecot_factory, fault_proxy, tmp_path):
    from tests.faults import ROOT, run_with_signal

    proxies = []

    def through_proxy(target):
        proxies.append(fault_proxy(target))
        return proxies[0]

    source, target, batch = setup(dovecot_factory, tmp_path, {"Vrac": 420}, through_proxy)
    proxy = proxies[0]
    env = {**os.environ, "ALICE_SRC": "src-pw", "ALICE_DST": "dst-pw", "PYTHONPATH": str(ROOT)}

    def run() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "migrate", "run", str(batch)], cwd=ROOT,
                              env=env, capture_output=True, text=True, check=False)

    first = run()
    assert first.returncode == 0, first.stderr
    gone = delete_at_source(source, "Vrac", [n for n in range(420) if n % 5])
    deletions(batch, "remove")

    stalled = False

    def removing(ledger) -> bool:
        # Once a first chunk is removed and forgotten, the target is held still: what the
        # run sends next stays in flight (an EXPUNGE may be done with its answer held),
        # and the run is killed there.
        nonlocal stalled
        if ledger.done and ledger.done < 420 and not stalled:
            proxy.stall()
            stalled = True
        return stalled

    try:
        killed = run_with_signal(batch, env, signal.SIGKILL, removing)
    finally:
        if stalled:
            proxy.resume()
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert 420 - len(gone) < killed.at_signal.done < 420
    assert mailboxes.filled(target, "alice") != mailboxes.filled(source, "alice@ville.fr")

    again = run()
    assert again.returncode == 0, again.stderr
    assert mailboxes.filled(target, "alice") == mailboxes.filled(source, "alice@ville.fr")
    entries = report(tmp_path, "run")["entries"]
    assert not [e for e in entries if e["action"] == "failed"]
    removed = [e["messages"] for e in entries if e.get("code") == "messages_removed_on_target"]
    assert 0 < sum(removed) < len(gone)
    last = run()
    assert last.returncode == 0, last.stderr
    assert mailboxes.filled(target, "alice") == mailboxes.filled(source, "alice@ville.fr")
    assert not [e for e in report(tmp_path, "run")["entries"] if e["action"] == "note"]


def test_a_target_without_uidplus_keeps_what_the_source_deleted_and_says_why(
        dovecot_factory, tmp_path, monkeypatch):
    """Without UIDPLUS only a plain EXPUNGE exists, which would take every message marked
    deleted in the folder: nothing is removed, the deletions are counted, a line says why."""
    monkeypatch.setenv("ALICE_SRC", "src-pw")
    monkeypatch.setenv("ALICE_DST", "dst-pw")
    source, target, batch = setup(
        dovecot_factory, tmp_path, {"Vrac": 12},
        capability="IMAP4rev1 LITERAL+ MULTIAPPEND SPECIAL-USE ENABLE CONDSTORE")
    deletions(batch, "remove")
    assert bascule("run", str(batch))[0] == 0
    delete_at_source(source, "Vrac", [0, 1, 2, 3])
    before = mailboxes.filled(target, "alice")
    code, output = bascule("run", str(batch))
    assert code == 0, output
    assert mailboxes.filled(target, "alice") == before
    assert sum(before[("Vrac",)].values()) == 12
    assert notes(tmp_path) == {("Vrac", "removal_unsupported"): None,
                               ("Vrac", "deleted_at_source"): 4}
