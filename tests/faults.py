"""Faults for tests: a TCP proxy that resets, stalls or refuses connections on demand, a
small tmpfs to fill, and a ``bascule run`` process signalled at a chosen point of its ledger.

Each piece injects one fault and says exactly what the other side sees; none of them
knows bascule's engine (the run helper reads the ledger's file as another process would).
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from migrate.ledger import DONE, FAILED, INFLIGHT

T = TypeVar("T")
Direction = Literal["to_server", "to_client"]
DIRECTIONS = ("to_server", "to_client")

ROOT = Path(__file__).resolve().parent.parent
CONTROL_TIMEOUT = 10.0
# What one outgoing socket of the proxy may hold in user space before its source stops
# reading: with the kernel's own buffers, memory stays bounded whatever the message size.
HIGH_WATER = 1 << 18
# How long a reset waits for the bytes it let through to leave the proxy's socket, so that
# the receiver gets exactly the first N bytes (unless it stopped reading meanwhile).
FLUSH_TIMEOUT = 2.0


def wait_for(condition: Callable[[], T], timeout: float = 10.0, what: str = "the condition"
             ) -> T:
    """Poll ``condition`` every few milliseconds until it returns something true; return it.

    Raises AssertionError naming ``what`` once ``timeout`` seconds have passed.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout}s")
        time.sleep(0.005)


def settled(read: Callable[[], object], quiet: float = 1.0, timeout: float = 30.0) -> object:
    """What ``read`` answers once it stops changing for ``quiet`` seconds: a server that was
    given APPENDs by a client now dead (killed, or cut off by a stall) may still be storing
    them; the next run must look once it is done, as a DSI's next run would."""
    deadline = time.monotonic() + timeout
    last = read()
    since = time.monotonic()
    while time.monotonic() - since < quiet:
        if time.monotonic() > deadline:
            raise AssertionError(f"the target kept changing for {timeout}s")
        time.sleep(0.2)
        now = read()
        if now != last:
            last, since = now, time.monotonic()
    return last


@dataclass
class _Arming:
    n_bytes: int
    direction: Direction
    times: int
    crossed: int = 0


