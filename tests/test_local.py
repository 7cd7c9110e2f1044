"""Local mail stores on real files: Maildir++ both ways, mbox and .eml trees, big messages."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest
from imapclient import IMAPClient

from connectors.base import ConnectError, ContainerRefused, Message, fingerprint_bytes
from connectors.local import EmlSource, MaildirSink, MaildirSource, MboxSource
from migrate.matching import TargetIndex
from tests.corpus import CorpusFolder, as_messages, build_corpus, write_maildir
from tests.dovecot import start_dovecot
from tests.modes import modes, not_private, umask

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def corpus() -> list[CorpusFolder]:
    return build_corpus(seed=7)


def _read_all(source: MaildirSource | MboxSource | EmlSource) -> dict[tuple[str, ...], list]:
    """Every message of every folder as (bytes, flags, internal date), sorted."""
    found = {}
    for container in source.containers():
        listing = source.list_changes(container, None)
        messages = source.fetch(container, [ref.source_id for ref in listing.refs])
        found[container.path] = sorted(
            (_body(message), message.flags, message.internal_date) for message in messages
        )
    return found


def _body(message: Message) -> bytes:
    with message.open() as stream:
        return stream.read()


def _expected(folder: CorpusFolder) -> list:
    return sorted((m.raw, m.flags, m.internal_date) for m in folder.messages)


def test_maildir_round_trip_keeps_bytes_flags_keywords_and_dates(tmp_path, corpus):
    write_maildir(tmp_path / "maildir", corpus)

    found = _read_all(MaildirSource(tmp_path / "maildir"))

    assert list(found) == [("INBOX",)] + sorted(f.path for f in corpus if f.path != ("INBOX",))
    for folder in corpus:
        assert found[folder.path] == _expected(folder), folder.path
    inbox_flags = set().union(*(flags for _raw, flags, _date in found[("INBOX",)]))
    assert {"\\Seen", "\\Flagged", "\\Answered", "$Forwarded", "$label1", "Projet"} <= inbox_flags


def test_maildir_internal_date_keeps_the_instant_not_the_offset(tmp_path, corpus):
    folder = next(f for f in corpus if f.path == ("Éléments envoyés",))
    write_maildir(tmp_path, [folder])
    source = MaildirSource(tmp_path)
    container = next(c for c in source.containers() if c.path == folder.path)
    refs = source.list_changes(container, None).refs

    assert sorted(ref.internal_date for ref in refs) == sorted(
        m.internal_date for m in folder.messages
    )
    assert {ref.internal_date.utcoffset().total_seconds() for ref in refs} == {0}
    assert MaildirSink.internal_date_offset_kept is False


def test_maildir_layout_is_the_one_dovecot_reads(tmp_path, corpus):
    write_maildir(tmp_path, corpus)

    names = {entry.name for entry in tmp_path.iterdir()}
    assert {"cur", "new", "tmp", "subscriptions"} <= names
    assert ".Projets.&AMk-t&AOk- 2024" in names
    assert ".&AMk-l&AOk-ments envoy&AOk-s" in names
    assert ".R&-D" in names
    assert (tmp_path / ".Projets.&AMk-t&AOk- 2024" / "maildirfolder").exists()
    keywords = (tmp_path / "dovecot-keywords").read_text().splitlines()
    assert sorted(line.split(" ", 1)[1] for line in keywords) == ["$Forwarded", "$label1", "Projet"]
    for name in os.listdir(tmp_path / "cur"):
        unique, info = name.split(":2,")
        assert info == "".join(sorted(info))
        assert f",S={(tmp_path / 'cur' / name).stat().st_size}" in unique
    assert "Projets.&AMk-t&AOk- 2024" in (tmp_path / "subscriptions").read_text().splitlines()


def test_dovecot_serves_what_the_maildir_sink_wrote(tmp_path, corpus):
    server = start_dovecot(tmp_path / "dovecot", {"alice": "secret"}, separator=".")
    try:
        mail = server.mail_dir("alice")
        write_maildir(mail, corpus)
        owner = mail.parent.stat()
        for directory, _subdirs, files in os.walk(mail):
            for name in [directory, *(os.path.join(directory, f) for f in files)]:
                os.chown(name, owner.st_uid, owner.st_gid)
        with IMAPClient(server.host, server.port, ssl=False) as client:
            client.login("alice", "secret")
            listed = {name for _flags, _sep, name in client.list_folders()}
            assert {"Projets.Été 2024", "R&D", "Éléments envoyés", "Archives.2019"} <= listed
            assert "Projets.Été 2024" in {name for _f, _s, name in client.list_sub_folders()}
            client.normalise_times = False
            client.select_folder("INBOX", readonly=True)
            fetched = client.fetch(client.search("ALL"), ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"])
    finally:
        server.stop()

    served = [
        (data[b"BODY[]"], {f.decode() for f in data[b"FLAGS"]} - {"\\Recent"},
         data[b"INTERNALDATE"])
        for data in fetched.values()
    ]
    # Dovecot serves CRLF line ends: the bare-LF message comes back converted.
    assert _normal(served) == _normal(
        [(m.raw, m.flags, m.internal_date) for m in corpus[0].messages]
    )


def _normal(rows: list) -> list:
    return sorted(
        (raw.replace(b"\r\n", b"\n"), sorted(flags), int(date.timestamp()))
        for raw, flags, date in rows
    )


def test_unchanged_folder_gives_an_empty_listing_and_a_rename_is_seen(tmp_path, corpus):
    write_maildir(tmp_path, corpus)
    source = MaildirSource(tmp_path)
    inbox = source.containers()[0]
    first = source.list_changes(inbox, None)

    again = source.list_changes(inbox, first.cursor)
    sink = MaildirSink(tmp_path)
    sink.set_flags("INBOX", first.refs[0].source_id, frozenset({"\\Flagged", "Projet"}))
    after = source.list_changes(inbox, first.cursor)

    assert first.complete and len(first.refs) == len(corpus[0].messages)
    assert again.refs == [] and not again.complete
    assert after.complete
    changed = next(ref for ref in after.refs if ref.source_id == first.refs[0].source_id)
    assert changed.flags == {"\\Flagged", "Projet"}


def test_target_index_claims_identical_copies_one_each(tmp_path, corpus):
    sink = MaildirSink(tmp_path)
    twin = next(m for m in corpus[0].messages if corpus[0].messages.count(m) == 2)
    refs = [r.target_ref for r in sink.put_many("INBOX", as_messages([twin, twin, twin]))]

    index = TargetIndex(sink, "INBOX", claimed={refs[2]})
    claims = [index.claim(twin.fingerprint, len(twin.raw)) for _ in range(3)]

    assert sink.count("INBOX") == 3 and len(set(refs)) == 3
    assert {c.target_ref for c in claims[:2] if c} == set(refs[:2])
    assert claims[2] is None
    assert index.claim(twin.fingerprint, len(twin.raw) + 1) is None
    assert dict(sink.fingerprints("INBOX", refs[:1] + ["gone"])) == {refs[0]: twin.fingerprint}


def test_inventory_reports_sizes_flags_dates_and_fingerprints(tmp_path, corpus):
    folder = next(f for f in corpus if f.path == ("R&D",))
    sink = MaildirSink(tmp_path)
    native = sink.ensure_container(folder.path)
    list(sink.put_many(native, as_messages(folder.messages)))

    stored = sorted((i.fingerprint, i.size, i.flags, i.internal_date)
                    for i in sink.inventory(native, fingerprints=True))

    assert stored == sorted((m.fingerprint, len(m.raw), m.flags, m.internal_date)
                            for m in folder.messages)


@pytest.mark.parametrize("path", [
    ("a.b",), ("Projets", "x/y"), ("..",), ("",), ("bad\0name",), ("/etc",), (),
])
def test_folder_names_maildir_cannot_hold_are_refused(tmp_path, path):
    sink = MaildirSink(tmp_path / "maildir")

    with pytest.raises(ContainerRefused):
        sink.ensure_container(path)

    assert os.listdir(tmp_path) == []


def test_mbox_keeps_quoted_from_lines_and_reads_flags_and_dates(tmp_path):
    first = (b"From: a@ville-exemple.fr\nSubject: un\nStatus: RO\nX-Status: A\n"
             b"X-Mozilla-Keys: $label1\n\nLigne\n>From quoted in body\n"
             b"From the desk of the mayor\n")
    second = b"Subject: deux\r\nX-Mozilla-Status: 0005\r\n\r\ncorps\r\n"
    profile = tmp_path / "profile"
    (profile / "Inbox.sbd").mkdir(parents=True)
    (profile / "Inbox").write_bytes(
        b"From alice@ville-exemple.fr Thu Jan  4 10:00:00 2024\n" + first + b"\n"
        + b"From - Fri Feb 16 08:30:05 2024\r\n" + second + b"\r\n"
    )
    (profile / "Inbox.msf").write_bytes(b"// <!-- <mdb:mork:z v=\"1.4\"/> -->")
    (profile / "Inbox.sbd" / "Projets.mbox").write_bytes(
        b"From x Sat Mar  2 12:00:00 2024\n" + second
    )
    source = MboxSource(profile)

    found = _read_all(source)

    assert list(found) == [("Inbox",), ("Inbox", "Projets")]
    assert found[("Inbox",)] == sorted([
        (first, frozenset({"\\Seen", "\\Answered", "$label1"}),
         datetime(2024, 1, 4, 10, 0, tzinfo=UTC)),
        (second, frozenset({"\\Seen", "\\Flagged"}), datetime(2024, 2, 16, 8, 30, 5, tzinfo=UTC)),
    ])
    assert found[("Inbox", "Projets")][0][0] == second


def test_mbox_rewritten_file_voids_old_ids(tmp_path):
    path = tmp_path / "archive.mbox"
    path.write_bytes(b"From a Thu Jan  4 10:00:00 2024\nSubject: un\n\nx\n")
    source = MboxSource(path)
    inbox = source.containers()[0]
    listing = source.list_changes(inbox, None)

    path.write_bytes(b"From b Fri Jan  5 10:00:00 2024\nSubject: autre\n\ny\n")
    changed = source.list_changes(inbox, listing.cursor)
    stale = list(source.fetch(inbox, [listing.refs[0].source_id]))

    assert inbox.path == ("INBOX",) and inbox.role == "inbox"
    assert changed.complete and changed.refs[0].source_id != listing.refs[0].source_id
    assert stale == []


def test_eml_tree_gives_one_folder_per_directory(tmp_path, corpus):
    root = tmp_path / "export"
    (root / "Projets" / "Été 2024").mkdir(parents=True)
    inbox_raw = corpus[0].messages[0].raw
    (root / "premier.eml").write_bytes(inbox_raw)
    undated = b"Subject: sans date\r\n\r\ncorps\r\n"
    (root / "Projets" / "Été 2024" / "sans-date.EML").write_bytes(undated)
    os.utime(root / "Projets" / "Été 2024" / "sans-date.EML", (1_700_000_000, 1_700_000_000))
    (root / "notes.txt").write_text("pas un message")
    source = EmlSource(root)

    found = _read_all(source)

    assert list(found) == [("INBOX",), ("Projets",), ("Projets", "Été 2024")]
    assert [raw for raw, _flags, _date in found[("INBOX",)]] == [inbox_raw]
    assert found[("INBOX",)][0][2] == datetime(*_date_header(inbox_raw))
    assert found[("Projets", "Été 2024")] == [
        (undated, frozenset(), datetime.fromtimestamp(1_700_000_000, UTC)),
    ]
    assert list(source.fetch(source.containers()[0], ["../escape.eml"])) == []


def _date_header(raw: bytes) -> tuple:
    from email.utils import parsedate_to_datetime

    line = next(line for line in raw.split(b"\r\n") if line.startswith(b"Date: "))
    moment = parsedate_to_datetime(line[6:].decode())
    return (moment.year, moment.month, moment.day, moment.hour, moment.minute,
            moment.second, 0, moment.tzinfo)


BIG = 30 << 20

STREAM_SCRIPT = textwrap.dedent("""
    import hashlib, resource, sys
    from pathlib import Path
    from connectors.local import MaildirSink, MaildirSource, MboxSource

    def peak_kib():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    kind, source_root, target_root = sys.argv[1:4]
    source = MaildirSource(source_root) if kind == "maildir" else MboxSource(source_root)
    sink = MaildirSink(target_root)
    before = peak_kib()
    for container in source.containers():
        refs = source.list_changes(container, None).refs
        messages = source.fetch(container, [ref.source_id for ref in refs])
        for result in sink.put_many("INBOX", messages):
            assert result.error is None
    print(peak_kib() - before)
