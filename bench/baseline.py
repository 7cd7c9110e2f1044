"""The baseline copier: the fastest simple way to move an IMAP mailbox, the target's ceiling.

It copies every folder of one account to another account, over ``lanes`` pairs of
connections; each lane takes a contiguous share of every folder's UIDs, reads it with one
``UID FETCH`` (the server streams the whole share) and writes each message at once with a
LITERAL+ APPEND, never waiting for a reply: a second thread per lane reads the replies.
Nothing is checked beyond the replies being OK: it only needs to be right against Dovecot.

    python -m bench.baseline SRC_HOST:PORT SRC_USER DST_HOST:PORT DST_USER --lanes 4

Passwords come from the environment: ``BASELINE_SOURCE_SECRET``, ``BASELINE_TARGET_SECRET``.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import threading
from collections.abc import Iterator
from typing import BinaryIO

LITERAL = re.compile(rb"\{(\d+)\}\r\n$")
FLAGS = re.compile(rb"FLAGS \(([^)]*)\)")
INTERNALDATE = re.compile(rb'INTERNALDATE ("[^"]*")')
LIST_LINE = re.compile(rb'^\* LIST \(([^)]*)\) (?:"[^"]*"|NIL) (.+)\r\n$')


class Connection:
    """One logged-in IMAP connection with a buffered reader."""

    def __init__(self, address: str, user: str, password: str) -> None:
        host, _, port = address.rpartition(":")
        self.sock = socket.create_connection((host, int(port)))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader: BinaryIO = self.sock.makefile("rb", buffering=1 << 20)
        self.reader.readline()
        self.tag = 0
        self.last = b""  # the tagged reply that ended the last FETCH read by ``fetched``
        self.command(b"LOGIN " + quote(user.encode()) + b" " + quote(password.encode()))

    def send(self, command: bytes) -> bytes:
        self.tag += 1
        tag = b"T%d" % self.tag
        self.sock.sendall(tag + b" " + command + b"\r\n")
        return tag

    def command(self, command: bytes) -> list[bytes]:
        """Send and wait for the tagged reply; return the untagged lines."""
        tag = self.send(command)
        lines = []
        while not (line := self.reader.readline()).startswith(tag + b" "):
            if not line:
                raise ConnectionError(f"closed during {command!r}")
            lines.append(line)
        if not line.startswith(tag + b" OK"):
            raise RuntimeError(f"{command[:60]!r}: {line!r}")
        return lines

    def close(self) -> None:
        self.command(b"LOGOUT")
        self.sock.close()


def quote(text: bytes) -> bytes:
    return b'"' + text.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def folders(conn: Connection) -> list[bytes]:
    """Selectable folder names, as the server spells them (quoted or atoms)."""
    names = []
    for line in conn.command(b'LIST "" "*"'):
        match = LIST_LINE.match(line)
        if match and b"\\noselect" not in match.group(1).lower():
            names.append(match.group(2))
    return names


def uids(conn: Connection, folder: bytes) -> list[int]:
    conn.command(b"EXAMINE " + folder)
    found = [int(u) for line in conn.command(b"UID SEARCH ALL")
             if line.startswith(b"* SEARCH") for u in line.split()[2:]]
    return sorted(found)


def fetched(source: Connection, tag: bytes) -> Iterator[tuple[bytes, bytes, bytes]]:
    """Flags (without \\Recent), internal date and body of each message a FETCH answers,
    until its tagged reply, which is left in ``source.last``."""
    while not (line := source.reader.readline()).startswith(tag + b" "):
        if not line:
            raise ConnectionError("source closed the connection")
        literal = LITERAL.search(line)
        if not literal:
            continue
        body = source.reader.read(int(literal.group(1)))
        meta = line + source.reader.readline()
        flags = b" ".join(f for f in FLAGS.search(meta).group(1).split()
                          if f.lower() != b"\\recent")
        yield flags, INTERNALDATE.search(meta).group(1), body
    source.last = line


def copy_lane(source: Connection, target: Connection, work: list[tuple[bytes, int, int]],
              failures: list[bytes]) -> None:
    """Copy UIDs ``first..last`` of each folder, appending as fast as messages arrive."""

    def read_replies() -> None:
        # The server runs a connection's commands in order: the final NOOP's reply comes
        # after every APPEND's.
        while not (line := target.reader.readline()).startswith(b"Z "):
            if not line:
                failures.append(b"target closed the connection")
                return
            if not line.startswith((b"* ", b"+ ")) and line.split(b" ", 2)[1] != b"OK":
                failures.append(line)

    replies = threading.Thread(target=read_replies)
    replies.start()
    for folder, first, last in work:
        source.command(b"EXAMINE " + folder)
        tag = source.send(b"UID FETCH %d:%d (FLAGS INTERNALDATE BODY.PEEK[])" % (first, last))
        for flags, date, body in fetched(source, tag):
            target.tag += 1
            target.sock.sendall(b"A%d APPEND %s (%s) %s {%d+}\r\n" % (
                target.tag, folder, flags, date, len(body)) + body + b"\r\n")
    target.sock.sendall(b"Z NOOP\r\n")
    replies.join()
    source.close()
    target.close()


def copy_account(source_args: tuple[str, str, str], target_args: tuple[str, str, str],
                 lanes: int) -> None:
    admin_source, admin_target = Connection(*source_args), Connection(*target_args)
    work: list[list[tuple[bytes, int, int]]] = [[] for _ in range(lanes)]
    existing = set(folders(admin_target))
    for folder in folders(admin_source):
        if folder not in existing:
            admin_target.command(b"CREATE " + folder)
        found = uids(admin_source, folder)
        share = -(-len(found) // lanes)
        for lane, start in enumerate(range(0, len(found), share or 1)):
            part = found[start:start + share]
            work[lane].append((folder, part[0], part[-1]))
    admin_source.close()
    admin_target.close()
    failures: list[bytes] = []
    threads = [threading.Thread(target=copy_lane, args=(
        Connection(*source_args), Connection(*target_args), lane_work, failures))
        for lane_work in work]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise SystemExit(f"{len(failures)} APPEND failed, first: {failures[0]!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="host:port")
    parser.add_argument("source_user")
    parser.add_argument("target", help="host:port")
    parser.add_argument("target_user")
    parser.add_argument("--lanes", type=int, default=4)
    args = parser.parse_args()
    copy_account((args.source, args.source_user, os.environ["BASELINE_SOURCE_SECRET"]),
                 (args.target, args.target_user, os.environ["BASELINE_TARGET_SECRET"]),
                 args.lanes)


if __name__ == "__main__":
    main()
