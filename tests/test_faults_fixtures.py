"""The fault fixtures do what they say: each fault checked against a real Dovecot (or, for
byte-exact counts, a plain TCP server) before the engine's fault tests rely on it."""

from __future__ import annotations

import errno
import hashlib
import imaplib
import os
import select
import signal
import socket
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
from imapclient.exceptions import IMAPClientError

from tests import mailboxes
from tests.corpus import CorpusFolder, CorpusMessage, build_mailbox
from tests.faults import (
    HIGH_WATER,
    ROOT,
    BasculeRun,
    FaultProxy,
    LedgerCounts,
    MountRefused,
    fill,
    free_bytes,
    kill_in_flight,
    ledger_counts,
    mount_tmpfs,
    run_with_signal,
    unmount,
    wait_for,
)
from tests.test_engine_imap import batch_file

# How long a test watches for bytes that must not come. A correct fixture never sends them,
# so a slow machine cannot make these tests fail; a broken one sends them within
# milliseconds on loopback.
QUIET = 0.3


def connect(port: int) -> socket.socket:
    conn = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def silent(conn: socket.socket) -> bool:
    """Whether nothing at all arrives on ``conn`` for ``QUIET`` seconds."""
    return not select.select([conn], [], [], QUIET)[0]


def read_line(conn: socket.socket) -> bytes:
    line = b""
    while not line.endswith(b"\r\n"):
        byte = conn.recv(1)
        if not byte:
            raise ConnectionError(f"closed after {line!r}")
        line += byte
    return line


def read_to_end(conn: socket.socket) -> tuple[int, BaseException | None]:
    """Read until end of file or error: (bytes read, the error or None at end of file)."""
    total = 0
    try:
        while chunk := conn.recv(1 << 16):
            total += len(chunk)
    except OSError as error:
        return total, error
    return total, None


class PlainServer:
    """A TCP server on loopback that, for each connection, sends ``send`` bytes and counts
    what it receives until end of file or error (``received``, ``endings``)."""

    def __init__(self, send: int = 0) -> None:
        self.send = send
        self.received: list[int] = []
        self.endings: list[BaseException | None] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.threads: list[threading.Thread] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                if self.send:
                    conn.sendall(b"x" * self.send)
            except OSError as error:
                self.received.append(0)
                self.endings.append(error)
                return
            total, ending = read_to_end(conn)
            self.received.append(total)
            self.endings.append(ending)

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        self.listener.close()


@pytest.fixture
def plain_server():
    servers: list[PlainServer] = []

    def start(send: int = 0) -> PlainServer:
        servers.append(PlainServer(send))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


# --- the fault proxy ----------------------------------------------------------------------

def test_proxy_forwards_imap_and_counts_what_crosses(dovecot, fault_proxy):
    proxy = fault_proxy(dovecot)
    message = next(build_mailbox(1, seed=1))
    with mailboxes.client(_via(dovecot, proxy), "alice") as imap:
        mailboxes.append(imap, "INBOX", message)
        imap.select_folder("INBOX", readonly=True)
        fetched = imap.fetch("1", ["BODY.PEEK[]"])[1][b"BODY[]"]
    assert fetched == message.raw
    assert proxy.connections_opened == 1
    assert proxy.bytes_to_server > len(message.raw) > 0
    assert proxy.bytes_to_client > len(message.raw)
    wait_for(lambda: proxy.open_connections == 0, what="the logged-out connection closed")
    assert (proxy.resets, proxy.connections_reset) == (0, 0)


def test_reset_after_passes_exactly_n_bytes_then_resets_both_sides(plain_server, fault_proxy):
    server = plain_server()
    proxy = fault_proxy(("127.0.0.1", server.port))
    proxy.reset_after(100_000, "to_server", times=2)
    for _ in range(2):
        with connect(proxy.port) as client:
            try:
                client.sendall(b"y" * 1_000_000)
                received, ending = read_to_end(client)
            except OSError as error:
                received, ending = 0, error
            assert received == 0
            assert isinstance(ending, ConnectionResetError | BrokenPipeError)
    wait_for(lambda: len(server.endings) == 2, what="the server saw both connections end")
    assert server.received == [100_000, 100_000]
    assert all(isinstance(e, ConnectionResetError) for e in server.endings)
    assert (proxy.resets, proxy.connections_reset, proxy.bytes_to_server) == (2, 2, 200_000)

    with connect(proxy.port) as client:  # the arming was used up: forwarding as before
        client.sendall(b"z" * 1_000_000)
        client.shutdown(socket.SHUT_WR)
        assert read_to_end(client) == (0, None)
    wait_for(lambda: len(server.received) == 3, what="the third connection's end")
    assert server.received[2] == 1_000_000
    assert proxy.resets == 2