""")


def _big_message() -> bytes:
    head = b"From: a@ville-exemple.fr\r\nSubject: gros\r\n\r\n"
    line = b"A" * 76 + b"\r\n"
    return head + line * ((BIG - len(head)) // len(line))


@pytest.mark.parametrize("kind", ["maildir", "mbox"])
def test_a_30_mb_message_is_streamed_not_loaded(tmp_path, kind):
    raw = _big_message()
    source_root = tmp_path / "source"
    if kind == "maildir":
        sink = MaildirSink(source_root)
        list(sink.put_many("INBOX", [Message("big", fingerprint_bytes(raw), len(raw),
                                             frozenset(), None, lambda: io.BytesIO(raw))]))
    else:
        source_root.mkdir()
        (source_root / "Inbox").write_bytes(b"From a Thu Jan  4 10:00:00 2024\n" + raw)

    run = subprocess.run(
        [sys.executable, "-c", STREAM_SCRIPT, kind, str(source_root), str(tmp_path / "target")],
        cwd=REPO, capture_output=True, text=True, check=True,
    )

    growth_kib = int(run.stdout.strip())
    target_cur = tmp_path / "target" / "cur"
    copied = [target_cur / name for name in os.listdir(target_cur)]
    assert len(copied) == 1
    assert hashlib.sha256(copied[0].read_bytes()).digest() == hashlib.sha256(raw).digest()
    assert growth_kib < 12 * 1024, f"peak RSS grew by {growth_kib} KiB for a 30 MB message"


# What a store holds beside its mail: links are never followed, the rest is reported.

SHADOW = Path("/etc/shadow")
OUTSIDE = b"From: secret@ville-exemple.fr\r\nSubject: hors du dossier\r\n\r\nSECRET-OUTSIDE\r\n"
"""A message outside the store, that a followed link would copy: the test's own file, since
``/etc/shadow`` is readable by root only."""


def _notes(source: MaildirSource | MboxSource | EmlSource) -> set[tuple[str, str, str]]:
    return {(note.code, note.subject, note.detail) for note in source.drain_notes()}


def _listed(source: MaildirSource | MboxSource | EmlSource
            ) -> tuple[dict[tuple[str, ...], list[bytes]], set[tuple[str, str, str]]]:
    """Every message's bytes by folder, read through the listings, and every note given."""
    found = _read_all(source)
    notes = _notes(source)
    return {path: [raw for raw, _flags, _date in rows] for path, rows in found.items()}, notes


