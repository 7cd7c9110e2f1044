"""The IMAP source against a real Dovecot: folders, listings, deltas, bodies, logins."""

from __future__ import annotations

import hashlib
import imaplib
import logging
import os
import socket
import subprocess
import tracemalloc
from datetime import datetime, timedelta, timezone

import imapclient
import pytest

from connectors.base import ConnectError, Container
from connectors.imap.session import ImapCredentials, ImapEndpoint, connect
from connectors.imap.sink import ImapSink
from connectors.imap.source import ImapSource
from tests.dovecot import Dovecot

EXCHANGE_ONLINE_CAPABILITY = (
    "IMAP4 IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2 SASL-IR UIDPLUS ID UNSELECT CHILDREN IDLE NAMESPACE"
)
"""What outlook.office365.com advertises after login: no CONDSTORE, QRESYNC, MULTIAPPEND,
LITERAL+ or SPECIAL-USE."""

PARIS_SUMMER = timezone(timedelta(hours=2))
MUMBAI = timezone(timedelta(hours=5, minutes=30))


def endpoint(server: Dovecot) -> ImapEndpoint:
    return ImapEndpoint(server.host, server.port, security="none", timeout=30)


def source_for(server: Dovecot, user: str = "alice") -> ImapSource:
    return ImapSource(endpoint(server), ImapCredentials(user, server.users[user]))


def mailbox(server: Dovecot, user: str = "alice") -> imapclient.IMAPClient:
    client = imapclient.IMAPClient(server.host, server.port, ssl=False)
    client.login(user, server.users[user])
    client.normalise_times = False
    return client


def message(subject: str, body: str = "Bonjour.\r\n", message_id: str | None = None) -> bytes:
    message_id = message_id or f"<{hashlib.sha1(subject.encode()).hexdigest()}@ville.example>"
    return (
        "From: Mairie <mairie@ville.example>\r\n"
        "To: Alice <alice@ville.example>\r\n"
        f"Subject: {subject}\r\n"
        f"Message-ID: {message_id}\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        f"{body}"
    ).encode()


def append(
    client: imapclient.IMAPClient,
    folder: str,
    raw: bytes,
    flags: tuple[str, ...] = (),
    when: datetime | None = None,
) -> int:
    response = client.append(folder, raw, flags=flags, msg_time=when)
    return int(response.split(b"APPENDUID ")[1].split(b"]")[0].split()[1])


def container(source: ImapSource, *path: str) -> Container:
    return next(c for c in source.containers() if c.path == path)


