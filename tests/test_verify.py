"""``verify`` reads the whole target: what the ledger does not know is there shows too."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from tests import mailboxes
from tests.cli import bascule, report
from tests.corpus import CorpusFolder, CorpusMessage, build_mailbox, write_maildir
from tests.test_engine_imap import batch_file

ROOT = Path(__file__).resolve().parent.parent


def imap_batch(folder: Path, source, target) -> Path:
    mailboxes.write_users(folder, [("alice", "alice", "env:A_SRC", "env:A_DST")])
    return batch_file(folder, source, target)


def findings(folder: Path) -> Counter:
    return Counter(e["code"] for e in report(folder, "verify")["entries"]
                   if e["action"] in ("mismatch", "note"))


def test_verify_finds_duplicates_strangers_gaps_and_changed_flags_and_dates(
        dovecot_factory, tmp_path, monkeypatch):
    source = dovecot_factory(users={"alice": "s"})
    target = dovecot_factory(users={"alice": "t"})
    messages = list(build_mailbox(12, seed=21))
    mailboxes.seed(source, "alice", [CorpusFolder(("INBOX",), "inbox", messages),
                                     CorpusFolder(("Projets",), None, messages[:3])])
    monkeypatch.setenv("A_SRC", "s")
    monkeypatch.setenv("A_DST", "t")
    batch = imap_batch(tmp_path, source, target)
    assert bascule("run", str(batch))[0] == 0
    code, output = bascule("verify", str(batch))
    assert code == 0, output
    assert report(tmp_path, "verify")["summary"]["checked"] == 15

    stranger = CorpusMessage(b"Subject: pas de la source\r\n\r\npose par un usager\r\n",
                             frozenset({"\\Seen"}))
    with mailboxes.client(target, "alice") as imap:
        imap.select_folder("INBOX")
        uids = sorted(imap.search("ALL"))
        raw = {uid: data[b"BODY[]"] for uid, data in imap.fetch(uids, ["BODY.PEEK[]"]).items()}
        by_content = {hashlib.sha256(m.raw).digest(): m for m in messages}
        mailboxes.append(imap, "INBOX", CorpusMessage(raw[uids[0]]))
        mailboxes.append(imap, "INBOX", stranger)
        flags = by_content[hashlib.sha256(raw[uids[1]]).digest()].flags ^ {"\\Flagged"}
        imap.set_flags([uids[1]], sorted(flags))
        # The same bytes again under another date, the original gone: a copy whose date
        # differs from the source's.
        original = by_content[hashlib.sha256(raw[uids[2]]).digest()]
        imap.append("INBOX", raw[uids[2]], flags=sorted(original.flags),
                    msg_time=datetime(2001, 1, 1, tzinfo=UTC))
        imap.delete_messages([uids[2], uids[3]])
        imap.expunge()

    code, output = bascule("verify", str(batch))
    assert code == 1, output
    found = findings(tmp_path)
    assert found == Counter({"duplicate_on_target": 1, "not_in_source": 1,
                             "missing_on_target": 1, "flags_mismatch": 1,
                             "date_mismatch": 1})
    summary = report(tmp_path, "verify")["summary"]
    assert (summary["missing"], summary["duplicates"], summary["not_in_source"],
            summary["flags_differ"], summary["dates_differ"]) == (1, 1, 1, 1, 1)
    assert summary["mismatches"] == 5
    assert ("1 manquant, 0 écart de contenu, 1 en double, 1 absent de la source, 1 écart de "
            "drapeaux, 1 écart de date") in bascule("--lang", "fr", "verify", str(batch))[1]


def test_messages_deleted_at_the_source_after_copy_are_told_not_failed(
        dovecot_factory, tmp_path, monkeypatch):
    source = dovecot_factory(users={"alice": "s"})
    target = dovecot_factory(users={"alice": "t"})
    mailboxes.seed(source, "alice", [CorpusFolder(("INBOX",), "inbox",
                                                  list(build_mailbox(5, seed=4)))])
    monkeypatch.setenv("A_SRC", "s")
    monkeypatch.setenv("A_DST", "t")
    batch = imap_batch(tmp_path, source, target)
    assert bascule("run", str(batch))[0] == 0
    with mailboxes.client(source, "alice") as imap:
        imap.select_folder("INBOX")
        imap.delete_messages(imap.search("ALL")[:2])
        imap.expunge()
    assert bascule("run", str(batch))[0] == 0

    code, output = bascule("verify", str(batch))
    assert code == 0, output
    assert findings(tmp_path) == Counter({"deleted_at_source": 2})
    assert report(tmp_path, "verify")["summary"]["deleted_at_source"] == 2


VERIFY_RSS = """
import json, sys, resource
from migrate.batch import load_batch
from migrate.engine import Engine
engine = Engine(load_batch(__import__("pathlib").Path(sys.argv[1])), command="verify")
outcome = engine.verify()
engine.close()
peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"summary": outcome.summary, "rss": int(peak.split()[1]) * 1024}))
"""


def test_verify_memory_holds_no_message_and_no_per_message_state_of_its_own(tmp_path):
    """Maildir to Maildir, so that 20,000 messages are quick to lay out. What verify keeps
    per message lives in its scratch file; what grows is the source's own listing (a record
    of a few hundred bytes per message), never a body: at most 1 KB a message, where a
    verify holding its comparison in memory took 4 KB."""
    peaks = {}
    for count in (2_000, 20_000):
        folder = tmp_path / str(count)
        tiny = [CorpusMessage(b"Subject: %d\r\n\r\n%d\r\n" % (i, i)) for i in range(count)]
        write_maildir(folder / "source" / "alice", [CorpusFolder(("INBOX",), "inbox", tiny)])
        (folder / "batch.toml").write_text("""
name = "memoire"
[source]
type = "maildir"
path = "source"
[target]
type = "maildir"
path = "target"
[run]
work_dir = "work"
""", encoding="utf-8")
        mailboxes.write_users(folder, [("alice", "alice", "", "")])
        assert bascule("run", str(folder / "batch.toml"))[0] == 0
        probe = subprocess.run([sys.executable, "-c", VERIFY_RSS, str(folder / "batch.toml")],
                               cwd=ROOT, capture_output=True, text=True, check=True)
        result = json.loads(probe.stdout)
        assert result["summary"]["checked"] == count
        assert result["summary"]["mismatches"] == 0
        peaks[count] = result["rss"]
    assert (peaks[20_000] - peaks[2_000]) / 18_000 < 1024, peaks