def _read_nothing_of(found: dict[tuple[str, ...], list[bytes]]) -> None:
    everything = b"".join(raw for rows in found.values() for raw in rows)
    assert b"SECRET-OUTSIDE" not in everything
    if os.access(SHADOW, os.R_OK):
        assert SHADOW.read_bytes()[:40] not in everything


def test_no_symbolic_link_inside_a_maildir_is_followed(tmp_path, corpus):
    root = tmp_path / "maildir"
    write_maildir(root, corpus[:2])
    (tmp_path / "outside.eml").write_bytes(OUTSIDE)
    inbox = min(os.listdir(root / "cur"))
    os.symlink(SHADOW, root / "cur" / "1700000000.M1P1.evil,S=10:2,S")
    os.symlink(tmp_path / "outside.eml", root / "new" / "1700000001.M1P1.out")
    os.symlink(inbox, root / "cur" / "1700000002.M1P1.twin:2,S")  # inside the store
    sent = ".&AMk-l&AOk-ments envoy&AOk-s"
    (root / ".Lien").mkdir()
    os.symlink(root / sent / "cur", root / ".Lien" / "cur")
    os.symlink(sent, root / ".Autre")
    os.symlink(tmp_path, root / "tmp-ailleurs")
    source = MaildirSource(root)

    found, notes = _listed(source)

    assert notes == {
        ("symlink_skipped", "cur/1700000000.M1P1.evil,S=10:2,S", str(SHADOW)),
        ("symlink_skipped", "new/1700000001.M1P1.out", str(tmp_path / "outside.eml")),
        ("symlink_skipped", "cur/1700000002.M1P1.twin:2,S", inbox),
        ("symlink_skipped", ".Lien/cur", str(root / sent / "cur")),
        ("symlink_skipped", ".Autre", sent),
        ("symlink_skipped", "tmp-ailleurs", str(tmp_path)),
    }
    assert sorted(found[("INBOX",)]) == sorted(m.raw for m in corpus[0].messages)
    assert found[("Lien",)] == []
    assert ("Autre",) not in found
    _read_nothing_of(found)