class _Side(asyncio.Protocol):
    """One socket of a proxied connection; what it receives goes to its peer's socket.

    ``direction`` names where its bytes go: the client's side sends ``to_server``.
    """

    def __init__(self, proxy: FaultProxy, link: _Link, direction: Direction) -> None:
        self.proxy = proxy
        self.link = link
        self.direction = direction
        self.transport: asyncio.Transport | None = None
        self.paused_for: set[str] = set()
        self.eof = False
        self.closed = False

    @property
    def peer(self) -> _Side | None:
        return self.link.upstream if self is self.link.client else self.link.client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=HIGH_WATER)
        self.proxy._side_made(self)
        if self.paused_for:
            transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        self.proxy._forward(self, data)

    def eof_received(self) -> bool:
        self.proxy._eof(self)
        return True

    def pause_writing(self) -> None:
        if self.peer is not None:
            self.peer.pause("back-pressure")

    def resume_writing(self) -> None:
        if self.peer is not None:
            self.peer.unpause("back-pressure")

    def connection_lost(self, exc: Exception | None) -> None:
        self.proxy._lost(self, exc)

    def pause(self, reason: str) -> None:
        self.paused_for.add(reason)
        if self.transport is not None and self.transport.is_reading():
            self.transport.pause_reading()

    def unpause(self, reason: str) -> None:
        self.paused_for.discard(reason)
        if (not self.paused_for and self.transport is not None and not self.closed
                and not self.transport.is_reading()):
            self.transport.resume_reading()

    def reset(self) -> None:
        """Close at once with an RST (SO_LINGER 0), discarding what is still buffered."""
        if self.transport is None or self.closed:
            return
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()

    def unsent(self) -> int:
        """Bytes written to this socket that have not reached its peer's kernel yet."""
        if self.transport is None or self.closed:
            return 0
        queued = self.transport.get_write_buffer_size()
        sock = self.transport.get_extra_info("socket")
        if sock is None:
            return queued
        return queued + struct.unpack(
            "i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]


class _Link:
    """One proxied connection: the client's socket and the one to the upstream server."""

    def __init__(self, proxy: FaultProxy, stalled: bool) -> None:
        self.client = _Side(proxy, self, "to_server")
        self.upstream: _Side | None = None
        self.stalled = stalled

    def sides(self) -> list[_Side]:
        return [s for s in (self.client, self.upstream) if s is not None]


class FaultProxy:
    """A TCP proxy on 127.0.0.1 whose faults a test switches on and off while it runs.

    It serves from an event loop in a background thread; every control method returns once
    the change is in force. Counters (read them at any time):

    - ``bytes_to_server``, ``bytes_to_client``: bytes passed on in each direction, i.e.
      handed to the outgoing socket, over every connection since the start;
    - ``connections_opened``: client connections accepted (an accepted connection whose
      upstream cannot be reached is closed at once, with a FIN: the client reads end of file
      before any greeting); ``open_connections``: those not closed yet;
    - ``resets``: times a ``reset_after`` (or ``reset_now``) fired; ``connections_reset``:
      connections it reset;
    - ``buffered``, ``sockets_not_read``: what the proxy holds, and where it holds back.

    Memory stays bounded with messages of any size: a socket the proxy writes to holds at
    most ``HIGH_WATER`` bytes in the proxy before its source stops being read, and TCP's
    flow control then slows the sender. A connection that reaches end of file on one side
    is half-closed on the other (FIN passed on); one reset by a peer is reset on the other
    side too.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.host = "127.0.0.1"
        self.port = 0
        self.bytes_to_server = 0
        self.bytes_to_client = 0
        self.connections_opened = 0
        self.resets = 0
        self.connections_reset = 0
        self._links: set[_Link] = set()
        self._arming: _Arming | None = None
        self._resetting = False
        self._stall_new = False
        self._server: asyncio.AbstractServer | None = None
        self._placeholder: socket.socket | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="fault-proxy")
        self._closed = False

    @property
    def open_connections(self) -> int:
        return len(self._links)

    @property
    def buffered(self) -> int:
        """Bytes read by the proxy and not yet handed to the kernel, over all connections."""
        return sum(side.transport.get_write_buffer_size()
                   for link in list(self._links) for side in link.sides()
                   if side.transport is not None and not side.closed)

    @property
    def sockets_not_read(self) -> int:
        """Open sockets the proxy is not reading from just now: stalled, held back because
        the other side's receiver is full, or waiting for the upstream connection."""
        return sum(1 for link in list(self._links) for side in link.sides()
                   if side.paused_for and not side.closed)

    def start(self) -> FaultProxy:
        """Listen on a free port (``self.port``) and serve; return once listening."""
        self._thread.start()
        self._call(self._listen())
        return self

    def reset_after(self, n_bytes: int, direction: Direction = "to_server", times: int = 1
                    ) -> None:
        """Arm a reset: once ``n_bytes`` more bytes have gone in ``direction`` (counted from
        now over every connection), reset every open connection, then forward again.

        Exactly ``n_bytes`` are passed on: the chunk that crosses the mark is cut there, the
        rest of it is dropped, and nothing more passes on any connection until the reset. The reset waits (at most ``FLUSH_TIMEOUT``) for those bytes to
        leave the proxy, then closes both sockets of every connection open at that moment
        with SO_LINGER 0: the client and the server each get an RST, read what had already
        reached them, then ECONNRESET (or EPIPE on writing). A client mid-APPEND therefore
        never gets a tagged answer, and the server sees its literal cut short. New
        connections are accepted throughout. With ``times`` > 1 the count starts again from
        zero after each reset. Arming again replaces a pending arming.
        """
        if n_bytes < 1 or times < 1:
            raise ValueError("n_bytes and times must be at least 1")
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, not {direction!r}")
        self._call(self._arm(_Arming(n_bytes, direction, times)))

    def reset_now(self) -> None:
        """Reset every open connection now (SO_LINGER 0 on both sides, as ``reset_after``)."""
        self._call(self._reset_all(None))

    def stall(self, new_connections_only: bool = False) -> None:
        """Stop passing bytes on, in both directions, until ``resume``.

        Connections stay open and new ones are still accepted (and connected upstream), but
        nothing is read from either side: a new client does not even get the server's
        greeting. Bytes the proxy had read before the stall still go out. With
        ``new_connections_only``, connections already open keep flowing and only those
        accepted from now on are stalled.
        """
        self._call(self._stall(new_connections_only))

    def resume(self) -> None:
        """End a stall: every connection forwards again, nothing lost or reordered."""
        self._call(self._resume())

    def refuse(self) -> None:
        """Refuse new connections: the listening socket is closed, so a client connecting
        gets ECONNREFUSED at once (connections already open are left alone). The port stays
        reserved (a bound, non-listening socket) so that ``accept`` gets it back."""
        self._call(self._refuse())

    def accept(self) -> None:
        """Listen again on the same port after ``refuse``; nothing happens if listening."""
        self._call(self._listen())

    def close(self) -> None:
        """Stop listening, close every connection (FIN, or RST where bytes were unread) and
        end the thread. Safe to call twice; every other method then raises RuntimeError."""
        if self._closed:
            return
        if self._thread.is_alive():
            self._call(self._shutdown())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(CONTROL_TIMEOUT)
        self._closed = True
        self._loop.close()

    def _call(self, operation: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            operation.close()
            raise RuntimeError("the proxy is closed")
        return asyncio.run_coroutine_threadsafe(operation, self._loop).result(CONTROL_TIMEOUT)

    async def _listen(self) -> None:
        if self._server is not None:
            return
        sock = socket.socket()
        # SO_REUSEPORT lets the placeholder of ``refuse`` and the listener of ``accept``
        # overlap, so the port is never free for someone else in between.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        sock.listen(128)
        sock.setblocking(False)
        self._server = await self._loop.create_server(self._new_client, sock=sock)
        if self._placeholder is not None:
            self._placeholder.close()
            self._placeholder = None

    async def _refuse(self) -> None:
        if self._server is None:
            return
        placeholder = socket.socket()
        placeholder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        placeholder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        placeholder.bind((self.host, self.port))
        self._placeholder = placeholder
        self._server.close()
        self._server = None

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._placeholder is not None:
            self._placeholder.close()
        for link in list(self._links):
            for side in link.sides():
                if side.transport is not None:
                    side.transport.abort()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _new_client(self) -> _Side:
        link = _Link(self, stalled=self._stall_new)
        self._links.add(link)
        self.connections_opened += 1
        return link.client

    def _side_made(self, side: _Side) -> None:
        if side.link.stalled:
            side.paused_for.add("stall")
        if side is side.link.client:
            side.paused_for.add("connecting")
            self._loop.create_task(self._connect_upstream(side.link))

    async def _connect_upstream(self, link: _Link) -> None:
        upstream = _Side(self, link, "to_client")
        link.upstream = upstream
        try:
            await self._loop.create_connection(lambda: upstream, *self.upstream)
        except OSError:
            link.upstream = None
            if link.client.closed:
                self._links.discard(link)
            elif link.client.transport is not None:
                link.client.transport.close()
            return
        if link.client.closed:
            assert upstream.transport is not None
            upstream.transport.close()
        else:
            link.client.unpause("connecting")

    def _forward(self, side: _Side, data: bytes) -> None:
        if self._resetting:
            return  # every connection is about to be reset: nothing more goes through
        arming = self._arming
        crossing = False
        if arming is not None and arming.direction == side.direction:
            if len(data) >= arming.n_bytes - arming.crossed:
                data = data[:arming.n_bytes - arming.crossed]
                crossing = True
            arming.crossed += len(data)
        self._pass_on(side, bytes(data))
        if crossing:
            self._resetting = True
            self._loop.create_task(self._reset_all(side.peer))

    def _pass_on(self, side: _Side, data: bytes) -> None:
        peer = side.peer
        if not data or peer is None or peer.transport is None or peer.closed:
            return
        peer.transport.write(data)
        if side.direction == "to_server":
            self.bytes_to_server += len(data)
        else:
            self.bytes_to_client += len(data)

    async def _arm(self, arming: _Arming) -> None:
        self._arming = arming

    async def _reset_all(self, flushing: _Side | None) -> None:
        self._resetting = True
        if flushing is not None:
            deadline = self._loop.time() + FLUSH_TIMEOUT
            while flushing.unsent() and self._loop.time() < deadline:
                await asyncio.sleep(0.001)
        links = list(self._links)
        for link in links:
            for side in link.sides():
                side.reset()
        self.resets += 1
        self.connections_reset += len(links)
        arming = self._arming
        if flushing is not None and arming is not None:
            arming.times -= 1
            arming.crossed = 0
            if arming.times == 0:
                self._arming = None
        self._resetting = False

    async def _stall(self, new_connections_only: bool) -> None:
        self._stall_new = True
        if not new_connections_only:
            for link in self._links:
                link.stalled = True
                for side in link.sides():
                    side.pause("stall")

    async def _resume(self) -> None:
        self._stall_new = False
        for link in list(self._links):
            link.stalled = False
            for side in link.sides():
                side.unpause("stall")

    def _eof(self, side: _Side) -> None:
        side.eof = True
        peer = side.peer
        if peer is None or peer.transport is None or peer.closed:
            return
        if peer.eof:
            side.transport.close()
            peer.transport.close()
        elif peer.transport.can_write_eof():
            peer.transport.write_eof()

    def _lost(self, side: _Side, error: Exception | None) -> None:
        side.closed = True
        peer = side.peer
        if peer is not None and not peer.closed and peer.transport is not None:
            if error is not None:
                peer.reset()
            else:
                peer.transport.close()
        if all(s.closed for s in side.link.sides()):
            self._links.discard(side.link)


# --- a small tmpfs -----------------------------------------------------------------------

class MountRefused(Exception):
    """Mounting is not allowed here; the message says why, for a test's skip reason."""


def mount_tmpfs(folder: Path, size: int) -> Path:
    """Mount a tmpfs of ``size`` bytes (rounded up to whole pages) on ``folder`` (created if
    missing). Raises MountRefused, saying why, when this process may not mount (not root,
    or root without the right to mount, as in many containers)."""
    if os.geteuid() != 0:
        raise MountRefused(f"mounting a tmpfs needs root, and this runs as uid {os.geteuid()}")
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                              str(folder)], capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        raise MountRefused("mount -t tmpfs was refused: "
                            + (mounted.stderr.strip().splitlines() or ["no reason given"])[0])
    return folder


def unmount(folder: Path) -> None:
    """Unmount what ``mount_tmpfs`` mounted there; lazily if a process still uses it."""
    if subprocess.run(["umount", str(folder)], capture_output=True, check=False).returncode:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=True)


