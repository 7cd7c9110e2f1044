"""Raw copiers of many accounts, the ceilings of ``bench.shaped``: pipelined APPEND or MULTIAPPEND.

No ledger, no check beyond the replies being OK: the fastest simple way these servers allow.
``lanes`` workers, each holding one source and one target connection at a time, take the
accounts from a queue. For each account the lane that takes it lists the source's folders
with their message counts in one command (``LIST ... RETURN (STATUS (MESSAGES))``) and
creates them on the target in one pipelined burst, on that one connection (concurrent
creation of one user's folders has crashed Dovecot). An account of ``SPLIT`` messages or
fewer is then copied by that lane alone; a larger one is cut into ``lanes`` shares (a
contiguous range of every folder) that the idle lanes join.

A lane sends every ``EXAMINE`` + ``FETCH`` of its share at once and writes each message to
the target as it arrives, never waiting for a reply (LITERAL+; a second thread reads the
replies). ``--mode append`` sends one APPEND per message; ``--mode multiappend`` (RFC 3502)
sends up to ``BATCH_MESSAGES`` messages or ``BATCH_BYTES`` bytes of one folder per APPEND.

    python -m bench.ceiling SRC_HOST:PORT DST_HOST:PORT USERS_FILE --mode multiappend

``USERS_FILE`` holds one ``source_user target_user`` pair a line. Passwords come from the
environment: ``BASELINE_SOURCE_SECRET``, ``BASELINE_TARGET_SECRET`` (the same for every user).
"""

from __future__ import annotations

import argparse
import os
import re
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from bench.baseline import LIST_LINE, Connection, fetched

SPLIT = 400
SHARES_AT_MOST = 4
"""Lanes one account takes at most: each holds a connection on each server, and Dovecot
refuses a user's eleventh (``mail_max_userip_connections``); more lanes serve more accounts."""
BATCH_MESSAGES = 50
BATCH_BYTES = 8 << 20
STATUS_LINE = re.compile(rb"^\* STATUS (.+) \(MESSAGES (\d+)\)\r\n$")


@dataclass(frozen=True)
class Share:
    """Messages ``first..last`` (sequence numbers) of some folders of one account."""

    source_user: str
    target_user: str
    ranges: tuple[tuple[bytes, int, int], ...]


def folder_counts(conn: Connection) -> dict[bytes, int]:
    """Every selectable folder and its message count, in one round trip."""
    names, counts = [], {}
    for line in conn.command(b'LIST "" "*" RETURN (STATUS (MESSAGES))'):
        if (listed := LIST_LINE.match(line)) and b"\\noselect" not in listed.group(1).lower():
            names.append(listed.group(2))
        elif status := STATUS_LINE.match(line):
            counts[status.group(1)] = int(status.group(2))
    return {name: counts.get(name, 0) for name in names}


def create_all(conn: Connection, names: list[bytes]) -> None:
    """CREATE every folder in one burst, parents first; those already there answer NO."""
    ordered = sorted((n for n in names if n.upper() != b"INBOX"), key=lambda n: n.count(b"/"))
    tags = [conn.send(b"CREATE " + name) for name in ordered]
    if tags:
        while not conn.reader.readline().startswith(tags[-1] + b" "):
            pass