def test_reset_to_client_delivers_n_bytes_then_connection_reset(plain_server, fault_proxy):
    server = plain_server(send=1_000_000)
    proxy = fault_proxy(("127.0.0.1", server.port))
    proxy.reset_after(70_000, "to_client")
    with connect(proxy.port) as client:
        received, ending = read_to_end(client)
    assert received == 70_000
    assert isinstance(ending, ConnectionResetError)
    assert proxy.bytes_to_client == 70_000


def test_reset_resets_every_open_connection(plain_server, fault_proxy):
    server = plain_server()
    proxy = fault_proxy(("127.0.0.1", server.port))
    idle, busy = connect(proxy.port), connect(proxy.port)
    wait_for(lambda: len(server.threads) == 2, what="both connections reached the server")
    proxy.reset_after(10, "to_server")
    busy.sendall(b"b" * 25)
    for conn in (idle, busy):
        assert isinstance(read_to_end(conn)[1], ConnectionResetError)
        conn.close()
    wait_for(lambda: len(server.endings) == 2, what="the server saw both resets")
    assert sorted(server.received) == [0, 10]
    assert (proxy.resets, proxy.connections_reset) == (1, 2)


def test_a_reset_mid_append_stores_nothing_and_later_connections_work(dovecot, fault_proxy):
    proxy = fault_proxy(dovecot)
    big = CorpusMessage(b"Subject: big\r\n\r\n" + b"0123456789abcdef\r\n" * 60_000)
    imap = mailboxes.client(_via(dovecot, proxy), "alice")
    proxy.reset_after(len(big.raw) // 2, "to_server")
    with pytest.raises((OSError, IMAPClientError)):
        mailboxes.append(imap, "INBOX", big)
    assert proxy.resets == 1
    with mailboxes.client(_via(dovecot, proxy), "alice") as again:
        mailboxes.append(again, "INBOX", big)
    with mailboxes.client(dovecot, "alice") as direct:
        assert direct.folder_status("INBOX", ["MESSAGES"])[b"MESSAGES"] == 1


def test_stall_holds_every_byte_until_resume(dovecot, fault_proxy):
    proxy = fault_proxy(dovecot)
    before = connect(proxy.port)
    assert read_line(before).startswith(b"* OK")
    proxy.stall()
    before.sendall(b"a1 NOOP\r\n")
    during = connect(proxy.port)
    wait_for(lambda: proxy.connections_opened == 2, what="the new connection accepted")
    assert silent(before)
    assert silent(during), "a stalled proxy passed the greeting on"
    proxy.resume()
    assert read_line(before).startswith(b"a1 OK")
    assert read_line(during).startswith(b"* OK")

    proxy.stall(new_connections_only=True)
    after = connect(proxy.port)
    before.sendall(b"a2 NOOP\r\n")
    assert read_line(before).startswith(b"a2 OK")
    assert silent(after)
    proxy.resume()
    assert read_line(after).startswith(b"* OK")
    for conn in (before, during, after):
        conn.close()


def test_refuse_then_accept_on_the_same_port(dovecot, fault_proxy):
    proxy = fault_proxy(dovecot)
    kept = connect(proxy.port)
    assert read_line(kept).startswith(b"* OK")
    port = proxy.port
    proxy.refuse()
    with pytest.raises(ConnectionRefusedError):
        connect(port)
    kept.sendall(b"a1 NOOP\r\n")
    assert read_line(kept).startswith(b"a1 OK")
    proxy.accept()
    assert proxy.port == port
    with connect(port) as again:
        assert read_line(again).startswith(b"* OK")
    kept.close()


def test_an_unreachable_upstream_closes_the_client_at_once(fault_proxy):
    with socket.socket() as never_listening:
        never_listening.bind(("127.0.0.1", 0))
        proxy = fault_proxy(never_listening.getsockname())
        with connect(proxy.port) as client:
            assert read_to_end(client) == (0, None)
    assert proxy.connections_opened == 1
    wait_for(lambda: proxy.open_connections == 0, what="the connection forgotten")


def test_close_ends_connections_and_listening(dovecot):
    proxy = FaultProxy(dovecot.host, dovecot.port).start()
    conn = connect(proxy.port)
    assert read_line(conn).startswith(b"* OK")
    proxy.close()
    assert read_to_end(conn)[0] == 0
    conn.close()
    with pytest.raises(ConnectionRefusedError):
        connect(proxy.port)
    proxy.close()
    with pytest.raises(RuntimeError):
        proxy.stall()


def test_a_100_mb_message_crosses_with_bounded_buffers(fault_proxy):
    """While the server reads nothing, the proxy must stop reading from the client once it
    holds HIGH_WATER bytes for the server, instead of buffering the rest of the message."""
    size, block = 100 << 20, os.urandom(1 << 20)
    listener = socket.create_server(("127.0.0.1", 0))
    proxy = fault_proxy(("127.0.0.1", listener.getsockname()[1]))
    may_read = threading.Event()
    digest: list[str] = []

    def serve() -> None:
        conn, _ = listener.accept()
        may_read.wait()
        received = hashlib.sha256()
        with conn:
            while chunk := conn.recv(1 << 20):
                received.update(chunk)
        digest.append(received.hexdigest())

    def send() -> None:
        with connect(proxy.port) as client:
            for _ in range(size // len(block)):
                client.sendall(block)

    threads = [threading.Thread(target=serve), threading.Thread(target=send)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: proxy.sockets_not_read == 1 and proxy.buffered >= HIGH_WATER,
                 what="the proxy holding the client back")
        most = proxy.buffered
        passed_on = proxy.bytes_to_server
        may_read.set()
        while threads[1].is_alive():
            most = max(most, proxy.buffered)
            threads[1].join(0.005)
        threads[0].join(60)
    finally:
        may_read.set()
        listener.close()
    assert most <= 2 * HIGH_WATER, f"the proxy held {most} bytes"
    assert passed_on < size // 4
    assert digest == [hashlib.sha256(block * (size // len(block))).hexdigest()]
    assert proxy.bytes_to_server == size
    wait_for(lambda: proxy.open_connections == 0, what="the connection closed")


def _via(server, proxy: FaultProxy):
    """``server`` as reached through ``proxy``, for ``mailboxes.client``."""
    return type(server)(proxy.host, proxy.port, server.root, server.users)


# --- Dovecot killed and restarted -----------------------------------------------------------

def test_kill_and_restart_keep_mail_port_and_other_instances(dovecot_factory):
    server = dovecot_factory({"alice": "pw"})
    neighbour = dovecot_factory({"bob": "pw"})
    messages = list(build_mailbox(3, seed=2))
    mailboxes.seed(server, "alice", [CorpusFolder(("INBOX",), "inbox", messages)])
    before = mailboxes.contents(server, "alice")
    open_session = mailboxes.client(server, "alice")
    open_session.select_folder("INBOX")
    processes = server.processes()
    assert len(processes) > 3

    server.kill()
    assert (server.running, server.processes()) == (False, [])
    assert not [pid for pid in processes if _alive(pid)]
    with pytest.raises((OSError, IMAPClientError)):
        open_session.noop()
    with pytest.raises(ConnectionRefusedError):
        connect(server.port)
    assert neighbour.running
    with mailboxes.client(neighbour, "bob") as imap:
        imap.noop()

    port = server.port
    server.restart()
    assert (server.port, server.running) == (port, True)
    assert mailboxes.contents(server, "alice") == before
    server.kill()
    server.restart()
    assert mailboxes.contents(server, "alice") == before


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# --- a small tmpfs -----------------------------------------------------------------------

def test_small_tmpfs_fills_to_leave_n_bytes_free(small_tmpfs):
    folder = small_tmpfs(2 << 20)
    assert _mount_type(folder) == "tmpfs"
    assert free_bytes(folder) == 2 << 20
    filler = fill(folder, 64 << 10)
    assert 64 << 10 <= free_bytes(folder) < (64 << 10) + 4096
    (folder / "fits").write_bytes(b"f" * (32 << 10))
    with pytest.raises(OSError) as full:
        (folder / "too-big").write_bytes(b"t" * (64 << 10))
    assert full.value.errno == errno.ENOSPC
    filler.unlink()
    assert free_bytes(folder) > 1 << 20
    with pytest.raises(ValueError):
        fill(folder, 4 << 20)


def test_unmount_gives_the_folder_back(tmp_path):
    try:
        folder = mount_tmpfs(tmp_path / "space", 1 << 20)
    except MountRefused as refused:
        pytest.skip(str(refused))
    (folder / "file").write_bytes(b"on the tmpfs")
    unmount(folder)
    assert _mount_type(folder) != "tmpfs"
    assert not (folder / "file").exists()


def test_mounting_where_it_is_not_allowed_says_why(tmp_path):
    """In a user namespace, root without the right to mount; outside it, not root at all."""
    script = ("import sys; from pathlib import Path; from tests.faults import mount_tmpfs\n"
              "try:\n    mount_tmpfs(Path(sys.argv[1]), 1 << 20)\n"
              "except Exception as e:\n    print(type(e).__name__, e)\n")
    for as_root in ([["-r"]] if os.geteuid() == 0 else []) + [[]]:
        result = subprocess.run(["unshare", "-U", *as_root, sys.executable, "-c", script,
                                 str(tmp_path / "refused")],
                                cwd=ROOT, capture_output=True, text=True, check=False)
        if result.returncode != 0 and "unshare" in result.stderr:
            pytest.skip(f"no user namespaces here: {result.stderr.strip()}")
        assert result.stdout.startswith("MountRefused "), result.stdout + result.stderr
        assert ("needs root" in result.stdout) == (not as_root)


def _mount_type(folder: Path) -> str:
    """The file system type mounted exactly on ``folder``, "" if none."""
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if fields[1] == str(folder):
            return fields[2]
    return ""


# --- an over-quota Dovecot -----------------------------------------------------------------

def test_quota_refuses_the_append_that_would_exceed_it(dovecot_factory):
    server = dovecot_factory({"alice": "pw"}, quota_bytes=100_000)
    # Three fit; the fourth would end within Dovecot's default grace of 10%, which is off.
    messages = [b"Subject: %d\r\n\r\n" % i + b"q" * 27_000 + b"\r\n" for i in range(5)]
    imap = imaplib.IMAP4(server.host, server.port)
    imap.login("alice", "pw")
    answers = [imap.append("INBOX", None, None, raw) for raw in messages]
    imap.logout()
    stored = [a for a in answers if a[0] == "OK"]
    first_refused = len(stored)
    assert first_refused == 3
    kind, detail = answers[first_refused]
    assert kind == "NO"
    assert detail[0].startswith(b"[OVERQUOTA] ")
    landed = mailboxes.contents(server, "alice")[("INBOX",)]
    assert sum(landed.values()) == first_refused
    assert {digest for digest, _, _ in landed} == {
        hashlib.sha256(raw).hexdigest() for raw in messages[:first_refused]}


def test_quota_and_max_mail_size_together(dovecot_factory):
    server = dovecot_factory({"alice": "pw"}, quota_bytes=100_000, max_mail_size=20_000)
    imap = imaplib.IMAP4(server.host, server.port)
    imap.login("alice", "pw")
    assert imap.append("INBOX", None, None, b"Subject: s\r\n\r\n" + b"s" * 10_000)[0] == "OK"
    kind, detail = imap.append("INBOX", None, None, b"Subject: b\r\n\r\n" + b"b" * 30_000)
    imap.logout()
    assert kind == "NO"
    assert detail[0].startswith(b"[LIMIT] ")


# --- bascule as a real process, signalled at a point of its ledger -------------------------

@pytest.fixture
def migration(dovecot_factory, tmp_path):
    """A source holding 150 messages, an empty target and a batch between them: (batch, env,
    number of messages)."""
    source = dovecot_factory(users={"alice": "a"})
    target = dovecot_factory(users={"alice": "b"})
    messages = list(build_mailbox(150, seed=5))
    mailboxes.seed(source, "alice", [CorpusFolder(("INBOX",), "inbox", messages)])
    mailboxes.write_users(tmp_path, [("alice", "alice", "env:A1", "env:A2")])
    env = {**os.environ, "A1": "a", "A2": "b"}
    return batch_file(tmp_path, source, target), env, len(messages)


def test_run_with_signal_kills_at_the_ledger_point_and_times_the_exit(migration):
    batch, env, _ = migration
    outcome = run_with_signal(batch, env, signal.SIGKILL, lambda counts: counts.done >= 1)
    assert outcome.signalled
    assert outcome.returncode == -signal.SIGKILL
    assert outcome.at_signal.done >= 1
    assert 0 <= outcome.seconds_to_exit < 5


def test_sigint_reaches_the_run_even_when_the_tests_ignore_it(migration):
    """A shell without job control starts background jobs with SIGINT ignored; the run must
    still get Python's KeyboardInterrupt, as from a terminal."""
    batch, env, _ = migration
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        run = BasculeRun(batch, env)
    finally:
        signal.signal(signal.SIGINT, previous)
    handled = {}

    def ready(counts: LedgerCounts) -> bool:
        status = Path(f"/proc/{run.process.pid}/status").read_text()
        handled.update(line.split(":\t") for line in status.splitlines()
                       if line.startswith(("SigIgn", "SigCgt")))
        return counts.done >= 1

    if not run.signal_when(signal.SIGINT, ready):
        pytest.fail("the run ended before the signal: make the mailbox larger")
    outcome = run.finish()
    sigint = 1 << (signal.SIGINT - 1)
    assert not int(handled["SigIgn"], 16) & sigint
    assert int(handled["SigCgt"], 16) & sigint
    assert outcome.signalled and outcome.seconds_to_exit < 30


def test_a_run_not_signalled_reports_its_whole_output(migration):
    batch, env, total = migration
    run = BasculeRun(batch, env)
    assert not run.signal_when(signal.SIGTERM, lambda counts: False)
    outcome = run.finish()
    assert (outcome.returncode, outcome.signalled, outcome.seconds_to_exit) == (0, False, None)
    assert outcome.stdout or outcome.stderr
    assert ledger_counts(run.work).done == total


def test_kill_in_flight_kills_with_a_batch_held_there_and_lets_the_proxy_flow_again(
        dovecot_factory, fault_proxy, tmp_path):
    source = dovecot_factory(users={"alice": "a"})
    target = dovecot_factory(users={"alice": "b"})
    proxy = fault_proxy(target)
    mailboxes.seed(source, "alice",
                   [CorpusFolder(("INBOX",), "inbox", list(build_mailbox(300, seed=5)))])
    mailboxes.write_users(tmp_path, [("alice", "alice", "env:A1", "env:A2")])
    env = {**os.environ, "A1": "a", "A2": "b"}
    outcome = kill_in_flight(batch_file(tmp_path, source, proxy), env, proxy,
                             lambda counts: proxy.bytes_to_server >= 16384)
    assert outcome.returncode == -signal.SIGKILL
    assert outcome.at_signal.inflight > 0 and outcome.at_signal.done < 300
    after = connect(proxy.port)
    assert read_line(after).startswith(b"* OK"), "the proxy was left stalled"
    after.close()


# --- an independent dump of the target, compared -------------------------------------------

def test_differences_name_missing_duplicated_extra_and_changed(dovecot):
    messages = list(build_mailbox(6, seed=4))
    mailboxes.seed(dovecot, "alice", [CorpusFolder(("INBOX",), "inbox", messages),
                                      CorpusFolder(("Projets",), "mail", messages[:2])])
    expected = mailboxes.contents(dovecot, "alice")
    assert mailboxes.differences(expected, expected) == ""
    assert mailboxes.differences(mailboxes.filled(dovecot, "alice"), expected) == ""

    extra = next(build_mailbox(1, seed=99))
    with mailboxes.client(dovecot, "alice") as imap:
        mailboxes.append(imap, "INBOX", messages[0])
        mailboxes.append(imap, "INBOX", extra)
        imap.select_folder("INBOX")
        imap.set_flags([2], ["\\Deleted"])  # UIDs: messages[1]
        imap.expunge()
        imap.add_flags([3], ["$Changed"])  # messages[2]
    text = mailboxes.differences(expected, mailboxes.contents(dovecot, "alice"))
    lines = text.splitlines()
    assert lines[0] == ("INBOX: 1 missing, 1 duplicated, 1 extra, 1 changed "
                        "(expected 6, landed 7)")
    assert len(lines) == 5
    short = {kind: hashlib.sha256(m.raw).hexdigest()[:12] for kind, m in [
        ("missing", messages[1]), ("duplicated", messages[0]), ("extra", extra),
        ("changed", messages[2])]}
    for kind, digest in short.items():
        assert any(line.startswith(f"  {kind}") and digest in line for line in lines), kind
    assert "landed 2 times, 1 expected" in text
    assert "$Changed" in text


def test_differences_count_beyond_what_they_list():
    item = ("ab" * 32, frozenset({"\\Seen"}), 0)
    many = Counter({(f"{n:064x}", frozenset(), 0): 1 for n in range(8)})
    text = mailboxes.differences({("A",): many}, {("A",): Counter({item: 1}), ("B",): Counter()})
    assert text.splitlines()[0] == "A: 8 missing, 1 extra (expected 8, landed 1)"
    assert "  ... and 3 more" in text
    assert "extra x1: abababababab {\\Seen} 1970-01-01T00:00:00Z" in text