def free_bytes(folder: Path) -> int:
    """Bytes a process may still write in ``folder``'s file system."""
    stats = os.statvfs(folder)
    return stats.f_bavail * stats.f_frsize


def fill(folder: Path, leave_free: int) -> Path:
    """Write a file into ``folder`` so that between ``leave_free`` bytes and one block more
    stay free; return it (delete it to give the space back). Raises ValueError if less
    than ``leave_free`` is free already."""
    stats = os.statvfs(folder)
    free = stats.f_bavail * stats.f_frsize
    if free < leave_free:
        raise ValueError(f"only {free} bytes free in {folder}, fewer than {leave_free}")
    to_write = (free - leave_free) // stats.f_frsize * stats.f_frsize
    descriptor, name = tempfile.mkstemp(prefix="filler-", dir=folder)
    block = b"\0" * (1 << 16)
    try:
        with os.fdopen(descriptor, "wb") as out:
            while to_write:
                to_write -= out.write(block[:min(len(block), to_write)])
    except OSError as error:
        # Another process writing there at the same time (the run under test) may fill
        # the rest first: for leave_free=0 that is the aim reached.
        if error.errno != errno.ENOSPC or leave_free:
            raise
    return Path(name)


# --- bascule run as a process, signalled at a point of its ledger -------------------------