def test_a_message_made_a_link_after_the_listing_is_not_read(tmp_path, corpus):
    root = tmp_path / "maildir"
    write_maildir(root, corpus[:1])
    (tmp_path / "outside.eml").write_bytes(OUTSIDE)
    source = MaildirSource(root)
    inbox = source.containers()[0]
    refs = source.list_changes(inbox, None).refs
    name = min(os.listdir(root / "cur"))
    os.replace(root / "cur" / name, tmp_path / "moved")
    os.symlink(tmp_path / "outside.eml", root / "cur" / name)

    fetched = list(source.fetch(inbox, [ref.source_id for ref in refs]))

    assert len(fetched) == len(refs) - 1
    assert name.partition(":2,")[0] not in {message.source_id for message in fetched}
    assert b"SECRET-OUTSIDE" not in b"".join(_body(message) for message in fetched)
    assert _notes(source) == {
        ("symlink_skipped", f"cur/{name}", str(tmp_path / "outside.eml"))}


def test_a_store_that_is_itself_a_link_is_refused(tmp_path, corpus):
    write_maildir(tmp_path / "maildir", corpus[:1])
    os.symlink(tmp_path / "maildir", tmp_path / "alice")
    (tmp_path / "real.mbox").write_bytes(b"From a Thu Jan  4 10:00:00 2024\nSubject: x\n\ny\n")
    os.symlink(tmp_path / "real.mbox", tmp_path / "alice.mbox")
    os.symlink(SHADOW, tmp_path / "shadow.mbox")

    for source in (MaildirSource(tmp_path / "alice"), EmlSource(tmp_path / "alice"),
                   MboxSource(tmp_path / "alice"), MboxSource(tmp_path / "alice.mbox"),
                   MboxSource(tmp_path / "shadow.mbox")):
        with pytest.raises(ConnectError) as refused:
            source.containers()
        assert refused.value.code == "store_is_symlink"


