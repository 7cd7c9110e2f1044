"""The IMAP sink against a real Dovecot: what lands on the target, byte for byte."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import io
import json
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import imapclient
import pytest
from imapclient import IMAPClient

from connectors.base import (
    ConnectError,
    ContainerRefused,
    ItemRejected,
    Message,
    SendUnconfirmed,
    computed_once,
    fingerprint_bytes,
)
from connectors.imap.append import (
    WINDOW_MESSAGES,
    AppendConnectionLost,
    AppendPipeline,
    AppendReceipt,
)
from connectors.imap.session import ImapCredentials, ImapEndpoint, connect
from connectors.imap.sink import DEAL_RUN_BYTES, AppendAllowance, ImapSink, _spread
from migrate.matching import TargetIndex
from tests import mailboxes
from tests.dovecot import Dovecot

ROOT = Path(__file__).resolve().parent.parent
PARIS_SUMMER = timezone(timedelta(hours=2))
EXCHANGE_LIKE = "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE"
"""What a server without LITERAL+ and UIDPLUS advertises."""


def make_message(raw: bytes, source_id: str = "s", flags: frozenset[str] = frozenset(),
                 internal_date: datetime | None = None) -> Message:
    return Message(source_id, fingerprint_bytes(raw), len(raw), flags, internal_date,
                   lambda: io.BytesIO(raw))


def plain(subject: str, body: str = "Bonjour.", message_id: str | None = "auto") -> bytes:
    headers = ["From: Amélie <amelie@ville-exemple.fr>", f"Subject: {subject}",
               "Date: Mon, 4 Mar 2024 10:00:00 +0100"]
    if message_id == "auto":
        headers.append(f"Message-ID: <{hashlib.sha1(subject.encode()).hexdigest()}@ville>")
    return ("\r\n".join(headers) + "\r\n\r\n" + body + "\r\n").encode()


def sink_for(server: Dovecot, user: str = "alice", **kwargs: object) -> ImapSink:
    endpoint = ImapEndpoint(server.host, server.port, security="none")
    return ImapSink(endpoint, ImapCredentials(user, server.users[user]), **kwargs)


def stored(server: Dovecot, native_name: str, target_ref: str, user: str = "alice") -> dict:
    """What the target holds under a ref, read with imapclient alone."""
    uidvalidity, uid = (int(part) for part in target_ref.split(":"))
    with mailboxes.client(server, user) as imap:
        imap.normalise_times = False
        status = imap.select_folder(native_name, readonly=True)
        assert status[b"UIDVALIDITY"] == uidvalidity
        row = imap.fetch([uid], ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"])[uid]
    return {
        "sha256": fingerprint_bytes(row[b"BODY[]"]),
        "body": row[b"BODY[]"],
        "flags": {f.decode() for f in row[b"FLAGS"]} - {"\\Recent"},
        "internal_date": row[b"INTERNALDATE"],
    }


def folder_count(server: Dovecot, native_name: str, user: str = "alice") -> int:
    with mailboxes.client(server, user) as imap:
        return imap.select_folder(native_name, readonly=True)[b"EXISTS"]


def test_bytes_flags_keywords_and_dates_are_kept(dovecot):
    rng = random.Random(1)
    attachment = base64.encodebytes(rng.randbytes(22 << 20)).replace(b"\n", b"\r\n")
    big = plain("Plans du chantier", "Voir la pièce jointe.") + attachment
    summer = datetime(2024, 7, 14, 9, 30, 5, tzinfo=PARIS_SUMMER)
    sources = [
        make_message(plain("Été 8-bit", "Déjà reçu, à l'œil.").replace(b"\xc3\xa9", b"\xe9"),
                     "latin1", frozenset({"\\Seen", "\\Answered"}), summer),
        make_message(plain("Sans identifiant", message_id=None), "no-id",
                     frozenset({"\\Flagged", "$label1", "Projet"}), summer),
        make_message(plain("Réponse", "Ligne 1\r\nLigne 2\r\n"), "crlf",
                     frozenset({"\\Draft", "\\Recent"}), datetime(2023, 1, 2, 3, 4, 5, tzinfo=UTC)),
        make_message(big, "large", frozenset({"\\Seen"}), summer),
    ]
    sink = sink_for(dovecot)
    try:
        name = sink.ensure_container(("Projets", "Été 2024 & co"))
        results = list(sink.put_many(name, sources))
    finally:
        sink.close()

    assert [r.source_id for r in results] == ["latin1", "no-id", "crlf", "large"]
    assert all(r.error is None and r.target_ref for r in results)
    for source, result in zip(sources, results, strict=True):
        held = stored(dovecot, "Projets/Été 2024 & co", result.target_ref)
        assert held["sha256"] == source.fingerprint, source.source_id
        assert held["flags"] == set(source.flags) - {"\\Recent"}
        assert held["internal_date"] == source.internal_date


def test_the_folder_list_counts_a_folder_it_does_not_hold_as_empty(dovecot):
    with mailboxes.client(dovecot, "alice") as imap:
        imap.create_folder("Archives")
        for raw in (b"Subject: a\r\n\r\na\r\n", b"Subject: b\r\n\r\nb\r\n"):
            imap.append("Archives", raw)
    sink = sink_for(dovecot)
    try:
        sink.ensure_containers([("Projets",)])  # lists the account first
        assert sink.listed_count("Archives") == 2
        assert sink.listed_count("inbox") == sink.listed_count("INBOX") == 0
        # Not in the list, no round trip: none of the account's sinks wrote there.
        assert sink.listed_count("Nouveau") == 0
        stored = list(sink.put_many("Projets", [make_message(plain("c"))]))
        assert stored[0].target_ref
        assert sink.listed_count("Projets") is None  # written since: the list no longer holds
    finally:
        sink.close()


@pytest.mark.parametrize("list_status", [True, False])
def test_inbox_is_selected_in_the_first_listing_s_round_trip(dovecot_factory, monkeypatch,
                                                             list_status):
    """INBOX's SELECT (for its PERMANENTFLAGS: whether keywords are kept) leaves with the
    first LIST where the server has LIST-STATUS, on the first APPEND connection, and no
    control connection is opened; elsewhere the control connection lists, then selects.
    The sink then works as before."""
    import imaplib

    from connectors.imap.append import AppendPipeline

    capability = None if list_status else (
        "IMAP4rev1 LITERAL+ UIDPLUS MULTIAPPEND SPECIAL-USE ENABLE CONDSTORE")
    server = dovecot_factory({"alice": "alice-pw"}, capability=capability)
    events: list[str] = []
    send, tagged = imaplib.IMAP4.send, imaplib.IMAP4._get_tagged_response
    monkeypatch.setattr(imaplib.IMAP4, "send", lambda self, data: (
        events.append((data.split(b" ") + [b""])[1].decode().strip()), send(self, data))[1])
    monkeypatch.setattr(imaplib.IMAP4, "_get_tagged_response", lambda self, tag, **kw: (
        events.append("answer"), tagged(self, tag, **kw))[1])
    sent: list[bytes] = []
    pipeline_send = AppendPipeline._send
    monkeypatch.setattr(AppendPipeline, "_send", lambda self, data: (
        sent.append(bytes(data)), pipeline_send(self, data))[1])
    sink = sink_for(server)
    try:
        assert sink.capabilities.keywords is True
        if list_status:
            assert events == []  # no control connection
            [burst] = [data for data in sent if b" LIST " in data]
            assert [line.split(b" ")[1] for line in burst.splitlines()] == [
                b"LIST", b"SELECT", b"UNSELECT"]
            assert ("INBOX",) == sink.capabilities.special_folders["inbox"]
        else:
            listed = events[events.index("LIST"):]
            assert listed[:4] == ["LIST", "answer", "SELECT", "answer"]
        native = sink.ensure_container(("Projets",))
        [result] = list(sink.put_many(native, [make_message(
            plain("Après", "Corps."), "un", frozenset({"Projet"}), datetime(2024, 1, 2, tzinfo=UTC))]))
        assert result.error is None and result.target_ref
    finally:
        sink.close()
    assert "Projet" in stored(server, "Projets", result.target_ref)["flags"]


def test_lf_only_message_lands_with_crlf_line_ends(dovecot):
    """IMAP carries CRLF lines: Dovecot stores a bare-LF message and serves it with CRLF."""
    raw = b"Subject: lignes Unix\n\nune\ndeux\n"
    sink = sink_for(dovecot)
    try:
        [result] = sink.put_many("INBOX", [make_message(raw, "lf")])
    finally:
        sink.close()
    assert stored(dovecot, "INBOX", result.target_ref)["body"] == raw.replace(b"\n", b"\r\n")


@pytest.mark.parametrize("separator", ["/", "."])
def test_folders_follow_the_server_separator(dovecot_factory, separator):
    server = dovecot_factory({"alice": "pw"}, separator=separator)
    sink = sink_for(server)
    try:
        capabilities = sink.capabilities
        name = sink.ensure_container(("Archives", "Conseil & élus", "2024"))
        assert sink.ensure_container(("Archives", "Conseil & élus", "2024")) == name
        [result] = sink.put_many(name, [make_message(plain("rangé"), "1")])
        with pytest.raises(ContainerRefused):
            sink.ensure_container(("Archives", f"a{separator}b"))
    finally:
        sink.close()

    assert capabilities.separator == separator
    assert capabilities.special_folders["sent"] == ("Sent",)
    assert capabilities.special_folders["inbox"] == ("INBOX",)
    assert capabilities.keywords is True
    assert name == separator.join(("Archives", "Conseil & élus", "2024"))
    assert result.error is None
    with mailboxes.client(server, "alice") as imap:
        listed = {folder for _, _, folder in imap.list_folders()}
        subscribed = {folder for _, _, folder in imap.list_sub_folders()}
    parents = {"Archives", f"Archives{separator}Conseil & élus", name}
    assert parents <= listed
    assert parents <= subscribed
    assert f"Archives{separator}a" not in listed
    assert stored(server, name, result.target_ref)["sha256"] == fingerprint_bytes(plain("rangé"))


def test_appends_are_pipelined_and_answered_in_order(dovecot):
    opened: list[int] = []
    answered_after_opens: list[int] = []

    def numbered(i: int) -> Message:
        raw = plain(f"Message {i}", "x" * (i % 50))

        def open_body() -> io.BytesIO:
            opened.append(i)
            return io.BytesIO(raw)

        return Message(str(i), fingerprint_bytes(raw), len(raw), frozenset(), None, open_body)

    sink = sink_for(dovecot)
    try:
        results = []
        for result in sink.put_many("INBOX", (numbered(i) for i in range(300))):
            answered_after_opens.append(len(opened))
            results.append(result)
    finally:
        sink.close()

    assert [r.source_id for r in results] == [str(i) for i in range(300)]
    assert all(r.error is None for r in results)
    uids = [int(r.target_ref.split(":")[1]) for r in results]
    assert uids == sorted(set(uids))
    # Pipelining: when the first answer came back, many later messages were already sent.
    assert answered_after_opens[0] > 10
    assert folder_count(dovecot, "INBOX") == 300


def test_several_connections_share_the_stream_and_answer_in_order(dovecot):
    sources = [make_message(plain(f"Message {i}", "w" * i), str(i)) for i in range(200)]
    sink = sink_for(dovecot, connections=3)
    try:
        results = list(sink.put_many("INBOX", sources))
    finally:
        sink.close()

    assert [r.source_id for r in results] == [str(i) for i in range(200)]
    assert len({r.target_ref for r in results}) == 200
    for result, source in zip(results[::37], sources[::37], strict=True):
        assert stored(dovecot, "INBOX", result.target_ref)["sha256"] == source.fingerprint
    assert folder_count(dovecot, "INBOX") == 200
    assert dovecot.log.count("Login: user=<alice>") >= 4  # 3 pipelines and the session


def test_too_big_message_is_rejected_and_the_next_ones_land(dovecot_factory):
    server = dovecot_factory({"alice": "pw"}, max_mail_size=20_000)
    sources = [make_message(plain(f"petit {i}"), str(i)) for i in range(3)]
    sources.insert(1, make_message(plain("gros", "y" * 50_000), "big"))
    sink = sink_for(server)
    try:
        results = list(sink.put_many("INBOX", sources))
    finally:
        sink.close()

    assert [r.source_id for r in results] == ["0", "big", "1", "2"]
    assert isinstance(results[1].error, ItemRejected)
    assert results[1].error.code == "too_big"
    assert results[1].error.detail
    for result, source in zip(results, sources, strict=True):
        if source.source_id != "big":
            assert stored(server, "INBOX", result.target_ref)["sha256"] == source.fingerprint
    assert folder_count(server, "INBOX") == 3


def test_without_literal_plus_and_uidplus_refs_are_resolved(dovecot_factory):
    server = dovecot_factory({"alice": "pw"}, capability=EXCHANGE_LIKE)
    twin = plain("jumeau")
    same_size = [plain(f"taille {c}") for c in "ABCDEFGHIJ"]
    raws = [twin, *same_size, twin, plain("différent", "z" * 300)]
    sources = [make_message(raw, str(i), frozenset({"\\Seen"})) for i, raw in enumerate(raws)]
    sink = sink_for(server)
    try:
        results = list(sink.put_many("INBOX", sources))
    finally:
        sink.close()

    refs = [r.target_ref for r in results]
    assert all(refs) and len(set(refs)) == len(refs)
    for result, source in zip(results, sources, strict=True):
        assert stored(server, "INBOX", result.target_ref)["sha256"] == source.fingerprint


def test_target_index_claims_each_stored_copy_once_and_skips_claimed_ones(dovecot):
    raw = plain("deux fois le même")
    sink = sink_for(dovecot)
    try:
        results = list(sink.put_many("INBOX", [
            make_message(plain("autre"), "0"), make_message(raw, "1"), make_message(raw, "2"),
            make_message(raw, "3")]))
        other, first, second, third = (r.target_ref for r in results)
        fingerprint = fingerprint_bytes(raw)
        assert sink.count("INBOX") == 4
        assert sink.count("Absent") == 0
        assert dict(sink.fingerprints("INBOX", [first, "1:99999"])) == {first: fingerprint}

        index = TargetIndex(sink, "INBOX", claimed={third})
        assert index.unclaimed == 3
        assert index.claim(fingerprint, len(raw) + 1) is None
        claims = [index.claim(fingerprint, len(raw)) for _ in range(3)]
        assert {c.target_ref for c in claims[:2] if c} == {first, second}
        assert claims[2] is None
        assert index.claim(fingerprint_bytes(b"absent"), len(raw)) is None
        assert index.unclaimed == 1 and other
    finally:
        sink.close()


def test_inventory_reports_sizes_flags_dates_and_fingerprints(dovecot):
    large = plain("pièce jointe", ("A" * 76 + "\r\n") * 40_000)
    sources = [
        make_message(plain("un"), "1", frozenset({"\\Seen", "$label2"}),
                     datetime(2024, 3, 31, 1, 59, tzinfo=PARIS_SUMMER)),
        make_message(large, "2", frozenset(), datetime(2022, 12, 1, tzinfo=UTC)),
    ]
    sink = sink_for(dovecot)
    try:
        name = sink.ensure_container(("Inventaire",))
        results = list(sink.put_many(name, sources))
        items = list(sink.inventory(name, fingerprints=True))
        without = list(sink.inventory(name))
    finally:
        sink.close()

    assert [i.target_ref for i in items] == [r.target_ref for r in results]
    for item, source in zip(items, sources, strict=True):
        assert item.fingerprint == source.fingerprint
        assert item.size == source.size
        assert item.flags == source.flags
        assert item.internal_date == source.internal_date
    assert len(large) > 2 << 20
    assert [i.fingerprint for i in without] == [None, None]


def test_set_flags_replaces_flags_and_refuses_a_stale_ref(dovecot):
    sink = sink_for(dovecot)
    try:
        [result] = sink.put_many("INBOX", [make_message(plain("drapeaux"), "1",
                                                        frozenset({"\\Seen", "$label1"}))])
        sink.set_flags("INBOX", result.target_ref, frozenset({"\\Flagged", "Urgent"}))
        uid = result.target_ref.split(":")[1]
        with pytest.raises(ItemRejected):
            sink.set_flags("INBOX", f"1:{uid}", frozenset({"\\Seen"}))
    finally:
        sink.close()
    assert stored(dovecot, "INBOX", result.target_ref)["flags"] == {"\\Flagged", "Urgent"}


def test_login_with_quoted_characters_and_as_another_user(dovecot_factory):
    server = dovecot_factory({"alice": 'p"a\\ss {3} %*', "bob": "x"},
                             master=("admin", "admin-pw"))
    own = sink_for(server)
    endpoint = ImapEndpoint(server.host, server.port, security="none")
    proxied = ImapSink(endpoint, ImapCredentials("admin", "admin-pw", authzid="bob"))
    try:
        [mine] = own.put_many("INBOX", [make_message(plain("à Alice"), "a")])
        [theirs] = proxied.put_many("INBOX", [make_message(plain("à Bob"), "b")])
    finally:
        own.close()
        proxied.close()
    assert stored(server, "INBOX", mine.target_ref)["sha256"] == fingerprint_bytes(plain("à Alice"))
    assert stored(server, "INBOX", theirs.target_ref, user="bob")["sha256"] == fingerprint_bytes(
        plain("à Bob"))


def test_append_pipeline_logs_in_with_an_8bit_password(dovecot_factory):
    """Sent as a literal: a quoted string cannot carry 8-bit characters."""
    password = "mot de passe à l'été"
    server = dovecot_factory({"alice": password})
    endpoint = ImapEndpoint(server.host, server.port, security="none")
    pipeline = AppendPipeline(endpoint, ImapCredentials("alice", password))
    try:
        [(_, receipt)] = pipeline.append("INBOX", [make_message(plain("accents"), "1")])
    finally:
        pipeline.logout()
    assert receipt.error is None
    with IMAPClient(server.host, server.port, ssl=False) as imap:
        imap.plain_login("alice", password)
        assert imap.select_folder("INBOX")[b"UIDVALIDITY"] == receipt.uidvalidity
        body = imap.fetch([receipt.uid], ["BODY.PEEK[]"])[receipt.uid][b"BODY[]"]
    assert body == plain("accents")


def test_reading_and_appending_connections_send_each_write_at_once(dovecot_factory):
    """Nagle's algorithm off on both kinds of connection: bascule writes pipelined commands
    one after another, and each small write would otherwise wait for the server to
    acknowledge the one before, a round trip per folder over a WAN."""
    server = dovecot_factory({"alice": "pw"})
    endpoint = ImapEndpoint(server.host, server.port, security="none")
    pipeline = AppendPipeline(endpoint, ImapCredentials("alice", "pw"))
    reader = connect(endpoint, ImapCredentials("alice", "pw"))
    try:
        for sock in (pipeline._sock, reader.socket()):
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        pipeline.logout()
        reader.logout()


@pytest.mark.parametrize("capability", [None, EXCHANGE_LIKE])
def test_append_pipeline_signs_in_with_one_command_and_the_capabilities_after_it(
        dovecot_factory, monkeypatch, capability):
    """The greeting's list stands for a CAPABILITY before LOGIN, and what the server says
    with or just before its OK to LOGIN (its capabilities once logged in, which Dovecot's
    ``imap_capability`` replaces here) stands for one after: a connection costs its
    connect, its greeting and one round trip."""
    server = dovecot_factory({"alice": "pw"}, capability=capability)
    sent: list[bytes] = []
    send = AppendPipeline._send
    monkeypatch.setattr(AppendPipeline, "_send",
                        lambda self, data: (sent.append(data), send(self, data))[1])
    pipeline = AppendPipeline(ImapEndpoint(server.host, server.port, security="none"),
                              ImapCredentials("alice", "pw"))
    try:
        assert [line.split()[1] for line in sent] == [b"LOGIN"]
        if capability is None:
            assert {"MULTIAPPEND", "UIDPLUS", "LITERAL+"} <= pipeline.capabilities
            assert pipeline.multiappend
        else:
            assert pipeline.capabilities == frozenset(capability.upper().split())
            assert not pipeline.uidplus and not pipeline.multiappend
    finally:
        pipeline.logout()


def test_wrong_password_is_a_connect_error(dovecot):
    endpoint = ImapEndpoint(dovecot.host, dovecot.port, security="none")
    with pytest.raises(ConnectError) as refused:
        AppendPipeline(endpoint, ImapCredentials("alice", "faux"))
    assert refused.value.code == "auth_failed"


def sink_with(server: Dovecot, multiappend: bool, user: str = "alice", **kwargs: object
              ) -> ImapSink:
    endpoint = ImapEndpoint(server.host, server.port, security="none", multiappend=multiappend)
    return ImapSink(endpoint, ImapCredentials(user, server.users[user]), **kwargs)


@pytest.mark.parametrize("multiappend", [False, True], ids=["append", "multiappend"])
def test_a_source_shorter_than_announced_or_unreadable_is_rejected_not_stored(
        dovecot, tmp_path, multiappend):
    good = [make_message(plain(f"bon {i}"), str(i)) for i in range(4)]
    raw = plain("tronqué")
    short = Message("short", fingerprint_bytes(raw), len(raw) + 100, frozenset(), None,
                    lambda: io.BytesIO(raw))
    gone = tmp_path / "effacé.eml"
    unreadable = Message("gone", fingerprint_bytes(raw), len(raw), frozenset(), None,
                         lambda: gone.open("rb"))
    sink = sink_with(dovecot, multiappend)
    try:
        results = list(sink.put_many("INBOX", [good[0], good[1], short, good[2], unreadable,
                                               good[3]]))
    finally:
        sink.close()

    assert [r.source_id for r in results] == ["0", "1", "short", "2", "gone", "3"]
    rejected = {r.source_id: r.error.code for r in results if r.error is not None}
    if multiappend:
        # The short one's batch is cut with it and stored not at all (RFC 3502): its
        # neighbours come back unconfirmed, for the engine to look for and send again.
        assert rejected == {"0": "unconfirmed", "1": "unconfirmed", "short": "invalid_message",
                            "2": "unconfirmed", "gone": "invalid_message"}
    else:
        assert rejected == {"short": "invalid_message", "gone": "invalid_message"}
    for result in results:
        if result.error is None:
            body = stored(dovecot, "INBOX", result.target_ref)["body"]
            assert body == plain(f"bon {result.source_id}")
    assert folder_count(dovecot, "INBOX") == sum(r.error is None for r in results)


class CuttingProxy:
    """A loopback TCP relay that cuts the first connection once the client has sent
    ``cut_after`` bytes on it, as a network failure in the middle of a batch would."""

    def __init__(self, upstream_port: int, cut_after: int) -> None:
        self._upstream_port = upstream_port
        self._cut_after = cut_after
        self.cut = False
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._upstream_port))
            self._sockets += [client, upstream]
            for source, sink, counted in ((client, upstream, True), (upstream, client, False)):
                thread = threading.Thread(target=self._pump, args=(source, sink, counted),
                                          daemon=True)
                self._threads.append(thread)
                thread.start()

    def _pump(self, source: socket.socket, sink: socket.socket, counted: bool) -> None:
        sent = 0
        try:
            while data := source.recv(65536):
                if counted and not self.cut and sent + len(data) > self._cut_after:
                    self.cut = True
                    sink.sendall(data[:self._cut_after - sent])
                    break
                sink.sendall(data)
                sent += len(data)
        except OSError:
            pass
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept
        self._listener.close()
        for end in self._sockets:
            end.close()
        for thread in self._threads:
            thread.join(timeout=5)


def test_messages_dealt_to_connections_are_bounded_by_bytes():
    """A folder of many messages of a few MB each, sent over two connections slower than
    the source: a run of them is one message (``DEAL_RUN_BYTES``), and a connection is
    dealt a run only once it has none waiting, where 64 messages each would hold hundreds
    of MB."""
    size = 3 << 20
    pulled = [0]
    taken = [0]
    most_waiting = [0]
    lock = threading.Lock()

    raw = b"A" * size
    made = make_message(raw)

    def messages() -> Iterator[Message]:
        for n in range(60):  # the same body each time: a fast source
            with lock:
                pulled[0] += 1
            yield dataclasses.replace(made, source_id=str(n))

    def append_on(slot: int, queued: Iterator[Message]) -> Iterator[tuple[Message, AppendReceipt]]:
        for message in queued:
            time.sleep(0.02)  # the server's turn
            with lock:
                taken[0] += 1
                most_waiting[0] = max(most_waiting[0], pulled[0] - taken[0])
            yield message, AppendReceipt(1, int(message.source_id) + 1)

    results = list(_spread(2, append_on, messages()))

    assert [m.source_id for m, _ in results] == [str(n) for n in range(60)]
    assert size >= DEAL_RUN_BYTES
    # Per connection: the message it sends and the one waiting for it; and the one the
    # dealer holds until a connection is free.
    assert most_waiting[0] <= 2 * 2 + 1


def test_a_connection_answered_slowly_is_dealt_less_and_holds_up_no_other():
    """Three connections, the server answering the first one a run at a time in 0.2 s and
    the others at once: the others take what the slow one cannot, where dealing in turn
    would give it a third of the folder (14 runs, about 2.8 s); the answers still come in
    the messages' order."""
    runs_taken = [0, 0, 0]

    def messages() -> Iterator[Message]:
        for n in range(40 * 64):
            yield make_message(b"Subject: m\r\n\r\n" + str(n).encode() + b"\r\n", str(n))

    def append_on(slot: int, queued: Iterator[Message]) -> Iterator[tuple[Message, AppendReceipt]]:
        for n, message in enumerate(queued):
            if n % 64 == 0:
                runs_taken[slot] += 1
                if slot == 0:
                    time.sleep(0.2)
            yield message, AppendReceipt(1, int(message.source_id) + 1)

    started = time.monotonic()
    results = list(_spread(3, append_on, messages()))
    took = time.monotonic() - started

    assert [m.source_id for m, _ in results] == [str(n) for n in range(40 * 64)]
    assert sum(runs_taken) == 40
    assert runs_taken[0] <= 4, runs_taken
    assert took < 1.5