@dataclass(frozen=True)
class LedgerCounts:
    """Items per status in a ledger, as another process reads them while a run goes on."""

    done: int = 0
    inflight: int = 0
    failed: int = 0


def ledger_counts(work: Path) -> LedgerCounts:
    """Read ``work/ledger.sqlite`` read-only; zero counts while it does not exist yet or is
    locked (a run may be creating it)."""
    path = work / "ledger.sqlite"
    if not path.exists():
        return LedgerCounts()
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
            rows = dict(db.execute("select status, count(*) from items group by status"))
    except sqlite3.OperationalError:
        return LedgerCounts()
    return LedgerCounts(rows.get(DONE, 0), rows.get(INFLIGHT, 0), rows.get(FAILED, 0))


@dataclass(frozen=True)
class RunOutcome:
    """How a ``bascule`` process ended.

    ``returncode`` is negative when a signal killed it (Popen's convention);
    ``signalled`` says whether the signal was sent (False: the run ended before the
    condition held); ``seconds_to_exit`` is the time from the signal to the exit as seen by
    polling (within about 50 ms), None when no signal was sent; ``at_signal`` is what the
    ledger held when the condition was met.
    """

    returncode: int
    stdout: str
    stderr: str
    signalled: bool
    seconds_to_exit: float | None
    at_signal: LedgerCounts | None