def test_what_a_maildir_holds_beside_its_mail_is_reported_and_bookkeeping_is_not(
        tmp_path, corpus):
    root = tmp_path / "maildir"
    write_maildir(root, corpus[:2])
    sent = ".&AMk-l&AOk-ments envoy&AOk-s"
    for folder in (root, root / sent):
        for name in ("dovecot-uidlist", "dovecot-uidlist.lock", "dovecot.index",
                     "dovecot.index.log", "dovecot.index.cache", "dovecot-uidvalidity",
                     "dovecot-uidvalidity.65a1b2c3", "dovecot.list.index.log", "dovecot-acl",
                     "maildirsize", "courierimapuiddb", ".uidvalidity", ".mbsyncstate",
                     ".mbsyncstate.journal"):
            (folder / name).write_bytes(b"3 V1700000000 N1\n")
        (folder / "courierimapkeywords").mkdir()
    (root / "courierimapsubscribed").write_text("INBOX\n")
    cur = root / "cur"
    (cur / "1700000000.M1P1.vide,S=0:2,S").write_bytes(b"")
    (cur / "1700000001.M1P1.bruit:2,").write_bytes(bytes(range(256)) * 4)
    (cur / ".1700000002.M1P1.cache:2,S").write_bytes(b"Subject: cache\r\n\r\nx\r\n")
    (cur / "un-dossier").mkdir()
    os.mkfifo(root / "new" / "1700000003.M1P1.tube")
    (root / "notes.txt").write_text("pas un message")
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "Archive.msg").write_bytes(b"\xd0\xcf\x11\xe0")
    (root / "Archives").mkdir()
    (root / ".Vide").mkdir()
    (root / sent / "lisez-moi").write_text("x")
    (root / sent / ".git").mkdir()
    source = MaildirSource(root)

    found, notes = _listed(source)

    assert notes == {
        ("empty_file_skipped", "cur/1700000000.M1P1.vide,S=0:2,S", ""),
        ("not_a_message_skipped", "cur/1700000001.M1P1.bruit:2,", ""),
        ("hidden_file_skipped", "cur/.1700000002.M1P1.cache:2,S", ""),
        ("special_file_skipped", "cur/un-dossier", ""),
        ("special_file_skipped", "new/1700000003.M1P1.tube", ""),
        ("not_maildir_skipped", "notes.txt", ""),
        ("hidden_file_skipped", ".DS_Store", ""),
        ("outlook_msg_skipped", "Archive.msg", ""),
        ("not_maildir_skipped", "Archives", ""),
        ("not_maildir_skipped", ".Vide", ""),
        ("not_maildir_skipped", f"{sent}/lisez-moi", ""),
        ("hidden_folder_skipped", f"{sent}/.git", ""),
    }
    assert sorted(found[("INBOX",)]) == sorted(m.raw for m in corpus[0].messages)
    assert sorted(found[("Éléments envoyés",)]) == sorted(m.raw for m in corpus[1].messages)