def test_a_connection_failing_for_good_stops_the_dealing_and_answers_in_order():
    """Three connections, the second failing for good after a few answers: the answers
    given come in the messages' order, none twice, then its error; dealing stopped soon
    after (not the whole folder read)."""
    pulled = [0]

    def messages() -> Iterator[Message]:
        for n in range(2_000):
            pulled[0] += 1
            yield make_message(b"Subject: m\r\n\r\n" + str(n).encode() + b"\r\n", str(n))

    def append_on(slot: int, queued: Iterator[Message]) -> Iterator[tuple[Message, AppendReceipt]]:
        for count, message in enumerate(queued):
            if slot == 1 and count == 3:
                raise AppendConnectionLost("cut", code="connection_lost")
            time.sleep(0.001)
            yield message, AppendReceipt(1, int(message.source_id) + 1)

    answered = []
    with pytest.raises(AppendConnectionLost):
        for message, receipt in _spread(3, append_on, messages()):
            answered.append(message.source_id)
            assert receipt.error is None
    assert answered == [str(n) for n in range(len(answered))]
    assert len(answered) >= 64  # the first run, dealt to the first connection
    assert pulled[0] < 1_000


def test_a_dropped_connection_fails_only_the_messages_in_flight(dovecot):
    count = WINDOW_MESSAGES + 100  # more than can be in flight: the last ones go after the cut
    sources = [make_message(plain(f"Message {i}", "v" * 2000), str(i)) for i in range(count)]
    proxy = CuttingProxy(dovecot.port, cut_after=60_000)
    endpoint = ImapEndpoint("127.0.0.1", proxy.port, security="none", timeout=10)
    sink = ImapSink(endpoint, ImapCredentials("alice", dovecot.users["alice"]))
    try:
        results = list(sink.put_many("INBOX", sources))
    finally:
        sink.close()
        proxy.stop()

    assert proxy.cut
    assert [r.source_id for r in results] == [str(i) for i in range(count)]
    failed = [r for r in results if r.error is not None]
    assert failed and all(isinstance(r.error, SendUnconfirmed) for r in failed)
    assert len(failed) <= WINDOW_MESSAGES  # at most what was in flight
    assert results[-1].error is None
    for result, source in zip(results, sources, strict=True):
        if result.error is None:
            assert stored(dovecot, "INBOX", result.target_ref)["sha256"] == source.fingerprint
    held = folder_count(dovecot, "INBOX")
    assert len(results) - len(failed) <= held <= len(results)