class BasculeRun:
    """``python -m migrate ARGS BATCH`` (default: ``run BATCH``) as a real process, from the
    project's folder, with ``env``. Its output goes to files next to the batch
    (``bascule-N.stdout``, ``.stderr``), so it never blocks on a full pipe. ``work`` is the
    batch's work folder, where its ledger is (default: ``work`` next to the batch).

    The child starts with Python's own SIGINT handler (KeyboardInterrupt) and the default
    SIGTERM, as from a terminal: a shell without job control starts background commands with
    SIGINT ignored, and the child would inherit that (hence ``-c`` and runpy rather than
    ``-m``: a ``preexec_fn`` is unsafe while the proxy's thread runs).
    """

    def __init__(self, batch: Path, env: dict[str, str], args: Sequence[str] = ("run",),
                 work: Path | None = None) -> None:
        self.work = work or batch.parent / "work"
        number = len(list(batch.parent.glob("bascule-*.stdout")))
        self.stdout_path = batch.parent / f"bascule-{number}.stdout"
        self.stderr_path = batch.parent / f"bascule-{number}.stderr"
        with self.stdout_path.open("wb") as stdout, self.stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _AS_FROM_A_TERMINAL, *args, str(batch)], cwd=ROOT,
                env={**env, "PYTHONPATH": str(ROOT)}, stdin=subprocess.DEVNULL,
                stdout=stdout, stderr=stderr,
            )
        self._signalled_at: float | None = None
        self._at_signal: LedgerCounts | None = None

    def signal_when(self, signum: int, ready: Callable[[LedgerCounts], bool],
                    timeout: float = 120.0) -> bool:
        """Send ``signum`` to the process (not its group) once ``ready(ledger_counts(work))``
        holds; False if the process ended first. Raises AssertionError (after killing the
        process) if neither happens within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            counts = ledger_counts(self.work)
            if ready(counts):
                self.process.send_signal(signum)
                self._signalled_at = time.monotonic()
                self._at_signal = counts
                return True
            time.sleep(0.005)
        self.process.kill()
        self.process.wait()
        raise AssertionError(f"the run neither ended nor reached the signal point in {timeout}s")

    def finish(self, timeout: float = 120.0) -> RunOutcome:
        """Wait for the exit and collect it; after ``timeout`` seconds, SIGKILL and
        AssertionError with the end of its stderr."""
        try:
            returncode = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"the run did not end within {timeout}s: "
                                 f"{self._read(self.stderr_path)[-2000:]}") from None
        ended = time.monotonic()
        return RunOutcome(
            returncode, self._read(self.stdout_path), self._read(self.stderr_path),
            self._signalled_at is not None,
            None if self._signalled_at is None else ended - self._signalled_at,
            self._at_signal,
        )

    @staticmethod
    def _read(path: Path) -> str:
        return path.read_text(errors="replace")


_AS_FROM_A_TERMINAL = (
    "import runpy, signal\n"
    "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
    "signal.signal(signal.SIGTERM, signal.SIG_DFL)\n"
    "runpy.run_module('migrate', run_name='__main__', alter_sys=True)\n"
)


def run_with_signal(batch: Path, env: dict[str, str], signum: int,
                    ready: Callable[[LedgerCounts], bool], timeout: float = 120.0
                    ) -> RunOutcome:
    """``bascule run BATCH``, sent ``signum`` when ``ready`` holds on its ledger, to its
    end; ``timeout`` bounds each of the two waits."""
    run = BasculeRun(batch, env)
    run.signal_when(signum, ready, timeout)
    return run.finish(timeout)


def kill_in_flight(batch: Path, env: dict[str, str], proxy: FaultProxy,
                   start: Callable[[LedgerCounts], bool], timeout: float = 120.0
                   ) -> RunOutcome:
    """``bascule run BATCH`` killed (SIGKILL) with messages in flight to its target, which it
    reaches through ``proxy``.

    Once ``start`` holds, the proxy stalls every connection: what is being sent stays in
    flight (a batch may even be stored with its answer held back), and whatever the run
    takes next waits there too. The process is killed once its ledger shows an item in
    flight, then the proxy resumes. Polling alone would miss that moment on a fast run: a
    batch of messages is in flight for a few milliseconds on loopback.
    """
    stalled = False

    def ready(counts: LedgerCounts) -> bool:
        nonlocal stalled
        if not stalled and start(counts):
            proxy.stall()
            stalled = True
        return stalled and counts.inflight > 0

    try:
        return run_with_signal(batch, env, signal.SIGKILL, ready, timeout)
    finally:
        if stalled:
            proxy.resume()