def shares(source_user: str, target_user: str, counts: dict[bytes, int], lanes: int
           ) -> list[Share]:
    """The account as one share, or as ``lanes`` shares (``SHARES_AT_MOST`` at most) when it
    is larger than ``SPLIT``."""
    total = sum(counts.values())
    parts = 1 if total <= SPLIT else min(lanes, SHARES_AT_MOST)
    cut: list[list[tuple[bytes, int, int]]] = [[] for _ in range(parts)]
    for name, count in counts.items():
        size = -(-count // parts)
        for part, start in enumerate(range(1, count + 1, size or 1)):
            cut[part].append((name, start, min(count, start + size - 1)))
    return [Share(source_user, target_user, tuple(r)) for r in cut if r]


class Copier:
    """The lanes and the work they share."""

    def __init__(self, source: str, target: str, secrets: tuple[str, str], lanes: int,
                 multiappend: bool) -> None:
        self.source, self.target, self.secrets = source, target, secrets
        self.lanes, self.multiappend = lanes, multiappend
        self.accounts: deque[tuple[str, str]] = deque()
        self.shares: deque[Share] = deque()
        self.preparing = 0
        self.ready = threading.Condition()
        self.failures: list[bytes] = []

    def run(self, accounts: list[tuple[str, str]]) -> None:
        self.accounts.extend(accounts)
        threads = [threading.Thread(target=self.lane) for _ in range(self.lanes)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def lane(self) -> None:
        try:
            self.lane_work()
        except Exception as error:  # noqa: BLE001 (reported by main, the other lanes go on)
            self.failures.append(repr(error).encode())
            with self.ready:
                self.ready.notify_all()

    def lane_work(self) -> None:
        pair: tuple[str, Connection, Connection] | None = None
        while (work := self.next_work()) is not None:
            if isinstance(work, Share):
                if pair is None or pair[0] != work.source_user:
                    pair = self.reconnect(pair, work)
                self.copy(pair[1], pair[2], work)
                continue
            source_user, target_user = work
            share = Share(source_user, target_user, ())
            pair = self.reconnect(pair, share)
            try:
                counts = folder_counts(pair[1])
                create_all(pair[2], list(counts))
                mine, *others = shares(source_user, target_user, counts, self.lanes) or [
                    share]
            finally:
                with self.ready:
                    self.preparing -= 1
                    self.shares.extend(others)
                    self.ready.notify_all()
            self.copy(pair[1], pair[2], mine)
        if pair is not None:
            pair[1].close()
            pair[2].close()

    def next_work(self) -> Share | tuple[str, str] | None:
        """A share of an account being copied, else a new account, else None when done."""
        with self.ready:
            while True:
                if self.shares:
                    return self.shares.popleft()
                if self.accounts:
                    self.preparing += 1
                    return self.accounts.popleft()
                if not self.preparing:
                    return None
                self.ready.wait()

    def reconnect(self, pair: tuple[str, Connection, Connection] | None, share: Share
                  ) -> tuple[str, Connection, Connection]:
        if pair is not None:
            pair[1].close()
            pair[2].close()
        return (share.source_user, Connection(self.source, share.source_user, self.secrets[0]),
                Connection(self.target, share.target_user, self.secrets[1]))

    def copy(self, source: Connection, target: Connection, share: Share) -> None:
        """Stream the share from source to target; return once the target answered all."""
        replies = threading.Thread(target=self.read_replies, args=(target,))
        replies.start()
        fetches = []
        for folder, first, last in share.ranges:
            source.send(b"EXAMINE " + folder)
            fetches.append((folder, source.send(
                b"FETCH %d:%d (FLAGS INTERNALDATE BODY.PEEK[])" % (first, last))))
        batch: tuple[bytes, int, int] | None = None  # folder, messages, bytes in the open APPEND
        for folder, tag in fetches:
            for flags, date, body in fetched(source, tag):
                message = b"(%s) %s {%d+}\r\n" % (flags, date, len(body)) + body
                if not self.multiappend:
                    target.tag += 1
                    target.sock.sendall(b"A%d APPEND %s " % (target.tag, folder) + message
                                        + b"\r\n")
                    continue
                if batch is not None and (batch[0] != folder or batch[1] >= BATCH_MESSAGES
                                          or batch[2] + len(body) > BATCH_BYTES):
                    target.sock.sendall(b"\r\n")
                    batch = None
                if batch is None:
                    target.tag += 1
                    target.sock.sendall(b"A%d APPEND %s " % (target.tag, folder) + message)
                    batch = (folder, 1, len(body))
                else:
                    target.sock.sendall(b" " + message)
                    batch = (folder, batch[1] + 1, batch[2] + len(body))
            if not source.last.startswith(tag + b" OK"):
                self.failures.append(source.last)
        if batch is not None:
            target.sock.sendall(b"\r\n")
        target.sock.sendall(b"Z NOOP\r\n")
        replies.join()

    def read_replies(self, target: Connection) -> None:
        # The server runs a connection's commands in order: the NOOP's reply comes last.
        while not (line := target.reader.readline()).startswith(b"Z "):
            if not line:
                self.failures.append(b"target closed the connection")
                return
            if not line.startswith((b"* ", b"+ ")) and line.split(b" ", 2)[1] != b"OK":
                self.failures.append(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="host:port")
    parser.add_argument("target", help="host:port")
    parser.add_argument("users", type=Path, help="one 'source_user target_user' a line")
    parser.add_argument("--mode", choices=("append", "multiappend"), default="append")
    parser.add_argument("--lanes", type=int, default=4)
    args = parser.parse_args()
    accounts = [(source, target) for source, target in (
        line.split() for line in args.users.read_text(encoding="utf-8").splitlines() if line)]
    copier = Copier(args.source, args.target, (os.environ["BASELINE_SOURCE_SECRET"],
                                               os.environ["BASELINE_TARGET_SECRET"]),
                    args.lanes, args.mode == "multiappend")
    copier.run(accounts)
    if copier.failures:
        raise SystemExit(f"{len(copier.failures)} commands failed, first: "
                         f"{copier.failures[0]!r}")


if __name__ == "__main__":
    main()