def test_a_delta_pass_over_an_unchanged_maildir_reports_what_it_leaves_out_again(tmp_path,
                                                                                   corpus):
    write_maildir(tmp_path, corpus[:1])
    (tmp_path / "cur" / "1700000000.M1P1.vide:2,S").write_bytes(b"")
    os.symlink(SHADOW, tmp_path / "cur" / "1700000001.M1P1.evil:2,S")
    source = MaildirSource(tmp_path)
    inbox = source.containers()[0]
    first = source.list_changes(inbox, None)
    notes = _notes(source)

    again = source.list_changes(inbox, first.cursor)

    assert again.refs == [] and not again.complete
    assert _notes(source) == notes == {
        ("empty_file_skipped", "cur/1700000000.M1P1.vide:2,S", ""),
        ("symlink_skipped", "cur/1700000001.M1P1.evil:2,S", str(SHADOW)),
    }


def test_an_mbox_tree_follows_no_link_and_reports_what_is_not_mbox(tmp_path):
    message = b"From a@ville-exemple.fr Thu Jan  4 10:00:00 2024\nSubject: un\n\ncorps\n"
    profile = tmp_path / "profile"
    (profile / "Inbox.sbd" / "Projets.mozmsgs").mkdir(parents=True)
    (profile / "Inbox").write_bytes(message)
    (profile / "Inbox.msf").write_bytes(b"// <!-- <mdb:mork:z v=\"1.4\"/> -->")
    (profile / "msgFilterRules.dat").write_text("version=\"9\"\n")
    (profile / "Trash").write_bytes(b"")  # an empty Thunderbird folder: its index says so
    (profile / "Trash.msf").write_bytes(b"// mork")
    (profile / "Inbox.sbd" / "Projets").write_bytes(message)
    (profile / "Inbox.sbd" / "Projets.mozmsgs" / "1.wdseml").write_bytes(b"x")
    (profile / "Vide").write_bytes(b"")
    (profile / "bruit.bin").write_bytes(bytes(range(256)))
    (profile / "notes.txt").write_text("Subject: pas un mbox\n")
    (profile / ".parent.lock").write_bytes(b"")
    (profile / ".cache").mkdir()
    (profile / ".cache" / "Inbox").write_bytes(message)
    (profile / "Courrier.msg").write_bytes(b"\xd0\xcf\x11\xe0")
    (profile / "Archive.pst").write_bytes(b"!BDN")
    (tmp_path / "outside.mbox").write_bytes(b"From x Thu Jan  4 10:00:00 2024\n" + OUTSIDE)
    os.symlink(SHADOW, profile / "Shadow")
    os.symlink(tmp_path / "outside.mbox", profile / "Inbox.sbd" / "Ailleurs")
    os.symlink(tmp_path, profile / "Lien.sbd")
    os.symlink("Inbox", profile / "Copie")  # inside the store
    source = MboxSource(profile)

    found, notes = _listed(source)

    assert list(found) == [("Inbox",), ("Inbox", "Projets"), ("Trash",)]
    assert found[("Inbox",)] == found[("Inbox", "Projets")] == [message.split(b"\n", 1)[1]]
    assert notes == {
        ("symlink_skipped", "Shadow", str(SHADOW)),
        ("symlink_skipped", "Inbox.sbd/Ailleurs", str(tmp_path / "outside.mbox")),
        ("symlink_skipped", "Lien.sbd", str(tmp_path)),
        ("symlink_skipped", "Copie", "Inbox"),
        ("empty_file_skipped", "Vide", ""),
        ("not_mbox_skipped", "bruit.bin", ""),
        ("not_mbox_skipped", "notes.txt", ""),
        ("hidden_file_skipped", ".parent.lock", ""),
        ("hidden_folder_skipped", ".cache", ""),
        ("outlook_msg_skipped", "Courrier.msg", ""),
        ("outlook_pst_skipped", "Archive.pst", ""),
    }
    _read_nothing_of(found)


