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

from connectors.base import ContainerRefused, Message, fingerprint_bytes
from connectors.local import EmlSource, MaildirSink, MaildirSource, MboxSource
from migrate.matching import TargetIndex
from tests.corpus import CorpusFolder, as_messages, build_corpus, write_maildir
from tests.dovecot import start_dovecot

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