def sha256(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def by_id(refs: list) -> dict:
    return {ref.source_id: ref for ref in refs}


def test_containers_have_paths_roles_and_parents_first(dovecot: Dovecot) -> None:
    client = mailbox(dovecot)
    for name in ("Éléments envoyés", "R&D", "Projets/2024/Été", "Projets/2024/Hiver", "Projets"):
        client.create_folder(name)
    client.logout()

    source = source_for(dovecot)
    found = source.containers()
    source.close()

    roles = {c.path: c.role for c in found}
    assert roles == {
        ("INBOX",): "inbox",
        ("Sent",): "sent",
        ("Drafts",): "drafts",
        ("Trash",): "trash",
        ("Junk",): "junk",
        ("Archive",): "archive",
        ("Éléments envoyés",): None,
        ("R&D",): None,
        ("Projets",): None,
        ("Projets", "2024", "Été"): None,
        ("Projets", "2024", "Hiver"): None,
    }
    paths = [c.path for c in found]
    assert paths.index(("Projets",)) < paths.index(("Projets", "2024", "Été"))
    assert paths.index(("Projets",)) < paths.index(("Projets", "2024", "Hiver"))
    assert {c.native_name for c in found} >= {"Éléments envoyés", "R&D", "Projets/2024/Été"}


def test_containers_with_dot_separator(dovecot_factory) -> None:
    server = dovecot_factory({"alice": "alice-pw"}, separator=".")
    client = mailbox(server)
    client.create_folder("Projets.Été")
    client.create_folder("Projets")
    client.logout()

    source = source_for(server)
    paths = [c.path for c in source.containers()]
    source.close()

    assert ("Projets", "Été") in paths
    assert paths.index(("Projets",)) < paths.index(("Projets", "Été"))


def test_listing_and_fetch_keep_bytes_flags_and_dates(dovecot: Dovecot) -> None:
    client = mailbox(dovecot)
    client.create_folder("Éléments envoyés")
    seeded = {
        "flagged": (
            message("=?utf-8?q?R=C3=A9union_du_conseil?=", message_id="<conseil@ville.example>"),
            ("\\Flagged", "\\Seen", "$label1"),
            datetime(2024, 6, 3, 9, 15, 0, tzinfo=PARIS_SUMMER),
        ),
        "unread": (message("Budget 2025"), (), datetime(2023, 12, 1, 23, 59, 1, tzinfo=MUMBAI)),
        "answered": (message("Re: voirie"), ("\\Answered", "Urgent"), None),
    }
    uids = {
        key: append(client, "Éléments envoyés", raw, flags, when)
        for key, (raw, flags, when) in seeded.items()
    }
    client.logout()

    source = source_for(dovecot)
    folder = container(source, "Éléments envoyés")
    listing = source.list_changes(folder, None)
    assert listing.complete and not listing.reset
    refs = by_id(listing.refs)
    uidvalidity = listing.cursor["uidvalidity"]
    ids = {key: f"{uidvalidity}:{uid}" for key, uid in uids.items()}
    assert set(refs) == set(ids.values())
    assert refs[ids["flagged"]].flags == {"\\Flagged", "\\Seen", "$label1"}
    assert refs[ids["unread"]].flags == frozenset()
    assert refs[ids["answered"]].flags == {"\\Answered", "Urgent"}
    assert refs[ids["flagged"]].size == len(seeded["flagged"][0])

    fetched = {m.source_id: m for m in source.fetch(folder, list(ids.values()))}
    source.close()

    for key, (raw, flags, when) in seeded.items():
        got = fetched[ids[key]]
        with got.open() as body:
            assert body.read() == raw
        assert got.fingerprint == sha256(raw)
        assert got.size == len(raw)
        assert got.flags == refs[ids[key]].flags
        if when is not None:
            # Maildir keeps the instant (as the file's mtime), not the offset.
            assert got.internal_date == when
    assert fetched[ids["flagged"]].subject == "Réunion du conseil"
    assert fetched[ids["flagged"]].message_id == "<conseil@ville.example>"

    client = mailbox(dovecot)
    client.select_folder("Éléments envoyés", readonly=True)
    assert b"\\Seen" not in client.get_flags([uids["unread"]])[uids["unread"]]
    client.logout()


def test_large_message_is_streamed_in_chunks(dovecot: Dovecot) -> None:
    line = (os.urandom(57).hex()[:76] + "\r\n").encode("ascii")
    raw = message("Plan local d'urbanisme", body="") + line * (40 * 1024 * 1024 // len(line))
    client = mailbox(dovecot)
    uid = append(client, "INBOX", raw)
    client.logout()

    source = source_for(dovecot)
    inbox = container(source, "INBOX")
    uidvalidity = source.list_changes(inbox, None).cursor["uidvalidity"]
    tracemalloc.start()
    try:
        (got,) = list(source.fetch(inbox, [f"{uidvalidity}:{uid}"]))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    source.close()

    assert got.size == len(raw)
    digest = hashlib.sha256()
    with got.open() as body:
        while chunk := body.read(1 << 20):
            digest.update(chunk)
    assert "sha256:" + digest.hexdigest() == sha256(raw)
    assert peak < len(raw) // 2, f"fetching held {peak} bytes for a {len(raw)}-byte message"


def test_many_small_messages_fetched_and_ids_of_other_epochs_skipped(dovecot: Dovecot) -> None:
    client = mailbox(dovecot)
    raws = [message(f"Délibération {n}", body="x" * (n * 997)) for n in range(60)]
    for raw in raws:
        append(client, "INBOX", raw)
    client.logout()

    source = source_for(dovecot)
    inbox = container(source, "INBOX")
    listing = source.list_changes(inbox, None)
    ids = [ref.source_id for ref in listing.refs]
    uidvalidity = listing.cursor["uidvalidity"]
    asked = [*ids, f"{uidvalidity + 1}:1", f"{uidvalidity}:9999", "garbage"]
    fetched = list(source.fetch(inbox, asked))
    source.close()

    assert sorted(m.source_id for m in fetched) == sorted(ids)
    assert sorted(m.fingerprint for m in fetched) == sorted(sha256(raw) for raw in raws)


def test_bodies_never_reach_the_log_even_at_debug_level(dovecot: Dovecot, caplog) -> None:
    """imapclient turns imaplib's debug messages on, and imaplib builds each of them, the
    ``repr`` of every body fetched, before any logger can drop it: the source turns them off
    (the CPU of a large copy, and message content never in a log)."""
    client = mailbox(dovecot)
    raw = message("Dossier confidentiel", body="Mot-repère XQ7-4471, à ne pas journaliser.\r\n")
    append(client, "INBOX", raw)
    client.logout()
    caplog.set_level(logging.DEBUG)
    source = source_for(dovecot)
    inbox = container(source, "INBOX")
    listing = source.list_changes(inbox, None)
    [fetched] = source.fetch(inbox, [ref.source_id for ref in listing.refs])
    source.close()

    assert fetched.fingerprint == sha256(raw)
    assert caplog.records, "the debug lines of imapclient itself are still logged"
    assert not [r for r in caplog.records if "XQ7-4471" in r.getMessage()]


def test_delta_with_condstore(dovecot: Dovecot) -> None:
    client = mailbox(dovecot)
    first = append(client, "INBOX", message("Premier"))
    second = append(client, "INBOX", message("Second"))

    source = source_for(dovecot)
    inbox = container(source, "INBOX")
    initial = source.list_changes(inbox, None)
    assert "highestmodseq" in initial.cursor

    unchanged = source.list_changes(inbox, initial.cursor)
    assert unchanged.refs == [] and not unchanged.complete and not unchanged.reset
    assert unchanged.cursor == initial.cursor

    third = append(client, "INBOX", message("Troisième"))
    arrived = source.list_changes(inbox, unchanged.cursor)
    uidvalidity = initial.cursor["uidvalidity"]
    assert [r.source_id for r in arrived.refs] == [f"{uidvalidity}:{third}"]
    assert not arrived.complete

    client.select_folder("INBOX")
    client.add_flags([first], ["\\Seen", "$Projet"])
    reflagged = source.list_changes(inbox, arrived.cursor)
    assert {r.source_id: r.flags for r in reflagged.refs} == {
        f"{uidvalidity}:{first}": {"\\Seen", "$Projet"}
    }

    client.delete_messages([second])
    client.expunge()
    client.logout()
    after_expunge = source.list_changes(inbox, reflagged.cursor)
    source.close()
    assert after_expunge.complete
    assert {r.source_id for r in after_expunge.refs} == {
        f"{uidvalidity}:{first}",
        f"{uidvalidity}:{third}",
    }


def test_folder_list_gives_each_folder_the_cursor_its_listing_would(dovecot: Dovecot) -> None:
    """With LIST-STATUS the folder list carries each folder's state: equal to the cursor a
    listing answers, and changed by a new message, a flag change or an expunge."""
    client = mailbox(dovecot)
    for name in ("Réunions/Été 2025", "Suivi & relances", "Vide", "[Archives", "2024",
                 'Projet (2024) "final"', "Dossier\\partagé"):
        client.create_folder(name)
    first = append(client, "Réunions/Été 2025", message("Ordre du jour"))
    append(client, "Suivi & relances", message("Relance"))

    source = source_for(dovecot)
    listed = {c.path: c for c in source.containers()}
    assert listed[("Vide",)].state is not None and listed[("Vide",)].count == 0
    assert listed[("Suivi & relances",)].count == 1
    assert all(folder.state is not None for folder in listed.values())
    cursors = {path: source.list_changes(folder, None).cursor for path, folder in listed.items()}
    assert {path: folder.state for path, folder in listed.items()} == cursors
    assert "highestmodseq" in cursors[("Réunions", "Été 2025")]

    client.select_folder("Réunions/Été 2025")
    client.add_flags([first], ["\\Flagged"])
    append(client, "Suivi & relances", message("Seconde relance"))
    client.select_folder("INBOX")
    append(client, "INBOX", message("Supprimé"))
    client.delete_messages(client.search("ALL"))
    client.expunge()
    client.logout()
    later = {c.path: c.state for c in source.containers()}
    source.close()
    changed = {path for path in listed if later[path] != cursors[path]}
    assert changed == {("Réunions", "Été 2025"), ("Suivi & relances",), ("INBOX",)}


def test_a_first_listing_examines_and_lists_in_one_round_trip(dovecot: Dovecot,
                                                              monkeypatch) -> None:
    """A folder the folder list says holds messages: its EXAMINE and its ``UID FETCH 1:*``
    leave before either answer is read. One emptied or removed since the folder list is
    listed empty or raises, as a separate EXAMINE would."""
    client = mailbox(dovecot)
    names = ['Projet (2024) "final"', "Dossier\\partagé", "Vidé depuis", "Supprimé depuis"]
    for name in names:
        client.create_folder(name)
        append(client, name, message(f"Dans {name}"))
    source = source_for(dovecot)
    listed = {c.path: c for c in source.containers()}
    client.select_folder("Vidé depuis")
    client.delete_messages(client.search("ALL"))
    client.expunge()
    client.delete_folder("Supprimé depuis")
    client.logout()
    events: list[str] = []
    send, tagged = imaplib.IMAP4.send, imaplib.IMAP4._get_tagged_response
    monkeypatch.setattr(imaplib.IMAP4, "send", lambda self, data: (
        events.append((data.split(b" ") + [b""])[1].decode()), send(self, data))[1])
    monkeypatch.setattr(imaplib.IMAP4, "_get_tagged_response", lambda self, tag, **kw: (
        events.append("answer"), tagged(self, tag, **kw))[1])

    listing = source.list_changes(listed[('Projet (2024) "final"',)], None)
    # The connection's first listing: CONDSTORE is enabled in the same round trip, and the
    # folder being small, its bodies are read in it too.
    assert events[-8:] == ["ENABLE", "EXAMINE", "UID", "FETCH"] + ["answer"] * 4
    assert "highestmodseq" in listing.cursor
    [ref] = listing.refs
    assert listing.complete and listing.cursor == listed[('Projet (2024) "final"',)].state
    events.clear()
    [fetched] = source.fetch(listed[('Projet (2024) "final"',)], [ref.source_id])
    assert fetched.subject == 'Dans Projet (2024) "final"'
    assert events == []
    assert len(source.list_changes(listed[("Dossier\\partagé",)], None).refs) == 1
    assert events == ["EXAMINE", "UID", "FETCH", "answer", "answer", "answer"]
    emptied = source.list_changes(listed[("Vidé depuis",)], None)
    assert emptied.complete and emptied.refs == [] and emptied.cursor["exists"] == 0
    with pytest.raises(imapclient.exceptions.IMAPClientError):
        source.list_changes(listed[("Supprimé depuis",)], None)
    # The connection is still in step: the next folder is listed on it.
    assert len(source.list_changes(listed[("Dossier\\partagé",)], None).refs) == 1
    source.close()


def test_a_small_folder_is_read_with_its_listing_within_its_bound(
        dovecot: Dovecot, monkeypatch) -> None:
    """A folder the folder list says is small has its bodies read with its listing: as
    many as that list counted, each up to an equal share of a bound, so that what is read
    stays under it whatever the folder became. A body cut at its share, and a message that
    arrived since, are fetched as any other; a folder over the size for that is listed
    without its bodies. Every body reaches the fetch whole."""
    from connectors.imap import source as source_module

    client = mailbox(dovecot)
    for name in ("Petit", "Deux", "Gros"):
        client.create_folder(name)
    avant, court, long = (message("Avant"), message("Court"), message("Long", body="z" * 1200))
    append(client, "Petit", avant)
    append(client, "Deux", court)
    append(client, "Deux", long)
    append(client, "Gros", message("Gros", body="x" * 3000))
    source = source_for(dovecot)
    monkeypatch.setattr(source_module, "SMALL_FOLDER_BYTES", 2000)
    monkeypatch.setattr(source_module, "LISTED_BODIES_BYTES", 2000)
    listed = {c.path: c for c in source.containers()}
    assert listed[("Deux",)].size < 2000 < listed[("Gros",)].size
    apres = message("Apres", body="y" * 5000)
    append(client, "Petit", apres)
    client.logout()
    events: list[str] = []
    send = imaplib.IMAP4.send
    monkeypatch.setattr(imaplib.IMAP4, "send", lambda self, data: (
        events.append(data.decode("utf-8", "replace").split(" ", 1)[1].strip()),
        send(self, data))[1])

    def copied(path: tuple[str, ...], expected: list[bytes], asked_again: list[str]) -> None:
        events.clear()
        listing = source.list_changes(listed[path], None)
        share = 2000 // listed[path].count
        assert [e for e in events if "BODY.PEEK[]" in e] == [
            f"FETCH 1:{listed[path].count} (UID BODY.PEEK[]<0.{share}>)"]
        events.clear()
        fetched = list(source.fetch(listed[path], [r.source_id for r in listing.refs]))
        assert [e for e in events if "BODY.PEEK[]" in e] == asked_again
        got = []
        for item in fetched:
            with item.open() as body:
                got.append(body.read())
        assert got == expected

    copied(("Petit",), [avant, apres], ["UID FETCH 2 (BODY.PEEK[])"])
    copied(("Deux",), [court, long], ["UID FETCH 2 (BODY.PEEK[])"])
    events.clear()
    big = source.list_changes(listed[("Gros",)], None)
    assert not [e for e in events if "BODY.PEEK[]" in e]
    [gros] = source.fetch(listed[("Gros",)], [big.refs[0].source_id])
    assert gros.subject == "Gros"
    source.close()


@pytest.mark.parametrize("separator", ["/", "."])
def test_the_separator_comes_from_the_folder_list(dovecot_factory, monkeypatch,
                                                   separator) -> None:
    """Both sides list every folder anyway: INBOX's line gives the separator, without a
    ``LIST "" ""`` of its own on each connection."""
    server = dovecot_factory({"alice": "alice-pw"}, separator=separator)
    client = mailbox(server)
    client.create_folder(f"Projets{separator}Voirie")
    client.logout()
    sent: list[bytes] = []
    send = imaplib.IMAP4.send
    monkeypatch.setattr(imaplib.IMAP4, "send",
                        lambda self, data: (sent.append(data), send(self, data))[1])
    source = source_for(server)
    paths = {c.path for c in source.containers()}
    sink = ImapSink(endpoint(server), ImapCredentials("alice", "alice-pw"))
    try:
        assert sink.capabilities.separator == separator
        assert sink.native_name(("Projets", "Voirie")) == f"Projets{separator}Voirie"
    finally:
        sink.close()
        source.close()
    assert ("Projets", "Voirie") in paths
    assert not [line for line in sent if b'LIST "" ""' in line]


def test_folder_list_without_list_status_carries_no_state(dovecot_factory) -> None:
    server = dovecot_factory({"alice": "alice-pw"}, capability=EXCHANGE_ONLINE_CAPABILITY)
    source = source_for(server)
    states = {c.path: c.state for c in source.containers()}
    source.close()
    assert states and set(states.values()) == {None}


def test_delta_without_condstore_lists_everything_with_flags(dovecot_factory) -> None:
    server = dovecot_factory({"alice": "alice-pw"}, capability=EXCHANGE_ONLINE_CAPABILITY)
    client = mailbox(server)
    first = append(client, "INBOX", message("Premier"))
    append(client, "INBOX", message("Second"))

    source = source_for(server)
    inbox = container(source, "INBOX")
    initial = source.list_changes(inbox, None)
    assert "highestmodseq" not in initial.cursor

    client.select_folder("INBOX")
    client.add_flags([first], ["\\Flagged"])
    client.logout()
    later = source.list_changes(inbox, initial.cursor)
    source.close()

    uidvalidity = initial.cursor["uidvalidity"]
    assert later.complete and not later.reset
    assert len(later.refs) == 2
    assert by_id(later.refs)[f"{uidvalidity}:{first}"].flags == {"\\Flagged"}


def test_recreated_folder_resets_the_epoch(dovecot: Dovecot) -> None:
    client = mailbox(dovecot)
    client.create_folder("Archives 2019")
    old_uid = append(client, "Archives 2019", message("Ancien"))

    source = source_for(dovecot)
    folder = container(source, "Archives 2019")
    before = source.list_changes(folder, None)

    client.delete_folder("Archives 2019")
    client.create_folder("Archives 2019")
    new_uid = append(client, "Archives 2019", message("Nouveau"))
    client.logout()
    after = source.list_changes(folder, before.cursor)

    assert after.reset and after.complete
    assert after.cursor["uidvalidity"] != before.cursor["uidvalidity"]
    assert [r.source_id for r in after.refs] == [f"{after.cursor['uidvalidity']}:{new_uid}"]
    stale = f"{before.cursor['uidvalidity']}:{old_uid}"
    assert list(source.fetch(folder, [stale])) == []
    source.close()


def test_source_reconnects_after_the_server_drops_it(dovecot: Dovecot) -> None:
    client = mailbox(dovecot)
    uid = append(client, "INBOX", message("Avant coupure"))
    client.logout()
    source = source_for(dovecot)
    inbox = container(source, "INBOX")
    cursor = source.list_changes(inbox, None).cursor

    kicked = subprocess.run(
        ["doveadm", "-c", str(dovecot.root / "dovecot.conf"), "kick", "alice"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "alice" in kicked.stdout

    (got,) = list(source.fetch(inbox, [f"{cursor['uidvalidity']}:{uid}"]))
    source.close()
    assert got.fingerprint == sha256(message("Avant coupure"))


def test_wrong_password_is_auth_failed(dovecot: Dovecot) -> None:
    with pytest.raises(ConnectError) as raised:
        connect(endpoint(dovecot), ImapCredentials("alice", "not-the-password"))
    assert raised.value.code == "auth_failed"
    assert "not-the-password" not in str(raised.value)


def test_closed_port_is_unreachable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConnectError) as raised:
        connect(
            ImapEndpoint("127.0.0.1", port, security="none", timeout=5),
            ImapCredentials("alice", "secret"),
        )
    assert raised.value.code == "unreachable"


def test_tls_against_a_plain_server_is_tls_failed(dovecot: Dovecot) -> None:
    with pytest.raises(ConnectError) as raised:
        connect(
            ImapEndpoint(dovecot.host, dovecot.port, security="tls", timeout=5),
            ImapCredentials("alice", dovecot.users["alice"]),
        )
    assert raised.value.code == "tls_failed"


def test_master_user_reads_another_mailbox(dovecot_factory) -> None:
    server = dovecot_factory({"alice": "alice-pw"}, master=("admin", "admin-pw"))
    client = mailbox(server)
    append(client, "INBOX", message("Pour Alice"))
    client.logout()

    by_master = ImapSource(endpoint(server), ImapCredentials("alice*admin", "admin-pw"))
    by_proxy = ImapSource(endpoint(server), ImapCredentials("admin", "admin-pw", authzid="alice"))
    for source in (by_master, by_proxy):
        inbox = container(source, "INBOX")
        ids = [r.source_id for r in source.list_changes(inbox, None).refs]
        assert [m.fingerprint for m in source.fetch(inbox, ids)] == [sha256(message("Pour Alice"))]
        source.close()