def test_an_mbox_made_a_link_after_it_was_listed_is_not_read(tmp_path):
    profile = tmp_path / "profile"
    profile.mkdir()
    (profile / "Inbox").write_bytes(b"From a Thu Jan  4 10:00:00 2024\nSubject: un\n\nx\n")
    (tmp_path / "outside.mbox").write_bytes(b"From x Thu Jan  4 10:00:00 2024\n" + OUTSIDE)
    source = MboxSource(profile)
    [inbox] = source.containers()
    os.replace(profile / "Inbox", tmp_path / "moved")
    os.symlink(tmp_path / "outside.mbox", profile / "Inbox")

    listing = source.list_changes(inbox, None)

    assert listing.refs == []
    assert _notes(source) == {("symlink_skipped", "Inbox", str(tmp_path / "outside.mbox"))}


def test_a_single_mbox_file_that_is_not_one_is_reported(tmp_path):
    (tmp_path / "alice.mbox").write_bytes(os.urandom(64).replace(b"F", b"f"))
    (tmp_path / "vide.mbox").write_bytes(b"")

    noise = MboxSource(tmp_path / "alice.mbox")
    empty = MboxSource(tmp_path / "vide.mbox")

    assert noise.containers() == []
    assert _notes(noise) == {("not_mbox_skipped", "alice.mbox", "")}
    assert [c.path for c in empty.containers()] == [("INBOX",)]
    assert _notes(empty) == set()