RSS_PROBE = """
import json, sys
from connectors.base import Message
from connectors.imap.session import ImapCredentials, ImapEndpoint
from connectors.imap.sink import ImapSink, _spread

port, path, size = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
message = Message("big", "", size, frozenset(), None, lambda: open(path, "rb"))
sink = ImapSink(ImapEndpoint("127.0.0.1", port, security="none"), ImapCredentials("alice", "pw"))
[result] = sink.put_many("INBOX", [message])
sink.close()
# VmHWM, not getrusage: ru_maxrss survives exec and would report the parent's peak.
peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
rss = int(peak.split()[1]) * 1024
print(json.dumps({"ref": result.target_ref, "error": str(result.error), "rss": rss}))
"""


def write_large_message(path: Path, size: int) -> str:
    """A message of ``size`` bytes written in chunks; answers its fingerprint."""
    digest = hashlib.sha256()
    line = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVowMTIzNDU2Nzg5Ky9BQkNERUZHSElKS0xNTk9QUVJT\r\n"
    header = b"Subject: tres gros\r\nContent-Type: application/octet-stream\r\n\r\n"
    with path.open("wb") as out:
        for chunk in _chunks(header, line, size):
            out.write(chunk)
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def _chunks(header: bytes, line: bytes, size: int) -> Iterator[bytes]:
    yield header
    remaining = size - len(header)
    block = line * (1 << 20 // len(line))
    while remaining > 0:
        piece = block[:remaining]
        yield piece
        remaining -= len(piece)


def test_a_100_mb_message_is_streamed_with_flat_memory(dovecot_factory, tmp_path):
    server = dovecot_factory({"alice": "pw"})
    size = 100 << 20
    body = tmp_path / "big.eml"
    fingerprint = write_large_message(body, size)
    probe = subprocess.run([sys.executable, "-c", RSS_PROBE, str(server.port), str(body),
                            str(size)], cwd=ROOT, capture_output=True, text=True, check=False,
                           timeout=300)
    assert probe.returncode == 0, probe.stderr
    outcome = json.loads(probe.stdout)
    assert outcome["error"] == "None"
    assert outcome["rss"] < 100 << 20, f"peak RSS {outcome['rss'] >> 20} MB"
    sink = sink_for(server)
    try:
        [item] = list(sink.inventory("INBOX", fingerprints=True))
    finally:
        sink.close()
    assert item.target_ref == outcome["ref"]
    assert (item.size, item.fingerprint) == (size, fingerprint)


def test_the_sink_and_source_sessions_log_in_with_an_8bit_password(dovecot_factory):
    password = "mot de passe à l'été"
    server = dovecot_factory({"alice": password})
    endpoint = ImapEndpoint(server.host, server.port, security="none")
    sink = ImapSink(endpoint, ImapCredentials("alice", password))
    try:
        [result] = sink.put_many("INBOX", [make_message(plain("accents"), "1")])
    finally:
        sink.close()
    assert result.error is None and result.target_ref


def test_multiappend_sends_batches_and_answers_each_message_with_its_own_uid(dovecot):
    messages = [make_message(plain(f"lot {i}"), str(i), frozenset({"\\Seen"}) if i % 2 else
                             frozenset(), datetime(2024, 3, 4, 9, i % 60, tzinfo=UTC))
                for i in range(100)]
    endpoint = ImapEndpoint(dovecot.host, dovecot.port, security="none")
    pipeline = AppendPipeline(endpoint, ImapCredentials("alice", dovecot.users["alice"]))
    try:
        assert pipeline.multiappend
        before = pipeline._tag_counter  # commands sent: one per batch
        answered = list(pipeline.append("INBOX", messages))
        commands = pipeline._tag_counter - before
    finally:
        pipeline.logout()
    assert [m.source_id for m, _ in answered] == [m.source_id for m in messages]
    assert all(r.error is None for _, r in answered)
    assert commands <= 100 // 32 + 1
    for message, receipt in answered:
        held = stored(dovecot, "INBOX", f"{receipt.uidvalidity}:{receipt.uid}")
        assert held["body"] == plain(f"lot {message.source_id}")
        assert held["flags"] == message.flags
    assert folder_count(dovecot, "INBOX") == 100


def test_a_batch_refused_for_one_message_is_sent_again_one_by_one(dovecot_factory):
    target = dovecot_factory(users={"alice": "pw"}, max_mail_size=1 << 20)
    small = [make_message(plain(f"petit {i}"), str(i)) for i in range(3)]
    big = make_message(plain("gros", "x" * (2 << 20)), "big")
    sink = sink_with(target, True, connections=1)
    try:
        results = list(sink.put_many("INBOX", [small[0], big, small[1], small[2]]))
    finally:
        sink.close()
    assert [(r.source_id, r.error.code if r.error else None) for r in results] == [
        ("0", None), ("big", "too_big"), ("1", None), ("2", None)]
    for result in results[::2] + results[3:]:
        assert stored(target, "INBOX", result.target_ref)["body"] == plain(
            f"petit {result.source_id}")
    assert folder_count(target, "INBOX") == 3


def test_a_sink_signing_in_does_not_hold_up_another_one() -> None:
    """The sink's capabilities are computed once per sink, with no lock shared by every
    sink (``functools.cached_property`` has one per class before Python 3.12): two
    principals signing in at once meet here, neither waiting for the other."""
    meeting = threading.Barrier(2, timeout=5)

    class Signing:
        computed = 0

        @computed_once
        def capabilities(self) -> str:
            Signing.computed += 1
            meeting.wait()  # both first reads in progress at once, or a BrokenBarrierError
            return "IMAP4rev1"

    first, second = Signing(), Signing()
    with ThreadPoolExecutor(max_workers=2) as pool:
        answers = list(pool.map(lambda sink: sink.capabilities, (first, second)))
    assert answers == ["IMAP4rev1", "IMAP4rev1"]
    assert (first.capabilities, Signing.computed) == ("IMAP4rev1", 2)


def test_folders_made_at_once_say_which_hold_nothing(dovecot):
    """``ensure_containers`` answers the folders that exist, each with whether it holds
    nothing: created now, or empty in the sink's first listing and not written since."""
    client = imapclient.IMAPClient(dovecot.host, dovecot.port, ssl=False)
    client.login("alice", dovecot.users["alice"])
    client.create_folder("Ancien")
    client.append("Ancien", plain("Déjà là"))
    client.create_folder("Vide ancien")
    client.logout()

    sink = sink_for(dovecot)
    try:
        answer = sink.ensure_containers([("INBOX",), ("Ancien",), ("Vide ancien",), ("Sent",),
                                         ("Nouveau", "Été"), ("Mauvais\x00nom",)])
        assert answer == {("INBOX",): True, ("Ancien",): False, ("Vide ancien",): True,
                          ("Sent",): True, ("Nouveau", "Été"): True}
        list(sink.put_many("Vide ancien", [make_message(plain("Nouveau"))]))
        assert sink.ensure_containers([("Vide ancien",)]) == {("Vide ancien",): False}
    finally:
        sink.close()
    assert folder_count(dovecot, "Nouveau/Été") == 0


def test_a_large_folder_borrows_what_the_account_leaves_free_while_it_sends(dovecot):
    """Two sinks of one account share an allowance of four APPEND connections, one each
    held while they live. Told a folder brings many messages, a sink spreads them over
    what the other leaves free (two more), gives them back (logged out) when the folder is
    sent, and borrows nothing for a small folder; once closed, a sink's own goes back."""
    allowance = AppendAllowance(4)
    other = sink_for(dovecot, allowance=allowance)
    sink = sink_for(dovecot, allowance=allowance)
    messages = [make_message(plain(f"Courrier {n}"), source_id=f"s{n}") for n in range(3000)]
    while_sending = []
    try:
        sink.expect("INBOX", len(messages))
        results = []
        for result in sink.put_many("INBOX", iter(messages)):
            results.append(result)
            if len(results) == 1500:
                while_sending += [len(sink._pipelines), allowance.borrow(1)]
        assert all(r.error is None and r.target_ref for r in results)
        assert while_sending == [3, 0]
        assert len(sink._pipelines) == 1
        assert allowance.borrow(5) == 2
        allowance.give_back(2)
        # A small folder borrows nothing.
        sink.expect("INBOX", 10)
        list(sink.put_many("INBOX", [make_message(plain("Seul"), source_id="seul")]))
        assert len(sink._pipelines) == 1
    finally:
        sink.close()
        other.close()
    assert allowance.borrow(5) == 4


def test_a_folder_alone_appends_over_at_most_the_widest_the_allowance_says(dovecot):
    allowance = AppendAllowance(5, widest=4)
    sink = sink_for(dovecot, allowance=allowance)
    try:
        sink.expect("INBOX", 8000)
        assert sink._borrowed("INBOX") == 3  # four connections with its own, one left free
        assert allowance.borrow(5) == 1
    finally:
        sink.close()


def test_a_new_sink_gets_its_connection_back_from_a_folder_that_borrowed_it(dovecot):
    """A folder alone borrows the whole allowance; a second sink of the account, opened
    while it sends, waits for its own connection, which the folder gives back between two
    runs of messages. APPEND connections of the account, counted on both sinks at every
    answer, never go over the allowance."""
    allowance = AppendAllowance(3)
    sink = sink_for(dovecot, allowance=allowance)
    messages = [make_message(plain(f"Courrier {n}"), source_id=f"s{n}") for n in range(4000)]
    later: list[ImapSink] = []
    opened = threading.Event()
    most = [0]
    opened_while: list[int] = []

    def open_later() -> None:
        later.append(sink_for(dovecot, allowance=allowance))
        opened.set()

    opener = threading.Thread(target=open_later)
    try:
        sink.expect("INBOX", len(messages))
        for answered, result in enumerate(sink.put_many("INBOX", iter(messages)), 1):
            assert result.error is None
            if answered == 500:
                assert len(sink._pipelines) == 3
                opener.start()
            most[0] = max(most[0], len(sink._pipelines) + sum(
                len(s._pipelines) + 1 for s in later))  # +1: the later sink's own, to come
            if opened.is_set() and not opened_while:
                opened_while.append(answered)
        opener.join(timeout=10)
        assert opened_while and opened_while[0] < 2000  # not at the folder's end
        assert most[0] <= 3
        [late] = later[0].put_many("INBOX", [make_message(plain("Tard"), "tard")])
        assert late.error is None
    finally:
        sink.close()
        for other in later:
            other.close()
    assert folder_count(dovecot, "INBOX") == 4001