def test_an_eml_tree_follows_no_link_and_reports_every_other_file(tmp_path, corpus):
    root = tmp_path / "export"
    (root / "Projets" / ".vignettes").mkdir(parents=True)
    raw = corpus[0].messages[0].raw
    (root / "premier.eml").write_bytes(raw)
    (root / "Projets" / "second.EML").write_bytes(raw)
    (root / "Projets" / "Réunion.msg").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1")
    (root / "Archive.pst").write_bytes(b"!BDN")
    (root / "notes.txt").write_text("pas un message")
    (root / "vide.eml").write_bytes(b"")
    (root / "bruit.eml").write_bytes(bytes(range(256)))
    (root / "._premier.eml").write_bytes(b"\0\5\26\7")  # macOS AppleDouble
    (root / "Projets" / ".vignettes" / "a.eml").write_bytes(raw)
    (tmp_path / "outside.eml").write_bytes(OUTSIDE)
    os.symlink(SHADOW, root / "shadow.eml")
    os.symlink(tmp_path / "outside.eml", root / "Projets" / "ailleurs.eml")
    os.symlink(tmp_path, root / "Dossier lié")
    os.symlink("premier.eml", root / "copie.eml")  # inside the store
    source = EmlSource(root)

    found, notes = _listed(source)

    assert found == {("INBOX",): [raw], ("Projets",): [raw]}
    assert notes == {
        ("symlink_skipped", "shadow.eml", str(SHADOW)),
        ("symlink_skipped", "Projets/ailleurs.eml", str(tmp_path / "outside.eml")),
        ("symlink_skipped", "Dossier lié", str(tmp_path)),
        ("symlink_skipped", "copie.eml", "premier.eml"),
        ("outlook_msg_skipped", "Projets/Réunion.msg", ""),
        ("outlook_pst_skipped", "Archive.pst", ""),
        ("not_eml_skipped", "notes.txt", ""),
        ("empty_file_skipped", "vide.eml", ""),
        ("not_a_message_skipped", "bruit.eml", ""),
        ("hidden_file_skipped", "._premier.eml", ""),
        ("hidden_folder_skipped", "Projets/.vignettes", ""),
    }
    _read_nothing_of(found)
    assert list(source.fetch(source.containers()[0], ["shadow.eml"])) == []
    assert _notes(source) == {("symlink_skipped", "shadow.eml", str(SHADOW))}


@pytest.mark.parametrize("mask", [0o000, 0o277], ids=["open", "owner-bits-too"])
def test_a_maildir_target_is_private_whatever_the_umask(tmp_path, corpus, mask):
    target = tmp_path / "target" / "alice"
    with umask(mask):
        write_maildir(target, corpus)
        sink = MaildirSink(target)
        native = sink.ensure_container(("Projets", "Nouveau"))
        list(sink.put_many(native, as_messages(corpus[0].messages[:2])))
        stored = next(sink.inventory(native))
        sink.set_flags(native, stored.target_ref, frozenset({"\\Seen", "Projet"}))

    written = modes(tmp_path / "target")
    assert not_private(tmp_path / "target") == {}
    assert {"alice/cur", "alice/tmp", "alice/subscriptions", "alice/dovecot-keywords",
            "alice/.Projets.Nouveau/maildirfolder",
            "alice/.Projets.Nouveau/dovecot-keywords"} <= set(written)
    assert sum(1 for path in written if "/cur/" in path) == sum(
        len(f.messages) for f in corpus) + 2
